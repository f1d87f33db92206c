package model

import (
	"net/netip"
	"slices"
)

// AddrRange is an inclusive range of addresses of one family. Ranges rather than
// prefixes: an ipBlock minus its except list is not a list of prefixes one can write
// without splitting it, and nftables interval sets take ranges as they are.
type AddrRange struct {
	From netip.Addr
	To   netip.Addr
}

// Contains reports whether a is in the range.
func (r AddrRange) Contains(a netip.Addr) bool {
	a = a.Unmap()
	return a.BitLen() == r.From.BitLen() && r.From.Compare(a) <= 0 && a.Compare(r.To) <= 0
}

// Is6 reports whether the range holds IPv6 addresses.
func (r AddrRange) Is6() bool { return r.From.Is6() }

func (r AddrRange) String() string {
	if r.From == r.To {
		return r.From.String()
	}
	return r.From.String() + "-" + r.To.String()
}

// MarshalText writes the range as "from-to" (one address when from is to).
func (r AddrRange) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// prefixRange is the range of addresses a prefix covers.
func prefixRange(p netip.Prefix) AddrRange {
	p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-bitsMapped(p)).Masked()
	first := p.Addr()
	b := first.AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	last, _ := netip.AddrFromSlice(b)
	return AddrRange{From: first, To: last}
}

// bitsMapped is 96 for a prefix written on an IPv4-mapped IPv6 address (::ffff:a.b.c.d/n),
// which is the IPv4 prefix of n-96 bits.
func bitsMapped(p netip.Prefix) int {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return 96
	}
	return 0
}

// addrRange is the range of one address.
func addrRange(a netip.Addr) AddrRange { a = a.Unmap(); return AddrRange{From: a, To: a} }

// normalizeRanges sorts the ranges and merges the overlapping and adjacent ones, so that
// the same set of addresses always has the same list. It sorts in place.
func normalizeRanges(in []AddrRange) []AddrRange {
	if len(in) < 2 {
		return in
	}
	if less := func(a, b AddrRange) int { return a.From.Compare(b.From) }; !slices.IsSortedFunc(in, less) {
		slices.SortFunc(in, less)
	}
	out := in[:1]
	for _, r := range in[1:] {
		last := &out[len(out)-1]
		next := last.To.Next()
		if r.From.BitLen() == last.To.BitLen() && (r.From.Compare(last.To) <= 0 || r.From == next) {
			if r.To.Compare(last.To) > 0 {
				last.To = r.To
			}
			continue
		}
		out = append(out, r)
	}
	return out
}

// subtractRanges removes the addresses of cut from the normalized list in.
func subtractRanges(in, cut []AddrRange) []AddrRange {
	cut = normalizeRanges(slices.Clone(cut))
	var out []AddrRange
	for _, r := range in {
		rest := []AddrRange{r}
		for _, c := range cut {
			var next []AddrRange
			for _, x := range rest {
				next = append(next, subtractOne(x, c)...)
			}
			rest = next
		}
		out = append(out, rest...)
	}
	return out
}

// subtractOne is r without the addresses of c: none, one or two ranges.
func subtractOne(r, c AddrRange) []AddrRange {
	if r.From.BitLen() != c.From.BitLen() || c.To.Compare(r.From) < 0 || r.To.Compare(c.From) < 0 {
		return []AddrRange{r}
	}
	var out []AddrRange
	if r.From.Compare(c.From) < 0 {
		out = append(out, AddrRange{From: r.From, To: c.From.Prev()})
	}
	if c.To.Compare(r.To) < 0 {
		out = append(out, AddrRange{From: c.To.Next(), To: r.To})
	}
	return out
}

// rangesContain reports whether the normalized list holds a.
func rangesContain(rs []AddrRange, a netip.Addr) bool {
	a = a.Unmap()
	i, _ := slices.BinarySearchFunc(rs, a, func(r AddrRange, a netip.Addr) int {
		if r.To.BitLen() != a.BitLen() {
			return r.To.BitLen() - a.BitLen()
		}
		return r.To.Compare(a)
	})
	return i < len(rs) && rs[i].Contains(a)
}
