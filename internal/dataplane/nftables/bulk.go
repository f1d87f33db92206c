package nftables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"

	"sigs.k8s.io/knftables"
)

// bulkChunk is how many elements one statement carries in a bulk write. nft parses a
// statement of many elements far faster than as many one-element statements (120,000
// elements: ≈1.9 s against ≈3.2 s of nft CPU); beyond ~100 per statement the size
// makes no further difference, and 1,000 keeps lines short.
const bulkChunk = 1000

// flushSize is how much script a bulk write buffers before handing it to nft.
const flushSize = 64 << 10

// bulkRunner applies a full sync's script in one transaction, streamed: nft parses
// the beginning while weir still builds the rest. A full sync goes through it when
// set, because knftables writes one statement per element and has no multi-element
// statement; partial syncs (a few elements) stay on knftables.
type bulkRunner interface {
	// start begins one transaction. What is written to the stream, followed by the
	// statement after, is applied when commit succeeds, and nothing of it otherwise.
	start(ctx context.Context, after string) (scriptStream, error)
}

// scriptStream is one transaction being written.
type scriptStream interface {
	io.Writer
	// commit ends the script and waits until it is applied.
	commit() error
	// abort ends the transaction without applying anything.
	abort() error
}

// nftBinary runs nft, the binary knftables uses. argv is the command before its
// arguments: the nft binary (tests prefix `ip netns exec NAME`).
type nftBinary struct {
	argv []string
	// fdDir is where nft finds its own file descriptors: /dev/fd or /proc/self/fd.
	fdDir string
}

func newNFTBinary() (*nftBinary, error) {
	path, err := exec.LookPath("nft")
	if err != nil {
		return nil, fmt.Errorf("find nft: %w", err)
	}
	dir, err := fdDir(func(name string) bool { _, err := os.Stat(name); return err == nil })
	if err != nil {
		return nil, err
	}
	return &nftBinary{argv: []string{path}, fdDir: dir}, nil
}

// fdDir is the first of /dev/fd and /proc/self/fd that exists.
func fdDir(exists func(string) bool) (string, error) {
	for _, dir := range []string{"/dev/fd", "/proc/self/fd"} {
		if exists(dir) {
			return dir, nil
		}
	}
	return "", errors.New("neither /dev/fd nor /proc/self/fd exists: nft could not read the full sync's script from a pipe")
}

// completeVar is the variable a bulk script defines in its last line; the statement
// after the included script uses it. See tableScript.
const completeVar = "weir_script_complete"

// start runs `nft -f -` with a main script that includes the stream (a pipe on fd 3),
// then runs after.
func (b *nftBinary) start(ctx context.Context, after string) (scriptStream, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("nft: pipe: %w", err)
	}
	defer r.Close()
	cmd := exec.CommandContext(ctx, b.argv[0], append(b.argv[1:len(b.argv):len(b.argv)], "-f", "-")...)
	cmd.Env = bulkEnv(os.Environ())
	dir := b.fdDir
	if dir == "" {
		dir = "/dev/fd"
	}
	cmd.Stdin = strings.NewReader("include \"" + dir + "/3\"\n" + after)
	cmd.ExtraFiles = []*os.File{r}
	p := &nftProcess{cmd: cmd, stream: w}
	cmd.Stderr = &p.stderr
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, fmt.Errorf("nft -f -: %w", err)
	}
	return p, nil
}

// nftProcess is a running nft reading a bulk script. nft reads all its input before
// it sends the transaction to the kernel, so killing it before the script ends
// applies nothing.
type nftProcess struct {
	cmd    *exec.Cmd
	stream *os.File
	stderr bytes.Buffer
}

func (p *nftProcess) Write(b []byte) (int, error) { return p.stream.Write(b) }

func (p *nftProcess) commit() error {
	closeErr := p.stream.Close()
	if err := p.cmd.Wait(); err != nil {
		return fmt.Errorf("nft -f -: %w: %s", err, strings.TrimSpace(p.stderr.String()))
	}
	if closeErr != nil {
		return fmt.Errorf("nft -f -: close input: %w", closeErr)
	}
	return nil
}

