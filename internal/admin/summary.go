package admin

import (
	"compress/gzip"
	"encoding/json"
	"net/http"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"weir.dev/weir/internal/health"
	"weir.dev/weir/internal/model"
)

// summary is /api/summary: what the dashboard polls. It stays small with thousands of
// Services: one line per Service and route rule with its counts and recent rates, no
// endpoints (/api/service has those, for one Service at a time).
type summary struct {
	Version      uint64          `json:"version"`
	Mode         string          `json:"mode,omitempty"`
	Interval     float64         `json:"interval"` // seconds between samples
	ConfigErrors []string        `json:"configErrors,omitempty"`
	SyncErrors   []string        `json:"syncErrors,omitempty"` // the data plane could not apply all of it
	Totals       totals          `json:"totals"`
	DNS          *stats          `json:"dns,omitempty"`
	Services     []serviceLine   `json:"services"`
	Routes       []routeLine     `json:"routes,omitempty"`
	Listeners    []listenerLine  `json:"listeners,omitempty"`
	Problems     []objectProblem `json:"problems,omitempty"`
}

type totals struct {
	Services           int `json:"services"`
	Ports              int `json:"ports"`
	Endpoints          int `json:"endpoints"`
	ReadyEndpoints     int `json:"readyEndpoints"`
	UnhealthyEndpoints int `json:"unhealthyEndpoints"`
	Routes             int `json:"routes"`
	Listeners          int `json:"listeners"`
}

type serviceLine struct {
	Name      string   `json:"name"`
	Type      string   `json:"type"`
	Addresses []string `json:"addresses,omitempty"` // frontends, "ip:port/proto"
	Endpoints int      `json:"endpoints"`
	Ready     int      `json:"ready"`
	Unhealthy int      `json:"unhealthy,omitempty"`
	Verdict   string   `json:"verdict,omitempty"` // reject or drop when no port forwards
	*stats
}

type routeLine struct {
	Rule     string        `json:"rule"`
	Kind     string        `json:"kind"`
	Listener string        `json:"listener"`
	Match    string        `json:"match,omitempty"`
	Backends []backendLine `json:"backends,omitempty"`
	*stats
}

type backendLine struct {
	Service string `json:"service"`
	Weight  int32  `json:"weight"`
	Invalid bool   `json:"invalid,omitempty"`
}

type listenerLine struct {
	Address  string `json:"address"`
	Protocol string `json:"protocol"`
}

type objectProblem struct {
	Object  string `json:"object"`
	Problem string `json:"problem"`
}

// serviceDetail is /api/service?name=namespace/name: one Service's ports and endpoints.
type serviceDetail struct {
	Name  string       `json:"name"`
	Ports []portDetail `json:"ports"`
	*stats
}

type portDetail struct {
	ID        string           `json:"id"`
	Protocol  string           `json:"protocol"`
	Port      int32            `json:"port"`
	NodePort  int32            `json:"nodePort,omitempty"`
	Verdict   string           `json:"verdict,omitempty"`
	Endpoints []endpointDetail `json:"endpoints"`
}

type endpointDetail struct {
	Address     string `json:"address"`
	Ready       bool   `json:"ready"`
	Serving     bool   `json:"serving"`
	Terminating bool   `json:"terminating,omitempty"`
	Node        string `json:"node,omitempty"`
	Zone        string `json:"zone,omitempty"`
	Weight      uint32 `json:"weight,omitempty"`
	Healthy     *bool  `json:"healthy,omitempty"` // nil when health does not track it
	Ejected     bool   `json:"ejected,omitempty"`
	Reason      string `json:"reason,omitempty"` // why it fails its health check
	// Connections or requests per second to this endpoint and their error share, as
	// the userspace proxy and the gateway report them (kernel modes do not count per
	// endpoint).
	*stats
}

// healthByKey indexes the health overlay's status.
func (s *Server) healthByKey() map[health.Key]health.EndpointStatus {
	if s.opts.Health == nil {
		return nil
	}
	st := s.opts.Health()
	out := make(map[health.Key]health.EndpointStatus, len(st))
	for _, e := range st {
		out[e.Key] = e
	}
	return out
}

