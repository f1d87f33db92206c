package manifest

import (
	"fmt"
	"net/netip"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Path parts the API server refuses in Exact and Prefix Ingress paths
// (k8s.io/kubernetes pkg/apis/networking/validation).
var (
	invalidIngressPathParts    = []string{"//", "/./", "/../", "%2f", "%2F"}
	invalidIngressPathSuffixes = []string{"/..", "/."}
)

// ingress checks an Ingress as the API server's networking validation does on create.
func (c checker) ingress(ing *networkingv1.Ingress) {
	c.metadata(ing, validation.IsDNS1123Subdomain)
	spec := &ing.Spec
	if len(spec.Rules) == 0 && spec.DefaultBackend == nil {
		c.errorf("spec", "either defaultBackend or rules must be specified")
	}
	if spec.DefaultBackend != nil {
		c.ingressBackend("spec.defaultBackend", spec.DefaultBackend)
	}
	for i, r := range spec.Rules {
		path := fmt.Sprintf("spec.rules[%d]", i)
		if r.Host != "" {
			if _, err := netip.ParseAddr(r.Host); err == nil {
				c.errorf(path+".host", "%q must be a DNS name, not an IP address", r.Host)
			}
			if strings.Contains(r.Host, "*") {
				c.check(path+".host", r.Host, validation.IsWildcardDNS1123Subdomain(r.Host))
			} else {
				c.check(path+".host", r.Host, validation.IsDNS1123Subdomain(r.Host))
			}
		}
		if r.HTTP == nil {
			continue
		}
		if len(r.HTTP.Paths) == 0 {
			c.errorf(path+".http.paths", "is required")
		}
		for j := range r.HTTP.Paths {
			c.ingressPath(fmt.Sprintf("%s.http.paths[%d]", path, j), &r.HTTP.Paths[j])
		}
	}
	for i, t := range spec.TLS {
		for j, h := range t.Hosts {
			path := fmt.Sprintf("spec.tls[%d].hosts[%d]", i, j)
			if strings.Contains(h, "*") {
				c.check(path, h, validation.IsWildcardDNS1123Subdomain(h))
			} else {
				c.check(path, h, validation.IsDNS1123Subdomain(h))
			}
		}
		if t.SecretName != "" {
			c.check(fmt.Sprintf("spec.tls[%d].secretName", i), t.SecretName, validation.IsDNS1123Subdomain(t.SecretName))
		}
	}
	if spec.IngressClassName != nil {
		c.check("spec.ingressClassName", *spec.IngressClassName, validation.IsDNS1123Subdomain(*spec.IngressClassName))
	}
	if a, ok := ing.Annotations["kubernetes.io/ingress.class"]; ok && spec.IngressClassName != nil && a != *spec.IngressClassName {
		c.errorf("metadata.annotations.kubernetes.io/ingress.class", "%q must match spec.ingressClassName %q when both are set", a, *spec.IngressClassName)
	}
}

func (c checker) ingressPath(path string, p *networkingv1.HTTPIngressPath) {
	if p.PathType == nil {
		c.errorf(path+".pathType", "is required")
		return
	}
	switch *p.PathType {
	case networkingv1.PathTypeExact, networkingv1.PathTypePrefix:
		if !strings.HasPrefix(p.Path, "/") {
			c.errorf(path+".path", "%q must be an absolute path", p.Path)
		}
		for _, part := range invalidIngressPathParts {
			if strings.Contains(p.Path, part) {
				c.errorf(path+".path", "%q must not contain '%s'", p.Path, part)
			}
		}
		for _, suffix := range invalidIngressPathSuffixes {
			if strings.HasSuffix(p.Path, suffix) {
				c.errorf(path+".path", "%q cannot end with '%s'", p.Path, suffix)
			}
		}
	case networkingv1.PathTypeImplementationSpecific:
		if p.Path != "" && !strings.HasPrefix(p.Path, "/") {
			c.errorf(path+".path", "%q must be an absolute path", p.Path)
		}
	default:
		c.oneOf(path+".pathType", string(*p.PathType), "Exact", "ImplementationSpecific", "Prefix")
	}
	c.ingressBackend(path+".backend", &p.Backend)
}

func (c checker) ingressBackend(path string, b *networkingv1.IngressBackend) {
	switch {
	case b.Resource != nil && b.Service != nil:
		c.errorf(path, "cannot set both resource and service backends")
	case b.Resource != nil:
		if b.Resource.Kind == "" {
			c.errorf(path+".resource.kind", "is required")
		}
		if b.Resource.Name == "" {
			c.errorf(path+".resource.name", "is required")
		}
	case b.Service != nil:
		s := b.Service
		if s.Name == "" {
			c.errorf(path+".service.name", "is required")
		} else {
			c.check(path+".service.name", s.Name, validation.IsDNS1035Label(s.Name))
		}
		switch {
		case s.Port.Name != "" && s.Port.Number != 0:
			c.errorf(path+".service.port", "cannot set both port name and port number")
		case s.Port.Name != "":
			c.check(path+".service.port.name", s.Port.Name, validation.IsValidPortName(s.Port.Name))
		case s.Port.Number != 0:
			c.portRange(path+".service.port.number", s.Port.Number)
		default:
			c.errorf(path+".service.port", "port name or number is required")
		}
	default:
		c.errorf(path, "resource or service backend is required")
	}
}
