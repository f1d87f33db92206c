package dataplane

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestUnsupportedSchedulers(t *testing.T) {
	var logs bytes.Buffer
	u := NewUnsupportedSchedulers("iptables", slog.New(slog.NewTextHandler(&logs, nil)))
	lc := UnsupportedScheduler{Port: "shop/lc:80", Algorithm: "LeastConnections"}
	mg := UnsupportedScheduler{Port: "shop/hash:80", Algorithm: "Maglev"}
	steps := []struct {
		name     string
		old, new []UnsupportedScheduler
		gauges   int
		warnings int // in total so far
	}{
		{"first sync", nil, []UnsupportedScheduler{lc}, 1, 1},
		{"same again: no second warning", []UnsupportedScheduler{lc}, []UnsupportedScheduler{lc}, 1, 1},
		{"another port added", []UnsupportedScheduler{lc}, []UnsupportedScheduler{lc, mg}, 2, 2},
		{"first removed", []UnsupportedScheduler{lc, mg}, []UnsupportedScheduler{mg}, 1, 2},
		{"back: warned again", []UnsupportedScheduler{mg}, []UnsupportedScheduler{mg, lc}, 2, 3},
	}
	for _, s := range steps {
		u.Update(s.old, s.new)
		if n := testutil.CollectAndCount(u.Collector()); n != s.gauges {
			t.Errorf("%s: %d gauges, want %d", s.name, n, s.gauges)
		}
		if n := strings.Count(logs.String(), "not supported by the iptables data plane"); n != s.warnings {
			t.Errorf("%s: %d warnings, want %d:\n%s", s.name, n, s.warnings, logs.String())
		}
	}
}
