package nftables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"

	"weir.dev/weir/internal/dataplane/flowtest"
	"weir.dev/weir/internal/dataplane/kernel"
	"weir.dev/weir/internal/model"
	"weir.dev/weir/internal/netnstest"
)

// textNFT records the text of every transaction and applies it to the Fake.
type textNFT struct {
	*knftables.Fake
	texts []string
}

func (n *textNFT) Run(ctx context.Context, tx *knftables.Transaction) error {
	n.texts = append(n.texts, tx.String())
	return n.Fake.Run(ctx, tx)
}

// scriptRecorder is a bulkRunner that keeps the committed scripts.
type scriptRecorder struct {
	scripts [][]byte // what was streamed
	afters  []string // the statement nft would run after each
	// fail, when above 0, is how many commits fail next (nothing is kept).
	fail int
}

// complete is script i as one nft input: the stream, then the statement after it.
func (r *scriptRecorder) complete(i int) string { return string(r.scripts[i]) + r.afters[i] }

func (r *scriptRecorder) start(_ context.Context, after string) (scriptStream, error) {
	return &recordingStream{r: r, after: after}, nil
}

type recordingStream struct {
	r     *scriptRecorder
	after string
	buf   bytes.Buffer
}

func (s *recordingStream) Write(b []byte) (int, error) { return s.buf.Write(b) }

func (s *recordingStream) commit() error {
	if s.r.fail > 0 {
		s.r.fail--
		return errors.New("nft: boom")
	}
	s.r.scripts = append(s.r.scripts, slices.Clone(s.buf.Bytes()))
	s.r.afters = append(s.r.afters, s.after)
	return nil
}

func (s *recordingStream) abort() error { return errors.New("aborted") }

var bulkElementLine = regexp.MustCompile(`^add element (\S+ \S+ \S+) \{ (.*) \}$`)

// scriptStatements checks that a bulk script replaces the table and ends with the
// definition its guard uses, and returns its other statements with one element per
// statement.
func scriptStatements(t *testing.T, script string, fam knftables.Family) []string {
	t.Helper()
	head := string(fam) + " " + tableName
	lines := strings.Split(strings.TrimSuffix(script, "\n"), "\n")
	if len(lines) < 4 || !strings.HasPrefix(lines[0], "add table "+head) || lines[1] != "delete table "+head || !strings.HasPrefix(lines[2], "add table "+head) {
		t.Fatalf("bulk script does not replace the table:\n%.500s", script)
	}
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "define "+completeVar+" = ") {
		t.Fatalf("bulk script does not end with the definition of %s: %q", completeVar, last)
	}
	var out []string
	for _, line := range lines[2 : len(lines)-1] {
		if strings.Contains(line, completeVar) {
			t.Fatalf("%s appears before the last line: %q", completeVar, line)
		}
		m := bulkElementLine.FindStringSubmatch(line)
		if m == nil {
			out = append(out, line)
			continue
		}
		for _, e := range strings.Split(m[2], ", ") {
			out = append(out, "add element "+m[1]+" { "+e+" }")
		}
	}
	return out
}

// fakeDump loads knftables statements (adds only) into a new Fake and returns its
// dump, with each set's elements sorted (the Fake lists them in insertion order).
func fakeDump(t *testing.T, fam knftables.Family, statements []string) string {
	t.Helper()
	fake := knftables.NewFake(fam, tableName)
	if err := fake.ParseDump(strings.Join(statements, "\n")); err != nil {
		t.Fatalf("load into knftables.Fake: %v", err)
	}
	lines := strings.Split(fake.Dump(), "\n")
	start := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, "add element ") })
	if start >= 0 {
		slices.Sort(lines[start:])
	}
	return strings.Join(lines, "\n")
}

