package nftables

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"

	"sigs.k8s.io/knftables"
)

// bulkChunk is how many elements one `add element` statement carries in a bulk write.
// nft parses a statement of many elements far faster than as many one-element
// statements (120,000 elements: ≈1.9 s against ≈3.2 s of nft CPU); beyond ~100 per
// statement the size makes no further difference, and 1,000 keeps lines short.
const bulkChunk = 1000

// bulkRunner applies a complete nft script in one transaction. A full sync goes
// through it when set, because knftables writes one statement per element and has no
// multi-element statement; partial syncs (a few elements) stay on knftables.
type bulkRunner interface {
	runScript(ctx context.Context, script []byte) error
}

// nftBinary runs scripts with `nft -f -`, the binary and invocation knftables uses.
type nftBinary struct {
	path string
}

func newNFTBinary() (*nftBinary, error) {
	path, err := exec.LookPath("nft")
	if err != nil {
		return nil, fmt.Errorf("find nft: %w", err)
	}
	return &nftBinary{path: path}, nil
}

func (b *nftBinary) runScript(ctx context.Context, script []byte) error {
	cmd := exec.CommandContext(ctx, b.path, "-f", "-")
	cmd.Stdin = bytes.NewReader(script)
	cmd.Env = bulkEnv(os.Environ())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("nft -f -: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// nftMallocTunable asks glibc's malloc in nft to back its heap with transparent huge
// pages (glibc ≥ 2.35; older or other C libraries ignore it, and it does nothing where
// THP is "never"). Parsing 120,000 elements, nft spends most of its time in malloc and
// page faults; with it, its user CPU halves (≈1.6 s → ≈0.8 s on the benchmark VM).
const nftMallocTunable = "glibc.malloc.hugetlb=1"

// bulkEnv is env with nftMallocTunable added to GLIBC_TUNABLES, keeping any tunables
// already set (a hugetlb setting already there wins).
func bulkEnv(env []string) []string {
	out := make([]string, 0, len(env)+1)
	tunables := nftMallocTunable
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "GLIBC_TUNABLES="); ok {
			if strings.Contains(v, "glibc.malloc.hugetlb=") {
				tunables = v
			} else if v != "" {
				tunables = v + ":" + nftMallocTunable
			}
			continue
		}
		out = append(out, kv)
	}
	return append(out, "GLIBC_TUNABLES="+tunables)
}

// bulkScript is the text of tx followed by elems, added to their sets and maps in
// statements of up to bulkChunk elements each, in the order the sets first appear.
// Only a full sync uses it: its transaction deletes nothing after adding elements, so
// writing the elements last is the same transaction as knftables would write.
func bulkScript(tx *knftables.Transaction, f ipFamily, elems []element) []byte {
	head := tx.String()
	size := len(head)
	var order []string
	for _, e := range elems {
		size += len(e.key) + len(e.value) + 5
		if !slices.Contains(order, e.set) {
			order = append(order, e.set)
		}
	}
	buf := bytes.NewBuffer(make([]byte, 0, size+len(elems)/bulkChunk*64+len(order)*64))
	buf.WriteString(head)
	for _, set := range order {
		n := 0
		for _, e := range elems {
			if e.set != set {
				continue
			}
			if n%bulkChunk == 0 {
				if n > 0 {
					buf.WriteString(" }\n")
				}
				buf.WriteString("add element " + string(f.nft) + " " + tableName + " " + set + " { ")
			} else {
				buf.WriteString(", ")
			}
			buf.WriteString(e.key)
			if e.value != "" {
				buf.WriteString(" : ")
				buf.WriteString(e.value)
			}
			n++
		}
		buf.WriteString(" }\n")
	}
	return buf.Bytes()
}

// numOperations counts what a bulk write does, as knftables would count it.
func numOperations(tx *knftables.Transaction, elems []element) int {
	return tx.NumOperations() + len(elems)
}
