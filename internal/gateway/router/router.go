// Package router matches HTTP requests against one listener's route table, as
// translated by the model: it picks the section (Gateway listener) by host, then the
// first virtual host and route match that fits, in the precedence order the model
// computed. It compiles regular expressions once per table and does no I/O.
package router

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"weir.dev/weir/internal/model"
)

// Table is the compiled route table of one listener. It is immutable and safe for
// concurrent use.
type Table struct {
	sections []*section
}

type section struct {
	sec   *model.Section
	hosts []*vhost
}

type vhost struct {
	hostname string
	oneLabel bool // model.VirtualHost.OneLabel
	matches  []*match
}

type match struct {
	m       *model.RouteMatch
	path    string         // Exact and PathPrefix value, normalised as request paths are
	re      *regexp.Regexp // path regex, anchored
	headers []valueMatcher
	query   []valueMatcher
}

type valueMatcher struct {
	name  string // canonical header name, or query name
	value string
	re    *regexp.Regexp
}

func (v valueMatcher) ok(got string, present bool) bool {
	if !present {
		return false
	}
	if v.re != nil {
		return v.re.MatchString(got)
	}
	return got == v.value
}

// Compile builds the table of a listener. The model has already rejected bad regular
// expressions; one that still fails to compile makes Compile fail.
func Compile(l *model.Listener) (*Table, error) {
	t := &Table{}
	for _, sec := range l.Sections {
		s := &section{sec: sec}
		for _, vh := range sec.Hosts {
			h := &vhost{hostname: strings.ToLower(vh.Hostname), oneLabel: vh.OneLabel}
			for _, m := range vh.Matches {
				cm := &match{m: m, path: m.Path.Value}
				if m.Path.Type != model.PathRegex {
					// Compared with normalised request paths: normalised the same way
					// (hex case, unreserved characters), so "/caf%c3%a9" matches "/caf%C3%A9".
					if p, err := NormalizePath(m.Path.Value); err == nil && m.Path.Value != "" {
						cm.path = p
					}
				} else {
					re, err := regexp.Compile("^(?:" + m.Path.Value + ")$")
					if err != nil {
						return nil, fmt.Errorf("route %s: path regex %q: %w", m.Rule.ID, m.Path.Value, err)
					}
					cm.re = re
				}
				for _, hm := range m.Headers {
					vm, err := compileValue(http.CanonicalHeaderKey(hm.Name), hm)
					if err != nil {
						return nil, fmt.Errorf("route %s: %w", m.Rule.ID, err)
					}
					cm.headers = append(cm.headers, vm)
				}
				for _, qm := range m.Query {
					vm, err := compileValue(qm.Name, qm)
					if err != nil {
						return nil, fmt.Errorf("route %s: %w", m.Rule.ID, err)
					}
					cm.query = append(cm.query, vm)
				}
				h.matches = append(h.matches, cm)
			}
			s.hosts = append(s.hosts, h)
		}
		t.sections = append(t.sections, s)
	}
	return t, nil
}

func compileValue(name string, v model.ValueMatch) (valueMatcher, error) {
	vm := valueMatcher{name: name, value: v.Value}
	if v.Regex {
		re, err := regexp.Compile(v.Value)
		if err != nil {
			return vm, fmt.Errorf("%s regex %q: %w", v.Name, v.Value, err)
		}
		vm.re = re
	}
	return vm, nil
}

// Result is a matched route.
type Result struct {
	Section *model.Section
	Match   *model.RouteMatch
}

// Host returns the request's host without port, lower-cased.
func Host(r *http.Request) string {
	h := r.Host
	if h == "" && r.URL != nil {
		h = r.URL.Host
	}
	if strings.LastIndexByte(h, ':') > strings.LastIndexByte(h, ']') {
		if hh, _, err := net.SplitHostPort(h); err == nil {
			h = hh
		}
	}
	h = strings.TrimSuffix(h, ".")
	for i := 0; i < len(h); i++ {
		if c := h[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(h)
		}
	}
	return h
}

// Section returns the section that serves host: the first (most specific) whose
// hostname covers it, or nil.
func (t *Table) Section(host string) *model.Section {
	if s := t.section(host); s != nil {
		return s.sec
	}
	return nil
}

func (t *Table) section(host string) *section {
	for _, s := range t.sections {
		if model.HostMatches(s.sec.Hostname, host, false) {
			return s
		}
	}
	return nil
}

// Match finds the route for r. host is Host(r). It returns ok false when no route
// matches (the gateway answers 404). Paths are compared in their escaped form
// (r.URL.EscapedPath()), which the caller has normalised with NormalizeRequestPath:
// an encoded slash ("%2F") is part of its segment, never a separator.
func (t *Table) Match(r *http.Request, host string) (Result, bool) {
	s := t.section(host)
	if s == nil {
		return Result{}, false
	}
	var query url.Values // parsed on first use
	path := RequestPath(r.URL)
	for _, h := range s.hosts {
		if !model.HostMatches(h.hostname, host, h.oneLabel) {
			continue
		}
		for _, m := range h.matches {
			if !pathMatches(m, path) {
				continue
			}
			if m.m.Method != "" && m.m.Method != r.Method {
				continue
			}
			ok := true
			for _, hm := range m.headers {
				vs, present := r.Header[hm.name]
				got := ""
				if present {
					got = strings.Join(vs, ",")
				}
				if !hm.ok(got, present) {
					ok = false
					break
				}
			}
			if ok && len(m.query) > 0 {
				if query == nil {
					query = r.URL.Query()
				}
				for _, qm := range m.query {
					vs, present := query[qm.name]
					got := ""
					if present {
						got = vs[0]
					}
					if !qm.ok(got, present) {
						ok = false
						break
					}
				}
			}
			if ok {
				return Result{Section: s.sec, Match: m.m}, true
			}
		}
	}
	return Result{}, false
}

func pathMatches(m *match, path string) bool {
	switch m.m.Path.Type {
	case model.PathExact:
		return path == m.path
	case model.PathRegex:
		return m.re.MatchString(path)
	}
	return PrefixMatches(m.path, path)
}

// PrefixMatches reports whether path starts with prefix on a path-element boundary:
// "/abc" matches "/abc", "/abc/" and "/abc/d" but not "/abcd". A trailing slash in the
// prefix is ignored. An empty prefix matches everything.
func PrefixMatches(prefix, path string) bool {
	prefix = strings.TrimSuffix(prefix, "/")
	if prefix == "" {
		return true
	}
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return len(path) == len(prefix) || path[len(prefix)] == '/'
}
