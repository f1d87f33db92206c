package manifest

//lint:file-ignore SA1019 weir accepts core/v1 Endpoints on purpose and mirrors them into EndpointSlices.

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	weirv1alpha1 "weir.dev/weir/api/v1alpha1"
	"weir.dev/weir/internal/model"
)

// Labels the EndpointSlice mirroring controller reads and sets.
const (
	skipMirrorLabel = "endpointslice.kubernetes.io/skip-mirror"
	managedByLabel  = discoveryv1.LabelManagedBy
	mirrorManager   = "endpointslicemirroring-controller.k8s.io"
	// leaderAnnotation marks the Endpoints that old leader election used as a lock; the
	// mirroring controller skips them.
	leaderAnnotation = "control-plane.alpha.kubernetes.io/leader"
)

// finish defaults and validates every decoded object, mirrors Endpoints, runs the
// cross-object checks and assembles the result.
func (l *loader) finish() *model.Objects {
	for _, o := range l.objs {
		setDefaults(o)
		l.report.Loaded[o.kind]++
		l.validate(o)
	}
	l.duplicates()
	services := map[string]*object{}
	for _, o := range l.objs {
		if o.kind == "Service" {
			services[o.namespace+"/"+o.name] = o
		}
	}
	// Services that have EndpointSlices of their own in the files.
	sliced := map[string]bool{}
	for _, o := range l.objs {
		if s, ok := o.obj.(*discoveryv1.EndpointSlice); ok && s.Labels[ServiceNameLabel] != "" {
			sliced[o.namespace+"/"+s.Labels[ServiceNameLabel]] = true
		}
	}
	var slices []*object
	for _, o := range l.objs {
		switch obj := o.obj.(type) {
		case *discoveryv1.EndpointSlice:
			slices = append(slices, o)
		case *corev1.Endpoints:
			if obj.Labels[skipMirrorLabel] == "true" || obj.Annotations[leaderAnnotation] != "" {
				continue
			}
			svc := services[o.namespace+"/"+o.name]
			if svc == nil {
				l.errorf(o, "metadata.name", "Service %s/%s does not exist (Endpoints are mirrored for the Service of the same name)", o.namespace, o.name)
				continue
			}
			// Kubernetes mirrors only Endpoints of Services without a selector; the
			// EndpointSlice controller writes the slices of the others. A folder often
			// holds both (a `kubectl get endpoints,endpointslices` dump): the slices win.
			// Without slices, the Endpoints stand in for what the controller would write.
			if len(svc.obj.(*corev1.Service).Spec.Selector) > 0 && sliced[o.namespace+"/"+o.name] {
				l.report.NotMirrored++
				continue
			}
			for _, s := range mirror(obj) {
				slices = append(slices, &object{kind: "EndpointSlice", namespace: o.namespace, name: s.Name, doc: o.doc, obj: s})
				l.report.Mirrored++
			}
		}
	}
	l.crossCheck(services, slices)
	l.routeBackends(services)
	l.ownEndpoints(slices)
	l.clusterIPsUnique()
	for _, o := range services {
		s := o.obj.(*corev1.Service)
		if s.Spec.Type != corev1.ServiceTypeExternalName && s.Spec.ClusterIP == "" {
			l.warnf(o, "spec.clusterIP", "is not set: weir serves this Service only on its node ports and external IPs; "+
				"set it to a local address (e.g. 127.0.0.10) to serve it standalone")
		}
	}
	l.report.Warnings.sort()

	out := &model.Objects{}
	for _, o := range l.objs {
		switch obj := o.obj.(type) {
		case *corev1.Service:
			out.Services = append(out.Services, obj)
		case *corev1.Secret:
			out.Secrets = append(out.Secrets, obj)
		case *corev1.Namespace:
			out.Namespaces = append(out.Namespaces, obj)
		case *corev1.Pod:
			out.Pods = append(out.Pods, obj)
		case *networkingv1.NetworkPolicy:
			out.NetworkPolicies = append(out.NetworkPolicies, obj)
		case *networkingv1.Ingress:
			out.Ingresses = append(out.Ingresses, obj)
		case *networkingv1.IngressClass:
			out.IngressClasses = append(out.IngressClasses, obj)
		case *gatewayv1.GatewayClass:
			out.GatewayClasses = append(out.GatewayClasses, obj)
		case *gatewayv1.Gateway:
			out.Gateways = append(out.Gateways, obj)
		case *gatewayv1.HTTPRoute:
			out.HTTPRoutes = append(out.HTTPRoutes, obj)
		case *gatewayv1.GRPCRoute:
			out.GRPCRoutes = append(out.GRPCRoutes, obj)
		case *gatewayv1.TLSRoute:
			out.TLSRoutes = append(out.TLSRoutes, obj)
		case *gatewayv1.ReferenceGrant:
			out.ReferenceGrants = append(out.ReferenceGrants, obj)
		case *weirv1alpha1.TrafficPolicy:
			out.Policies = append(out.Policies, obj)
		case *gatewayv1.BackendTLSPolicy:
			out.BackendTLSPolicies = append(out.BackendTLSPolicies, obj)
		}
	}
	for _, o := range slices {
		out.EndpointSlices = append(out.EndpointSlices, o.obj.(*discoveryv1.EndpointSlice))
	}
	sortObjects(out)
	return out
}

