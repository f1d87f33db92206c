package nftables

import (
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"

	"weir.dev/weir/internal/dataplane/flowtest"
)

// tracer follows a packet through the rules weir wrote into a knftables.Fake, as
// kube-proxy's helpers_test.go does. It understands exactly the rule forms weir
// generates and fails the test on any other, so a new rule form needs a tracer change.
type tracer struct {
	t       *testing.T
	tbl     *knftables.FakeTable
	f       ipFamily
	nodeIPs []string          // the node's local addresses
	aff     map[string]string // affinity set name → a source address in it
	pkt     flowtest.Packet

	mark      bool
	endpoints map[string]float64
	mass      float64 // probability not yet DNATed in the current pick
	hashDone  float64
}

const (
	contNext = iota // the chain ended or returned
	contDrop
	contReject
	contDNAT
	contAccept
)

var (
	reJumpGoto    = regexp.MustCompile(`^(ct state new )?(jump|goto) (\S+)$`)
	reDispatch    = regexp.MustCompile(`^(ip|ip6) daddr \. meta l4proto \. th dport vmap @(\S+)$`)
	reNodePort    = regexp.MustCompile(`^fib daddr type local (ip|ip6) daddr != (\S+)( (ip|ip6) daddr @(\S+))? meta l4proto \. th dport vmap @(\S+)$`)
	reSrcRanges   = regexp.MustCompile(`^(ip|ip6) saddr != \{ (.*) \} drop$`)
	reMark        = regexp.MustCompile(`^meta mark set meta mark or 0x[0-9a-f]+$`)
	reAffinityHit = regexp.MustCompile(`^meta l4proto (\w+) (ip|ip6) saddr @(\S+) update @(\S+) \{ (ip|ip6) saddr \} dnat to (\S+)$`)
	reSlotPick    = regexp.MustCompile(`^meta l4proto (\w+) dnat to ((ip|ip6) daddr \. )?meta l4proto \. (\w+) dport \. numgen random mod (\d+) map @(\S+)$`)
	// Conditions a rule may start with; condRule strips and evaluates them.
	reCondSet   = regexp.MustCompile(`^(ip|ip6) daddr @(\S+) `)
	reCondSaddr = regexp.MustCompile(`^(ip|ip6) saddr (!= )?([0-9a-fA-F:.]+(/\d+)?) `)
	reCondIif   = regexp.MustCompile(`^iifname (!= )?"([^"]*)" `)
	reCondFib   = regexp.MustCompile(`^fib saddr type local `)
	rePick      = regexp.MustCompile(`^meta l4proto (\w+)( numgen (random|inc) mod (\d+) < (\d+)| jhash (ip|ip6) saddr mod (\d+) seed 0x[0-9a-f]+ < (\d+))?( update @\S+ \{ (ip|ip6) saddr \})? dnat to (\S+)$`)
)

func newTracer(t *testing.T, fake *knftables.Fake, f ipFamily, nodeIPs []string) *tracer {
	t.Helper()
	tbl := fake.Tables[f.nft][tableName]
	if tbl == nil {
		t.Fatalf("no table %s %s", f.nft, tableName)
	}
	return &tracer{t: t, tbl: tbl, f: f, nodeIPs: nodeIPs, aff: map[string]string{}}
}

func (tr *tracer) isLocal(ip string) bool { return slices.Contains(tr.nodeIPs, ip) }

func (tr *tracer) lookup(mapName string, key ...string) string {
	m := tr.tbl.Maps[mapName]
	if m == nil {
		tr.t.Fatalf("no map %s", mapName)
	}
	if el := m.FindElement(key...); el != nil {
		return strings.Join(el.Value, " ")
	}
	// Elements are written with the whole key as one string.
	if el := m.FindElement(strings.Join(key, " . ")); el != nil {
		return strings.Join(el.Value, " ")
	}
	return ""
}

func (tr *tracer) inSet(setName string, key string) bool {
	s := tr.tbl.Sets[setName]
	if s == nil {
		tr.t.Fatalf("no set %s", setName)
	}
	for _, el := range s.Elements {
		if strings.Join(el.Key, " . ") == key {
			return true
		}
		if s.Flags != nil && slices.Contains(s.Flags, knftables.IntervalFlag) {
			p, err := netip.ParsePrefix(el.Key[0])
			if err == nil && p.Contains(netip.MustParseAddr(key)) {
				return true
			}
		}
	}
	return false
}