// bulkAndKnftablesText syncs svcs once through the bulk path and once through
// knftables, and returns both texts per family.
func bulkAndKnftablesText(t *testing.T, svcs []*model.Service) (bulk, plain map[kernel.Family]string) {
	t.Helper()
	bulk, plain = map[kernel.Family]string{}, map[kernel.Family]string{}
	fams := map[kernel.Family]knftables.Family{kernel.IPv4: knftables.IPv4Family, kernel.IPv6: knftables.IPv6Family}
	recs := map[kernel.Family]*scriptRecorder{}
	texts := map[kernel.Family]*textNFT{}
	bulkIfs, plainIfs := map[kernel.Family]knftables.Interface{}, map[kernel.Family]knftables.Interface{}
	for fam, kf := range fams {
		recs[fam] = &scriptRecorder{}
		texts[fam] = &textNFT{Fake: knftables.NewFake(kf, tableName)}
		bulkIfs[fam] = knftables.NewFake(kf, tableName)
		plainIfs[fam] = texts[fam]
	}
	withBulk, err := New(Options{Options: kernel.Options{DisableHealthCheck: true, Conntrack: &flowtest.RecordingConntrack{}}, NFTables: bulkIfs})
	if err != nil {
		t.Fatal(err)
	}
	for i, tb := range withBulk.tables {
		tb.bulk = recs[withBulk.opts.IPFamilies[i]]
	}
	plainP, err := New(Options{Options: kernel.Options{DisableHealthCheck: true, Conntrack: &flowtest.RecordingConntrack{}}, NFTables: plainIfs})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []*Proxier{withBulk, plainP} {
		if err := p.Sync(context.Background(), &model.Snapshot{Services: svcs}); err != nil {
			t.Fatal(err)
		}
	}
	for fam := range fams {
		if len(recs[fam].scripts) != 1 || len(texts[fam].texts) != 1 {
			t.Fatalf("%s: %d bulk scripts, %d knftables transactions; want 1 each", fam, len(recs[fam].scripts), len(texts[fam].texts))
		}
		bulk[fam], plain[fam] = recs[fam].complete(0), texts[fam].texts[0]
	}
	return bulk, plain
}

// TestBulkScriptIsTheKnftablesTransaction checks that the first sync's bulk script
// makes the same tables as the transaction knftables would have written (the same
// chains with the same rules in the same order, sets, maps and elements), that its
// elements are batched and that the shared pick chains come before any element.
func TestBulkScriptIsTheKnftablesTransaction(t *testing.T) {
	fams := map[kernel.Family]knftables.Family{kernel.IPv4: knftables.IPv4Family, kernel.IPv6: knftables.IPv6Family}
	weighted := scaleServices(40, 4, 0)
	for i, svc := range weighted {
		// Slot counts 1 to 10 and a few node ports: many pick chains.
		eps := svc.Ports[0].Cluster.Endpoints
		for j := range eps {
			eps[j].Weight = uint32(1 + (i+j)%3)
		}
		svc.Ports[0].Cluster.Endpoints = eps[:1+i%4]
		svc.Ports[0].External = svc.Ports[0].Cluster
		if i%5 == 0 {
			svc.Type, svc.Ports[0].NodePort = model.NodePort, int32(30000+i)
		}
	}
	for _, tc := range []struct {
		name string
		svcs []*model.Service
	}{
		{"fixture Services", flowtest.Services()},
		{"300 Services", scaleServices(300, 10, 0)},
		{"weighted", weighted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bulk, plain := bulkAndKnftablesText(t, tc.svcs)
			for fam, script := range bulk {
				// The knftables text replaces the table the same way; load its adds.
				head := string(fams[fam]) + " " + tableName
				want := strings.Split(strings.TrimSpace(plain[fam]), "\n")
				if len(want) < 3 || !strings.HasPrefix(want[0], "add table "+head) || want[1] != "delete table "+head {
					t.Fatalf("%s: knftables transaction does not replace the table:\n%.300s", fam, plain[fam])
				}
				script = strings.TrimSuffix(script, bulkAfter(script))
				got := scriptStatements(t, script, fams[fam])
				if g, w := fakeDump(t, fams[fam], got), fakeDump(t, fams[fam], want[2:]); g != w {
					t.Fatalf("%s: bulk script and knftables transaction make different tables:\n%s", fam, firstDifference(g, w))
				}
				statements := strings.Count(script, "add element ")
				elements := strings.Count(plain[fam], "add element ")
				if statements > elements/bulkChunk+10 {
					t.Errorf("%s: %d element statements for %d elements: not batched", fam, statements, elements)
				}
				if n := strings.Count(script, "add chain "+head+" pick-"); tc.name == "weighted" && fam == kernel.IPv4 && n < 4 {
					t.Errorf("%s: %d pick chains, want several", fam, n)
				}
				firstElement := strings.Index(script, "add element ")
				if i := strings.LastIndex(script, " map @"+mapEndpointSlots); firstElement >= 0 && i > firstElement {
					t.Errorf("%s: a rule binds %s after the first element", fam, mapEndpointSlots)
				}
			}
		})
	}
}