func (s *Server) summary() *summary {
	snap := s.opts.Snapshot()
	out := &summary{Mode: s.opts.Mode, Interval: s.sampler.interval.Seconds(), ConfigErrors: s.configErrors(), SyncErrors: s.syncErrors(), Services: []serviceLine{}}
	out.DNS = s.sampler.stats(kindDNS, "")
	if snap == nil {
		return out
	}
	out.Version = snap.Version
	hs := s.healthByKey()
	for _, svc := range snap.Services {
		name := svc.Key.String()
		line := serviceLine{Name: name, Type: string(svc.Type), stats: s.sampler.stats(kindService, name)}
		if svc.Headless {
			line.Type += " (headless)"
		}
		forwards := false
		for _, sp := range svc.Ports {
			out.Totals.Ports++
			id := sp.ID(svc.Key)
			for _, a := range svc.ClusterIPs {
				line.Addresses = append(line.Addresses, addrPort(a.String(), sp.Port)+"/"+string(sp.Protocol))
			}
			for _, ep := range sp.Endpoints {
				line.Endpoints++
				if ep.Ready {
					line.Ready++
				}
				if h, ok := hs[health.Key{ServicePort: id, Endpoint: ep.AddrPort()}]; ok && !h.Healthy {
					line.Unhealthy++
				}
			}
			if sp.Cluster.Verdict == model.Forward {
				forwards = true
			} else if line.Verdict == "" {
				line.Verdict = sp.Cluster.Verdict.String()
			}
		}
		if forwards || !svc.Proxied() {
			line.Verdict = ""
		}
		out.Totals.Endpoints += line.Endpoints
		out.Totals.ReadyEndpoints += line.Ready
		out.Totals.UnhealthyEndpoints += line.Unhealthy
		out.Services = append(out.Services, line)
	}
	out.Totals.Services = len(snap.Services)
	if gw := snap.Gateway; gw != nil {
		seen := map[string]bool{}
		for _, l := range gw.Listeners {
			addr := l.Address
			if l.Ingress != "" {
				addr = "ingress " + l.Ingress
			}
			out.Listeners = append(out.Listeners, listenerLine{Address: addr, Protocol: string(l.Protocol)})
			for _, sec := range l.Sections {
				for _, vh := range sec.Hosts {
					for _, m := range vh.Matches {
						r := m.Rule
						if r == nil || seen[r.ID] {
							continue
						}
						seen[r.ID] = true
						rl := routeLine{Rule: r.ID, Kind: r.Route.Kind, Listener: sec.Name, Match: describeMatch(vh.Hostname, m), stats: s.sampler.stats(kindRoute, r.ID)}
						for _, b := range r.Backends {
							rl.Backends = append(rl.Backends, backendLine{Service: b.Service.String(), Weight: b.Weight, Invalid: b.Invalid})
						}
						out.Routes = append(out.Routes, rl)
					}
				}
			}
		}
		out.Totals.Listeners = len(gw.Listeners)
		out.Totals.Routes = len(out.Routes)
		for i := range gw.Status {
			out.Problems = append(out.Problems, problems(&gw.Status[i])...)
		}
	}
	return out
}

// problems lists the conditions of a Gateway API object (its own, its listeners' and
// its parents') that are not True, except Conflicted, whose normal state is False.
func problems(st *model.ObjectStatus) []objectProblem {
	obj := st.Kind + " " + st.Name
	if st.Namespace != "" {
		obj = st.Kind + " " + st.Namespace + "/" + st.Name
	}
	var out []objectProblem
	add := func(where string, cs []metav1.Condition) {
		for _, c := range cs {
			if c.Status != metav1.ConditionTrue && c.Type != "Conflicted" {
				out = append(out, objectProblem{Object: obj + where, Problem: c.Type + " " + string(c.Status) + ": " + c.Reason + ": " + c.Message})
			}
		}
	}
	add("", st.Conditions)
	for _, l := range st.Listeners {
		add(" listener "+l.Name, l.Conditions)
	}
	for _, p := range st.Parents {
		add(" on "+string(p.ParentRef.Name), p.Conditions)
	}
	return out
}

// describeMatch is a route match in one short line: "host GET PathPrefix /api [x-canary]".
func describeMatch(host string, m *model.RouteMatch) string {
	var parts []string
	if host != "" {
		parts = append(parts, host)
	}
	if m.Method != "" {
		parts = append(parts, m.Method)
	}
	if m.Path.Value != "" {
		parts = append(parts, string(m.Path.Type)+" "+m.Path.Value)
	}
	for _, h := range m.Headers {
		parts = append(parts, "["+h.Name+"]")
	}
	return strings.Join(parts, " ")
}

func addrPort(addr string, port int32) string {
	if strings.Contains(addr, ":") {
		addr = "[" + addr + "]"
	}
	return addr + ":" + itoa(int64(port))
}

func itoa(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func (s *Server) serviceDetail(name string) *serviceDetail {
	snap := s.opts.Snapshot()
	if snap == nil {
		return nil
	}
	for _, svc := range snap.Services {
		if svc.Key.String() != name {
			continue
		}
		hs := s.healthByKey()
		d := &serviceDetail{Name: name, stats: s.sampler.stats(kindService, name)}
		for _, sp := range svc.Ports {
			id := sp.ID(svc.Key)
			pd := portDetail{ID: id, Protocol: string(sp.Protocol), Port: sp.Port, NodePort: sp.NodePort, Endpoints: []endpointDetail{}}
			if sp.Cluster.Verdict != model.Forward {
				pd.Verdict = sp.Cluster.Verdict.String()
			}
			for _, ep := range sp.Endpoints {
				ed := endpointDetail{
					Address: ep.AddrPort().String(), Ready: ep.Ready, Serving: ep.Serving, Terminating: ep.Terminating,
					Node: ep.NodeName, Zone: ep.Zone,
				}
				if ep.Weight > 1 {
					ed.Weight = ep.Weight
				}
				key := health.Key{ServicePort: id, Endpoint: ep.AddrPort()}
				ed.stats = s.sampler.stats(kindEndpoint, endpointName(key))
				if h, ok := hs[key]; ok {
					ed.Healthy = &h.Healthy
					ed.Ejected = h.Ejected
					ed.Reason = h.Reason
				}
				pd.Endpoints = append(pd.Endpoints, ed)
			}
			d.Ports = append(d.Ports, pd)
		}
		return d
	}
	return nil
}

// writeJSON writes v as compact JSON, gzipped when the client accepts it.
func (s *Server) writeJSON(w http.ResponseWriter, r *http.Request, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Add("Vary", "Accept-Encoding")
	var enc *json.Encoder
	if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		w.Header().Set("Content-Encoding", "gzip")
		zw, _ := gzip.NewWriterLevel(w, gzip.BestSpeed)
		defer zw.Close()
		enc = json.NewEncoder(zw)
	} else {
		enc = json.NewEncoder(w)
	}
	if err := enc.Encode(v); err != nil {
		s.opts.Logger.Warn("admin: encode", "err", err)
	}
}
