package kube

import (
	"fmt"
	"maps"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"

	weirv1alpha1 "weir.dev/weir/api/v1alpha1"
	"weir.dev/weir/internal/model"
)

// lastAppliedAnnotation is kubectl's copy of the whole last applied object.
const lastAppliedAnnotation = "kubectl.kubernetes.io/last-applied-configuration"

// stripObject drops what weir never reads and what costs the most memory: managedFields
// and kubectl's last-applied annotation; EndpointSlices and Services lose more
// (slimEndpointSlice, slimService). Tombstones pass through unchanged.
func stripObject(obj any) (any, error) {
	switch o := obj.(type) {
	case cache.DeletedFinalStateUnknown:
		return obj, nil
	case *discoveryv1.EndpointSlice:
		return slimEndpointSlice(o), nil
	case *corev1.Service:
		return slimService(o), nil
	}
	m, err := meta.Accessor(obj)
	if err != nil {
		return obj, nil // not an object; leave it to the informer
	}
	m.SetManagedFields(nil)
	if ann := m.GetAnnotations(); ann[lastAppliedAnnotation] != "" {
		delete(ann, lastAppliedAnnotation)
		if len(ann) == 0 {
			m.SetAnnotations(nil)
		}
	}
	return obj, nil
}

// slimEndpointSlice keeps what model.Translate reads of a slice: its name, the
// kubernetes.io/service-name label and model.ServiceLabels, the weir.dev/weight
// annotation, the address type,
// the ports, and per endpoint the addresses, conditions, hostname, node, zone and hints.
// Endpoints' targetRef (the Pod) and deprecatedTopology go, and so does every other
// label and annotation: at 100,000 endpoints the Pod references alone are tens of MB.
func slimEndpointSlice(es *discoveryv1.EndpointSlice) *discoveryv1.EndpointSlice {
	out := &discoveryv1.EndpointSlice{
		TypeMeta: es.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{Namespace: es.Namespace, Name: es.Name, UID: es.UID,
			ResourceVersion: es.ResourceVersion, Generation: es.Generation},
		AddressType: es.AddressType,
		Ports:       es.Ports,
		Endpoints:   compactEndpoints(es.Endpoints),
	}
	for _, k := range append([]string{discoveryv1.LabelServiceName}, model.ServiceLabels...) {
		if v, ok := es.Labels[k]; ok {
			if out.Labels == nil {
				out.Labels = map[string]string{}
			}
			out.Labels[k] = v
		}
	}
	if w, ok := es.Annotations[model.WeightAnnotation]; ok {
		out.Annotations = map[string]string{model.WeightAnnotation: w}
	}
	return out
}

// Shared condition values: the decoder allocates each endpoint's three *bool apart.
var (
	condTrue, condFalse = true, false
)

// compactEndpoints copies eps into a slice of its exact length (the decoder's appends
// leave up to half of it unused), without targetRef and deprecatedTopology, with the
// conditions pointing at shared values and node names, zones and hostnames repeated
// within the slice pointing at one string: an endpoint then costs about 60 % of its
// decoded size.
func compactEndpoints(eps []discoveryv1.Endpoint) []discoveryv1.Endpoint {
	if len(eps) == 0 {
		return nil
	}
	out := make([]discoveryv1.Endpoint, len(eps))
	var seen []*string // distinct strings of this slice; few: nodes and zones
	same := func(p *string) *string {
		if p == nil {
			return nil
		}
		for _, q := range seen {
			if *q == *p {
				return q
			}
		}
		if len(seen) < 16 {
			seen = append(seen, p)
		}
		return p
	}
	cond := func(p *bool) *bool {
		switch {
		case p == nil:
			return nil
		case *p:
			return &condTrue
		}
		return &condFalse
	}
	for i, ep := range eps {
		out[i] = discoveryv1.Endpoint{
			Addresses: ep.Addresses,
			Conditions: discoveryv1.EndpointConditions{
				Ready: cond(ep.Conditions.Ready), Serving: cond(ep.Conditions.Serving), Terminating: cond(ep.Conditions.Terminating),
			},
			Hostname: ep.Hostname,
			NodeName: same(ep.NodeName),
			Zone:     same(ep.Zone),
			Hints:    ep.Hints,
		}
	}
	return out
}

