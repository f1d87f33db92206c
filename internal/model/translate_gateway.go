package model

import (
	"cmp"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

const gatewayGroup = "gateway.networking.k8s.io"

// translateGateways fills snap.Gateway from the Gateway API and Ingress objects.
// Translate calls it after the Services are built.
func translateGateways(objs *Objects, snap *Snapshot) {
	t := &gwTranslator{objs: objs, snap: snap, listeners: map[string]*Listener{}, nsLabels: namespaceLabels(objs.Namespaces)}
	if objs.GatewayServicesManaged {
		t.gwServices = indexGatewayServices(objs.GatewayServices)
	}
	t.gatewayClasses()
	t.gateways()
	t.routes()
	t.ingresses()
	cfg := t.finish()
	if cfg != nil {
		snap.Gateway = cfg
	}
}

type gwTranslator struct {
	objs *Objects
	snap *Snapshot

	classes  map[string]bool       // accepted GatewayClass names
	nsLabels map[string]labels.Set // labels of the Namespace objects, by name
	// gwServices are the Gateways' own Services by "namespace/name" of the Gateway, when
	// Objects.GatewayServicesManaged is set.
	gwServices map[string]*corev1.Service
	gws        []*gwGateway
	listeners  map[string]*Listener // by address
	status     []ObjectStatus
	// vhosts collects route matches per section and hostname before sorting.
	matches map[*Section]map[string][]*sortableMatch
}

// gwGateway is one accepted Gateway and its listeners.
type gwGateway struct {
	obj       *gatewayv1.Gateway
	status    *ObjectStatus
	listeners []*gwListener
}

type gwListener struct {
	spec     gatewayv1.Listener
	hostname string
	// accepted: the listener takes routes (and counts them); section is nil when it is
	// not served (not accepted, a broken reference, or its Gateway not programmed).
	accepted bool
	section  *Section
	protocol ListenerProtocol
	status   *ListenerStatus
	// from is allowedRoutes.namespaces.from (default Same); selector is its parsed
	// selector when from is Selector.
	from     gatewayv1.FromNamespaces
	selector labels.Selector
}

// sortableMatch is a RouteMatch with what precedence needs.
type sortableMatch struct {
	m        *RouteMatch
	created  time.Time
	routeKey string
	ruleIdx  int
	matchIdx int
}

func cond(t string, ok bool, reason, msg string, gen int64) metav1.Condition {
	st := metav1.ConditionTrue
	if !ok {
		st = metav1.ConditionFalse
	}
	return metav1.Condition{Type: t, Status: st, Reason: reason, Message: msg, ObservedGeneration: gen}
}

func (t *gwTranslator) gatewayClasses() {
	t.classes = map[string]bool{}
	for _, gc := range t.objs.GatewayClasses {
		if string(gc.Spec.ControllerName) != GatewayControllerName {
			continue
		}
		t.classes[gc.Name] = true
		t.status = append(t.status, ObjectStatus{Kind: "GatewayClass", Name: gc.Name, Conditions: []metav1.Condition{
			cond(string(gatewayv1.GatewayClassConditionStatusAccepted), true, string(gatewayv1.GatewayClassReasonAccepted), "handled by weir", gc.Generation),
		}})
	}
}

func olderFirst(a, b metav1.Object) int {
	ta, tb := a.GetCreationTimestamp(), b.GetCreationTimestamp()
	if !ta.Equal(&tb) {
		if ta.Before(&tb) {
			return -1
		}
		return 1
	}
	return cmp.Compare(a.GetNamespace()+"/"+a.GetName(), b.GetNamespace()+"/"+b.GetName())
}

func (t *gwTranslator) gateways() {
	gws := slices.Clone(t.objs.Gateways)
	slices.SortFunc(gws, func(a, b *gatewayv1.Gateway) int { return olderFirst(a, b) })
	// Ports already claimed, by address: the protocol and the hostnames in use.
	type claim struct {
		protocol  ListenerProtocol
		hostnames map[string]bool
	}
	claims := map[string]*claim{}
	for _, gw := range gws {
		if !t.classes[string(gw.Spec.GatewayClassName)] {
			continue
		}
		g := &gwGateway{obj: gw}
		host, gwProblem := gatewayAddress(gw)
		// In a cluster the Gateway's listeners bind the targetPorts of its own Service
		// on every address: Gateways never share a port, so conflicts are found among
		// one Gateway's listeners only.
		var svc *corev1.Service
		if t.objs.GatewayServicesManaged && gwProblem == nil {
			host = ""
			svc, gwProblem = t.gatewayService(gw)
		}
		// A Gateway that is not accepted, or whose address weir cannot use (or has not
		// got yet), serves nothing; its listeners still get their own status.
		serve := gwProblem == nil
		st := ObjectStatus{Kind: "Gateway", Namespace: gw.Namespace, Name: gw.Name}
		if svc != nil {
			st.Addresses = serviceAddresses(svc)
		}
		pendingMsg := ""
		if gwProblem != nil && gwProblem.pending {
			pendingMsg = gwProblem.msg
		}
		listenersNotValid := false
		for _, l := range gw.Spec.Listeners {
			gl := &gwListener{spec: l}
			ls := ListenerStatus{Name: string(l.Name)}
			if l.Hostname != nil {
				gl.hostname = string(*l.Hostname)
			}
			var conds []metav1.Condition
			fail := func(ct, reason, msg string) {
				conds = append(conds, cond(ct, false, reason, msg, gw.Generation))
			}
			valid := true
			terminate := false
			switch l.Protocol {
			case gatewayv1.HTTPProtocolType:
				gl.protocol = ProtocolHTTP
			case gatewayv1.HTTPSProtocolType:
				gl.protocol = ProtocolHTTPS
				terminate = true
			case gatewayv1.TLSProtocolType:
				gl.protocol = ProtocolTLS
				// The CRD defaults tls.mode to Terminate; a TLS listener without a tls
				// block (which the API server refuses) is taken as Passthrough.
				terminate = l.TLS != nil && (l.TLS.Mode == nil || *l.TLS.Mode == gatewayv1.TLSModeTerminate)
			default:
				valid = false
				fail(string(gatewayv1.ListenerConditionAccepted), string(gatewayv1.ListenerReasonUnsupportedProtocol), fmt.Sprintf("protocol %s is not supported", l.Protocol))
			}
			ls.SupportedKinds = []gatewayv1.RouteGroupKind{}
			var invalidKinds []string
			if valid {
				ls.SupportedKinds, invalidKinds = supportedKinds(l, gl.protocol)
				var err error
				gl.from, gl.selector, err = allowedNamespaces(l)
				if err != nil {
					valid = false
					fail(string(gatewayv1.ListenerConditionAccepted), string(gatewayv1.ListenerReasonUnsupportedValue), err.Error())
				}
			}
			port := int32(l.Port)
			lserve, lpending := serve, pendingMsg
			if svc != nil {
				if port = serviceListenerPort(svc, port); port == 0 {
					lserve = false
					lpending = fmt.Sprintf("Service %s/%s has no port %d yet", svc.Namespace, svc.Name, l.Port)
				}
			}
			addr := net.JoinHostPort(host, strconv.Itoa(int(port)))
			// Listener ports are claimed per bind address, which in a cluster is the
			// Gateway's own: conflicts are then found among its listeners even before
			// its Service exists.
			claimKey := addr
			if t.objs.GatewayServicesManaged {
				claimKey = gw.Namespace + "/" + gw.Name + "/" + strconv.Itoa(int(l.Port))
			}
			if valid && (lserve || lpending != "") {
				c := claims[claimKey]
				switch {
				case c == nil:
					claims[claimKey] = &claim{protocol: gl.protocol, hostnames: map[string]bool{gl.hostname: true}}
				case c.protocol != gl.protocol:
					valid = false
					conds = append(conds, cond(string(gatewayv1.ListenerConditionConflicted), true, string(gatewayv1.ListenerReasonProtocolConflict),
						fmt.Sprintf("port %d already serves %s", l.Port, c.protocol), gw.Generation))
				case c.hostnames[gl.hostname]:
					valid = false
					conds = append(conds, cond(string(gatewayv1.ListenerConditionConflicted), true, string(gatewayv1.ListenerReasonHostnameConflict),
						fmt.Sprintf("port %d already serves hostname %q", l.Port, gl.hostname), gw.Generation))
				default:
					c.hostnames[gl.hostname] = true
				}
			}
			// An accepted listener takes routes (and counts them in attachedRoutes) even
			// when a reference is broken; it is served only when every reference resolves
			// and it has a kind of route to serve.
			var certs []Certificate
			refsOK := true
			if valid && terminate {
				var reason, msg string
				certs, reason, msg = t.listenerCerts(gw, l)
				if reason != "" {
					refsOK = false
					fail(string(gatewayv1.ListenerConditionResolvedRefs), reason, msg)
				}
			}
			if valid && len(invalidKinds) > 0 {
				if refsOK {
					fail(string(gatewayv1.ListenerConditionResolvedRefs), string(gatewayv1.ListenerReasonInvalidRouteKinds),
						fmt.Sprintf("allowedRoutes.kinds: this listener cannot serve %s", strings.Join(invalidKinds, ", ")))
				}
				refsOK = refsOK && len(ls.SupportedKinds) > 0 // serve the valid kinds
			}
			gl.accepted = valid
			if !valid {
				listenersNotValid = true
			}
			switch {
			case valid && refsOK && lserve && !t.portTaken(addr, gw, gl.protocol):
				conds = append(conds, cond(string(gatewayv1.ListenerConditionAccepted), true, string(gatewayv1.ListenerReasonAccepted), "", gw.Generation))
				if len(invalidKinds) == 0 {
					conds = append(conds, cond(string(gatewayv1.ListenerConditionResolvedRefs), true, string(gatewayv1.ListenerReasonResolvedRefs), "", gw.Generation))
				}
				conds = append(conds,
					cond(string(gatewayv1.ListenerConditionConflicted), false, string(gatewayv1.ListenerReasonNoConflicts), "", gw.Generation),
					cond(string(gatewayv1.ListenerConditionProgrammed), true, string(gatewayv1.ListenerReasonProgrammed), "", gw.Generation))
				ln := t.listeners[addr]
				if ln == nil {
					ln = &Listener{Address: addr, Protocol: gl.protocol}
					t.listeners[addr] = ln
				}
				gl.section = &Section{Name: gw.Namespace + "/" + gw.Name + "/" + string(l.Name), Hostname: gl.hostname, Certificates: certs,
					Terminate: terminate && gl.protocol == ProtocolTLS}
				ln.Sections = append(ln.Sections, gl.section)
			default:
				if valid { // accepted, but a reference is broken or the Gateway is not served
					conds = append(conds, cond(string(gatewayv1.ListenerConditionAccepted), true, string(gatewayv1.ListenerReasonAccepted), "", gw.Generation))
				}
				if valid && refsOK {
					conds = append(conds, cond(string(gatewayv1.ListenerConditionResolvedRefs), true, string(gatewayv1.ListenerReasonResolvedRefs), "", gw.Generation))
				}
				switch {
				case valid && refsOK && lserve:
					conds = append(conds, cond(string(gatewayv1.ListenerConditionProgrammed), false, string(gatewayv1.ListenerReasonInvalid),
						fmt.Sprintf("port %s is bound for another Gateway", addr), gw.Generation))
				case valid && refsOK && lpending != "":
					conds = append(conds, cond(string(gatewayv1.ListenerConditionProgrammed), false, string(gatewayv1.ListenerReasonPending), lpending, gw.Generation))
				default:
					conds = append(conds, cond(string(gatewayv1.ListenerConditionProgrammed), false, string(gatewayv1.ListenerReasonInvalid), "listener is not served", gw.Generation))
				}
			}
			ls.Conditions = conds
			st.Listeners = append(st.Listeners, ls)
			g.listeners = append(g.listeners, gl)
		}
		anyServed := slices.ContainsFunc(g.listeners, func(l *gwListener) bool { return l.section != nil })
		allServed := !slices.ContainsFunc(g.listeners, func(l *gwListener) bool { return l.section == nil })
		anyAccepted := slices.ContainsFunc(g.listeners, func(l *gwListener) bool { return l.accepted })
		accepted := cond(string(gatewayv1.GatewayConditionAccepted), true, string(gatewayv1.GatewayReasonAccepted), "", gw.Generation)
		programmed := cond(string(gatewayv1.GatewayConditionProgrammed), true, string(gatewayv1.GatewayReasonProgrammed), "", gw.Generation)
		switch {
		case gwProblem != nil && gwProblem.accepted:
			switch {
			case listenersNotValid && !anyAccepted:
				accepted = cond(accepted.Type, false, string(gatewayv1.GatewayReasonListenersNotValid), "no listener is valid", gw.Generation)
			case listenersNotValid:
				accepted = cond(accepted.Type, true, string(gatewayv1.GatewayReasonListenersNotValid), "some listeners are not valid; see listener status", gw.Generation)
			}
			programmed = cond(programmed.Type, false, gwProblem.reason, gwProblem.msg, gw.Generation)
		case gwProblem != nil:
			accepted = cond(accepted.Type, false, gwProblem.reason, gwProblem.msg, gw.Generation)
			programmed = cond(programmed.Type, false, string(gatewayv1.GatewayReasonInvalid), "the Gateway is not accepted", gw.Generation)
		case listenersNotValid && !anyAccepted:
			accepted = cond(accepted.Type, false, string(gatewayv1.GatewayReasonListenersNotValid), "no listener is valid", gw.Generation)
			programmed = cond(programmed.Type, false, string(gatewayv1.GatewayReasonInvalid), "no listener is valid", gw.Generation)
		case listenersNotValid:
			// Accepted with the valid listeners; the reason says some are not.
			accepted = cond(accepted.Type, true, string(gatewayv1.GatewayReasonListenersNotValid), "some listeners are not valid; see listener status", gw.Generation)
		}
		if gwProblem == nil && !allServed {
			programmed = cond(programmed.Type, anyServed, string(gatewayv1.GatewayReasonProgrammed), "some listeners are not served; see listener status", gw.Generation)
			if !anyServed {
				programmed.Reason = string(gatewayv1.GatewayReasonInvalid)
			}
		}
		st.Conditions = []metav1.Condition{accepted, programmed}
		g.status = &st
		for j, gl := range g.listeners {
			gl.status = &st.Listeners[j]
		}
		t.gws = append(t.gws, g)
	}
}

// portTaken reports whether, in a cluster, the socket addr already serves another
// Gateway or another protocol: two Gateways' Services with one targetPort, which weir's
// allocation never makes.
func (t *gwTranslator) portTaken(addr string, gw *gatewayv1.Gateway, p ListenerProtocol) bool {
	ln := t.listeners[addr]
	if !t.objs.GatewayServicesManaged || ln == nil {
		return false
	}
	prefix := gw.Namespace + "/" + gw.Name + "/"
	return ln.Protocol != p || !strings.HasPrefix(ln.Sections[0].Name, prefix)
}

// gatewayProblem is why a Gateway is not accepted (accepted false) or not programmed.
type gatewayProblem struct {
	accepted bool
	// pending: the Gateway waits for its Service (or its address), which weir makes.
	pending     bool
	reason, msg string
}

// gatewayAddress is the address weir binds a Gateway's listeners on ("" for every
// address), or the problem that keeps the Gateway from being accepted or programmed:
// weir defines no infrastructure parameters, binds IP addresses only, and binds a
// Gateway on one address.
func gatewayAddress(gw *gatewayv1.Gateway) (string, *gatewayProblem) {
	if in := gw.Spec.Infrastructure; in != nil && in.ParametersRef != nil {
		ref := in.ParametersRef
		return "", &gatewayProblem{reason: string(gatewayv1.GatewayReasonInvalidParameters),
			msg: fmt.Sprintf("infrastructure.parametersRef %s %s (group %q): weir takes no infrastructure parameters", ref.Kind, ref.Name, ref.Group)}
	}
	host := ""
	for i, a := range gw.Spec.Addresses {
		if a.Type != nil && *a.Type != gatewayv1.IPAddressType {
			return "", &gatewayProblem{reason: string(gatewayv1.GatewayReasonUnsupportedAddress),
				msg: fmt.Sprintf("addresses[%d]: type %s is not supported (weir binds IP addresses)", i, *a.Type)}
		}
		ip, err := netip.ParseAddr(a.Value)
		if err != nil {
			return "", &gatewayProblem{reason: string(gatewayv1.GatewayReasonUnsupportedAddress),
				msg: fmt.Sprintf("addresses[%d]: %q is not an IP address", i, a.Value)}
		}
		if host != "" {
			return "", &gatewayProblem{accepted: true, reason: string(gatewayv1.GatewayReasonAddressNotUsable),
				msg: fmt.Sprintf("addresses[%d]: %s: weir serves a Gateway on one address (%s)", i, a.Value, host)}
		}
		host = ip.String()
	}
	return host, nil
}

// supportedKinds are the route kinds a listener of protocol p serves: those
// allowedRoutes.kinds names that it can serve (every kind it can serve when the list is
// empty), and the names of those it cannot.
func supportedKinds(l gatewayv1.Listener, p ListenerProtocol) ([]gatewayv1.RouteGroupKind, []string) {
	group := gatewayv1.Group(gatewayGroup)
	kinds := []gatewayv1.RouteGroupKind{}
	if l.AllowedRoutes == nil || len(l.AllowedRoutes.Kinds) == 0 {
		for _, k := range routeKinds(p) {
			kinds = append(kinds, gatewayv1.RouteGroupKind{Group: &group, Kind: gatewayv1.Kind(k)})
		}
		return kinds, nil
	}
	var invalid []string
	for _, k := range l.AllowedRoutes.Kinds {
		if (k.Group == nil || *k.Group == group) && slices.Contains(routeKinds(p), string(k.Kind)) {
			kinds = append(kinds, gatewayv1.RouteGroupKind{Group: &group, Kind: k.Kind})
			continue
		}
		name := string(k.Kind)
		if k.Group != nil && *k.Group != group {
			name += "." + string(*k.Group)
		}
		invalid = append(invalid, name)
	}
	return kinds, invalid
}

func routeKinds(p ListenerProtocol) []string {
	if p == ProtocolTLS {
		return []string{"TLSRoute"}
	}
	return []string{"HTTPRoute", "GRPCRoute"}
}

// listenerCerts resolves the certificateRefs of a listener that terminates TLS (HTTPS,
// or TLS in mode Terminate). A non-empty reason is the ResolvedRefs failure.
func (t *gwTranslator) listenerCerts(gw *gatewayv1.Gateway, l gatewayv1.Listener) ([]Certificate, string, string) {
	if l.TLS == nil || len(l.TLS.CertificateRefs) == 0 {
		return nil, string(gatewayv1.ListenerReasonInvalidCertificateRef), fmt.Sprintf("%s listener terminates TLS but has no certificateRefs", l.Protocol)
	}
	var certs []Certificate
	for _, ref := range l.TLS.CertificateRefs {
		if (ref.Group != nil && *ref.Group != "") || (ref.Kind != nil && *ref.Kind != "Secret") {
			return nil, string(gatewayv1.ListenerReasonInvalidCertificateRef), fmt.Sprintf("certificateRef %s is not a core Secret", ref.Name)
		}
		ns := gw.Namespace
		if ref.Namespace != nil {
			ns = string(*ref.Namespace)
		}
		if ns != gw.Namespace && !t.granted(gatewayGroup, "Gateway", gw.Namespace, "", "Secret", ns, string(ref.Name)) {
			return nil, string(gatewayv1.ListenerReasonRefNotPermitted), fmt.Sprintf("no ReferenceGrant allows Secret %s/%s", ns, ref.Name)
		}
		c, err := t.tlsSecret(ns, string(ref.Name))
		if err != nil {
			return nil, string(gatewayv1.ListenerReasonInvalidCertificateRef), err.Error()
		}
		certs = append(certs, c)
	}
	return certs, "", ""
}

func (t *gwTranslator) tlsSecret(ns, name string) (Certificate, error) {
	for _, s := range t.objs.Secrets {
		if s.Namespace != ns || s.Name != name {
			continue
		}
		crt, key := s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey]
		if len(crt) == 0 && s.StringData != nil {
			crt, key = []byte(s.StringData[corev1.TLSCertKey]), []byte(s.StringData[corev1.TLSPrivateKeyKey])
		}
		if _, err := tls.X509KeyPair(crt, key); err != nil {
			return Certificate{}, fmt.Errorf("secret %s/%s: invalid tls.crt/tls.key: %w", ns, name, err)
		}
		return Certificate{Source: ns + "/" + name, CertPEM: crt, KeyPEM: key}, nil
	}
	return Certificate{}, fmt.Errorf("secret %s/%s not found", ns, name)
}