func (l *loader) validate(o *object) {
	defer l.addSchemaErrors(o, len(l.errs))
	c := checker{l: l, o: o}
	switch obj := o.obj.(type) {
	case *corev1.Service:
		c.service(obj)
	case *discoveryv1.EndpointSlice:
		c.endpointSlice(obj)
	case *corev1.Endpoints:
		c.endpoints(obj)
	case *corev1.Secret:
		c.secret(obj)
	case *weirv1alpha1.TrafficPolicy:
		c.trafficPolicy(obj)
	case *corev1.Namespace:
		c.metadata(obj, validation.IsDNS1123Label)
	case *networkingv1.Ingress:
		c.ingress(obj)
	case *networkingv1.NetworkPolicy:
		c.networkPolicy(obj)
	case *corev1.Pod:
		c.pod(obj)
	case metav1.Object:
		// Gateway API objects: the CRD schemas and CEL rules checked them (schemaCheck);
		// their semantic problems (a missing backend or certificate) are status
		// conditions the gateway reports, not load errors. Here, the name formats.
		c.metadata(obj, validation.IsDNS1123Subdomain)
	}
}

// duplicates reports objects of the same kind, namespace and name found twice.
func (l *loader) duplicates() {
	first := map[string]*object{}
	for _, o := range l.objs {
		if o.name == "" {
			continue
		}
		if f, dup := first[o.key()]; dup {
			l.errorf(o, "metadata.name", "duplicate of the object at %s:%d", f.doc.file.name, f.doc.line)
			continue
		}
		first[o.key()] = o
	}
}

// clusterIPsUnique refuses a ClusterIP given to two Services, as the API server's IP
// allocator does: weir could serve only one of them.
func (l *loader) clusterIPsUnique() {
	owner := map[netip.Addr]*object{}
	for _, o := range l.objs {
		svc, ok := o.obj.(*corev1.Service)
		if !ok {
			continue
		}
		for i, s := range svc.Spec.ClusterIPs {
			ip, err := netip.ParseAddr(s)
			if err != nil {
				continue // reported by the Service's own checks
			}
			if first, taken := owner[ip]; taken {
				l.errorf(o, fmt.Sprintf("spec.clusterIPs[%d]", i), "%s is already the ClusterIP of Service %s/%s (%s)",
					ip, first.namespace, first.name, first.doc.file.name)
				continue
			}
			owner[ip] = o
		}
	}
}