// verdictValue applies a verdict-map value.
func (tr *tracer) verdictValue(v string) int {
	switch {
	case v == "":
		return contNext
	case v == "drop":
		return contDrop
	case strings.HasPrefix(v, "goto "):
		return tr.goTo(strings.TrimPrefix(v, "goto "))
	case strings.HasPrefix(v, "jump "):
		if r := tr.chain(strings.TrimPrefix(v, "jump ")); r != contNext {
			return r
		}
		return contNext
	}
	tr.t.Fatalf("unknown verdict %q", v)
	return 0
}

// goTo runs a chain and does not come back to the caller's next rule.
func (tr *tracer) goTo(name string) int {
	r := tr.chain(name)
	if r == contNext {
		return -1 // returned from a goto: the calling chain ends too
	}
	return r
}

func (tr *tracer) chain(name string) int {
	ch := tr.tbl.Chains[name]
	if ch == nil {
		tr.t.Fatalf("no chain %q", name)
	}
	for _, rule := range ch.Rules {
		r := tr.rule(rule.Rule)
		if r == -1 {
			return contNext
		}
		if r != contNext {
			return r
		}
	}
	return contNext
}

// condRule evaluates the conditions a rule starts with (set membership of the
// destination, source prefix, input interface, local source) and, when they all hold,
// the rest of the rule. ok is false when the rule starts with no condition.
func (tr *tracer) condRule(rule string) (result int, ok bool) {
	p := tr.pkt
	holds, rest := true, rule
	for {
		if m := reCondSet.FindStringSubmatch(rest); m != nil {
			holds = holds && tr.inSet(m[2], p.Dst)
			rest = rest[len(m[0]):]
		} else if m := reCondSaddr.FindStringSubmatch(rest); m != nil {
			pfx, err := netip.ParsePrefix(m[3])
			if err != nil {
				a := netip.MustParseAddr(m[3])
				pfx = netip.PrefixFrom(a, a.BitLen())
			}
			holds = holds && pfx.Contains(netip.MustParseAddr(p.Src)) == (m[2] == "")
			rest = rest[len(m[0]):]
		} else if m := reCondIif.FindStringSubmatch(rest); m != nil {
			in := p.Iif == m[2]
			if name, ok := strings.CutSuffix(m[2], "*"); ok {
				in = p.Iif != "" && strings.HasPrefix(p.Iif, name)
			}
			holds = holds && in == (m[1] == "")
			rest = rest[len(m[0]):]
		} else if m := reCondFib.FindString(rest); m != "" {
			holds = holds && tr.isLocal(p.Src)
			rest = rest[len(m):]
		} else {
			break
		}
	}
	if rest == rule {
		return 0, false
	}
	if !holds {
		return contNext, true
	}
	return tr.rule(rest), true
}

