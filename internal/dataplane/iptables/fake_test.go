package iptables

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"weir.dev/weir/internal/dataplane/flowtest"
	"weir.dev/weir/internal/dataplane/kernel"
)

// fakeRunner keeps iptables tables in memory and applies iptables-restore --noflush
// input to them atomically, checking what the real tool checks: jumps to chains that
// exist, -X only of empty and unreferenced chains.
type fakeRunner struct {
	tables   map[string]map[string][]string // table → chain → rules (args)
	restores int
	lines    int // rule lines written in total
	last     string
}

var builtin = map[string][]string{
	"filter": {"INPUT", "FORWARD", "OUTPUT"},
	"nat":    {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
}

var targets = []string{"ACCEPT", "DROP", "REJECT", "RETURN", "DNAT", "MARK", "MASQUERADE"}

func newFakeRunner() *fakeRunner {
	r := &fakeRunner{tables: map[string]map[string][]string{}}
	for t, chains := range builtin {
		r.tables[t] = map[string][]string{}
		for _, c := range chains {
			r.tables[t][c] = nil
		}
	}
	return r
}

func isBuiltin(table, chain string) bool { return slices.Contains(builtin[table], chain) }

func (r *fakeRunner) clone() map[string]map[string][]string {
	out := map[string]map[string][]string{}
	for t, chains := range r.tables {
		out[t] = map[string][]string{}
		for c, rules := range chains {
			out[t][c] = slices.Clone(rules)
		}
	}
	return out
}

func jumpTarget(rule string) string {
	f := strings.Fields(rule)
	for i := range f {
		if f[i] == "-j" && i+1 < len(f) {
			return f[i+1]
		}
	}
	return ""
}

func (r *fakeRunner) Restore(_ context.Context, data []byte) error {
	tables := r.clone()
	var cur map[string][]string
	var table string
	lines := 0
	for n, line := range strings.Split(string(data), "\n") {
		fail := func(format string, a ...any) error {
			return fmt.Errorf("line %d %q: %s", n+1, line, fmt.Sprintf(format, a...))
		}
		switch {
		case line == "":
		case strings.HasPrefix(line, "*"):
			table = line[1:]
			cur = tables[table]
			if cur == nil {
				return fail("unknown table")
			}
		case line == "COMMIT":
			for c, rules := range cur {
				for _, rule := range rules {
					if t := jumpTarget(rule); t != "" && !slices.Contains(targets, t) && cur[t] == nil && !isBuiltin(table, t) {
						if _, ok := cur[t]; !ok {
							return fail("chain %s jumps to missing %s", c, t)
						}
					}
				}
			}
			cur = nil
		case strings.HasPrefix(line, ":"):
			name := strings.Fields(line[1:])[0]
			cur[name] = []string{} // create or flush
		case strings.HasPrefix(line, "-A "):
			f := strings.SplitN(line, " ", 3)
			if _, ok := cur[f[1]]; !ok {
				return fail("no chain %s", f[1])
			}
			cur[f[1]] = append(cur[f[1]], f[2])
			lines++
		case strings.HasPrefix(line, "-X "):
			name := strings.TrimPrefix(line, "-X ")
			if len(cur[name]) > 0 {
				return fail("chain %s not empty", name)
			}
			for c, rules := range cur {
				for _, rule := range rules {
					if jumpTarget(rule) == name {
						return fail("chain %s still referenced from %s", name, c)
					}
				}
			}
			delete(cur, name)
		default:
			return fail("fake cannot parse")
		}
	}
	r.tables = tables
	r.restores++
	r.lines += lines
	r.last = string(data)
	return nil
}

func (r *fakeRunner) Save(_ context.Context, table string) ([]byte, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "*%s\n", table)
	chains := make([]string, 0, len(r.tables[table]))
	for c := range r.tables[table] {
		chains = append(chains, c)
	}
	sort.Strings(chains)
	for _, c := range chains {
		fmt.Fprintf(&b, ":%s - [0:0]\n", c)
	}
	for _, c := range chains {
		for _, rule := range r.tables[table][c] {
			fmt.Fprintf(&b, "-A %s %s\n", c, rule)
		}
	}
	b.WriteString("COMMIT\n")
	return []byte(b.String()), nil
}

