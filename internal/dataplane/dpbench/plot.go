package dpbench

import (
	"fmt"
	"io"
	"math"
	"strings"
)

// WriteSVG draws three panels against N (log scale): full sync time, one-change sync
// time and first-packet connect latency p50, one line per mode.
func WriteSVG(w io.Writer, results []Result) error {
	panels := []struct {
		title string
		value func(Result) float64
		unit  string
	}{
		{"full sync", func(r Result) float64 { return r.FullSyncMS }, "ms"},
		{"one endpoint change sync", func(r Result) float64 { return r.ChangeSyncMS }, "ms"},
		{"first-packet connect p50", func(r Result) float64 { return r.ConnectP50us }, "µs"},
	}
	colors := map[string]string{"nftables": "#1b7837", "iptables": "#b2182b", "userspace": "#2166ac", "ipvs": "#762a83", "ebpf": "#e08214"}
	const pw, ph, ml, mt, mb = 320.0, 240.0, 60.0, 40.0, 50.0
	var b strings.Builder
	width := float64(len(panels))*(pw+ml) + 20
	height := ph + mt + mb + 30
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="11">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	var modes []string
	ns := map[int]bool{}
	for _, r := range results {
		if r.Skipped != "" {
			continue
		}
		if !contains(modes, r.Mode) {
			modes = append(modes, r.Mode)
		}
		ns[r.N] = true
	}
	minN, maxN := math.Inf(1), math.Inf(-1)
	for n := range ns {
		minN, maxN = math.Min(minN, float64(n)), math.Max(maxN, float64(n))
	}
	if len(ns) == 0 {
		return fmt.Errorf("no results to plot")
	}
	if minN == maxN {
		maxN = minN * 10
	}
	for pi, p := range panels {
		x0 := 20 + float64(pi)*(pw+ml) + ml
		y0 := mt
		lo, hi := math.Inf(1), math.Inf(-1)
		for _, r := range results {
			if v := p.value(r); r.Skipped == "" && v > 0 {
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
		if math.IsInf(lo, 0) {
			lo, hi = 1, 10
		}
		lo, hi = math.Pow(10, math.Floor(math.Log10(lo))), math.Pow(10, math.Ceil(math.Log10(hi)))
		if lo == hi {
			hi = lo * 10
		}
		xs := func(n float64) float64 { return x0 + pw*math.Log10(n/minN)/math.Log10(maxN/minN) }
		ys := func(v float64) float64 { return y0 + ph - ph*math.Log10(v/lo)/math.Log10(hi/lo) }
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" font-size="13" font-weight="bold">%s (%s, log)</text>`+"\n", x0, y0-12, p.title, p.unit)
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="none" stroke="#888"/>`+"\n", x0, y0, pw, ph)
		for d := lo; d <= hi*1.001; d *= 10 {
			y := ys(d)
			fmt.Fprintf(&b, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#eee"/><text x="%.0f" y="%.1f" text-anchor="end">%g</text>`+"\n", x0, y, x0+pw, y, x0-4, y+4, d)
		}
		for n := range ns {
			x := xs(float64(n))
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#eee"/><text x="%.1f" y="%.0f" text-anchor="middle">%d</text>`+"\n", x, y0, x, y0+ph, x, y0+ph+14, n)
		}
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle">Services (× endpoints each)</text>`+"\n", x0+pw/2, y0+ph+30)
		for _, m := range modes {
			var pts []string
			for _, r := range results {
				if r.Mode == m && r.Skipped == "" && p.value(r) > 0 {
					pts = append(pts, fmt.Sprintf("%.1f,%.1f", xs(float64(r.N)), ys(p.value(r))))
				}
			}
			fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(pts, " "), colors[m])
			for _, pt := range pts {
				xy := strings.Split(pt, ",")
				fmt.Fprintf(&b, `<circle cx="%s" cy="%s" r="3" fill="%s"/>`+"\n", xy[0], xy[1], colors[m])
			}
		}
	}
	for i, m := range modes {
		x := 20 + ml + float64(i)*110
		y := height - 10
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="14" height="4" fill="%s"/><text x="%.0f" y="%.0f">%s</text>`+"\n", x, y-4, colors[m], x+18, y, m)
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// WriteTable writes results as a Markdown table.
func WriteTable(w io.Writer, results []Result) {
	fmt.Fprintln(w, "| mode | Services | full sync (ms) | full sync CPU (ms) | one change (ms) | one change CPU (ms) | no change (ms) | kernel rules | kernel elements | RSS (MB) | Go heap (MB) | connect p50 (µs) | connect p99 (µs) |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range results {
		if r.Skipped != "" {
			fmt.Fprintf(w, "| %s | %d | %s | | | | | | | | | | |\n", r.Mode, r.N, r.Skipped)
			continue
		}
		fmt.Fprintf(w, "| %s | %d | %.1f | %.1f | %.1f | %.1f | %.2f | %d | %d | %.0f | %.0f | %.0f | %.0f |\n",
			r.Mode, r.N, r.FullSyncMS, r.FullSyncCPU, r.ChangeSyncMS, r.ChangeCPU, r.NoopSyncMS, r.KernelRules, r.KernelElems, r.RSSMB, r.HeapMB, r.ConnectP50us, r.ConnectP99us)
	}
}
