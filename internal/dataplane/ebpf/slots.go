package ebpf

import "slices"

// slotRange is a run of backend array slots.
type slotRange struct{ off, n uint32 }

// slotAllocator hands out contiguous runs of backend slots, first fit, and merges
// runs given back with their free neighbours.
type slotAllocator struct {
	free []slotRange // sorted by off, never adjacent
	used uint32
}

func (a *slotAllocator) alloc(n uint32) (uint32, bool) {
	for i, r := range a.free {
		if r.n < n {
			continue
		}
		if r.n == n {
			a.free = slices.Delete(a.free, i, i+1)
		} else {
			a.free[i] = slotRange{r.off + n, r.n - n}
		}
		a.used += n
		return r.off, true
	}
	return 0, false
}

func (a *slotAllocator) release(r slotRange) {
	if r.n == 0 {
		return
	}
	a.used -= r.n
	i, _ := slices.BinarySearchFunc(a.free, r.off, func(f slotRange, off uint32) int {
		switch {
		case f.off < off:
			return -1
		case f.off > off:
			return 1
		}
		return 0
	})
	a.free = slices.Insert(a.free, i, r)
	if i+1 < len(a.free) && a.free[i].off+a.free[i].n == a.free[i+1].off {
		a.free[i].n += a.free[i+1].n
		a.free = slices.Delete(a.free, i+1, i+2)
	}
	if i > 0 && a.free[i-1].off+a.free[i-1].n == a.free[i].off {
		a.free[i-1].n += a.free[i].n
		a.free = slices.Delete(a.free, i, i+1)
	}
}

// reserve marks r used; it must lie inside one free run (slots an earlier run of weir
// wrote, adopted from pinned maps). It reports false when it does not.
func (a *slotAllocator) reserve(r slotRange) bool {
	if r.n == 0 {
		return true
	}
	for i, f := range a.free {
		if r.off < f.off || r.off+r.n > f.off+f.n {
			continue
		}
		var parts []slotRange
		if r.off > f.off {
			parts = append(parts, slotRange{f.off, r.off - f.off})
		}
		if end := f.off + f.n; r.off+r.n < end {
			parts = append(parts, slotRange{r.off + r.n, end - r.off - r.n})
		}
		a.free = slices.Replace(a.free, i, i+1, parts...)
		a.used += r.n
		return true
	}
	return false
}