// slimService drops from a Service what weir never reads: managedFields, the
// last-applied annotation, its labels but model.ServiceLabels, the Pod selector
// (endpoints come from slices) and the status conditions.
func slimService(svc *corev1.Service) *corev1.Service {
	svc.ManagedFields = nil
	var keep map[string]string
	for _, k := range model.ServiceLabels {
		if v, ok := svc.Labels[k]; ok {
			if keep == nil {
				keep = map[string]string{}
			}
			keep[k] = v
		}
	}
	svc.Labels = keep
	svc.Spec.Selector = nil
	svc.Status.Conditions = nil
	if ann := svc.Annotations; ann[lastAppliedAnnotation] != "" {
		delete(ann, lastAppliedAnnotation)
		if len(ann) == 0 {
			svc.Annotations = nil
		}
	}
	return svc
}

// stripSecret keeps only a TLS Secret's certificate, key and CA bundle.
func stripSecret(obj any) (any, error) {
	sec, ok := obj.(*corev1.Secret)
	if !ok {
		return stripObject(obj)
	}
	sec.ManagedFields = nil
	sec.Annotations = nil
	sec.StringData = nil
	for k := range sec.Data {
		switch k {
		case corev1.TLSCertKey, corev1.TLSPrivateKeyKey, corev1.ServiceAccountRootCAKey:
		default:
			delete(sec.Data, k)
		}
	}
	return sec, nil
}

// stripNode keeps the name, labels and addresses of a Node: the zone and the node's IPs
// are all weir reads. A Node's status (images, conditions) is by far its largest part.
func stripNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return stripObject(obj)
	}
	return &corev1.Node{
		TypeMeta:   n.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion, Labels: n.Labels},
		Status:     corev1.NodeStatus{Addresses: n.Status.Addresses},
	}, nil
}

// stripNamespace keeps the name and labels of a Namespace: its labels are what
// allowedRoutes selectors read.
func stripNamespace(obj any) (any, error) {
	ns, ok := obj.(*corev1.Namespace)
	if !ok {
		return stripObject(obj)
	}
	return &corev1.Namespace{
		TypeMeta:   ns.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{Name: ns.Name, UID: ns.UID, ResourceVersion: ns.ResourceVersion, Labels: ns.Labels},
	}, nil
}

// stripPod keeps what network policy reads of a Pod: its name, labels, node, host
// networking, the containers' named ports, its phase and IPs. The rest of the spec
// and the status (conditions, container statuses) is most of a Pod and changes often.
func stripPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return stripObject(obj)
	}
	out := &corev1.Pod{
		TypeMeta:   p.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name, UID: p.UID, ResourceVersion: p.ResourceVersion, Labels: p.Labels},
		Spec:       corev1.PodSpec{NodeName: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork},
		Status:     corev1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs},
	}
	for _, c := range p.Spec.Containers {
		var ports []corev1.ContainerPort
		for _, port := range c.Ports {
			if port.Name != "" {
				ports = append(ports, corev1.ContainerPort{Name: port.Name, ContainerPort: port.ContainerPort, Protocol: port.Protocol})
			}
		}
		if len(ports) > 0 {
			out.Spec.Containers = append(out.Spec.Containers, corev1.Container{Name: c.Name, Ports: ports})
		}
	}
	return out, nil
}

// podChanged reports whether an update changed what network policy reads of a Pod
// (after stripPod, every field it kept but the resource version).
func podChanged(old, cur any) bool {
	o, ok1 := old.(*corev1.Pod)
	c, ok2 := cur.(*corev1.Pod)
	if !ok1 || !ok2 {
		return true
	}
	return !maps.Equal(o.Labels, c.Labels) || !equality.Semantic.DeepEqual(o.Spec, c.Spec) || !equality.Semantic.DeepEqual(o.Status, c.Status)
}

// toTrafficPolicy turns the dynamic informer's unstructured objects into typed
// TrafficPolicies, so the cache holds the compact typed form.
func toTrafficPolicy(obj any) (any, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return stripObject(obj)
	}
	tp := &weirv1alpha1.TrafficPolicy{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, tp); err != nil {
		return nil, fmt.Errorf("TrafficPolicy %s/%s: %w", u.GetNamespace(), u.GetName(), err)
	}
	return stripObject(tp)
}
