package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidateCommand(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string
		flags   []string
		wantErr bool
		wantOut []string
	}{
		{
			name:    "quickstart is valid",
			files:   nil, // uses examples/quickstart
			wantOut: []string{"ok: 4 Services, 4 EndpointSlices, 1 Gateways, 1 HTTPRoutes"},
		},
		{
			name: "bad port names file, line, object and field",
			files: map[string]string{
				"web.yaml": fmt.Sprintf(serviceYAML, "127.0.1.10", 70000),
			},
			wantErr: true,
			wantOut: []string{"web.yaml:7: Service default/web: spec.ports[0].port: 70000 is not in 1..65535"},
		},
		{
			name: "unknown kinds are skipped with a summary",
			files: map[string]string{
				"app.yaml": fmt.Sprintf(serviceYAML, "127.0.1.10", 80) + "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {}\n",
			},
			wantOut: []string{"ok: 1 Services", "Deployment"},
		},
		{
			name:    "--max-manifest-size bounds a file",
			files:   map[string]string{"web.yaml": fmt.Sprintf(serviceYAML, "127.0.1.10", 80)},
			flags:   []string{"--max-manifest-size", "100"},
			wantErr: true,
			wantOut: []string{"web.yaml: ", "bytes is more than a manifest file may hold (100 bytes); split it into several files or raise --max-manifest-size"},
		},
		{
			name:    "--max-manifest-size takes quantities",
			files:   map[string]string{"web.yaml": fmt.Sprintf(serviceYAML, "127.0.1.10", 80)},
			flags:   []string{"--max-manifest-size", "1Mi"},
			wantOut: []string{"ok: 1 Services"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir, _ := findQuickstart()
			if tc.files != nil {
				dir = t.TempDir()
				for name, content := range tc.files {
					if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
			cmd := newRootCommand()
			var out bytes.Buffer
			cmd.SetOut(&out)
			cmd.SetErr(&out)
			cmd.SetArgs(append(append([]string{"validate"}, tc.flags...), dir))
			err := cmd.Execute()
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v; output:\n%s", err, tc.wantErr, out.String())
			}
			for _, w := range tc.wantOut {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}
