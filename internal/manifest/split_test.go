package manifest

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
)

func TestSplitChunks(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"a: 1\n", []string{"a: 1\n"}},
		{"# c\n---\na: 1\n---\nb: 2\n", []string{"# c\n---\na: 1\n", "---\nb: 2\n"}},
		{"%YAML 1.2\n---\na: 1\n", []string{"%YAML 1.2\n---\na: 1\n"}},
		{"a: 1\n---\n---\nb: 2", []string{"a: 1\n", "---\n", "---\nb: 2"}},
		{"a: |\n  ---x\n----\n--- # c\nb: 2\n", []string{"a: |\n  ---x\n----\n", "--- # c\nb: 2\n"}},
		{"a: 1\r\n---\r\nb: 2\r\n", []string{"a: 1\r\n", "---\r\nb: 2\r\n"}},
	}
	for _, tt := range tests {
		var got []string
		for _, c := range splitChunks([]byte(tt.in)) {
			got = append(got, tt.in[c.start:c.end])
		}
		if !equal(got, tt.want) {
			t.Errorf("splitChunks(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestSniff(t *testing.T) {
	tests := []struct {
		in             string
		apiVersion, kd string
		ok             bool
	}{
		{"apiVersion: v1\nkind: ConfigMap\ndata:\n  a: b\n", "v1", "ConfigMap", true},
		{"---\n# c\nkind: 'ConfigMap' # x\nmetadata: {name: a}\napiVersion: \"v1\"\n", "v1", "ConfigMap", true},
		{`{"apiVersion": "v1", "data": {"a": [1, {"b": "kind"}]}, "kind": "ConfigMap"}`, "v1", "ConfigMap", true},
		{"apiVersion: v1\nkind: ConfigMap\nkind: Secret\n", "", "", false},              // duplicate: the parser reports it
		{"<<: *base\napiVersion: v1\nkind: ConfigMap\n", "", "", false},                 // merge key
		{"apiVersion: v1\nkind: &k ConfigMap\n", "", "", false},                         // anchor
		{"apiVersion: v1\nkind:\n  ConfigMap\n", "", "", false},                         // value on the next line
		{"apiVersion: v1\n\"kind\": ConfigMap\n", "", "", false},                        // quoted key
		{"--- {apiVersion: v1, kind: ConfigMap}\n", "", "", false},                      // flow mapping on the marker line
		{"- apiVersion: v1\n  kind: ConfigMap\n", "", "", false},                        // a list
		{"apiVersion: v1\nkind: ConfigMap\n...\nkind: Secret\n", "", "", false},         // two documents
		{`{"apiVersion": "v1", "kind": "ConfigMap"} {"kind": "Secret"}`, "", "", false}, // two JSON values
	}
	for _, tt := range tests {
		av, k, ok := sniff([]byte(tt.in))
		if av != tt.apiVersion && tt.ok || k != tt.kd && tt.ok || ok != tt.ok {
			t.Errorf("sniff(%q) = %q, %q, %v; want %q, %q, %v", tt.in, av, k, ok, tt.apiVersion, tt.kd, tt.ok)
		}
	}
}

func TestFileSizeLimit(t *testing.T) {
	inDir(t, map[string]string{
		"big.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {a: " + strings.Repeat("x", 2048) + "}\n",
		"web.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {clusterIP: 127.0.0.10, ports: [{port: 80}]}\n",
	})
	_, _, err := LoadWith(Options{MaxFileBytes: 1024}, ".")
	want := "big.yaml: 2111 bytes is more than a manifest file may hold (1 KiB); split it into several files or raise --max-manifest-size"
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
}

// A document of a kind weir skips is counted from its apiVersion and kind lines and
// not parsed: loading an 8 MiB ConfigMap allocates about its size (the file's bytes),
// not the node tree that parsing it would build (more than ten times that).
func TestSkippedKindNotParsed(t *testing.T) {
	var b strings.Builder
	b.WriteString("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {clusterIP: 127.0.0.10, ports: [{port: 80}]}\n---\n")
	b.WriteString("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: big}\ndata:\n")
	for i := 0; b.Len() < 8<<20; i++ {
		fmt.Fprintf(&b, "  key-%d: value %d\n", i, i)
	}
	b.WriteString("---\napiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec: {clusterIP: 127.0.0.11, ports: [{port: 0}]}\n")
	size := b.Len()
	inDir(t, map[string]string{"all.yaml": b.String()})
	b.Reset()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, rep, err := Load(".")
	runtime.ReadMemStats(&after)
	// The error after the big document carries its own line.
	if err == nil || !strings.Contains(err.Error(), "spec.ports[0].port: 0 is not in 1..65535") || !strings.HasPrefix(err.Error(), "all.yaml:") {
		t.Fatalf("err = %v", err)
	}
	if line := strings.SplitN(err.Error(), ":", 3)[1]; line == "1" || line == "4" {
		t.Errorf("error at line %s, want the last document's", line)
	}
	if rep.Skipped["ConfigMap"] != 1 {
		t.Errorf("Skipped = %v", rep.Skipped)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; !raceEnabled && alloc > uint64(3*size) {
		t.Errorf("Load allocated %d MiB for a %d MiB file", alloc>>20, size>>20)
	}
}

// TestSkippedKindRSS measures, when WEIR_RSS=1, the peak and the lasting RSS of loading
// a file just under the size limit holding one ConfigMap (a kind weir skips).
func TestSkippedKindRSS(t *testing.T) {
	if os.Getenv("WEIR_RSS") == "" {
		t.Skip("set WEIR_RSS=1 to measure")
	}
	var b strings.Builder
	b.WriteString("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: big}\ndata:\n")
	for i := 0; b.Len() < DefaultMaxFileBytes-100; i++ {
		fmt.Fprintf(&b, "  key-%d: value %d\n", i, i)
	}
	inDir(t, map[string]string{"big.yaml": b.String()})
	b.Reset()
	runtime.GC()
	t.Logf("before: %s", rss(t))
	if _, _, err := Load("."); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	t.Logf("after one load of a %d MiB skipped file: %s", DefaultMaxFileBytes>>20, rss(t))
}

func rss(t *testing.T) string {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip(err)
	}
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "VmRSS") || strings.HasPrefix(l, "VmHWM") {
			out = append(out, strings.Join(strings.Fields(l), " "))
		}
	}
	return strings.Join(out, ", ")
}