// granted reports whether a ReferenceGrant in toNS lets fromKind objects of fromNS
// refer to toKind toName.
func (t *gwTranslator) granted(fromGroup, fromKind, fromNS, toGroup, toKind, toNS, toName string) bool {
	for _, g := range t.objs.ReferenceGrants {
		if g.Namespace != toNS {
			continue
		}
		from := slices.ContainsFunc(g.Spec.From, func(f gatewayv1.ReferenceGrantFrom) bool {
			return string(f.Group) == fromGroup && string(f.Kind) == fromKind && string(f.Namespace) == fromNS
		})
		to := slices.ContainsFunc(g.Spec.To, func(to gatewayv1.ReferenceGrantTo) bool {
			return string(to.Group) == toGroup && string(to.Kind) == toKind && (to.Name == nil || string(*to.Name) == toName)
		})
		if from && to {
			return true
		}
	}
	return false
}

// hostIntersect returns the hostname a request must have to match both a listener
// hostname and a route hostname ("" for any), and whether they intersect at all.
func hostIntersect(listener, route string) (string, bool) {
	switch {
	case listener == "":
		return route, true
	case route == "":
		return listener, true
	case listener == route:
		return route, true
	case strings.HasPrefix(listener, "*.") && hostMatches(listener, route):
		return route, true
	case strings.HasPrefix(route, "*.") && hostMatches(route, listener):
		return listener, true
	}
	return "", false
}

