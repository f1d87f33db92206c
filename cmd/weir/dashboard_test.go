package main

import (
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// chromiumFlags run Debian's chromium headless, quietly, with a fresh profile.
var chromiumFlags = []string{
	"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
	"--disable-component-update", "--disable-sync", "--no-first-run",
	"--enable-logging=stderr", "--v=0",
}

// chromium loads url in headless Chromium, lets the page run for budget of virtual
// time, and returns the DOM it dumped (or writes a screenshot to png) and the page's
// console messages.
func chromium(t *testing.T, bin, url, png string, budget time.Duration) (dom string, console []string) {
	t.Helper()
	args := append([]string{}, chromiumFlags...)
	args = append(args, "--user-data-dir="+t.TempDir(), "--virtual-time-budget="+itoaMillis(budget))
	if png != "" {
		args = append(args, "--screenshot="+png, "--window-size=1360,900", "--hide-scrollbars")
	} else {
		args = append(args, "--dump-dom")
	}
	cmd := exec.CommandContext(t.Context(), bin, append(args, url)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, stderr.String())
	}
	for _, line := range strings.Split(stderr.String(), "\n") {
		if strings.Contains(line, ":CONSOLE") {
			console = append(console, line)
		}
	}
	return string(out), console
}

func itoaMillis(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }

// serviceRate finds the rate cell of a Service's row in the dumped dashboard.
func serviceRate(dom, name string) (string, bool) {
	re := regexp.MustCompile(`data-name="` + regexp.QuoteMeta(name) + `".*?class="num rate">([^<]*)<`)
	m := re.FindStringSubmatch(dom)
	if m == nil {
		return "", false
	}
	return m[1], true
}

// TestDashboardInChromium runs weir demo and loads its dashboard in headless Chromium:
// the page loads without console messages, shows the demo's Services and routes, and
// its rates move when traffic flows. With WEIR_DASHBOARD_PNG set it also writes a
// screenshot there, an absolute path (docs/dashboard.png is made so).
func TestDashboardInChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	bin := ""
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		t.Skip("chromium is not installed (Debian: apt-get install chromium; .ci/run installs it): the dashboard is not tested in a browser")
	}
	w := startWeirProcess(t, "", "demo", "--admin-addr", "127.0.0.1:0", "--dns-addr", "127.0.0.1:0")
	w.waitLog(t, "Admin: http://", 30*time.Second)
	admin := regexp.MustCompile(`Admin: http://([0-9.:]+)/`).FindStringSubmatch(w.output())[1]
	url := "http://" + admin + "/"

	dom, console := chromium(t, bin, url, "", 4*time.Second)
	if len(console) > 0 {
		t.Errorf("console messages:\n%s", strings.Join(console, "\n"))
	}
	for _, svc := range []string{"default/web", "default/udp-echo", "default/web-stable", "default/web-canary"} {
		if _, ok := serviceRate(dom, svc); !ok {
			t.Errorf("Service %s not on the dashboard", svc)
		}
	}
	for _, want := range []string{"default/web/1", "userspace", `href="metrics"`, `href="api/snapshot"`} {
		if !strings.Contains(dom, want) {
			t.Errorf("no %q on the dashboard", want)
		}
	}
	before, _ := serviceRate(dom, "default/web")

	// Traffic while the page is loaded again, after a few sampling intervals: L4 to
	// default/web, L7 through the Gateway.
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var n atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			for _, u := range []string{"http://127.0.0.10:8080/", "http://127.0.0.1:8000/"} {
				if resp, err := client.Get(u); err == nil {
					resp.Body.Close()
					n.Add(1)
				}
			}
		}
	}()
	defer func() { close(stop); <-done }()
	time.Sleep(5 * time.Second)
	if png := os.Getenv("WEIR_DASHBOARD_PNG"); png != "" {
		chromium(t, bin, url+"#open=default/web", png, 4*time.Second)
		t.Logf("screenshot written to %s", png)
	}
	dom, console = chromium(t, bin, url, "", 4*time.Second)
	if len(console) > 0 {
		t.Errorf("console messages:\n%s", strings.Join(console, "\n"))
	}
	after, _ := serviceRate(dom, "default/web")
	t.Logf("%d requests so far; default/web's rate before: %q, after: %q", n.Load(), before, after)
	if after == before || after == "–" || strings.Trim(after, "0.") == "" {
		t.Errorf("default/web's rate did not move with traffic: %q then %q", before, after)
	}
	if r := regexp.MustCompile(`default/web/1.*?class="num rate">([^<]*)<`).FindStringSubmatch(dom); r == nil || r[1] == "–" {
		t.Errorf("route default/web/1 shows no rate after traffic: %v", r)
	}
	// default/web's endpoints, opened by the link, show their own rates.
	dom, console = chromium(t, bin, url+"#open=default/web", "", 4*time.Second)
	if len(console) > 0 {
		t.Errorf("console messages:\n%s", strings.Join(console, "\n"))
	}
	eps := regexp.MustCompile(`class="ep [a-z]+"[^>]*>([0-9.:]+)<span class="eprate"> · ([0-9.]+)/s`).FindAllStringSubmatch(dom, -1)
	t.Logf("default/web's endpoints with rates: %v", eps)
	if len(eps) == 0 {
		t.Errorf("no endpoint of default/web shows a rate after traffic")
	}
}