func (tr *tracer) rule(rule string) int {
	if r, ok := tr.condRule(rule); ok {
		return r
	}
	p := tr.pkt
	key := []string{p.Dst, p.Proto, strconv.Itoa(p.Port)}
	switch {
	case rule == "reject" || rule == "meta l4proto tcp reject with tcp reset":
		if rule == "reject" || p.Proto == "tcp" {
			return contReject
		}
		return contNext
	case rule == "drop":
		return contDrop
	case reMark.MatchString(rule):
		tr.mark = true
		return contNext
	case reJumpGoto.MatchString(rule):
		m := reJumpGoto.FindStringSubmatch(rule)
		if m[2] == "goto" {
			return tr.goTo(m[3])
		}
		return tr.chain(m[3])
	case reDispatch.MatchString(rule):
		m := reDispatch.FindStringSubmatch(rule)
		return tr.verdictValue(tr.lookup(m[2], key...))
	case reNodePort.MatchString(rule):
		m := reNodePort.FindStringSubmatch(rule)
		if !tr.isLocal(p.Dst) || strings.HasPrefix(p.Dst, "127.") || p.Dst == "::1" {
			return contNext
		}
		if m[5] != "" && !tr.inSet(m[5], p.Dst) {
			return contNext
		}
		return tr.verdictValue(tr.lookup(m[6], key[1:]...))
	case reSrcRanges.MatchString(rule):
		m := reSrcRanges.FindStringSubmatch(rule)
		src := netip.MustParseAddr(p.Src)
		for _, r := range strings.Split(m[2], ", ") {
			if netip.MustParsePrefix(r).Contains(src) {
				return contNext
			}
		}
		return contDrop
	case reAffinityHit.MatchString(rule):
		m := reAffinityHit.FindStringSubmatch(rule)
		if m[1] == p.Proto && tr.aff[m[3]] == p.Src {
			tr.endpoints[m[6]] += tr.mass
			tr.mass = 0
			return contDNAT
		}
		return contNext
	case reSlotPick.MatchString(rule):
		m := reSlotPick.FindStringSubmatch(rule)
		if m[1] != p.Proto {
			return contNext
		}
		if m[4] != m[1] {
			tr.t.Fatalf("rule matches %s but reads the %s port: %s", m[1], m[4], rule)
		}
		slots, _ := strconv.Atoi(m[5])
		share := tr.mass / float64(slots)
		for i := 0; i < slots; i++ {
			k := []string{p.Proto, strconv.Itoa(p.Port), strconv.Itoa(i)}
			if m[2] != "" {
				k = append([]string{p.Dst}, k...)
			}
			v := tr.lookup(m[6], k...)
			if v == "" {
				tr.t.Fatalf("no slot %v in %s", k, m[6])
			}
			addr, port, _ := strings.Cut(v, " . ")
			tr.endpoints[netip.AddrPortFrom(netip.MustParseAddr(addr), uint16(mustAtoi(port))).String()] += share
		}
		tr.mass = 0
		return contDNAT
	case rePick.MatchString(rule):
		m := rePick.FindStringSubmatch(rule)
		if m[1] != p.Proto {
			return contNext
		}
		take := tr.mass
		switch {
		case m[3] != "":
			r, _ := strconv.ParseFloat(m[4], 64)
			w, _ := strconv.ParseFloat(m[5], 64)
			take = tr.mass * w / r
		case m[6] != "":
			total, _ := strconv.ParseFloat(m[7], 64)
			cum, _ := strconv.ParseFloat(m[8], 64)
			take = cum/total - tr.hashDone
			tr.hashDone = cum / total
		}
		tr.endpoints[m[11]] += take
		tr.mass -= take
		if tr.mass < 1e-9 {
			return contDNAT
		}
		return contNext
	}
	tr.t.Fatalf("tracer does not understand rule %q", rule)
	return 0
}

// trace runs pkt as the first packet of a new connection.
func (tr *tracer) trace(pkt flowtest.Packet) flowtest.Outcome {
	tr.pkt = pkt
	tr.mark = false
	tr.endpoints = map[string]float64{}
	tr.mass, tr.hashDone = 1, 0
	fromNode := tr.isLocal(pkt.Src)

	pre := "filter-prerouting"
	if fromNode {
		pre = "filter-output-pre-dnat"
	}
	switch tr.chain(pre) {
	case contDrop:
		return flowtest.Outcome{Verdict: "DROP"}
	case contReject:
		return flowtest.Outcome{Verdict: "REJECT"}
	}
	nat := "nat-prerouting"
	if fromNode {
		nat = "nat-output"
	}
	switch r := tr.chain(nat); r {
	case contDrop:
		return flowtest.Outcome{Verdict: "DROP"}
	case contDNAT:
		out := flowtest.Outcome{Verdict: "DNAT", Endpoints: tr.endpoints, Masq: tr.mark}
		for ep := range tr.endpoints {
			ap := netip.MustParseAddrPort(ep)
			if ap.Addr().String() == pkt.Src && tr.inSet(setHairpin, pkt.Src+" . "+pkt.Src) {
				out.Masq = true
			}
		}
		return out
	case contNext:
	default:
		tr.t.Fatalf("nat chains ended with %d", r)
	}
	filter := "filter-forward"
	switch {
	case fromNode:
		filter = "filter-output"
	case tr.isLocal(pkt.Dst):
		filter = "filter-input"
	}
	switch tr.chain(filter) {
	case contDrop:
		return flowtest.Outcome{Verdict: "DROP"}
	case contReject:
		return flowtest.Outcome{Verdict: "REJECT"}
	}
	return flowtest.Outcome{Verdict: "ACCEPT"}
}

func mustAtoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		panic(err)
	}
	return n
}