// hostMatches reports whether host (exact or wildcard) is covered by pattern, with the
// Gateway API's rule.
func hostMatches(pattern, host string) bool { return HostMatches(pattern, host, false) }

// gwRoute is what every route kind has in common for attachment.
type gwRoute struct {
	kind      string
	meta      metav1.Object
	parents   []gatewayv1.ParentReference
	hostnames []gatewayv1.Hostname
	gen       int64
	// rejected, when set, is why the route is not accepted at all (every rule is
	// invalid): it attaches nowhere and its parents say Accepted=False with this reason.
	rejected, rejectMsg string
}

func (t *gwTranslator) routes() {
	t.matches = map[*Section]map[string][]*sortableMatch{}
	for _, r := range t.objs.HTTPRoutes {
		t.httpRoute(r)
	}
	for _, r := range t.objs.GRPCRoutes {
		t.grpcRoute(r)
	}
	for _, r := range t.objs.TLSRoutes {
		t.tlsRoute(r)
	}
}

// attach finds the listeners a route attaches to and writes its parent statuses.
// It returns, per attached section, the hostnames the route serves there.
func (t *gwTranslator) attach(r gwRoute, st *ObjectStatus, extra []metav1.Condition) map[*Section][]string {
	out := map[*Section][]string{}
	for _, pr := range r.parents {
		if (pr.Group != nil && *pr.Group != gatewayGroup) || (pr.Kind != nil && *pr.Kind != "Gateway") {
			continue
		}
		ns := r.meta.GetNamespace()
		if pr.Namespace != nil {
			ns = string(*pr.Namespace)
		}
		var g *gwGateway
		for _, cand := range t.gws {
			if cand.obj.Namespace == ns && cand.obj.Name == string(pr.Name) {
				g = cand
			}
		}
		if g == nil {
			continue // not a Gateway of weir's: someone else's status to write
		}
		ps := RouteParentStatus{ParentRef: pr}
		reason := string(gatewayv1.RouteReasonNoMatchingParent)
		attached := 0
		for _, gl := range g.listeners {
			if pr.SectionName != nil && *pr.SectionName != gl.spec.Name {
				continue
			}
			if pr.Port != nil && *pr.Port != gl.spec.Port {
				continue
			}
			if !gl.accepted {
				continue
			}
			if !slices.Contains(routeKinds(gl.protocol), r.kind) || !kindAllowed(gl.spec, r.kind) {
				reason = string(gatewayv1.RouteReasonNotAllowedByListeners)
				continue
			}
			if !t.namespaceAllowed(gl, g.obj.Namespace, r.meta.GetNamespace()) {
				reason = string(gatewayv1.RouteReasonNotAllowedByListeners)
				continue
			}
			var hosts []string
			if len(r.hostnames) == 0 {
				hosts = []string{gl.hostname}
			}
			for _, h := range r.hostnames {
				if ih, ok := hostIntersect(gl.hostname, string(h)); ok && !slices.Contains(hosts, ih) {
					hosts = append(hosts, ih)
				}
			}
			if len(hosts) == 0 {
				if reason == string(gatewayv1.RouteReasonNoMatchingParent) {
					reason = string(gatewayv1.RouteReasonNoMatchingListenerHostname)
				}
				continue
			}
			if r.rejected != "" {
				reason = r.rejected
				continue
			}
			attached++
			gl.status.AttachedRoutes++
			if gl.section != nil {
				out[gl.section] = hosts
			}
		}
		gen := r.gen
		if r.rejected != "" && reason == r.rejected {
			ps.Conditions = append(ps.Conditions, cond(string(gatewayv1.RouteConditionAccepted), false, reason, r.rejectMsg, gen))
		} else if attached > 0 {
			ps.Conditions = append(ps.Conditions, cond(string(gatewayv1.RouteConditionAccepted), true, string(gatewayv1.RouteReasonAccepted), "", gen))
		} else {
			ps.Conditions = append(ps.Conditions, cond(string(gatewayv1.RouteConditionAccepted), false, reason, "route attaches to no listener of the parent", gen))
		}
		ps.Conditions = append(ps.Conditions, extra...)
		st.Parents = append(st.Parents, ps)
	}
	return out
}

