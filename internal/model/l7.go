package model

import (
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// The controller names weir answers to.
const (
	// GatewayControllerName is the GatewayClass spec.controllerName of weir's classes.
	GatewayControllerName = "weir.dev/gateway"
	// IngressControllerName is the IngressClass spec.controller of weir's classes.
	IngressControllerName = "weir.dev/ingress-controller"
	// IngressClassName is the ingressClassName weir serves without an IngressClass object.
	IngressClassName = "weir"
)

// GatewayConfig is the L7 part of a Snapshot: listeners, TLS certificates, route tables
// and their resolved policies, and the status conditions of Gateway API and Ingress
// objects. Owned by the L7 gateway work (issue 3); filled by translateGateways.
type GatewayConfig struct {
	// Listeners are the sockets to serve, sorted by Address. Gateway listeners that
	// share a port share one Listener (each becomes a Section).
	Listeners []*Listener
	// Status holds the computed conditions of every GatewayClass, Gateway, route and
	// Ingress weir looked at, sorted by kind, namespace and name.
	Status []ObjectStatus
	// ServiceAddresses: every Gateway has a Service of its own (Objects.
	// GatewayServicesManaged), and the Gateways' status addresses are their
	// ObjectStatus.Addresses. Unset, they are the status writer's configured addresses.
	ServiceAddresses bool `json:",omitempty"`
}

// ListenerProtocol is what a Listener speaks.
type ListenerProtocol string

// The listener protocols.
const (
	ProtocolHTTP  ListenerProtocol = "HTTP"
	ProtocolHTTPS ListenerProtocol = "HTTPS"
	// ProtocolTLS routes TLS connections by SNI to TLSRoutes: passed through, or
	// terminated when the Section says Terminate.
	ProtocolTLS ListenerProtocol = "TLS"
)

// Listener is one socket the gateway binds.
type Listener struct {
	// Address is "host:port"; an empty host means every address. For the Ingress
	// listeners (Ingress set) the gateway binds its configured addresses instead.
	Address  string
	Protocol ListenerProtocol
	// Ingress is "http" or "https" for the Ingress listeners, "" for Gateway listeners.
	Ingress string
	// Sections are the Gateway listeners (or the Ingress host set) on this socket,
	// most specific hostname first; a request is served by the first whose Hostname
	// matches its Host (or SNI), and only by that one.
	Sections []*Section
}

// Section is one Gateway listener on a socket: a hostname, its certificates and the
// routes attached to it.
type Section struct {
	// Name is "namespace/gateway/listener", or "ingress" for Ingress.
	Name string
	// Hostname is exact ("a.example.com"), a wildcard ("*.example.com") or "" (any).
	Hostname string
	// Certificates for HTTPS and for TLS in mode Terminate, from kubernetes.io/tls Secrets.
	Certificates []Certificate
	// Hosts are the virtual hosts, most specific first (exact hostnames by length,
	// then wildcards by length, then ""). A request tries each host that matches its
	// Host header in this order and takes the first route match.
	Hosts []*VirtualHost
	// Passthrough routes TLS connections by SNI (TLS listeners only).
	Passthrough []*PassthroughRoute
	// Terminate is set on a TLS listener in mode Terminate: the gateway completes the
	// handshake with Certificates and sends the decrypted byte stream to the Passthrough
	// routes' backends. Unset, the TLS connection is passed through untouched.
	Terminate bool `json:",omitempty"`
}

// Certificate is a PEM certificate chain and key.
type Certificate struct {
	// Source is "namespace/name" of the Secret.
	Source string
	// The PEM blocks are left out of JSON views (the admin API) on purpose.
	CertPEM []byte `json:"-"`
	KeyPEM  []byte `json:"-"`
}

// VirtualHost is the set of route matches for one hostname, in precedence order.
type VirtualHost struct {
	Hostname string
	// OneLabel: a wildcard Hostname covers exactly one DNS label (an Ingress rule's
	// host: "*.foo.com" serves bar.foo.com, not baz.bar.foo.com). Unset, it covers one
	// or more (the Gateway API's rule).
	OneLabel bool `json:",omitempty"`
	Matches  []*RouteMatch
}

// HostMatches reports whether host (lower case, no port) is covered by pattern: equal,
// pattern "" (any host), or a "*." wildcard covering one or more DNS labels, exactly one
// when oneLabel is set. The wildcard never covers its own suffix ("*.foo.com" does not
// cover foo.com).
func HostMatches(pattern, host string, oneLabel bool) bool {
	if pattern == "" || pattern == host {
		return true
	}
	suffix, ok := strings.CutPrefix(pattern, "*")
	if !ok || len(host) <= len(suffix) || !strings.HasSuffix(host, suffix) {
		return false
	}
	return !oneLabel || !strings.Contains(host[:len(host)-len(suffix)], ".")
}

// PassthroughRoute sends TLS connections whose SNI matches Hostnames to Backends (a
// TLSRoute; on a Terminate section the backends get the decrypted stream).
type PassthroughRoute struct {
	Route     RouteRef
	Hostnames []string
	Backends  []*Backend
}

// RouteRef names a route object.
type RouteRef struct {
	Kind      string // HTTPRoute, GRPCRoute, TLSRoute or Ingress
	Namespace string
	Name      string
}

func (r RouteRef) String() string { return r.Namespace + "/" + r.Name }

// PathMatchType is how a path matches.
type PathMatchType string

// The path match types. Prefix matches whole path elements, as Gateway API's PathPrefix
// and Ingress's Prefix both require.
const (
	PathExact  PathMatchType = "Exact"
	PathPrefix PathMatchType = "PathPrefix"
	PathRegex  PathMatchType = "RegularExpression"
)

// RouteMatch is one match of one rule. Matches are sorted by the Gateway API precedence.
type RouteMatch struct {
	Path    PathMatch
	Method  string // "" any
	Headers []ValueMatch
	Query   []ValueMatch
	// GRPC narrows a GRPCRoute match to a service and method ("" any).
	GRPCService string
	GRPCMethod  string
	Rule        *Rule
}

// PathMatch matches the request path.
type PathMatch struct {
	Type  PathMatchType
	Value string
}

// ValueMatch matches a header or query parameter.
type ValueMatch struct {
	Name  string
	Value string
	Regex bool
}

// Rule is one rule of one route: what matching requests get.
type Rule struct {
	Route RouteRef
	// Index of the rule in the route; Name is its name when it has one.
	Index int
	Name  string
	// ID is "namespace/name/rule" (the rule's name or index): the metrics label.
	ID string

	Filters  []Filter
	Backends []*Backend
	// Invalid is set when the rule cannot be served (bad filter, no backendRefs and no
	// redirect): it answers 500.
	Invalid bool

	// RequestTimeout bounds the whole request (0: none); BackendTimeout one attempt;
	// ResponseTimeout the wait for a try's response head (0: none; the TrafficPolicy's,
	// default DefaultResponseTimeout).
	RequestTimeout  time.Duration
	BackendTimeout  time.Duration
	ResponseTimeout time.Duration
	// Retry comes from the rule's retry field when set, else from the TrafficPolicy.
	Retry RetryPolicy
	// Session is cookie session persistence; nil when off.
	Session *SessionPersistence
	// Policy is the TrafficPolicy attached to the route or rule, defaults applied.
	Policy *Policy
}

// SessionPersistence pins a client to an endpoint with a cookie.
type SessionPersistence struct {
	CookieName string
	// TTL of a permanent cookie; zero for a session cookie.
	TTL time.Duration
}

// Backend is one backendRef, resolved.
type Backend struct {
	// Service and Port name the Kubernetes Service port; ID is "namespace/name:port".
	Service ServiceKey
	Port    int32
	ID      string
	// PortID is the ServicePort's ID ("namespace/name:port-name"), the key of
	// internal/health's overlay. Empty when Invalid.
	PortID string
	Weight int32
	// Invalid is set when the reference cannot be resolved (missing Service or port,
	// refused by ReferenceGrants, unsupported kind): its share of requests gets 500.
	Invalid bool
	// H2C is set when the Service port's appProtocol is kubernetes.io/h2c.
	H2C bool
	// Endpoints are the port's Cluster endpoints (kube-proxy selection applied).
	Endpoints []Endpoint
	// Filters apply only to requests sent to this backend.
	Filters []Filter
	// Policy is the Service's resolved TrafficPolicy; never nil for valid backends.
	Policy *Policy
}

// FilterType names a filter.
type FilterType string

// The filters.
const (
	FilterRequestHeaders  FilterType = "RequestHeaderModifier"
	FilterResponseHeaders FilterType = "ResponseHeaderModifier"
	FilterRedirect        FilterType = "RequestRedirect"
	FilterRewrite         FilterType = "URLRewrite"
	FilterMirror          FilterType = "RequestMirror"
	FilterCORS            FilterType = "CORS"
)

// Filter is one filter, resolved. Exactly the field of its Type is set.
type Filter struct {
	Type     FilterType
	Headers  *HeaderModifier
	Redirect *Redirect
	Rewrite  *Rewrite
	Mirror   *Mirror
	CORS     *CORS
}

// HeaderModifier sets, adds and removes headers.
type HeaderModifier struct {
	Set    []Header
	Add    []Header
	Remove []string
}

// Header is a name and a value.
type Header struct {
	Name  string
	Value string
}

// PathModifierType says how a redirect or rewrite changes the path.
type PathModifierType string

// The path modifiers.
const (
	ReplaceFullPath    PathModifierType = "ReplaceFullPath"
	ReplacePrefixMatch PathModifierType = "ReplacePrefixMatch"
)

// PathModifier changes a path.
type PathModifier struct {
	Type  PathModifierType
	Value string
}

// Redirect answers with a redirect.
type Redirect struct {
	Scheme   string // "" keep
	Hostname string // "" keep
	Port     int32  // 0: the default port of the scheme, or the request's port
	Path     *PathModifier
	// StatusCode defaults to 302.
	StatusCode int
}

// Rewrite changes the request before it is sent upstream.
type Rewrite struct {
	Hostname string
	Path     *PathModifier
}

// Mirror sends a copy of each request to Backend, fire-and-forget.
type Mirror struct {
	Backend *Backend
	// Percent of requests mirrored, 0–100 with fractions (default 100).
	Percent float64
}

// CORS answers preflights and decorates responses.
type CORS struct {
	AllowOrigins     []string // may hold "*" and wildcards like "https://*.example.com"
	AllowCredentials bool
	AllowMethods     []string
	AllowHeaders     []string
	ExposeHeaders    []string
	MaxAge           int32
}

// ObjectStatus is the computed status of one object.
type ObjectStatus struct {
	Kind       string // GatewayClass, Gateway, HTTPRoute, GRPCRoute, TLSRoute, Ingress
	Namespace  string
	Name       string
	Conditions []metav1.Condition
	// Listeners is the per-listener status of a Gateway.
	Listeners []ListenerStatus
	// Parents is the per-parent status of a route.
	Parents []RouteParentStatus
	// Addresses of a Gateway whose address comes from its Service (GatewayConfig.
	// ServiceAddresses): the Service's load-balancer ingress IPs and hostnames when it has
	// any, else its ClusterIPs; empty while the Service is missing.
	Addresses []gatewayv1.GatewayStatusAddress `json:",omitempty"`
}

// ListenerStatus is the status of one Gateway listener.
type ListenerStatus struct {
	Name string
	// SupportedKinds are the route kinds the listener serves: the valid ones of
	// allowedRoutes.kinds, or every kind its protocol serves; empty for an unsupported
	// protocol.
	SupportedKinds []gatewayv1.RouteGroupKind
	AttachedRoutes int32
	Conditions     []metav1.Condition
}

// RouteParentStatus is a route's status for one parentRef.
type RouteParentStatus struct {
	ParentRef  gatewayv1.ParentReference
	Conditions []metav1.Condition
}

// Condition finds a condition by type; ok is false when there is none.
func (s *ObjectStatus) Condition(t string) (metav1.Condition, bool) {
	for _, c := range s.Conditions {
		if c.Type == t {
			return c, true
		}
	}
	return metav1.Condition{}, false
}

// FindStatus returns the status of kind namespace/name, or nil.
func (g *GatewayConfig) FindStatus(kind, namespace, name string) *ObjectStatus {
	for i := range g.Status {
		s := &g.Status[i]
		if s.Kind == kind && s.Namespace == namespace && s.Name == name {
			return s
		}
	}
	return nil
}
