package nftables

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
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
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("nft -f -: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// bulkScript is the text of tx followed by elems, added to their sets and maps in
// statements of up to bulkChunk elements each, in the order the sets first appear.
// Only a full sync uses it: its transaction deletes nothing after adding elements, so
// writing the elements last is the same transaction as knftables would write.
func bulkScript(tx *knftables.Transaction, f ipFamily, elems []element) []byte {
	var buf bytes.Buffer
	buf.Grow(64 * len(elems))
	buf.WriteString(tx.String())
	var order []string
	bySet := map[string][]element{}
	for _, e := range elems {
		if _, ok := bySet[e.set]; !ok {
			order = append(order, e.set)
		}
		bySet[e.set] = append(bySet[e.set], e)
	}
	for _, set := range order {
		es := bySet[set]
		for start := 0; start < len(es); start += bulkChunk {
			buf.WriteString("add element ")
			buf.WriteString(string(f.nft))
			buf.WriteString(" " + tableName + " ")
			buf.WriteString(set)
			buf.WriteString(" { ")
			for i, e := range es[start:min(start+bulkChunk, len(es))] {
				if i > 0 {
					buf.WriteString(", ")
				}
				buf.WriteString(e.key)
				if e.value != "" {
					buf.WriteString(" : ")
					buf.WriteString(e.value)
				}
			}
			buf.WriteString(" }\n")
		}
	}
	return buf.Bytes()
}

// numOperations counts what a bulk write does, as knftables would count it.
func numOperations(tx *knftables.Transaction, elems []element) int {
	return tx.NumOperations() + len(elems)
}