// bulkAfter is the statement after a complete bulk script: its last line.
func bulkAfter(complete string) string {
	lines := strings.SplitAfter(complete, "\n")
	return lines[len(lines)-2] + lines[len(lines)-1]
}

// TestBulkScriptLoadsLikeKnftables feeds the bulk script and the knftables
// transaction to the real nft in two throw-away network namespaces and compares the
// resulting rulesets. Root only.
func TestBulkScriptLoadsLikeKnftables(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	svcs := append(flowtest.Services(), scaleServices(300, 10, 0)...)
	bulk, plain := bulkAndKnftablesText(t, svcs)
	load := func(ns string, scripts ...string) string {
		t.Helper()
		for _, s := range scripts {
			cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
			cmd.Stdin = strings.NewReader(s)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("nft -f in %s: %v: %s", ns, err, out)
			}
		}
		out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "ruleset").Output()
		if err != nil {
			t.Fatalf("nft list ruleset in %s: %v", ns, err)
		}
		return normalizeRuleset(string(out))
	}
	got := load(testNamespace(t, "bulk"), bulk[kernel.IPv4], bulk[kernel.IPv6])
	want := load(testNamespace(t, "knft"), plain[kernel.IPv4], plain[kernel.IPv6])
	if got != want {
		t.Fatalf("rulesets differ:\n%s", firstDifference(got, want))
	}
	if n := strings.Count(got, "goto pick-"); n < 300 {
		t.Fatalf("ruleset has %d dispatch elements, want ≥ 300", n)
	}
}