func (p *nftProcess) abort() error {
	// Kill first: closing the input first would let nft apply what it has read.
	_ = p.cmd.Process.Kill()
	err := p.cmd.Wait()
	p.stream.Close()
	return fmt.Errorf("nft -f - stopped, nothing applied: %w: %s", err, strings.TrimSpace(p.stderr.String()))
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

// tableScript writes one table's full sync to a scriptStream while the Services are
// built. It is the transaction knftables would write, in its statement syntax and
// order (the table replaced, fixed objects, then each Service's sets, chains and
// rules), except that elements wait in one pending statement per set and go out
// bulkChunk at a time, and that the shared pick chains are all written before the
// first element: a rule binding a map that already has elements makes the kernel walk
// them all (nf_tables_bind_set).
//
// The script is safe to apply only when complete: its last line defines completeVar,
// and nft runs it as an included file followed by a statement that uses the
// variable. If weir stops half-way (killed, crashed), nft reads a script that ends
// early: either mid-statement, or whole statements without the definition; both fail
// to parse, and nft sends nothing to the kernel.
type tableScript struct {
	f       ipFamily
	out     scriptStream
	buf     []byte
	err     error // the first write error; later writes are dropped
	head    string
	pending map[string]*pendingElements
	order   []string // sets with elements, in first-use order
	// declared are the shared chains written up front.
	declared map[string]bool
	guard    string // nat-prerouting's priority: completeVar's value
	ops      int    // operations as knftables counts them
}

type pendingElements struct {
	text []byte // "e1, e2, …"
	n    int
}

func newTableScript(f ipFamily) *tableScript {
	return &tableScript{f: f, buf: make([]byte, 0, flushSize+flushSize/4), head: string(f.nft) + " " + tableName,
		pending: map[string]*pendingElements{}, declared: map[string]bool{}}
}

// start starts the transaction and writes base, a knftables transaction of the
// table (add, delete, add) and its fixed objects.
func (s *tableScript) start(ctx context.Context, runner bulkRunner, base *knftables.Transaction) error {
	text := base.String()
	// The statement after the script declares nat-prerouting again as it is (a no-op
	// in the transaction), with its priority given as completeVar.
	prefix := "add chain " + s.head + " nat-prerouting { type nat hook prerouting priority "
	i := strings.Index(text, prefix)
	if i < 0 {
		return fmt.Errorf("bulk script: no nat-prerouting chain in %q", text)
	}
	s.guard, _, _ = strings.Cut(text[i+len(prefix):], " ")
	out, err := runner.start(ctx, prefix+"$"+completeVar+" ; }\n")
	if err != nil {
		return err
	}
	s.out = out
	s.write(text)
	s.ops = base.NumOperations()
	return nil
}

// sharedChains writes the shared chains the Services will use (sharedChains in
// rules.go), before any element.
func (s *tableScript) sharedChains(shared []string) {
	for _, name := range shared {
		s.declareChain(name)
		s.declared[name] = true
	}
	for _, name := range shared {
		s.rules(name, sharedChainRules(s.f, name))
	}
}

// service writes what one Service owns, as writer.diff does for a Service that is new
// to an empty table: its sets, its chains and the shared chains it is the first to
// use (unless written up front), their rules, then its elements unless another
// Service owns them.
func (s *tableScript) service(log *slog.Logger, who *owner, o *serviceObjects, owners owners, refs map[string]int) {
	for _, name := range slices.Sorted(maps.Keys(o.sets)) {
		s.write("add set " + s.head + " " + name + " { type " + s.f.addrType + " ; flags dynamic,timeout ; timeout " + strconv.FormatInt(int64(o.sets[name].Seconds()), 10) + "s ; }\n")
		s.ops++
	}
	var firstUse [4]string
	shared := firstUse[:0]
	for _, name := range o.shared {
		refs["c|"+name]++
		if refs["c|"+name] == 1 && !s.declared[name] {
			shared = append(shared, name)
		}
	}
	own := slices.Sorted(maps.Keys(o.chains))
	// Declared before any rule, as rules go to one another.
	for _, name := range shared {
		s.declareChain(name)
	}
	for _, name := range own {
		s.declareChain(name)
	}
	for _, name := range shared {
		s.rules(name, sharedChainRules(s.f, name))
	}
	for _, name := range own {
		s.rules(name, o.chains[name])
	}
	for _, e := range o.elements {
		if owner, taken := owners.get(e.id); taken && owner != who {
			log.Warn("two Services claim the same frontend; keeping the first", "frontend", e.key, "kept", owner.key, "ignored", who.key)
			continue
		}
		owners.set(e.id, who)
		s.element(e)
	}
	for _, k := range o.hairpin {
		refs["h|"+k]++
		if refs["h|"+k] == 1 {
			s.element(newElement(setHairpin, k, ""))
		}
	}
}

func (s *tableScript) declareChain(name string) {
	s.write("add chain " + s.head + " " + name + "\n")
	s.ops++
}

func (s *tableScript) rules(chain string, rules []string) {
	for _, r := range rules {
		s.write("add rule " + s.head + " " + chain + " " + r + "\n")
	}
	s.ops += len(rules)
}

// element adds e to its set's pending statement, written at bulkChunk elements.
func (s *tableScript) element(e element) {
	p := s.pending[e.set]
	if p == nil {
		p = &pendingElements{text: make([]byte, 0, 64*bulkChunk)}
		s.pending[e.set] = p
		s.order = append(s.order, e.set)
	}
	if p.n > 0 {
		p.text = append(p.text, ", "...)
	}
	p.text = append(p.text, e.key...)
	if e.value != "" {
		p.text = append(p.text, " : "...)
		p.text = append(p.text, e.value...)
	}
	p.n++
	s.ops++
	if p.n == bulkChunk {
		s.writeElements(e.set, p)
	}
}

func (s *tableScript) writeElements(set string, p *pendingElements) {
	s.write("add element " + s.head + " " + set + " { ")
	s.buf = append(s.buf, p.text...)
	s.write(" }\n")
	p.text, p.n = p.text[:0], 0
}

// end writes the remaining elements and the definition of completeVar, and commits.
// Shared chains written up front that no Service used are deleted again. On any
// error nothing is applied.
func (s *tableScript) end(refs map[string]int) error {
	for _, set := range s.order {
		if p := s.pending[set]; p.n > 0 {
			s.writeElements(set, p)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(s.declared)) {
		if refs["c|"+name] == 0 {
			s.write("delete chain " + s.head + " " + name + "\n")
			s.ops++
		}
	}
	s.write("define " + completeVar + " = " + s.guard + "\n")
	s.flush()
	if s.err != nil {
		return errors.Join(s.err, s.out.abort())
	}
	return s.out.commit()
}

func (s *tableScript) write(text string) {
	s.buf = append(s.buf, text...)
	if len(s.buf) >= flushSize {
		s.flush()
	}
}

func (s *tableScript) flush() {
	if len(s.buf) == 0 {
		return
	}
	if s.err == nil {
		if _, err := s.out.Write(s.buf); err != nil {
			s.err = fmt.Errorf("write to nft: %w", err)
		}
	}
	s.buf = s.buf[:0]
}