func kindAllowed(l gatewayv1.Listener, kind string) bool {
	if l.AllowedRoutes == nil || len(l.AllowedRoutes.Kinds) == 0 {
		return true
	}
	return slices.ContainsFunc(l.AllowedRoutes.Kinds, func(k gatewayv1.RouteGroupKind) bool {
		return string(k.Kind) == kind && (k.Group == nil || *k.Group == gatewayGroup)
	})
}

// allowedNamespaces reads a listener's allowedRoutes.namespaces: from (default Same)
// and, for Selector, the parsed label selector. An error is an invalid selector, or a
// from weir does not know.
func allowedNamespaces(l gatewayv1.Listener) (gatewayv1.FromNamespaces, labels.Selector, error) {
	if l.AllowedRoutes == nil || l.AllowedRoutes.Namespaces == nil || l.AllowedRoutes.Namespaces.From == nil {
		return gatewayv1.NamespacesFromSame, nil, nil
	}
	ns := l.AllowedRoutes.Namespaces
	switch from := *ns.From; from {
	case gatewayv1.NamespacesFromAll, gatewayv1.NamespacesFromSame:
		return from, nil, nil
	case gatewayv1.NamespacesFromSelector:
		if ns.Selector == nil {
			return from, nil, errors.New("allowedRoutes.namespaces.from is Selector but no selector is given")
		}
		sel, err := metav1.LabelSelectorAsSelector(ns.Selector)
		if err != nil {
			return from, nil, fmt.Errorf("allowedRoutes.namespaces.selector is invalid: %w", err)
		}
		return from, sel, nil
	default:
		return from, nil, fmt.Errorf("allowedRoutes.namespaces.from %q is not supported", from)
	}
}

// namespaceAllowed applies a listener's allowedRoutes.namespaces to a route in routeNS.
func (t *gwTranslator) namespaceAllowed(gl *gwListener, gwNS, routeNS string) bool {
	switch gl.from {
	case gatewayv1.NamespacesFromAll:
		return true
	case gatewayv1.NamespacesFromSame:
		return gwNS == routeNS
	case gatewayv1.NamespacesFromSelector:
		if set, ok := t.nsLabels[routeNS]; ok {
			return gl.selector.Matches(set)
		}
		// No Namespace object (a folder of manifests need not have one): the labels
		// the API server sets on every namespace.
		return gl.selector.Matches(labels.Set{corev1.LabelMetadataName: routeNS})
	}
	return false
}

// namespaceLabels indexes the Namespaces' labels by name, with the label the API server
// always sets (kubernetes.io/metadata.name) in place.
func namespaceLabels(nss []*corev1.Namespace) map[string]labels.Set {
	out := make(map[string]labels.Set, len(nss))
	for _, ns := range nss {
		set := make(labels.Set, len(ns.Labels)+1)
		for k, v := range ns.Labels {
			set[k] = v
		}
		set[corev1.LabelMetadataName] = ns.Name
		out[ns.Name] = set
	}
	return out
}

// refProblem is a backendRef that did not resolve: the ResolvedRefs reason and message.
type refProblem struct{ reason, msg string }

