package main

import (
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"weir.dev/weir/examples"
	"weir.dev/weir/internal/echo"
)

// demoBackends are the echo backends the quickstart manifests point at.
var demoBackends = []struct{ name, addr string }{
	{"web-a", "127.0.0.11"},
	{"web-b", "127.0.0.12"},
	{"web-c", "127.0.0.13"},
}

func newDemoCommand() *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Start three echo backends and run weir on the quickstart manifests",
		Long: `Start three echo backends on loopback (HTTP on :9000 and UDP on :9100 of
127.0.0.11, .12 and .13) and run weir on examples/quickstart, with cluster DNS on
127.0.0.1:5353, then print what to try. Every flag of weir run applies.
Inside a weir checkout it runs the checkout's examples/quickstart; elsewhere it writes
the manifests built into weir to a temporary folder. Edit those files while it runs:
weir reloads them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := f.log.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if len(f.configPaths) == 0 {
				dir, err := quickstartDir()
				if err != nil {
					return err
				}
				f.configPaths = []string{dir}
			}
			if !cmd.Flags().Changed("dns-addr") {
				f.dnsAddr = "127.0.0.1:5353"
			}
			g, ctx := errgroup.WithContext(cmd.Context())
			for _, b := range demoBackends {
				ln, err := net.Listen("tcp", b.addr+":9000")
				if err != nil {
					return fmt.Errorf("demo backend %s: %w", b.name, err)
				}
				pc, err := net.ListenPacket("udp", b.addr+":9100")
				if err != nil {
					ln.Close()
					return fmt.Errorf("demo backend %s: %w", b.name, err)
				}
				g.Go(func() error { return echo.ServeHTTP(ctx, ln, b.name) })
				g.Go(func() error { return echo.ServeUDP(ctx, pc, b.name) })
			}
			out := cmd.OutOrStdout()
			g.Go(func() error {
				return run(ctx, f, logger, func(adminAddr string) {
					fmt.Fprintf(out, `
weir is running on %[1]s. Try:

  L4, Service default/web (round robin over web-a, web-b, web-c; HTTP health checks):
    for i in 1 2 3 4 5 6; do curl -s http://127.0.0.10:8080/ | grep '"name"'; done
  L4 over UDP, Service default/udp-echo:
    echo hi | nc -u -w1 127.0.0.20 5300
  L7, Gateway default/demo with HTTPRoute default/web (90/10 canary, or a header):
    for i in $(seq 20); do curl -s http://127.0.0.1:8000/ | grep '"name"'; done | sort | uniq -c
    curl -s -H 'x-canary: always' http://127.0.0.1:8000/ | grep '"name"'
  Cluster DNS:
    dig @127.0.0.1 -p 5353 +short web.default.svc.cluster.local
    dig @127.0.0.1 -p 5353 +short SRV _http._tcp.web.default.svc.cluster.local
  Admin: http://%[2]s/ (dashboard), /api/snapshot, /metrics

Edit the files in %[1]s while this runs: weir reloads them. Ctrl-C stops.
`, f.configPaths[0], adminAddr)
				})
			})
			return g.Wait()
		},
	}
	f.register(cmd)
	groupFlags(cmd)
	return cmd
}

// quickstartDir is examples/quickstart in the checkout the working directory is in (so
// that edits to it reload), or else a fresh folder holding the manifests built into
// weir, so that `weir demo` works from any directory.
func quickstartDir() (string, error) {
	if dir, ok := findQuickstart(); ok {
		return dir, nil
	}
	dir, err := os.MkdirTemp("", "weir-demo-")
	if err != nil {
		return "", fmt.Errorf("demo: %w", err)
	}
	entries, err := fs.ReadDir(examples.Quickstart, "quickstart")
	if err != nil {
		return "", fmt.Errorf("demo: %w", err)
	}
	for _, e := range entries {
		b, err := examples.Quickstart.ReadFile("quickstart/" + e.Name())
		if err != nil {
			return "", fmt.Errorf("demo: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
			return "", fmt.Errorf("demo: %w", err)
		}
	}
	return dir, nil
}

// findQuickstart finds examples/quickstart from the working directory or its parents.
func findQuickstart() (string, bool) {
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		p := filepath.Join(dir, "examples", "quickstart")
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			return p, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}