// crossCheck checks references between objects: slices to Services, named target
// ports to slice ports, policies to Services.
func (l *loader) crossCheck(services map[string]*object, slices []*object) {
	slicePorts := map[string]map[string]bool{} // Service → names of its slices' ports
	for _, o := range slices {
		s := o.obj.(*discoveryv1.EndpointSlice)
		svc, ok := s.Labels[ServiceNameLabel]
		if !ok {
			l.warnf(o, "metadata.labels", "has no %s label, so it belongs to no Service (kube-proxy ignores such slices, and so does weir)", ServiceNameLabel)
			continue
		}
		key := o.namespace + "/" + svc
		if services[key] == nil && s.Labels[managedByLabel] != mirrorManager {
			l.errorf(o, "metadata.labels."+ServiceNameLabel, "Service %s does not exist", key)
			continue
		}
		if slicePorts[key] == nil {
			slicePorts[key] = map[string]bool{}
		}
		for _, p := range s.Ports {
			if p.Name != nil {
				slicePorts[key][*p.Name] = true
			} else {
				slicePorts[key][""] = true
			}
		}
	}
	for key, o := range services {
		ports, ok := slicePorts[key]
		if !ok {
			continue // no slices (yet): the Service has no endpoints, which is valid
		}
		svc := o.obj.(*corev1.Service)
		for i, p := range svc.Spec.Ports {
			if p.TargetPort.Type != intstr.String {
				continue
			}
			// kube-proxy (and translate) match slice ports by the Service port's name:
			// the EndpointSlice controller resolves the named targetPort to a number and
			// names the slice port after the Service port.
			switch {
			case ports[p.Name]:
			case ports[p.TargetPort.StrVal]:
				l.errorf(o, fmt.Sprintf("spec.ports[%d].targetPort", i),
					"%q: the EndpointSlices of Service %s have a port named %q, but a slice port must carry the Service port's name (%q)",
					p.TargetPort.StrVal, key, p.TargetPort.StrVal, p.Name)
			default:
				l.errorf(o, fmt.Sprintf("spec.ports[%d].targetPort", i),
					"%q matches no port of the EndpointSlices of Service %s (a slice port carries the Service port's name, %q; theirs: %s)",
					p.TargetPort.StrVal, key, p.Name, portNames(ports))
			}
		}
	}
	for _, o := range l.objs {
		p, ok := o.obj.(*weirv1alpha1.TrafficPolicy)
		if !ok {
			continue
		}
		for i, ref := range p.Spec.TargetRefs {
			if ref.Kind != "Service" || ref.Group != "" || ref.Name == "" {
				continue
			}
			key := o.namespace + "/" + string(ref.Name)
			so := services[key]
			if so == nil {
				l.errorf(o, fmt.Sprintf("spec.targetRefs[%d].name", i), "Service %s does not exist", key)
				continue
			}
			if ref.SectionName != nil && *ref.SectionName != "" {
				found := false
				for _, sp := range so.obj.(*corev1.Service).Spec.Ports {
					found = found || sp.Name == string(*ref.SectionName)
				}
				if !found {
					l.errorf(o, fmt.Sprintf("spec.targetRefs[%d].sectionName", i), "Service %s has no port named %q", key, *ref.SectionName)
				}
			}
		}
	}
}

func portNames(set map[string]bool) string {
	names := make([]string, 0, len(set))
	for n := range set {
		names = append(names, fmt.Sprintf("%q", n))
	}
	slices.Sort(names)
	if len(names) == 0 {
		return "none"
	}
	return fmt.Sprint(names)
}

// mirror turns core/v1 Endpoints into EndpointSlices as the EndpointSlice mirroring
// controller does: one slice per subset and address family, ready endpoints from
// addresses, not-ready ones from notReadyAddresses, the subset's ports, and the
// kubernetes.io/service-name label.
func mirror(e *corev1.Endpoints) []*discoveryv1.EndpointSlice {
	var out []*discoveryv1.EndpointSlice
	for i, ss := range e.Subsets {
		byType := map[discoveryv1.AddressType]*discoveryv1.EndpointSlice{}
		add := func(a corev1.EndpointAddress, ready bool) {
			ip, err := netip.ParseAddr(a.IP)
			if err != nil {
				return // the mirroring controller skips invalid addresses; validation reported it
			}
			t := discoveryv1.AddressTypeIPv4
			if !ip.Unmap().Is4() {
				t = discoveryv1.AddressTypeIPv6
			}
			s := byType[t]
			if s == nil {
				s = newMirrorSlice(e, i, t, ss.Ports)
				byType[t] = s
				out = append(out, s)
			}
			ep := discoveryv1.Endpoint{
				Addresses: []string{ip.Unmap().String()},
				Conditions: discoveryv1.EndpointConditions{
					Ready: ptrTo(ready), Serving: ptrTo(ready), Terminating: ptrTo(false),
				},
				NodeName:  a.NodeName,
				TargetRef: a.TargetRef,
			}
			if a.Hostname != "" {
				ep.Hostname = ptrTo(a.Hostname)
			}
			s.Endpoints = append(s.Endpoints, ep)
		}
		for _, a := range ss.Addresses {
			add(a, true)
		}
		for _, a := range ss.NotReadyAddresses {
			add(a, false)
		}
	}
	return out
}