// backend resolves one backendRef of a route in namespace ns.
func (t *gwTranslator) backend(kind, ns string, ref gatewayv1.BackendObjectReference, weight *int32) (*Backend, *refProblem) {
	b := &Backend{Weight: 1}
	if weight != nil {
		b.Weight = *weight
	}
	bns := ns
	if ref.Namespace != nil {
		bns = string(*ref.Namespace)
	}
	b.Service = ServiceKey{Namespace: bns, Name: string(ref.Name)}
	if ref.Port != nil {
		b.Port = *ref.Port
	}
	b.ID = fmt.Sprintf("%s:%d", b.Service, b.Port)
	if (ref.Group != nil && *ref.Group != "") || (ref.Kind != nil && *ref.Kind != "Service") {
		b.Invalid = true
		return b, &refProblem{string(gatewayv1.RouteReasonInvalidKind), fmt.Sprintf("backendRef %s: only core Services are supported", ref.Name)}
	}
	if bns != ns && !t.granted(gatewayGroup, kind, ns, "", "Service", bns, string(ref.Name)) {
		b.Invalid = true
		return b, &refProblem{string(gatewayv1.RouteReasonRefNotPermitted), fmt.Sprintf("no ReferenceGrant in %s allows %s from %s to Service %s", bns, kind, ns, ref.Name)}
	}
	svc := t.service(b.Service)
	if svc == nil {
		b.Invalid = true
		return b, &refProblem{string(gatewayv1.RouteReasonBackendNotFound), fmt.Sprintf("Service %s not found", b.Service)}
	}
	if ref.Port == nil {
		b.Invalid = true
		return b, &refProblem{string(gatewayv1.RouteReasonBackendNotFound), fmt.Sprintf("backendRef to Service %s has no port", b.Service)}
	}
	for _, p := range svc.Ports {
		if p.Port == b.Port && p.Protocol != UDP && p.Protocol != SCTP {
			fillBackend(b, svc, p)
			return b, nil
		}
	}
	b.Invalid = true
	return b, &refProblem{string(gatewayv1.RouteReasonBackendNotFound), fmt.Sprintf("Service %s has no TCP port %d", b.Service, b.Port)}
}

func fillBackend(b *Backend, svc *Service, p *ServicePort) {
	b.PortID = p.ID(svc.Key)
	b.H2C = p.AppProtocol == "kubernetes.io/h2c"
	b.Endpoints = p.Cluster.Endpoints
	b.Policy = svc.Policy
	if b.Policy == nil {
		b.Policy = gwDefaultPolicy()
	}
}

// service is the Service a backendRef names, or nil. A headless Service is a backend
// like any other (the gateway sends to its endpoints, at their EndpointSlice ports,
// whatever the Service's targetPort); an ExternalName Service is not.
func (t *gwTranslator) service(k ServiceKey) *Service {
	for _, s := range t.snap.Services {
		if s.Key == k {
			if s.Type == ExternalName {
				return nil
			}
			return s
		}
	}
	return nil
}

func parseGWDuration(d *gatewayv1.Duration) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	v, err := time.ParseDuration(string(*d))
	if err != nil {
		return 0, fmt.Errorf("duration %q: %w", *d, err)
	}
	return v, nil
}

// filters converts route filters. problem is set when a backend they name does not
// resolve; err when the filters cannot be served at all.
func (t *gwTranslator) filters(kind, ns string, in []gatewayv1.HTTPRouteFilter) ([]Filter, *refProblem, error) {
	var out []Filter
	var problem *refProblem
	var redirect, rewrite bool
	for _, f := range in {
		switch f.Type {
		case gatewayv1.HTTPRouteFilterRequestHeaderModifier, gatewayv1.HTTPRouteFilterResponseHeaderModifier:
			src := f.RequestHeaderModifier
			ft := FilterRequestHeaders
			if f.Type == gatewayv1.HTTPRouteFilterResponseHeaderModifier {
				src, ft = f.ResponseHeaderModifier, FilterResponseHeaders
			}
			if src == nil {
				return nil, nil, fmt.Errorf("filter %s has no settings", f.Type)
			}
			hm := &HeaderModifier{Remove: src.Remove}
			for _, h := range src.Set {
				hm.Set = append(hm.Set, Header{Name: string(h.Name), Value: h.Value})
			}
			for _, h := range src.Add {
				hm.Add = append(hm.Add, Header{Name: string(h.Name), Value: h.Value})
			}
			out = append(out, Filter{Type: ft, Headers: hm})
		case gatewayv1.HTTPRouteFilterRequestRedirect:
			r := f.RequestRedirect
			if r == nil {
				return nil, nil, fmt.Errorf("filter RequestRedirect has no settings")
			}
			redirect = true
			rd := &Redirect{StatusCode: 302, Path: pathModifier(r.Path)}
			if r.Scheme != nil {
				rd.Scheme = *r.Scheme
			}
			if r.Hostname != nil {
				rd.Hostname = string(*r.Hostname)
			}
			if r.Port != nil {
				rd.Port = *r.Port
			}
			if r.StatusCode != nil {
				rd.StatusCode = *r.StatusCode
			}
			out = append(out, Filter{Type: FilterRedirect, Redirect: rd})
		case gatewayv1.HTTPRouteFilterURLRewrite:
			r := f.URLRewrite
			if r == nil {
				return nil, nil, fmt.Errorf("filter URLRewrite has no settings")
			}
			rewrite = true
			rw := &Rewrite{Path: pathModifier(r.Path)}
			if r.Hostname != nil {
				rw.Hostname = string(*r.Hostname)
			}
			out = append(out, Filter{Type: FilterRewrite, Rewrite: rw})
		case gatewayv1.HTTPRouteFilterRequestMirror:
			m := f.RequestMirror
			if m == nil {
				return nil, nil, fmt.Errorf("filter RequestMirror has no settings")
			}
			b, p := t.backend(kind, ns, m.BackendRef, nil)
			if p != nil {
				problem = p
				continue // a mirror that does not resolve is skipped; the primary is served
			}
			pct := 100.0
			if m.Percent != nil {
				pct = float64(*m.Percent)
			} else if m.Fraction != nil {
				den := int32(100)
				if m.Fraction.Denominator != nil {
					den = *m.Fraction.Denominator
				}
				if den > 0 {
					pct = 100 * float64(m.Fraction.Numerator) / float64(den)
				}
			}
			out = append(out, Filter{Type: FilterMirror, Mirror: &Mirror{Backend: b, Percent: pct}})
		case gatewayv1.HTTPRouteFilterCORS:
			c := f.CORS
			if c == nil {
				return nil, nil, fmt.Errorf("filter CORS has no settings")
			}
			cors := &CORS{MaxAge: c.MaxAge}
			if c.AllowCredentials != nil {
				cors.AllowCredentials = *c.AllowCredentials
			}
			for _, o := range c.AllowOrigins {
				cors.AllowOrigins = append(cors.AllowOrigins, string(o))
			}
			for _, m := range c.AllowMethods {
				cors.AllowMethods = append(cors.AllowMethods, string(m))
			}
			for _, h := range c.AllowHeaders {
				cors.AllowHeaders = append(cors.AllowHeaders, string(h))
			}
			for _, h := range c.ExposeHeaders {
				cors.ExposeHeaders = append(cors.ExposeHeaders, string(h))
			}
			if cors.MaxAge == 0 {
				cors.MaxAge = 5
			}
			out = append(out, Filter{Type: FilterCORS, CORS: cors})
		default:
			return nil, nil, fmt.Errorf("filter %s is not supported", f.Type)
		}
	}
	if redirect && rewrite {
		return nil, nil, fmt.Errorf("RequestRedirect and URLRewrite cannot be combined")
	}
	return out, problem, nil
}

func pathModifier(p *gatewayv1.HTTPPathModifier) *PathModifier {
	if p == nil {
		return nil
	}
	switch p.Type {
	case gatewayv1.FullPathHTTPPathModifier:
		if p.ReplaceFullPath != nil {
			return &PathModifier{Type: ReplaceFullPath, Value: *p.ReplaceFullPath}
		}
	case gatewayv1.PrefixMatchHTTPPathModifier:
		if p.ReplacePrefixMatch != nil {
			return &PathModifier{Type: ReplacePrefixMatch, Value: *p.ReplacePrefixMatch}
		}
	}
	return nil
}

