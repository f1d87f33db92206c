package balance

import (
	"encoding/binary"
	"net/netip"
)

// The hashes below are fixed functions (no per-process seed), so that every weir
// instance, and every restart, places a key alike. Pickers mix Options.Seed in on top.

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
	golden    = 0x9e3779b97f4a7c15
)

// mix64 is the finalizer of SplitMix64: a bijection on uint64 with full avalanche.
func mix64(z uint64) uint64 {
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// seeded mixes a key with a seed; keys from callers may be small integers, so every
// scheduler that hashes passes its key through here.
func seeded(key, seed uint64) uint64 { return mix64(key ^ mix64(seed+golden)) }

// HashAddr hashes an IP address. An IPv4-mapped IPv6 address hashes as its IPv4 form,
// and the zone is ignored. It does not allocate.
func HashAddr(a netip.Addr) uint64 {
	a = a.Unmap()
	b := a.As16()
	hi, lo := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	return mix64(mix64(hi+golden) ^ lo)
}

// KeyOf is a backend's ID: a hash of its address and port. It is stable across
// processes and releases of weir with the same major version.
func KeyOf(ap netip.AddrPort) uint64 {
	return mix64(HashAddr(ap.Addr()) ^ uint64(ap.Port())<<1 ^ golden)
}

// HashString hashes a string (an L7 header, cookie or query value; a host name):
// FNV-1a over its bytes, then a SplitMix64 finalizer. It does not allocate.
func HashString(s string) uint64 {
	h := uint64(fnvOffset)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return mix64(h)
}