func newMirrorSlice(e *corev1.Endpoints, subset int, t discoveryv1.AddressType, ports []corev1.EndpointPort) *discoveryv1.EndpointSlice {
	labels := map[string]string{}
	for k, v := range e.Labels {
		labels[k] = v
	}
	labels[ServiceNameLabel] = e.Name
	labels[managedByLabel] = mirrorManager
	suffix := "ipv4"
	if t == discoveryv1.AddressTypeIPv6 {
		suffix = "ipv6"
	}
	s := &discoveryv1.EndpointSlice{
		TypeMeta: metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSlice"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        fmt.Sprintf("%s-mirror-%d-%s", e.Name, subset, suffix),
			Namespace:   e.Namespace,
			Labels:      labels,
			Annotations: copyMap(e.Annotations),
		},
		AddressType: t,
	}
	for _, p := range ports {
		s.Ports = append(s.Ports, discoveryv1.EndpointPort{
			Name: ptrTo(p.Name), Port: ptrTo(p.Port), Protocol: ptrTo(p.Protocol), AppProtocol: p.AppProtocol,
		})
	}
	return s
}

func copyMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// sortObjects orders every list by namespace and name, so the same manifests give
// deeply equal Objects whatever the order of files and documents.
func sortObjects(o *model.Objects) {
	sortByName(o.Services)
	sortByName(o.EndpointSlices)
	sortByName(o.Secrets)
	sortByName(o.Ingresses)
	sortByName(o.IngressClasses)
	sortByName(o.GatewayClasses)
	sortByName(o.Gateways)
	sortByName(o.HTTPRoutes)
	sortByName(o.GRPCRoutes)
	sortByName(o.TLSRoutes)
	sortByName(o.ReferenceGrants)
	sortByName(o.Policies)
	sortByName(o.BackendTLSPolicies)
	sortByName(o.Namespaces)
	sortByName(o.Pods)
	sortByName(o.NetworkPolicies)
}

func sortByName[T metav1.Object](list []T) {
	slices.SortStableFunc(list, func(a, b T) int {
		return cmp.Or(cmp.Compare(a.GetNamespace(), b.GetNamespace()), cmp.Compare(a.GetName(), b.GetName()))
	})
}

// routeBackends warns about route backendRefs to a Service the files do not hold, or to
// a port it does not have. That is legal (the Service may come later), but until then
// the route is ResolvedRefs=False with reason BackendNotFound and the gateway answers
// what the Gateway API prescribes for an invalid backend.
func (l *loader) routeBackends(services map[string]*object) {
	check := func(o *object, path string, ref gatewayv1.BackendObjectReference, outcome string) {
		if (ref.Group != nil && *ref.Group != "") || (ref.Kind != nil && *ref.Kind != "Service") {
			return
		}
		ns := o.namespace
		if ref.Namespace != nil {
			ns = string(*ref.Namespace)
		}
		key := ns + "/" + string(ref.Name)
		consequence := "the route's ResolvedRefs condition is False (BackendNotFound) and " + outcome
		svc := services[key]
		if svc == nil {
			l.warnf(o, path+".name", "Service %s does not exist: %s", key, consequence)
			return
		}
		if ref.Port == nil {
			return // the CRD's CEL rule requires a port for a Service
		}
		for _, p := range svc.obj.(*corev1.Service).Spec.Ports {
			if p.Port == *ref.Port && p.Protocol != corev1.ProtocolUDP && p.Protocol != corev1.ProtocolSCTP {
				return
			}
		}
		l.warnf(o, path+".port", "Service %s has no TCP port %d: %s", key, *ref.Port, consequence)
	}
	const http500 = "requests sent to this backend get HTTP 500"
	for _, o := range l.objs {
		switch r := o.obj.(type) {
		case *gatewayv1.HTTPRoute:
			for i, rule := range r.Spec.Rules {
				for j, b := range rule.BackendRefs {
					check(o, fmt.Sprintf("spec.rules[%d].backendRefs[%d]", i, j), b.BackendObjectReference, http500)
				}
			}
		case *gatewayv1.GRPCRoute:
			for i, rule := range r.Spec.Rules {
				for j, b := range rule.BackendRefs {
					check(o, fmt.Sprintf("spec.rules[%d].backendRefs[%d]", i, j), b.BackendObjectReference, http500)
				}
			}
		case *gatewayv1.TLSRoute:
			for i, rule := range r.Spec.Rules {
				for j, b := range rule.BackendRefs {
					check(o, fmt.Sprintf("spec.rules[%d].backendRefs[%d]", i, j), b.BackendObjectReference,
						"connections sent to this backend are closed")
				}
			}
		}
	}
}