func (t *gwTranslator) httpRoute(hr *gatewayv1.HTTPRoute) {
	ref := RouteRef{Kind: "HTTPRoute", Namespace: hr.Namespace, Name: hr.Name}
	st := ObjectStatus{Kind: "HTTPRoute", Namespace: hr.Namespace, Name: hr.Name}
	var rules []*Rule
	var ruleMatches [][]RouteMatch
	var problem *refProblem
	var invalid []string
	var unsupported bool
	for i, r := range hr.Spec.Rules {
		rule := t.newRule(ref, i, r.Name, hr.Namespace)
		var ruleErr error
		fs, p, err := t.filters("HTTPRoute", hr.Namespace, r.Filters)
		if p != nil {
			problem = p
		}
		if err != nil {
			rule.Invalid = true
			invalid = append(invalid, fmt.Sprintf("rule %d: %v", i, err))
		}
		rule.Filters = fs
		for _, br := range r.BackendRefs {
			b, p := t.backend("HTTPRoute", hr.Namespace, br.BackendObjectReference, br.Weight)
			if p != nil {
				problem = p
			}
			bf, p, err := t.filters("HTTPRoute", hr.Namespace, br.Filters)
			if p != nil {
				problem = p
			}
			if err != nil {
				b.Invalid = true
				invalid = append(invalid, fmt.Sprintf("rule %d backend %s: %v", i, b.ID, err))
			}
			b.Filters = bf
			rule.Backends = append(rule.Backends, b)
		}
		if r.Timeouts != nil {
			var e1, e2 error
			rule.RequestTimeout, e1 = parseGWDuration(r.Timeouts.Request)
			rule.BackendTimeout, e2 = parseGWDuration(r.Timeouts.BackendRequest)
			if e1 != nil || e2 != nil {
				ruleErr = fmt.Errorf("timeouts: %v %v", e1, e2)
			}
		}
		if r.Retry != nil {
			rule.Retry = gwRetryFromRoute(rule.Retry, r.Retry)
		}
		if sp := r.SessionPersistence; sp != nil && (sp.Type == nil || *sp.Type == gatewayv1.CookieBasedSessionPersistence) {
			s := &SessionPersistence{CookieName: "weir-session"}
			if sp.SessionName != nil && *sp.SessionName != "" {
				s.CookieName = *sp.SessionName
			}
			if sp.CookieConfig != nil && sp.CookieConfig.LifetimeType != nil && *sp.CookieConfig.LifetimeType == gatewayv1.PermanentCookieLifetimeType {
				s.TTL, _ = parseGWDuration(sp.AbsoluteTimeout)
			}
			rule.Session = s
		}
		var ms []RouteMatch
		matches := r.Matches
		if len(matches) == 0 {
			matches = []gatewayv1.HTTPRouteMatch{{}}
		}
		for _, m := range matches {
			rm, err := convertMatch(m)
			if err != nil {
				ruleErr = err
				break
			}
			ms = append(ms, rm)
		}
		if ruleErr != nil {
			unsupported = true
			invalid = append(invalid, fmt.Sprintf("rule %d: %v", i, ruleErr))
			continue // the rule is dropped
		}
		rules = append(rules, rule)
		ruleMatches = append(ruleMatches, ms)
	}
	allInvalid := unsupported && len(rules) == 0
	extra := t.routeConditions(hr.Generation, problem, invalid, allInvalid)
	gr := gwRoute{kind: "HTTPRoute", meta: hr, parents: hr.Spec.ParentRefs, hostnames: hr.Spec.Hostnames, gen: hr.Generation}
	if allInvalid {
		gr.rejected, gr.rejectMsg = string(gatewayv1.RouteReasonUnsupportedValue), strings.Join(invalid, "; ")
	}
	sections := t.attach(gr, &st, extra)
	t.status = append(t.status, st)
	t.addMatches(hr, sections, rules, ruleMatches)
}

// routeConditions are the ResolvedRefs (and PartiallyInvalid) conditions of a route.
func (t *gwTranslator) routeConditions(gen int64, problem *refProblem, invalid []string, allInvalid bool) []metav1.Condition {
	var out []metav1.Condition
	if problem != nil {
		out = append(out, cond(string(gatewayv1.RouteConditionResolvedRefs), false, problem.reason, problem.msg, gen))
	} else {
		out = append(out, cond(string(gatewayv1.RouteConditionResolvedRefs), true, string(gatewayv1.RouteReasonResolvedRefs), "", gen))
	}
	if len(invalid) > 0 && !allInvalid {
		out = append(out, cond(string(gatewayv1.RouteConditionPartiallyInvalid), true, string(gatewayv1.RouteReasonUnsupportedValue), strings.Join(invalid, "; "), gen))
	}
	return out
}

func (t *gwTranslator) newRule(ref RouteRef, i int, name *gatewayv1.SectionName, ns string) *Rule {
	rule := &Rule{Route: ref, Index: i}
	id := strconv.Itoa(i)
	if name != nil && *name != "" {
		rule.Name = string(*name)
		id = rule.Name
	}
	rule.ID = ref.Namespace + "/" + ref.Name + "/" + id
	rule.Policy = t.rulePolicy(ref, rule.Name)
	rule.Retry = rule.Policy.Retry
	rule.RequestTimeout = rule.Policy.RequestTimeout
	rule.ResponseTimeout = rule.Policy.ResponseTimeout
	_ = ns
	return rule
}

func gwRetryFromRoute(base RetryPolicy, r *gatewayv1.HTTPRouteRetry) RetryPolicy {
	out := base
	if r.Attempts != nil {
		out.Attempts = *r.Attempts
	}
	if len(r.Codes) > 0 {
		out.RetryOn = []string{"connect-failure", "refused-stream", "reset"}
		for _, c := range r.Codes {
			out.RetryOn = append(out.RetryOn, strconv.Itoa(int(c)))
		}
	}
	if d, err := parseGWDuration(r.Backoff); err == nil && d > 0 {
		out.BackoffBase = d
	}
	return out
}

func convertMatch(m gatewayv1.HTTPRouteMatch) (RouteMatch, error) {
	rm := RouteMatch{Path: PathMatch{Type: PathPrefix, Value: "/"}}
	if m.Path != nil {
		if m.Path.Type != nil {
			rm.Path.Type = PathMatchType(*m.Path.Type)
		}
		if m.Path.Value != nil {
			rm.Path.Value = *m.Path.Value
		}
		switch rm.Path.Type {
		case PathExact, PathPrefix:
			if !strings.HasPrefix(rm.Path.Value, "/") {
				return rm, fmt.Errorf("path %q must start with /", rm.Path.Value)
			}
		case PathRegex:
			if _, err := regexp.Compile(rm.Path.Value); err != nil {
				return rm, fmt.Errorf("path regex %q: %w", rm.Path.Value, err)
			}
		default:
			return rm, fmt.Errorf("path match type %q is not supported", rm.Path.Type)
		}
	}
	if m.Method != nil {
		rm.Method = string(*m.Method)
	}
	for _, h := range m.Headers {
		regex := h.Type != nil && *h.Type == gatewayv1.HeaderMatchRegularExpression
		if regex {
			if _, err := regexp.Compile(h.Value); err != nil {
				return rm, fmt.Errorf("header %s regex %q: %w", h.Name, h.Value, err)
			}
		}
		rm.Headers = append(rm.Headers, ValueMatch{Name: string(h.Name), Value: h.Value, Regex: regex})
	}
	for _, q := range m.QueryParams {
		regex := q.Type != nil && *q.Type == gatewayv1.QueryParamMatchRegularExpression
		if regex {
			if _, err := regexp.Compile(q.Value); err != nil {
				return rm, fmt.Errorf("query %s regex %q: %w", q.Name, q.Value, err)
			}
		}
		rm.Query = append(rm.Query, ValueMatch{Name: string(q.Name), Value: q.Value, Regex: regex})
	}
	return rm, nil
}

