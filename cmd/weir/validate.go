package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"weir.dev/weir/internal/manifest"
)

func newValidateCommand() *cobra.Command {
	var maxSize string
	cmd := &cobra.Command{
		Use:   "validate PATH...",
		Short: "Check manifests as weir run would; exit 1 with precise errors",
		Long: `Decode and validate manifest files or folders exactly as weir run does, and print
every error with its file, line, object and field, for example

  web.yaml:14: Service default/web: spec.ports[0].port: 70000 is not in 1..65535

Exit status 0 means weir run would accept the configuration.`,
		Example: `  weir validate ./manifests/
  weir validate service.yaml endpoints.yaml`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			maxBytes, err := parseMaxManifestSize(maxSize)
			if err != nil {
				return err
			}
			objs, report, err := manifest.LoadWith(manifest.Options{MaxFileBytes: maxBytes}, args...)
			if err != nil {
				fmt.Fprintln(cmd.OutOrStdout(), err)
				return fmt.Errorf("configuration is invalid")
			}
			fmt.Fprintf(cmd.OutOrStdout(), "ok: %d Services, %d EndpointSlices, %d Gateways, %d HTTPRoutes, %d GRPCRoutes, %d Ingresses, %d TrafficPolicies\n",
				len(objs.Services), len(objs.EndpointSlices), len(objs.Gateways), len(objs.HTTPRoutes),
				len(objs.GRPCRoutes), len(objs.Ingresses), len(objs.Policies))
			if s := report.Summary(); s != "" {
				fmt.Fprintln(cmd.OutOrStdout(), s)
			}
			for _, w := range report.Warnings {
				fmt.Fprintln(cmd.OutOrStdout(), "warning:", w.Error())
			}
			return nil
		},
	}
	registerMaxManifestSize(cmd.Flags(), &maxSize)
	return cmd
}