// TestBulkStreamAppliesAllOrNothing feeds bulk scripts to the real nft through the
// streaming runner, in a throw-away network namespace: a script cut anywhere (weir
// stopped while writing: mid-statement, or between statements), a script whose last
// statement the kernel rejects, and a stream aborted half-way all leave the table weir
// wrote before exactly as it was; the complete script replaces it. Root only.
func TestBulkStreamAppliesAllOrNothing(t *testing.T) {
	ns := testNamespace(t, "stream")
	runner := &nftBinary{argv: []string{"ip", "netns", "exec", ns, "nft"}}
	ctx := context.Background()
	ruleset := func() string {
		t.Helper()
		out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "ruleset").Output()
		if err != nil {
			t.Fatalf("nft list ruleset: %v", err)
		}
		return string(out)
	}
	script := func(svcs []*model.Service) (stream, after string) {
		t.Helper()
		p, _ := newNullProxier(t)
		rec := &scriptRecorder{}
		p.tables[0].bulk = rec
		if err := p.Sync(ctx, &model.Snapshot{Services: svcs}); err != nil {
			t.Fatal(err)
		}
		return string(rec.scripts[0]), rec.afters[0]
	}
	apply := func(text, after string) error {
		t.Helper()
		s, err := runner.start(ctx, after)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(s, text); err != nil {
			t.Fatal(err)
		}
		return s.commit()
	}

	if err := apply(script(scaleServices(20, 3, 0))); err != nil {
		t.Fatalf("first script: %v", err)
	}
	before := ruleset()
	if !strings.Contains(before, "10.96.0.19 . tcp . 80") {
		t.Fatalf("first script not applied:\n%.2000s", before)
	}
	next, after := script(append(flowtest.Services(), scaleServices(300, 10, 0)...))
	lineEnd := func(i int) int { return i + strings.IndexByte(next[i:], '\n') + 1 }
	lastLine := strings.LastIndex(next[:len(next)-1], "\n") + 1
	cuts := map[string]int{
		"after the table's replacement": lineEnd(lineEnd(lineEnd(0))),
		"inside a comment":              strings.Index(next, "weir service proxy") + 4,
		"after the fixed objects":       strings.Index(next, "add chain ip weir pick-"),
		"inside a rule":                 strings.Index(next, "add rule ip weir pick-") + 30,
		"after a rule":                  lineEnd(strings.Index(next, "add rule ip weir pick-")),
		"inside an element list":        strings.Index(next, "add element ") + 200,
		"after an element statement":    lineEnd(strings.Index(next, "add element ")),
		"halfway":                       len(next) / 2,
		"before the definition":         lastLine,
		"inside the definition":         lastLine + len("define "+completeVar),
		"before the definition's value": len(next) - 3,
	}
	for name, cut := range cuts {
		if cut <= 0 || cut >= len(next)-1 {
			t.Fatalf("cut %q at %d of %d: bad test", name, cut, len(next))
		}
		if err := apply(next[:cut], after); err == nil {
			t.Errorf("cut %s (byte %d of %d): nft applied a partial script", name, cut, len(next))
		}
		if got := ruleset(); got != before {
			t.Fatalf("cut %s: the table changed:\n%s", name, firstDifference(got, before))
		}
	}

	// The kernel rejects the last statement (a verdict to a chain that does not exist):
	// the whole transaction is refused.
	bad := next[:lastLine] + "add element ip weir service-ips { 10.96.99.99 . tcp . 80 : goto no-such-chain }\n" + next[lastLine:]
	if err := apply(bad, after); err == nil || !strings.Contains(err.Error(), "nft") {
		t.Fatalf("script with a bad last statement: got %v, want nft's error", err)
	}
	if got := ruleset(); got != before {
		t.Fatalf("bad last statement: the table changed:\n%s", firstDifference(got, before))
	}

	// Aborted after everything but the end of the input.
	s, err := runner.start(ctx, after)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(s, next); err != nil {
		t.Fatal(err)
	}
	if err := s.abort(); err == nil {
		t.Fatal("abort returned no error")
	}
	if got := ruleset(); got != before {
		t.Fatalf("aborted stream: the table changed:\n%s", firstDifference(got, before))
	}

	if err := apply(next, after); err != nil {
		t.Fatalf("complete script: %v", err)
	}
	if got := ruleset(); got == before || !strings.Contains(got, "10.96.1.43 . tcp . 80") {
		t.Fatalf("complete script not applied:\n%.2000s", got)
	}
}

// testNamespace makes a network namespace that is deleted when the test ends. It
// skips the test without root or without the ip and nft binaries.
func testNamespace(t *testing.T, role string) string {
	t.Helper()
	h := netnstest.New(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("no nft binary")
	}
	return h.NS(role).Name
}

// firstDifference shows the first differing line of two texts, with two lines of
// context, elided to 300 characters a line.
func firstDifference(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	i := 0
	for i < len(g) && i < len(w) && g[i] == w[i] {
		i++
	}
	show := func(lines []string) string {
		var b strings.Builder
		for j := max(0, i-2); j < min(len(lines), i+3); j++ {
			l := lines[j]
			if len(l) > 300 {
				l = l[:300] + "…"
			}
			fmt.Fprintf(&b, "%5d %s\n", j+1, l)
		}
		return b.String()
	}
	return "--- got\n" + show(g) + "--- want\n" + show(w)
}

var elementsBlock = regexp.MustCompile(`(?s)elements = \{(.*?)\}`)

// normalizeRuleset sorts the elements of each set and map, whose listing order is the
// kernel's hash order, and the sets, maps and chains of each table, which are listed in
// the order they were created.
func normalizeRuleset(s string) string {
	s = elementsBlock.ReplaceAllStringFunc(s, func(block string) string {
		inner := elementsBlock.FindStringSubmatch(block)[1]
		var elems []string
		for _, e := range strings.Split(inner, ",") {
			elems = append(elems, strings.Join(strings.Fields(e), " "))
		}
		slices.Sort(elems)
		var b bytes.Buffer
		b.WriteString("elements = {")
		b.WriteString(strings.Join(elems, ", "))
		b.WriteString("}")
		return b.String()
	})
	var out, blocks, block []string
	for _, l := range strings.Split(s, "\n") {
		switch {
		case block != nil:
			block = append(block, l)
			if l == "\t}" {
				blocks = append(blocks, strings.Join(block, "\n"))
				block = nil
			}
		case strings.HasPrefix(l, "\t") && !strings.HasPrefix(l, "\t\t") && strings.HasSuffix(l, "{"):
			block = []string{l}
		case l == "":
		default:
			slices.Sort(blocks)
			out = append(append(out, blocks...), l)
			blocks = nil
		}
	}
	return strings.Join(append(out, blocks...), "\n")
}

