package model

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	weirv1alpha1 "weir.dev/weir/api/v1alpha1"
)

// TestGolden translates the manifests in testdata/*.yaml, as seen from node-a in
// zone-a, and compares a compact text rendering of the Snapshot (describe) with
// testdata/*.golden. The golden files show what Translate makes of real manifests.
// Regenerate them, and review the diff, with:
//
//	WEIR_UPDATE_GOLDEN=1 go test ./internal/model/ -run TestGolden
func TestGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	update := os.Getenv("WEIR_UPDATE_GOLDEN") != ""
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			objs := readManifests(t, file)
			got := []byte(describe(Translate(objs, Node{Name: "node-a", Zone: "zone-a"})))
			golden := strings.TrimSuffix(file, ".yaml") + ".golden"
			if update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with WEIR_UPDATE_GOLDEN=1 to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Snapshot of %s differs from %s; run with WEIR_UPDATE_GOLDEN=1 and review the diff.\ngot:\n%s", file, golden, got)
			}
		})
	}
}

// readManifests decodes the Services, EndpointSlices and TrafficPolicies of a
// multi-document YAML file, strictly.
func readManifests(t *testing.T, file string) *Objects {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	objs := &Objects{}
	for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(data), -1) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatalf("%s: document %d: %v", file, i, err)
		}
		var into any
		switch tm.Kind {
		case "":
			continue // only comments
		case "Service":
			s := &corev1.Service{}
			objs.Services, into = append(objs.Services, s), s
		case "EndpointSlice":
			s := &discoveryv1.EndpointSlice{}
			objs.EndpointSlices, into = append(objs.EndpointSlices, s), s
		case "TrafficPolicy":
			p := &weirv1alpha1.TrafficPolicy{}
			objs.Policies, into = append(objs.Policies, p), p
		default:
			t.Fatalf("%s: document %d: kind %q not in this test", file, i, tm.Kind)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), into); err != nil {
			t.Fatalf("%s: document %d (%s): %v", file, i, tm.Kind, err)
		}
	}
	return objs
}

// describe renders the Services of a Snapshot compactly, one line per fact.
func describe(snap *Snapshot) string {
	var b strings.Builder
	for _, s := range snap.Services {
		fmt.Fprintf(&b, "%s %s", s.Key, s.Type)
		switch {
		case s.Headless:
			b.WriteString(" headless")
		case s.ExternalName != "":
			fmt.Fprintf(&b, " externalName=%s", s.ExternalName)
		}
		fmt.Fprintf(&b, " proxied=%v policy=%s\n", s.Proxied(), describePolicy(s.Policy))
		line := func(label string, v any) {
			fmt.Fprintf(&b, "  %s: %v\n", label, v)
		}
		if len(s.ClusterIPs) > 0 {
			line("clusterIPs", s.ClusterIPs)
		}
		if len(s.ExternalIPs) > 0 {
			line("externalIPs", s.ExternalIPs)
		}
		if len(s.LoadBalancerIPs) > 0 {
			line("loadBalancerIPs", s.LoadBalancerIPs)
		}
		if len(s.LoadBalancerSourceRanges) > 0 {
			line("loadBalancerSourceRanges", s.LoadBalancerSourceRanges)
		}
		if s.AffinityTimeout > 0 {
			line("affinity", s.AffinityTimeout)
		}
		if s.InternalTrafficLocal || s.ExternalTrafficLocal {
			line("trafficLocal (internal, external)", fmt.Sprint(s.InternalTrafficLocal, ", ", s.ExternalTrafficLocal))
		}
		if s.HealthCheckNodePort > 0 {
			line("healthCheckNodePort", fmt.Sprintf("%d localEndpoints=%d", s.HealthCheckNodePort, s.LocalEndpoints))
		}
		for _, d := range s.DNSEndpoints {
			line("dns", fmt.Sprintf("%s hostname=%q ready=%v", d.Addr, d.Hostname, d.Ready))
		}
		for _, p := range s.Ports {
			fmt.Fprintf(&b, "  port %s %s/%d nodePort=%d appProtocol=%q policy=%s\n",
				p.ID(s.Key), p.Protocol, p.Port, p.NodePort, p.AppProtocol, describePolicy(p.Policy))
			for _, e := range p.Endpoints {
				fmt.Fprintf(&b, "    endpoint %s ready=%v serving=%v terminating=%v node=%s zone=%s local=%v weight=%d",
					e.AddrPort(), e.Ready, e.Serving, e.Terminating, e.NodeName, e.Zone, e.Local, e.Weight)
				if e.Hostname != "" {
					fmt.Fprintf(&b, " hostname=%s", e.Hostname)
				}
				b.WriteString("\n")
			}
			sets := []struct {
				name string
				set  EndpointSet
			}{{"cluster", p.Cluster}, {"external", p.External}}
			if s.ExternalTrafficLocal {
				sets = append(sets, struct {
					name string
					set  EndpointSet
				}{"short-circuit", p.ShortCircuit})
			}
			for _, set := range sets {
				fmt.Fprintf(&b, "    %s: %s (ipv4 %s, ipv6 %s) %v\n", set.name, set.set.Verdict,
					set.set.IPv4Verdict, set.set.IPv6Verdict, addrPorts(set.set.Endpoints))
			}
		}
	}
	return b.String()
}

func describePolicy(p *Policy) string {
	if p.Source == "" {
		return "defaults"
	}
	out := fmt.Sprintf("%s(%s", p.Source, p.Algorithm)
	if p.HealthCheck != nil {
		out += fmt.Sprintf(" check=%+v", *p.HealthCheck)
	}
	if p.ConnectTimeout != DefaultConnectTimeout {
		out += fmt.Sprintf(" connect=%s", p.ConnectTimeout)
	}
	return out + ")"
}