// addMatches files a route's rule matches under every section and hostname it serves.
func (t *gwTranslator) addMatches(obj metav1.Object, sections map[*Section][]string, rules []*Rule, ruleMatches [][]RouteMatch) {
	key := obj.GetNamespace() + "/" + obj.GetName()
	created := obj.GetCreationTimestamp().Time
	for sec, hosts := range sections {
		if t.matches[sec] == nil {
			t.matches[sec] = map[string][]*sortableMatch{}
		}
		for _, h := range hosts {
			for ri, rule := range rules {
				for mi := range ruleMatches[ri] {
					m := ruleMatches[ri][mi]
					m.Rule = rule
					t.matches[sec][h] = append(t.matches[sec][h], &sortableMatch{m: &m, created: created, routeKey: key, ruleIdx: ri, matchIdx: mi})
				}
			}
		}
	}
}

func (t *gwTranslator) grpcRoute(gr *gatewayv1.GRPCRoute) {
	ref := RouteRef{Kind: "GRPCRoute", Namespace: gr.Namespace, Name: gr.Name}
	st := ObjectStatus{Kind: "GRPCRoute", Namespace: gr.Namespace, Name: gr.Name}
	var rules []*Rule
	var ruleMatches [][]RouteMatch
	var problem *refProblem
	var invalid []string
	for i, r := range gr.Spec.Rules {
		rule := t.newRule(ref, i, r.Name, gr.Namespace)
		for _, br := range r.BackendRefs {
			b, p := t.backend("GRPCRoute", gr.Namespace, br.BackendObjectReference, br.Weight)
			if p != nil {
				problem = p
			}
			b.H2C = true // gRPC backends speak HTTP/2
			rule.Backends = append(rule.Backends, b)
		}
		var ms []RouteMatch
		matches := r.Matches
		if len(matches) == 0 {
			matches = []gatewayv1.GRPCRouteMatch{{}}
		}
		var ruleErr error
		for _, m := range matches {
			rm := RouteMatch{Path: PathMatch{Type: PathPrefix, Value: "/"}}
			if m.Method != nil {
				svc, meth := "", ""
				if m.Method.Service != nil {
					svc = *m.Method.Service
				}
				if m.Method.Method != nil {
					meth = *m.Method.Method
				}
				rm.GRPCService, rm.GRPCMethod = svc, meth
				regex := m.Method.Type != nil && *m.Method.Type == gatewayv1.GRPCMethodMatchRegularExpression
				switch {
				case regex:
					if svc == "" {
						svc = "[^/]+"
					}
					if meth == "" {
						meth = "[^/]+"
					}
					rm.Path = PathMatch{Type: PathRegex, Value: "/" + svc + "/" + meth}
				case svc != "" && meth != "":
					rm.Path = PathMatch{Type: PathExact, Value: "/" + svc + "/" + meth}
				case svc != "":
					rm.Path = PathMatch{Type: PathPrefix, Value: "/" + svc}
				case meth != "":
					rm.Path = PathMatch{Type: PathRegex, Value: "/[^/]+/" + regexp.QuoteMeta(meth)}
				}
				if rm.Path.Type == PathRegex {
					if _, err := regexp.Compile(rm.Path.Value); err != nil {
						ruleErr = fmt.Errorf("method regex: %w", err)
					}
				}
			}
			for _, h := range m.Headers {
				regex := h.Type != nil && *h.Type == gatewayv1.GRPCHeaderMatchRegularExpression
				if regex {
					if _, err := regexp.Compile(h.Value); err != nil {
						ruleErr = fmt.Errorf("header %s regex: %w", h.Name, err)
					}
				}
				rm.Headers = append(rm.Headers, ValueMatch{Name: string(h.Name), Value: h.Value, Regex: regex})
			}
			ms = append(ms, rm)
		}
		if ruleErr != nil {
			invalid = append(invalid, fmt.Sprintf("rule %d: %v", i, ruleErr))
			continue
		}
		rules = append(rules, rule)
		ruleMatches = append(ruleMatches, ms)
	}
	allInvalid := len(rules) == 0 && len(invalid) > 0
	extra := t.routeConditions(gr.Generation, problem, invalid, allInvalid)
	rt := gwRoute{kind: "GRPCRoute", meta: gr, parents: gr.Spec.ParentRefs, hostnames: gr.Spec.Hostnames, gen: gr.Generation}
	if allInvalid {
		rt.rejected, rt.rejectMsg = string(gatewayv1.RouteReasonUnsupportedValue), strings.Join(invalid, "; ")
	}
	sections := t.attach(rt, &st, extra)
	t.status = append(t.status, st)
	t.addMatches(gr, sections, rules, ruleMatches)
}

func (t *gwTranslator) tlsRoute(tr *gatewayv1.TLSRoute) {
	ref := RouteRef{Kind: "TLSRoute", Namespace: tr.Namespace, Name: tr.Name}
	st := ObjectStatus{Kind: "TLSRoute", Namespace: tr.Namespace, Name: tr.Name}
	pr := &PassthroughRoute{Route: ref}
	var problem *refProblem
	for _, r := range tr.Spec.Rules {
		for _, br := range r.BackendRefs {
			b, p := t.backend("TLSRoute", tr.Namespace, br.BackendObjectReference, br.Weight)
			if p != nil {
				problem = p
			}
			pr.Backends = append(pr.Backends, b)
		}
	}
	extra := t.routeConditions(tr.Generation, problem, nil, false)
	sections := t.attach(gwRoute{kind: "TLSRoute", meta: tr, parents: tr.Spec.ParentRefs, hostnames: tr.Spec.Hostnames, gen: tr.Generation}, &st, extra)
	t.status = append(t.status, st)
	for sec, hosts := range sections {
		cp := *pr
		cp.Hostnames = hosts
		sec.Passthrough = append(sec.Passthrough, &cp)
	}
}

// ingressClassOK reports whether weir serves ing.
func (t *gwTranslator) ingressClassOK(ing *networkingv1.Ingress) bool {
	name := ""
	if ing.Spec.IngressClassName != nil {
		name = *ing.Spec.IngressClassName
	} else if a := ing.Annotations["kubernetes.io/ingress.class"]; a != "" {
		name = a
	}
	if name == "" {
		for _, c := range t.objs.IngressClasses {
			if c.Spec.Controller == IngressControllerName && c.Annotations[networkingv1.AnnotationIsDefaultIngressClass] == "true" {
				return true
			}
		}
		return false
	}
	for _, c := range t.objs.IngressClasses {
		if c.Name == name {
			return c.Spec.Controller == IngressControllerName
		}
	}
	return name == IngressClassName
}