func TestBulkEnv(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{[]string{"PATH=/bin"}, "GLIBC_TUNABLES=glibc.malloc.hugetlb=1"},
		{[]string{"GLIBC_TUNABLES=glibc.malloc.arena_max=2"}, "GLIBC_TUNABLES=glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"},
		{[]string{"GLIBC_TUNABLES=glibc.malloc.hugetlb=0"}, "GLIBC_TUNABLES=glibc.malloc.hugetlb=0"},
		{[]string{"GLIBC_TUNABLES="}, "GLIBC_TUNABLES=glibc.malloc.hugetlb=1"},
	} {
		got := bulkEnv(tc.env)
		var tunables []string
		for _, kv := range got {
			if strings.HasPrefix(kv, "GLIBC_TUNABLES=") {
				tunables = append(tunables, kv)
			}
		}
		if len(tunables) != 1 || tunables[0] != tc.want {
			t.Errorf("bulkEnv(%q) = %q, want %q once", tc.env, got, tc.want)
		}
	}
}

// TestBulkFailureRetriesFull checks that a failed bulk write is reported and that the
// next sync is a full one again (bulk), not a partial one over a table never written.
func TestBulkFailureRetriesFull(t *testing.T) {
	fx := newFixture(t, kernel.Options{IPFamilies: []kernel.Family{kernel.IPv4}})
	runner := &scriptRecorder{fail: 1}
	fx.p.tables[0].bulk = runner
	snap := &model.Snapshot{Services: flowtest.Services()}
	if err := fx.p.Sync(context.Background(), snap); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("first sync: got %v, want the nft error", err)
	}
	if err := fx.p.Sync(context.Background(), snap); err != nil {
		t.Fatal(err)
	}
	if len(runner.scripts) != 1 || !strings.Contains(string(runner.scripts[0]), "delete table ip weir") {
		t.Fatalf("after a failure: %d bulk scripts, want one full sync", len(runner.scripts))
	}
	if fx.v4.runs != 0 {
		t.Fatalf("%d knftables transactions, want none", fx.v4.runs)
	}
	if err := fx.p.Sync(context.Background(), snap); err != nil || len(runner.scripts) != 1 || fx.v4.runs != 0 {
		t.Fatalf("unchanged sync: err %v, %d scripts, %d transactions; want nothing written", err, len(runner.scripts), fx.v4.runs)
	}
}

// TestSharedChainsIsWhatBuildServiceUses checks that the bulk script's pass ahead
// names exactly the shared chains buildService records, for every fixture Service in
// both families.
func TestSharedChainsIsWhatBuildServiceUses(t *testing.T) {
	svcs := append(flowtest.Services(), scaleServices(5, 3, 0)...)
	for _, f := range []ipFamily{familyV4, familyV6} {
		for _, svc := range svcs {
			var got []string
			sharedChains(f, svc, func(name string) { got = append(got, name) })
			want := slices.Clone(buildService(f, svc).shared)
			slices.Sort(got)
			slices.Sort(want)
			if got, want = slices.Compact(got), slices.Compact(want); !slices.Equal(got, want) {
				t.Errorf("%s %s: sharedChains %q, buildService %q", f.nft, svc.Key, got, want)
			}
		}
	}
}

func TestFDDir(t *testing.T) {
	for _, tc := range []struct {
		present []string
		want    string
	}{
		{[]string{"/dev/fd", "/proc/self/fd"}, "/dev/fd"},
		{[]string{"/proc/self/fd"}, "/proc/self/fd"},
		{nil, ""},
	} {
		got, err := fdDir(func(name string) bool { return slices.Contains(tc.present, name) })
		if got != tc.want || (err != nil) != (tc.want == "") {
			t.Errorf("present %q: got %q, %v; want %q", tc.present, got, err, tc.want)
		}
	}
}
