package nftables

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"

	"weir.dev/weir/internal/model"
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

// scriptRecorder is a bulkRunner that keeps the scripts.
type scriptRecorder struct{ scripts [][]byte }

func (r *scriptRecorder) runScript(_ context.Context, script []byte) error {
	r.scripts = append(r.scripts, slices.Clone(script))
	return nil
}

var bulkElementLine = regexp.MustCompile(`^add element (\S+ \S+ \S+) \{ (.*) \}$`)

// expandElements rewrites every multi-element statement as one statement per element,
// as knftables writes them.
func expandElements(script string) []string {
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(script), "\n") {
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

// bulkAndKnftablesText syncs svcs once through the bulk path and once through
// knftables, and returns both texts per family.
func bulkAndKnftablesText(t *testing.T, svcs []*model.Service) (bulk, plain map[Family]string) {
	t.Helper()
	bulk, plain = map[Family]string{}, map[Family]string{}
	fams := map[Family]knftables.Family{IPv4: knftables.IPv4Family, IPv6: knftables.IPv6Family}
	recs := map[Family]*scriptRecorder{}
	texts := map[Family]*textNFT{}
	bulkIfs, plainIfs := map[Family]knftables.Interface{}, map[Family]knftables.Interface{}
	for fam, kf := range fams {
		recs[fam] = &scriptRecorder{}
		texts[fam] = &textNFT{Fake: knftables.NewFake(kf, tableName)}
		bulkIfs[fam] = knftables.NewFake(kf, tableName)
		plainIfs[fam] = texts[fam]
	}
	withBulk, err := New(Options{NFTables: bulkIfs, DisableHealthCheck: true, Conntrack: &recordingConntrack{}})
	if err != nil {
		t.Fatal(err)
	}
	for i, tb := range withBulk.tables {
		tb.bulk = recs[withBulk.opts.IPFamilies[i]]
	}
	plainP, err := New(Options{NFTables: plainIfs, DisableHealthCheck: true, Conntrack: &recordingConntrack{}})
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
		bulk[fam], plain[fam] = string(recs[fam].scripts[0]), texts[fam].texts[0]
	}
	return bulk, plain
}

// TestBulkScriptIsTheKnftablesTransaction checks that the first sync's bulk script,
// with its multi-element statements split one per element, is the transaction
// knftables would have written (statements in another order only for elements).
func TestBulkScriptIsTheKnftablesTransaction(t *testing.T) {
	for _, tc := range []struct {
		name string
		svcs []*model.Service
	}{
		{"fixture Services", testServices()},
		{"300 Services", scaleServices(300, 10, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bulk, plain := bulkAndKnftablesText(t, tc.svcs)
			for fam := range bulk {
				got, want := expandElements(bulk[fam]), strings.Split(strings.TrimSpace(plain[fam]), "\n")
				// Everything but the elements is in the same order.
				notElement := func(l string) bool { return !strings.HasPrefix(l, "add element ") }
				if g, w := slices.DeleteFunc(slices.Clone(got), func(l string) bool { return !notElement(l) }), slices.DeleteFunc(slices.Clone(want), func(l string) bool { return !notElement(l) }); !slices.Equal(g, w) {
					t.Fatalf("%s: bulk script's tables, chains and rules differ:\n%s\n--- knftables\n%s", fam, strings.Join(g, "\n"), strings.Join(w, "\n"))
				}
				slices.Sort(got)
				slices.Sort(want)
				if !slices.Equal(got, want) {
					t.Fatalf("%s: bulk script differs from the knftables transaction", fam)
				}
				statements := strings.Count(bulk[fam], "add element ")
				elements := strings.Count(plain[fam], "add element ")
				if elements > bulkChunk && statements > elements/bulkChunk+20 {
					t.Errorf("%s: %d element statements for %d elements: not batched", fam, statements, elements)
				}
			}
		})
	}
}

// TestBulkScriptLoadsLikeKnftables feeds the bulk script and the knftables
// transaction to the real nft in two throw-away network namespaces and compares the
// resulting rulesets. Root only.
func TestBulkScriptLoadsLikeKnftables(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	for _, bin := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("no %s binary", bin)
		}
	}
	svcs := append(testServices(), scaleServices(300, 10, 0)...)
	bulk, plain := bulkAndKnftablesText(t, svcs)
	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	ns := func(role string) string {
		name := "wtb" + hex.EncodeToString(suffix[:]) + "-" + role
		if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v: %s", name, err, out)
		}
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "delete", name).Run() })
		return name
	}
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
	got := load(ns("bulk"), bulk[IPv4], bulk[IPv6])
	want := load(ns("knft"), plain[IPv4], plain[IPv6])
	if got != want {
		t.Fatalf("rulesets differ\n--- bulk\n%.4000s\n--- knftables\n%.4000s", got, want)
	}
	if n := strings.Count(got, "goto pick-"); n < 300 {
		t.Fatalf("ruleset has %d dispatch elements, want ≥ 300", n)
	}
}

var elementsBlock = regexp.MustCompile(`(?s)elements = \{(.*?)\}`)

// normalizeRuleset sorts the elements of each set and map, whose listing order is the
// kernel's hash order.
func normalizeRuleset(s string) string {
	return elementsBlock.ReplaceAllStringFunc(s, func(block string) string {
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

// failingScripts fails its first n scripts, then records.
type failingScripts struct {
	n int
	scriptRecorder
}

func (f *failingScripts) runScript(ctx context.Context, script []byte) error {
	if f.n > 0 {
		f.n--
		return errors.New("nft: boom")
	}
	return f.scriptRecorder.runScript(ctx, script)
}

// TestBulkFailureRetriesFull checks that a failed bulk write is reported and that the
// next sync is a full one again (bulk), not a partial one over a table never written.
func TestBulkFailureRetriesFull(t *testing.T) {
	fx := newFixture(t, Options{IPFamilies: []Family{IPv4}})
	runner := &failingScripts{n: 1}
	fx.p.tables[0].bulk = runner
	snap := &model.Snapshot{Services: testServices()}
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
