package manifest

//lint:file-ignore SA1019 weir accepts core/v1 Endpoints on purpose and mirrors them into EndpointSlices.

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
)

// DefaultAffinityTimeoutSeconds is the API server's default ClientIP affinity timeout.
const DefaultAffinityTimeoutSeconds = 10800

// setDefaults applies the defaults the API server (and, for EndpointSlice conditions,
// kube-proxy's reading of unset fields) would apply, so data planes see explicit values.
func setDefaults(o *object) {
	if m, ok := o.obj.(metav1.Object); ok {
		m.SetNamespace(o.namespace)
	}
	switch obj := o.obj.(type) {
	case *corev1.Service:
		defaultService(obj)
	case *discoveryv1.EndpointSlice:
		defaultEndpointSlice(obj)
	case *corev1.Endpoints:
		for i := range obj.Subsets {
			for j := range obj.Subsets[i].Ports {
				if obj.Subsets[i].Ports[j].Protocol == "" {
					obj.Subsets[i].Ports[j].Protocol = corev1.ProtocolTCP
				}
			}
		}
	case *corev1.Namespace:
		// The API server always sets this label to the name (Gateway listeners select
		// namespaces by it). A bad name is reported once, on metadata.name.
		if len(validation.IsDNS1123Label(obj.Name)) == 0 {
			if obj.Labels == nil {
				obj.Labels = map[string]string{}
			}
			obj.Labels[corev1.LabelMetadataName] = obj.Name
		}
	case *corev1.Secret:
		if obj.Type == "" {
			obj.Type = corev1.SecretTypeOpaque
		}
		// The API server merges stringData into data (stringData wins) and never stores it.
		if len(obj.StringData) > 0 {
			if obj.Data == nil {
				obj.Data = map[string][]byte{}
			}
			for k, v := range obj.StringData {
				obj.Data[k] = []byte(v)
			}
			obj.StringData = nil
		}
	}
	setGatewayDefaults(o.obj)
}

func defaultService(s *corev1.Service) {
	spec := &s.Spec
	if spec.Type == "" {
		spec.Type = corev1.ServiceTypeClusterIP
	}
	if spec.SessionAffinity == "" {
		spec.SessionAffinity = corev1.ServiceAffinityNone
	}
	if spec.SessionAffinity == corev1.ServiceAffinityClientIP {
		if spec.SessionAffinityConfig == nil {
			spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{}
		}
		if spec.SessionAffinityConfig.ClientIP == nil {
			spec.SessionAffinityConfig.ClientIP = &corev1.ClientIPConfig{}
		}
		if spec.SessionAffinityConfig.ClientIP.TimeoutSeconds == nil {
			t := int32(DefaultAffinityTimeoutSeconds)
			spec.SessionAffinityConfig.ClientIP.TimeoutSeconds = &t
		}
	}
	for i := range spec.Ports {
		p := &spec.Ports[i]
		if p.Protocol == "" {
			p.Protocol = corev1.ProtocolTCP
		}
		if p.TargetPort.Type == intstr.Int && p.TargetPort.IntVal == 0 ||
			p.TargetPort.Type == intstr.String && p.TargetPort.StrVal == "" {
			p.TargetPort = intstr.FromInt32(p.Port)
		}
	}
	if spec.Type == corev1.ServiceTypeExternalName {
		return
	}
	if len(spec.ClusterIPs) == 0 && spec.ClusterIP != "" {
		spec.ClusterIPs = []string{spec.ClusterIP}
	}
	if spec.ClusterIP == "" && len(spec.ClusterIPs) > 0 {
		spec.ClusterIP = spec.ClusterIPs[0]
	}
	if len(spec.IPFamilies) == 0 {
		for _, ip := range spec.ClusterIPs {
			a, err := netip.ParseAddr(ip)
			if err != nil {
				spec.IPFamilies = nil // "None", or invalid (validation reports it)
				break
			}
			if a.Unmap().Is4() {
				spec.IPFamilies = append(spec.IPFamilies, corev1.IPv4Protocol)
			} else {
				spec.IPFamilies = append(spec.IPFamilies, corev1.IPv6Protocol)
			}
		}
	}
	if spec.IPFamilyPolicy == nil {
		p := corev1.IPFamilyPolicySingleStack
		if len(spec.ClusterIPs) == 2 || len(spec.IPFamilies) == 2 {
			p = corev1.IPFamilyPolicyRequireDualStack
		}
		spec.IPFamilyPolicy = &p
	}
	if spec.InternalTrafficPolicy == nil {
		p := corev1.ServiceInternalTrafficPolicyCluster
		spec.InternalTrafficPolicy = &p
	}
	if spec.Type == corev1.ServiceTypeNodePort || spec.Type == corev1.ServiceTypeLoadBalancer {
		if spec.ExternalTrafficPolicy == "" {
			spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster
		}
	}
	if spec.Type == corev1.ServiceTypeLoadBalancer && spec.AllocateLoadBalancerNodePorts == nil {
		t := true
		spec.AllocateLoadBalancerNodePorts = &t
	}
}

// defaultEndpointSlice makes unset conditions explicit the way kube-proxy reads them:
// ready and serving when unset, not terminating when unset; port protocol TCP.
func defaultEndpointSlice(s *discoveryv1.EndpointSlice) {
	for i := range s.Ports {
		if s.Ports[i].Protocol == nil {
			p := corev1.ProtocolTCP
			s.Ports[i].Protocol = &p
		}
	}
	for i := range s.Endpoints {
		c := &s.Endpoints[i].Conditions
		if c.Ready == nil {
			c.Ready = ptrTo(true)
		}
		if c.Serving == nil {
			c.Serving = ptrTo(true)
		}
		if c.Terminating == nil {
			c.Terminating = ptrTo(false)
		}
	}
}

func ptrTo[T any](v T) *T { return &v }
