package manifest

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad feeds arbitrary bytes to Load: it must return objects or errors, never
// panic, and every error must name the file.
func FuzzLoad(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/valid/*.*")
	for _, s := range seeds {
		if data, err := os.ReadFile(s); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte("apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ServiceList\n  items: [{metadata: {name: a}, spec: {ports: [{port: x}]}}]\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}], ports: []}\n"))
	f.Add([]byte(`{"apiVersion":"v1","kind":"Service","metadata":{"name":"web"},"spec":{"ports":[{"port":-5,"nodePort":1e400}]}}`))
	dir := f.TempDir()
	path := filepath.Join(dir, "fuzz.yaml")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		objs, rep, err := Load(path)
		if rep == nil {
			t.Fatal("no report")
		}
		if err == nil && objs == nil {
			t.Fatal("no objects and no error")
		}
		if errs, ok := err.(Errors); ok {
			for _, e := range errs {
				if e.File != path {
					t.Fatalf("error without the file: %v", e)
				}
			}
		}
	})
}
