package iptables

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// Runner runs the iptables tools for one family. Tests use a fake.
type Runner interface {
	// Restore feeds data to iptables-restore --noflush.
	Restore(ctx context.Context, data []byte) error
	// Save returns iptables-save output for one table.
	Save(ctx context.Context, table string) ([]byte, error)
	// Run runs iptables with args (after -w).
	Run(ctx context.Context, args ...string) error
}

// execRunner runs the real binaries.
type execRunner struct {
	iptables, restore, save string
}

func newExecRunner(f ipFamily) (*execRunner, error) {
	prefix := "iptables"
	if f.is6 {
		prefix = "ip6tables"
	}
	r := &execRunner{}
	for _, b := range []struct {
		dst  *string
		name string
	}{{&r.iptables, prefix}, {&r.restore, prefix + "-restore"}, {&r.save, prefix + "-save"}} {
		path, err := exec.LookPath(b.name)
		if err != nil {
			return nil, fmt.Errorf("iptables mode unavailable: %s not found: %w", b.name, err)
		}
		*b.dst = path
	}
	return r, nil
}

func (r *execRunner) Restore(ctx context.Context, data []byte) error {
	cmd := exec.CommandContext(ctx, r.restore, "-w", "--noflush")
	cmd.Stdin = bytes.NewReader(data)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", r.restore, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (r *execRunner) Save(ctx context.Context, table string) ([]byte, error) {
	out, err := exec.CommandContext(ctx, r.save, "-t", table).Output()
	if err != nil {
		return nil, fmt.Errorf("%s -t %s: %w", r.save, table, err)
	}
	return out, nil
}

func (r *execRunner) Run(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, r.iptables, append([]string{"-w"}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", r.iptables, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// checkSupport asks iptables-restore to test (not apply) a ruleset with every match
// and target weir uses, so that a missing extension is named at start-up.
func checkSupport(ctx context.Context, f ipFamily) error {
	r, err := newExecRunner(f)
	if err != nil {
		return err
	}
	addr := "10.0.0.1"
	if f.is6 {
		addr = "[fd00::1]"
	}
	checks := []struct{ what, table, rule string }{
		{"nat table and DNAT", "nat", "-p tcp -m tcp -j DNAT --to-destination " + addr + ":80"},
		{"statistic match (xt_statistic)", "nat", "-m statistic --mode random --probability 0.5 -j RETURN"},
		{"recent match (xt_recent)", "nat", "-m recent --name WEIR-PROBE --rcheck --seconds 10 --reap --rsource -j RETURN"},
		{"addrtype match (xt_addrtype)", "nat", "-m addrtype --dst-type LOCAL -j RETURN"},
		{"MARK target (xt_mark)", "nat", "-j MARK --or-mark 0x4000"},
		{"MASQUERADE target", "nat", "-j MASQUERADE --random-fully"},
		{"conntrack match (xt_conntrack)", "filter", "-m conntrack --ctstate NEW -j RETURN"},
		{"REJECT target", "filter", "-j REJECT"},
	}
	test := func(data string) error {
		cmd := exec.CommandContext(ctx, r.restore, "-w", "--noflush", "--test")
		cmd.Stdin = strings.NewReader(data)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	one := func(c struct{ what, table, rule string }) string {
		return fmt.Sprintf("*%s\n:WEIR-PROBE - [0:0]\n-A WEIR-PROBE %s\nCOMMIT\n", c.table, c.rule)
	}
	// Everything at once; one by one only to name what is missing.
	var all strings.Builder
	for _, table := range []string{"nat", "filter"} {
		fmt.Fprintf(&all, "*%s\n:WEIR-PROBE - [0:0]\n", table)
		for _, c := range checks {
			if c.table == table {
				fmt.Fprintf(&all, "-A WEIR-PROBE %s\n", c.rule)
			}
		}
		all.WriteString("COMMIT\n")
	}
	if test(all.String()) == nil {
		return nil
	}
	for _, c := range checks {
		if err := test(one(c)); err != nil {
			return fmt.Errorf("iptables mode unavailable: %s lacks %s: %w", r.restore, c.what, err)
		}
	}
	if err := test(all.String()); err != nil {
		return fmt.Errorf("iptables mode unavailable: %s: %w", r.restore, err)
	}
	return nil
}