func (r *fakeRunner) Run(_ context.Context, args ...string) error {
	if len(args) < 4 || args[0] != "-t" {
		return fmt.Errorf("fake cannot run %v", args)
	}
	table, op, chain, rule := args[1], args[2], args[3], strings.Join(args[4:], " ")
	rules := r.tables[table][chain]
	i := slices.Index(rules, rule)
	switch op {
	case "-C":
		if i < 0 {
			return fmt.Errorf("no such rule")
		}
	case "-I":
		r.tables[table][chain] = append([]string{rule}, rules...)
	case "-D":
		if i < 0 {
			return fmt.Errorf("no such rule")
		}
		r.tables[table][chain] = slices.Delete(rules, i, i+1)
	default:
		return fmt.Errorf("fake cannot run %v", args)
	}
	return nil
}

// tracer follows the first packet of a connection through the fake's tables. It
// understands the matches and targets weir writes and fails on anything else.
type tracer struct {
	t       *testing.T
	r       *fakeRunner
	nodeIPs []string
	recent  map[string]string // recent list name → a source address in it
	pkt     flowtest.Packet

	mark      uint32
	endpoints map[string]float64
	mass      float64
}

const (
	contNext = iota
	contReturn
	contDrop
	contReject
	contDNAT
	contAccept
)

func (tr *tracer) isLocal(ip string) bool { return slices.Contains(tr.nodeIPs, ip) }

func inPrefix(p, ip string) bool {
	if !strings.Contains(p, "/") {
		return p == ip
	}
	return netip.MustParsePrefix(p).Contains(netip.MustParseAddr(ip))
}

// chain runs a chain; the result is a terminal verdict or contNext.
func (tr *tracer) chain(table, name string) int {
	rules, ok := tr.r.tables[table][name]
	if !ok {
		tr.t.Fatalf("no chain %s/%s", table, name)
	}
	for _, rule := range rules {
		switch r := tr.rule(table, rule); r {
		case contNext:
		case contReturn:
			return contNext
		default:
			return r
		}
		if tr.mass < 1e-9 {
			return contDNAT
		}
	}
	return contNext
}

