package manifest

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// networkPolicy checks a NetworkPolicy as the API server's networking validation does.
func (c checker) networkPolicy(np *networkingv1.NetworkPolicy) {
	c.metadata(np, validation.IsDNS1123Subdomain)
	spec := &np.Spec
	c.labelSelector("spec.podSelector", &spec.PodSelector)
	for i, in := range spec.Ingress {
		path := fmt.Sprintf("spec.ingress[%d]", i)
		c.policyPorts(path+".ports", in.Ports)
		c.policyPeers(path+".from", in.From)
	}
	for i, out := range spec.Egress {
		path := fmt.Sprintf("spec.egress[%d]", i)
		c.policyPorts(path+".ports", out.Ports)
		c.policyPeers(path+".to", out.To)
	}
	if len(spec.PolicyTypes) > 2 {
		c.errorf("spec.policyTypes", "may name Ingress and Egress once each")
	}
	seen := map[networkingv1.PolicyType]bool{}
	for i, t := range spec.PolicyTypes {
		path := fmt.Sprintf("spec.policyTypes[%d]", i)
		if c.oneOf(path, string(t), string(networkingv1.PolicyTypeIngress), string(networkingv1.PolicyTypeEgress)) && seen[t] {
			c.errorf(path, "%q is given twice", t)
		}
		seen[t] = true
	}
}

// labelSelector reports what the API server's label selector validation reports.
func (c checker) labelSelector(path string, s *metav1.LabelSelector) {
	for _, e := range metav1validation.ValidateLabelSelector(s, metav1validation.LabelSelectorValidationOptions{}, field.NewPath(path)) {
		c.errorf(e.Field, "%s", e.ErrorBody())
	}
}

func (c checker) policyPorts(path string, ports []networkingv1.NetworkPolicyPort) {
	for i, p := range ports {
		pp := fmt.Sprintf("%s[%d]", path, i)
		if p.Protocol != nil {
			c.protocol(pp+".protocol", *p.Protocol)
		}
		if p.Port == nil {
			if p.EndPort != nil {
				c.errorf(pp+".endPort", "may not be set when port is not")
			}
			continue
		}
		if p.Port.Type == intstr.Int {
			c.portRange(pp+".port", p.Port.IntVal)
			if p.EndPort != nil {
				if *p.EndPort < p.Port.IntVal {
					c.errorf(pp+".endPort", "%d must be at least port %d", *p.EndPort, p.Port.IntVal)
				}
				c.portRange(pp+".endPort", *p.EndPort)
			}
			continue
		}
		c.check(pp+".port", p.Port.StrVal, validation.IsValidPortName(p.Port.StrVal))
		if p.EndPort != nil {
			c.errorf(pp+".endPort", "may not be set when port is a name")
		}
	}
}

func (c checker) policyPeers(path string, peers []networkingv1.NetworkPolicyPeer) {
	for i, peer := range peers {
		pp := fmt.Sprintf("%s[%d]", path, i)
		selectors := peer.PodSelector != nil || peer.NamespaceSelector != nil
		switch {
		case peer.IPBlock != nil && selectors:
			c.errorf(pp, "may not give ipBlock with podSelector or namespaceSelector")
		case peer.IPBlock == nil && !selectors:
			c.errorf(pp, "must give podSelector, namespaceSelector or ipBlock")
		}
		if peer.PodSelector != nil {
			c.labelSelector(pp+".podSelector", peer.PodSelector)
		}
		if peer.NamespaceSelector != nil {
			c.labelSelector(pp+".namespaceSelector", peer.NamespaceSelector)
		}
		if peer.IPBlock != nil {
			c.ipBlock(pp+".ipBlock", peer.IPBlock)
		}
	}
}

// ipBlock checks a CIDR and its excepts, each a strict subset of it.
func (c checker) ipBlock(path string, b *networkingv1.IPBlock) {
	cidr, err := netip.ParsePrefix(b.CIDR)
	if err != nil {
		c.errorf(path+".cidr", "%q is not a valid CIDR", b.CIDR)
		return
	}
	for i, e := range b.Except {
		ep := fmt.Sprintf("%s.except[%d]", path, i)
		ex, err := netip.ParsePrefix(e)
		switch {
		case err != nil:
			c.errorf(ep, "%q is not a valid CIDR", e)
		case ex.Addr().Is4() != cidr.Addr().Is4() || ex.Bits() <= cidr.Bits() || !cidr.Masked().Contains(ex.Addr()):
			c.errorf(ep, "%q must be a strict subset of cidr %q", e, b.CIDR)
		}
	}
}

// pod checks what network policy reads of a Pod: its name, IPs and named ports.
func (c checker) pod(p *corev1.Pod) {
	c.metadata(p, validation.IsDNS1123Subdomain)
	for i, ip := range p.Status.PodIPs {
		c.ip(fmt.Sprintf("status.podIPs[%d].ip", i), ip.IP)
	}
	if p.Status.PodIP != "" {
		c.ip("status.podIP", p.Status.PodIP)
	}
	for i, ctr := range p.Spec.Containers {
		for j, port := range ctr.Ports {
			path := fmt.Sprintf("spec.containers[%d].ports[%d]", i, j)
			if port.Name != "" {
				c.check(path+".name", port.Name, validation.IsValidPortName(port.Name))
			}
			c.portRange(path+".containerPort", port.ContainerPort)
			if port.Protocol != "" {
				c.protocol(path+".protocol", port.Protocol)
			}
		}
	}
}