func (t *gwTranslator) ingresses() {
	ings := slices.Clone(t.objs.Ingresses)
	slices.SortFunc(ings, func(a, b *networkingv1.Ingress) int { return olderFirst(a, b) })
	var httpSec, httpsSec *Section
	for _, ing := range ings {
		if !t.ingressClassOK(ing) {
			continue
		}
		if httpSec == nil {
			httpSec = &Section{Name: "ingress"}
			httpsSec = &Section{Name: "ingress"}
			t.matches[httpSec] = map[string][]*sortableMatch{}
		}
		st := ObjectStatus{Kind: "Ingress", Namespace: ing.Namespace, Name: ing.Name}
		var problem *refProblem
		ref := RouteRef{Kind: "Ingress", Namespace: ing.Namespace, Name: ing.Name}
		backend := func(ib *networkingv1.IngressBackend) *Backend {
			b := &Backend{Weight: 1}
			if ib.Service == nil {
				b.Invalid = true
				b.ID = "resource"
				problem = &refProblem{string(gatewayv1.RouteReasonInvalidKind), "resource backends are not supported"}
				return b
			}
			b.Service = ServiceKey{Namespace: ing.Namespace, Name: ib.Service.Name}
			b.Port = ib.Service.Port.Number
			b.ID = fmt.Sprintf("%s:%d", b.Service, b.Port)
			if ib.Service.Port.Name != "" {
				b.ID = b.Service.String() + ":" + ib.Service.Port.Name
			}
			svc := t.service(b.Service)
			if svc != nil {
				for _, p := range svc.Ports {
					if (ib.Service.Port.Name != "" && p.Name == ib.Service.Port.Name) || (ib.Service.Port.Name == "" && p.Port == b.Port) {
						b.Port = p.Port
						fillBackend(b, svc, p)
						return b
					}
				}
			}
			b.Invalid = true
			problem = &refProblem{string(gatewayv1.RouteReasonBackendNotFound), fmt.Sprintf("Service %s port %s not found", b.Service, b.ID)}
			return b
		}
		key := ing.Namespace + "/" + ing.Name
		created := ing.CreationTimestamp.Time
		for ri, r := range ing.Spec.Rules {
			if r.HTTP == nil {
				continue
			}
			for pi, p := range r.HTTP.Paths {
				rule := t.newRule(ref, ri*1000+pi, nil, ing.Namespace)
				rule.ID = fmt.Sprintf("%s/%s/%d-%d", ing.Namespace, ing.Name, ri, pi)
				rule.Backends = []*Backend{backend(&p.Backend)}
				pt := PathPrefix
				if p.PathType != nil && *p.PathType == networkingv1.PathTypeExact {
					pt = PathExact
				}
				path := p.Path
				if path == "" {
					path = "/"
				}
				m := &RouteMatch{Path: PathMatch{Type: pt, Value: path}, Rule: rule}
				t.matches[httpSec][r.Host] = append(t.matches[httpSec][r.Host], &sortableMatch{m: m, created: created, routeKey: key, ruleIdx: ri, matchIdx: pi})
			}
		}
		if db := ing.Spec.DefaultBackend; db != nil {
			rule := t.newRule(ref, -1, nil, ing.Namespace)
			rule.ID = key + "/default"
			rule.Backends = []*Backend{backend(db)}
			// The default backend sorts after every path of every Ingress.
			m := &RouteMatch{Path: PathMatch{Type: PathPrefix, Value: ""}, Rule: rule}
			t.matches[httpSec][""] = append(t.matches[httpSec][""], &sortableMatch{m: m, created: created, routeKey: key, ruleIdx: 1 << 30})
		}
		certProblem := ""
		for _, tl := range ing.Spec.TLS {
			if tl.SecretName == "" {
				continue
			}
			c, err := t.tlsSecret(ing.Namespace, tl.SecretName)
			if err != nil {
				certProblem = err.Error()
				continue
			}
			httpsSec.Certificates = append(httpsSec.Certificates, c)
		}
		st.Conditions = append(st.Conditions, cond("Accepted", true, "Accepted", "served by weir", ing.Generation))
		switch {
		case problem != nil:
			st.Conditions = append(st.Conditions, cond("ResolvedRefs", false, problem.reason, problem.msg, ing.Generation))
		case certProblem != "":
			st.Conditions = append(st.Conditions, cond("ResolvedRefs", false, string(gatewayv1.ListenerReasonInvalidCertificateRef), certProblem, ing.Generation))
		default:
			st.Conditions = append(st.Conditions, cond("ResolvedRefs", true, "ResolvedRefs", "", ing.Generation))
		}
		st.Conditions = append(st.Conditions, cond("Programmed", true, "Programmed", "", ing.Generation))
		t.status = append(t.status, st)
	}
	if httpSec == nil {
		return
	}
	t.listeners["ingress-http"] = &Listener{Ingress: "http", Protocol: ProtocolHTTP, Sections: []*Section{httpSec}}
	if len(httpsSec.Certificates) > 0 {
		// HTTPS serves the same routes as HTTP.
		t.listeners["ingress-https"] = &Listener{Ingress: "https", Protocol: ProtocolHTTPS, Sections: []*Section{httpsSec}}
		t.matches[httpsSec] = t.matches[httpSec]
	}
}

// matchLess orders matches by the Gateway API precedence. weir places RegularExpression
// paths after Exact paths and before PathPrefix paths, longer patterns first.
func matchCompare(a, b *sortableMatch) int {
	rank := func(t PathMatchType) int {
		switch t {
		case PathExact:
			return 0
		case PathRegex:
			return 1
		}
		return 2
	}
	am, bm := a.m, b.m
	if c := cmp.Compare(rank(am.Path.Type), rank(bm.Path.Type)); c != 0 {
		return c
	}
	if c := cmp.Compare(len(bm.Path.Value), len(am.Path.Value)); c != 0 {
		return c
	}
	if c := cmp.Compare(boolRank(am.Method != ""), boolRank(bm.Method != "")); c != 0 {
		return c
	}
	if c := cmp.Compare(len(bm.Headers), len(am.Headers)); c != 0 {
		return c
	}
	if c := cmp.Compare(len(bm.Query), len(am.Query)); c != 0 {
		return c
	}
	if c := a.created.Compare(b.created); c != 0 {
		return c
	}
	if c := cmp.Compare(a.routeKey, b.routeKey); c != 0 {
		return c
	}
	if c := cmp.Compare(a.ruleIdx, b.ruleIdx); c != 0 {
		return c
	}
	return cmp.Compare(a.matchIdx, b.matchIdx)
}

func boolRank(b bool) int {
	if b {
		return 0
	}
	return 1
}

// hostCompare orders hostnames: exact before wildcard, longer first, "" last.
func hostCompare(a, b string) int {
	if c := cmp.Compare(hostRank(a), hostRank(b)); c != 0 {
		return c
	}
	if c := cmp.Compare(len(b), len(a)); c != 0 {
		return c
	}
	return cmp.Compare(a, b)
}

func hostRank(h string) int {
	switch {
	case h == "":
		return 2
	case strings.HasPrefix(h, "*."):
		return 1
	}
	return 0
}

func (t *gwTranslator) finish() *GatewayConfig {
	if len(t.status) == 0 && len(t.gws) == 0 && len(t.listeners) == 0 {
		return nil
	}
	cfg := &GatewayConfig{Status: t.status, ServiceAddresses: t.objs.GatewayServicesManaged}
	for _, g := range t.gws {
		cfg.Status = append(cfg.Status, *g.status)
	}
	for _, ln := range t.listeners {
		slices.SortFunc(ln.Sections, func(a, b *Section) int { return hostCompare(a.Hostname, b.Hostname) })
		for _, sec := range ln.Sections {
			if sec.Hosts != nil {
				continue // shared with the Ingress HTTP section
			}
			hosts := t.matches[sec]
			for h, ms := range hosts {
				slices.SortFunc(ms, matchCompare)
				vh := &VirtualHost{Hostname: h, OneLabel: ln.Ingress != ""}
				for _, m := range ms {
					vh.Matches = append(vh.Matches, m.m)
				}
				sec.Hosts = append(sec.Hosts, vh)
			}
			slices.SortFunc(sec.Hosts, func(a, b *VirtualHost) int { return hostCompare(a.Hostname, b.Hostname) })
		}
		cfg.Listeners = append(cfg.Listeners, ln)
	}
	slices.SortFunc(cfg.Listeners, func(a, b *Listener) int {
		return cmp.Compare(a.Address+a.Ingress, b.Address+b.Ingress)
	})
	slices.SortStableFunc(cfg.Status, func(a, b ObjectStatus) int {
		return cmp.Compare(a.Kind+"/"+a.Namespace+"/"+a.Name, b.Kind+"/"+b.Namespace+"/"+b.Name)
	})
	return cfg
}