func (tr *tracer) rule(table, rule string) int {
	p := tr.pkt
	f := strings.Fields(rule)
	prob := 1.0
	for i := 0; i < len(f); i++ {
		neg := false
		if f[i] == "!" {
			neg = true
			i++
		}
		match := true
		switch f[i] {
		case "-d":
			i++
			match = inPrefix(f[i], p.Dst)
		case "-s":
			i++
			match = inPrefix(f[i], p.Src)
		case "-i":
			i++
			match = p.Iif == f[i]
			if name, ok := strings.CutSuffix(f[i], "+"); ok {
				match = p.Iif != "" && strings.HasPrefix(p.Iif, name)
			}
		case "-p":
			i++
			match = f[i] == p.Proto
		case "-m":
			i++
			switch f[i] {
			case "tcp", "udp", "sctp":
				if f[i+1] == "--dport" {
					match = f[i+2] == strconv.Itoa(p.Port)
					i += 2
				}
			case "addrtype":
				addr := p.Dst
				if f[i+1] == "--src-type" {
					addr = p.Src
				}
				match = tr.isLocal(addr)
				i += 2
			case "conntrack":
				// Every traced packet is NEW, and DNAT once the nat table DNATed it.
				j := i + 1
				ctNeg := f[j] == "!"
				if ctNeg {
					j++
				}
				has := false
				for _, st := range strings.Split(f[j+1], ",") {
					has = has || st == "NEW" || (st == "DNAT" && len(tr.endpoints) > 0)
				}
				match = has != ctNeg
				i = j + 1
			case "comment":
				i += 2
				for i+1 < len(f) && !strings.HasPrefix(f[i+1], "-") {
					i++
				}
			case "statistic":
				switch f[i+2] {
				case "random":
					v, _ := strconv.ParseFloat(f[i+4], 64)
					prob = v
					i += 4
				case "nth":
					every, _ := strconv.ParseFloat(f[i+4], 64)
					prob = 1 / every
					i += 6
				}
			case "recent":
				name := f[i+2]
				switch f[i+3] {
				case "--set":
					i += 4
				case "--rcheck":
					match = tr.recent[name] == p.Src
					i += 7
				default:
					tr.t.Fatalf("recent: %q", rule)
				}
			case "mark":
				j := i + 1
				if f[j] == "!" {
					neg = !neg
					j++
				}
				parts := strings.Split(f[j+1], "/")
				v, _ := strconv.ParseUint(parts[0], 0, 32)
				m, _ := strconv.ParseUint(parts[1], 0, 32)
				match = tr.mark&uint32(m) == uint32(v)
				i = j + 1
			default:
				tr.t.Fatalf("tracer does not know match %q in %q", f[i], rule)
			}
		case "-j":
			target := f[i+1]
			switch target {
			case "DNAT":
				tr.endpoints[f[i+3]] += tr.mass * prob
				tr.mass -= tr.mass * prob
				if tr.mass < 1e-9 {
					return contDNAT
				}
				return contNext
			case "MARK":
				v, _ := strconv.ParseUint(f[i+3], 0, 32)
				if f[i+2] == "--or-mark" {
					tr.mark |= uint32(v)
				} else {
					tr.mark ^= uint32(v)
				}
				return contNext
			case "MASQUERADE":
				return contNext
			case "RETURN":
				return contReturn
			case "DROP":
				return contDrop
			case "REJECT":
				if len(f) > i+3 && f[i+3] == "tcp-reset" && p.Proto != "tcp" {
					tr.t.Fatalf("tcp-reset for %s in %q", p.Proto, rule)
				}
				return contReject
			case "ACCEPT":
				return contAccept
			}
			if prob < 1 {
				// A probabilistic jump: follow it with that share of the mass.
				saved := tr.mass
				tr.mass = saved * prob
				r := tr.chain(table, target)
				if r != contDNAT && r != contNext {
					tr.t.Fatalf("probabilistic jump to %s ended with %d", target, r)
				}
				tr.mass = saved*(1-prob) + tr.mass
				return contNext
			}
			return tr.chain(table, target)
		default:
			tr.t.Fatalf("tracer does not understand %q in %q", f[i], rule)
		}
		if match == neg {
			return contNext
		}
	}
	return contNext
}

func (tr *tracer) trace(pkt flowtest.Packet) flowtest.Outcome {
	tr.pkt = pkt
	tr.mark = 0
	tr.endpoints = map[string]float64{}
	tr.mass = 1
	fromNode := tr.isLocal(pkt.Src)
	nat := "PREROUTING"
	if fromNode {
		nat = "OUTPUT"
	}
	tr.chain("nat", nat)
	dnat := len(tr.endpoints) > 0
	if dnat && math.Abs(tr.mass) > 1e-6 {
		tr.t.Fatalf("only %.3f of the packets were DNATed", 1-tr.mass)
	}
	filter := "FORWARD"
	switch {
	case fromNode:
		filter = "OUTPUT"
	case !dnat && tr.isLocal(pkt.Dst):
		filter = "INPUT"
	}
	if dnat {
		// Only the firewall chain applies to DNATed packets (their destination changed).
		if tr.chain("filter", chainFirewall) == contDrop {
			return flowtest.Outcome{Verdict: "DROP"}
		}
		masqMark := tr.mark
		masq := false
		if tr.chain("nat", "POSTROUTING"); masqMark&kernel.DefaultMasqueradeMark != 0 {
			masq = true
		}
		return flowtest.Outcome{Verdict: "DNAT", Endpoints: tr.endpoints, Masq: masq}
	}
	switch tr.chain("filter", filter) {
	case contDrop:
		return flowtest.Outcome{Verdict: "DROP"}
	case contReject:
		return flowtest.Outcome{Verdict: "REJECT"}
	}
	return flowtest.Outcome{Verdict: "ACCEPT"}
}
