package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is weir's release; builds from a checkout say "dev".
const version = "0.1.0-dev"

// buildVCS is the commit weir was built from, its date and whether the work tree had
// changes, as the go command records them (debug.ReadBuildInfo's vcs settings; empty
// for `go run` and builds outside a checkout).
func buildVCS() (commit, date string, modified bool) {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "", "", false
	}
	return vcsOf(bi.Settings)
}

func vcsOf(settings []debug.BuildSetting) (commit, date string, modified bool) {
	for _, s := range settings {
		switch s.Key {
		case "vcs.revision":
			commit = s.Value
		case "vcs.time":
			date = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	return commit, date, modified
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print weir's version, commit, build date and library versions",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			out := cmd.OutOrStdout()
			fmt.Fprintln(out, versionLine())
			fmt.Fprintf(out, "  %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
			commit, _, _ := buildVCS()
			if commit == "" {
				fmt.Fprintln(out, "  commit unknown: built without version control information (go run, or outside a checkout)")
			}
			if bi, ok := debug.ReadBuildInfo(); ok {
				for _, dep := range bi.Deps {
					switch dep.Path {
					case "k8s.io/api", "sigs.k8s.io/gateway-api", "sigs.k8s.io/knftables", "github.com/miekg/dns":
						fmt.Fprintf(out, "  %s %s\n", dep.Path, dep.Version)
					}
				}
			}
		},
	}
}
