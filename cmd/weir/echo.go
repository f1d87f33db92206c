package main

import (
	"fmt"
	"net"

	"github.com/spf13/cobra"

	"weir.dev/weir/internal/echo"
)

func newEchoCommand() *cobra.Command {
	var listen, name string
	var tcp, udp, greet bool
	cmd := &cobra.Command{
		Use:   "echo",
		Short: "Run an echo backend (HTTP by default; --tcp or --udp for raw echo)",
		Long: `Run the echo backend that weir's demo, tests and benchmarks use.

HTTP (the default) answers every request with JSON describing it: the backend's name,
method, host, path, headers and body size. /status/<code> answers with that status and
/delay/<duration> waits first. --tcp echoes bytes back (--greet sends the name first);
--udp answers each datagram with "<name> <datagram>".`,
		Example: `  weir echo --listen 127.0.0.1:9001 --name a
  weir echo --listen 127.0.0.1:9001 --name a --tcp --greet
  weir echo --listen 127.0.0.1:9001 --name a --udp`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if tcp && udp {
				return fmt.Errorf("--tcp and --udp exclude each other")
			}
			if name == "" {
				name = listen
			}
			ctx := cmd.Context()
			if udp {
				pc, err := net.ListenPacket("udp", listen)
				if err != nil {
					return fmt.Errorf("listen udp %s: %w", listen, err)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "udp echo %q on %s\n", name, pc.LocalAddr())
				return echo.ServeUDP(ctx, pc, name)
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("listen tcp %s: %w", listen, err)
			}
			if tcp {
				fmt.Fprintf(cmd.ErrOrStderr(), "tcp echo %q on %s\n", name, ln.Addr())
				return echo.ServeTCP(ctx, ln, name, greet)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "http echo %q on http://%s\n", name, ln.Addr())
			return echo.ServeHTTP(ctx, ln, name)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:9001", "address to listen on")
	cmd.Flags().StringVar(&name, "name", "", "backend name reported in answers (default: the listen address)")
	cmd.Flags().BoolVar(&tcp, "tcp", false, "raw TCP echo instead of HTTP")
	cmd.Flags().BoolVar(&udp, "udp", false, "raw UDP echo instead of HTTP")
	cmd.Flags().BoolVar(&greet, "greet", false, "with --tcp: send the backend name and a newline on connect")
	return cmd
}
