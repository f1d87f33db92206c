package manifest

//lint:file-ignore SA1019 weir accepts core/v1 Endpoints on purpose and mirrors them into EndpointSlices.

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1alpha2 "sigs.k8s.io/gateway-api/apis/v1alpha2"
	gatewayv1alpha3 "sigs.k8s.io/gateway-api/apis/v1alpha3"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	weirv1alpha1 "weir.dev/weir/api/v1alpha1"
)

// The kinds weir reads, by group and kind, with the versions it accepts. Other versions
// of these kinds are an error (not silently skipped); every other kind is skipped.
var supportedVersions = map[schema.GroupKind][]string{
	{Group: "", Kind: "Service"}:                                    {"v1"},
	{Group: "", Kind: "Endpoints"}:                                  {"v1"},
	{Group: "", Kind: "Secret"}:                                     {"v1"},
	{Group: "", Kind: "Namespace"}:                                  {"v1"},
	{Group: "", Kind: "Pod"}:                                        {"v1"},
	{Group: "networking.k8s.io", Kind: "NetworkPolicy"}:             {"v1"},
	{Group: "discovery.k8s.io", Kind: "EndpointSlice"}:              {"v1"},
	{Group: "networking.k8s.io", Kind: "Ingress"}:                   {"v1"},
	{Group: "networking.k8s.io", Kind: "IngressClass"}:              {"v1"},
	{Group: "gateway.networking.k8s.io", Kind: "GatewayClass"}:      {"v1", "v1beta1"},
	{Group: "gateway.networking.k8s.io", Kind: "Gateway"}:           {"v1", "v1beta1"},
	{Group: "gateway.networking.k8s.io", Kind: "HTTPRoute"}:         {"v1", "v1beta1"},
	{Group: "gateway.networking.k8s.io", Kind: "GRPCRoute"}:         {"v1", "v1alpha2"},
	{Group: "gateway.networking.k8s.io", Kind: "TLSRoute"}:          {"v1", "v1alpha3"},
	{Group: "gateway.networking.k8s.io", Kind: "ReferenceGrant"}:    {"v1", "v1beta1", "v1alpha2"},
	{Group: "gateway.networking.k8s.io", Kind: "BackendTLSPolicy"}:  {"v1", "v1alpha3"},
	{Group: weirv1alpha1.GroupVersion.Group, Kind: "TrafficPolicy"}: {"v1alpha1"},
}

// clusterScoped kinds have no namespace.
var clusterScoped = map[string]bool{"IngressClass": true, "GatewayClass": true, "Namespace": true}

// loader holds one Load's state.
type loader struct {
	maxFileBytes int64
	scheme       *runtime.Scheme
	codec        runtime.Decoder
	errs         Errors
	report       *Report
	objs         []*object
	own          func(netip.AddrPort) string // Options.Own
}

// object is one decoded object (in the version weir uses) and the document it came from.
type object struct {
	kind      string
	namespace string
	name      string
	doc       *document
	obj       runtime.Object
	// schemaErrs are the CRD schema's and CEL rules' objections, reported after weir's
	// own checks (see addSchemaErrors).
	schemaErrs Errors
}

// id names the object in errors: "Service default/web", "GatewayClass weir".
func (o *object) id() string {
	if o.namespace == "" {
		return o.kind + " " + o.name
	}
	return o.kind + " " + o.namespace + "/" + o.name
}

func (o *object) key() string { return o.kind + " " + o.namespace + "/" + o.name }

func newLoader() *loader {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, discoveryv1.AddToScheme, networkingv1.AddToScheme,
		gatewayv1.Install, gatewayv1beta1.Install, gatewayv1alpha2.Install, gatewayv1alpha3.Install,
		weirv1alpha1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			panic(fmt.Sprintf("manifest: building the scheme: %v", err)) // a programming error
		}
	}
	codec := kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme,
		kjson.SerializerOptions{Strict: true})
	return &loader{scheme: scheme, codec: codec, report: newReport()}
}

// errorf records an error on a field of o.
func (l *loader) errorf(o *object, field, format string, args ...any) {
	l.errs = append(l.errs, Error{
		File: o.doc.file.name, Line: o.doc.lineOf(field), Object: o.id(), Field: field,
		Message: fmt.Sprintf(format, args...),
	})
}

// warnf records a warning on a field of o.
func (l *loader) warnf(o *object, field, format string, args ...any) {
	l.report.Warnings = append(l.report.Warnings, Error{
		File: o.doc.file.name, Line: o.doc.lineOf(field), Object: o.id(), Field: field,
		Message: fmt.Sprintf(format, args...),
	})
}

var strictField = regexp.MustCompile(`^(unknown|duplicate) field "(.*)"$`)

func (l *loader) decode(d *document, apiVersion, kind string) {
	defer func() { d.node = nil }() // parsed again if an error needs a line
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil {
		l.errs = append(l.errs, Error{File: d.file.name, Line: d.lineOf("apiVersion"), Field: "apiVersion", Message: err.Error()})
		return
	}
	gvk := gv.WithKind(kind)
	o := &object{kind: kind, doc: d}
	if meta := mapValue(d.node, "metadata"); meta != nil {
		o.name = scalarField(meta, "name")
		o.namespace = scalarField(meta, "namespace")
	}
	versions, used := supportedVersions[gvk.GroupKind()]
	if !used {
		if suggestion, unknown := unknownKind(gvk.GroupKind()); unknown {
			msg := fmt.Sprintf("%q is not a kind of %s", kind, groupName(gv.Group))
			if suggestion != "" {
				msg += fmt.Sprintf(" (did you mean %s?)", suggestion)
			}
			l.errorf(o, "kind", "%s", msg)
			return
		}
		l.report.Skipped[skipName(gvk.GroupKind())]++
		return
	}
	switch {
	case clusterScoped[kind]:
		o.namespace = "" // the API server drops it too
	case o.namespace == "":
		o.namespace = metav1.NamespaceDefault
	}
	if !contains(versions, gv.Version) {
		l.errorf(o, "apiVersion", "%s %s is not supported; use %s", apiVersion, kind,
			schema.GroupVersion{Group: gv.Group, Version: versions[0]})
		return
	}
	for _, dup := range d.dups {
		l.errs = append(l.errs, Error{File: d.file.name, Line: dup.line, Object: o.id(), Field: dup.path, Message: "duplicate field"})
	}
	if len(d.dups) > 0 {
		return
	}
	data, err := toJSON(d.node)
	if err != nil {
		l.errorf(o, "", "%v", err)
		return
	}
	obj, _, err := l.codec.Decode(data, &gvk, nil)
	if strict, ok := runtime.AsStrictDecodingError(err); ok {
		for _, e := range strict.Errors() {
			if m := strictField.FindStringSubmatch(e.Error()); m != nil {
				l.errorf(o, m[2], "%s field", m[1])
			} else {
				l.errorf(o, "", "%v", e)
			}
		}
		return
	}
	if err != nil {
		l.typeError(o, err)
		return
	}
	l.schemaCheck(o, gvk, data)
	o.obj = convert(obj)
	if o.obj == nil {
		l.errorf(o, "kind", "cannot use %T", obj) // unreachable with supportedVersions in sync
		return
	}
	l.objs = append(l.objs, o)
}

var quotedValue = regexp.MustCompile(`"([^"]+)"`)

var typeErrorText = regexp.MustCompile(`cannot unmarshal (\w+)(?: \S+)? into Go struct field [^.]*\.(\S+) of type (\S+)`)

// typeError reports a value of the wrong JSON type ("port: eighty") at its field.
func (l *loader) typeError(o *object, err error) {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "json: ")
	if m := typeErrorText.FindStringSubmatch(msg); m != nil {
		plain := m[2]
		path, ok := o.doc.findKind(plain, m[1])
		if !ok {
			path = plain
		}
		l.errorf(o, path, "%s is not a valid value: want %s", m[1], jsonTypeName(m[3]))
		return
	}
	var wrapped interface{ Unwrap() error }
	if errors.As(err, &wrapped) && wrapped.Unwrap() != nil {
		msg = strings.TrimPrefix(wrapped.Unwrap().Error(), "json: ")
	}
	// A type's own UnmarshalJSON (durations, quantities) names no field; find the
	// field by the value the message quotes.
	if m := quotedValue.FindStringSubmatch(msg); m != nil {
		if path, ok := o.doc.findValue(m[1]); ok {
			l.errorf(o, path, "%s", msg)
			return
		}
	}
	l.errorf(o, "", "%s", msg)
}

func jsonTypeName(goType string) string {
	switch {
	case strings.Contains(goType, "int"):
		return "an integer"
	case goType == "string" || strings.HasSuffix(goType, "Type") || strings.HasSuffix(goType, "Policy") || strings.HasSuffix(goType, "Protocol"):
		return "a string"
	case goType == "bool":
		return "true or false"
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	case strings.HasPrefix(goType, "map"):
		return "a map"
	}
	return "type " + goType
}

// convert turns older API versions of Gateway API kinds (type definitions over the v1
// structs) into the v1 types weir reads.
func convert(obj runtime.Object) runtime.Object {
	setV1 := func(tm *metav1.TypeMeta) { tm.APIVersion = gatewayv1.GroupVersion.String() }
	switch o := obj.(type) {
	case *corev1.Service, *corev1.Endpoints, *corev1.Secret, *corev1.Namespace, *discoveryv1.EndpointSlice,
		*networkingv1.Ingress, *networkingv1.IngressClass, *weirv1alpha1.TrafficPolicy,
		*corev1.Pod, *networkingv1.NetworkPolicy,
		*gatewayv1.GatewayClass, *gatewayv1.Gateway, *gatewayv1.HTTPRoute, *gatewayv1.GRPCRoute,
		*gatewayv1.TLSRoute, *gatewayv1.ReferenceGrant, *gatewayv1.BackendTLSPolicy:
		return obj
	case *gatewayv1beta1.GatewayClass:
		c := gatewayv1.GatewayClass(*o)
		setV1(&c.TypeMeta)
		return &c
	case *gatewayv1beta1.Gateway:
		c := gatewayv1.Gateway(*o)
		setV1(&c.TypeMeta)
		return &c
	case *gatewayv1beta1.HTTPRoute:
		c := gatewayv1.HTTPRoute(*o)
		setV1(&c.TypeMeta)
		return &c
	case *gatewayv1beta1.ReferenceGrant:
		c := gatewayv1.ReferenceGrant(*o)
		setV1(&c.TypeMeta)
		return &c
	case *gatewayv1alpha2.ReferenceGrant:
		c := gatewayv1.ReferenceGrant(*o)
		setV1(&c.TypeMeta)
		return &c
	case *gatewayv1alpha2.GRPCRoute:
		c := gatewayv1.GRPCRoute(*o)
		setV1(&c.TypeMeta)
		return &c
	case *gatewayv1alpha3.BackendTLSPolicy:
		c := gatewayv1.BackendTLSPolicy(*o)
		setV1(&c.TypeMeta)
		return &c
	case *gatewayv1alpha3.TLSRoute:
		c := gatewayv1.TLSRoute(*o)
		setV1(&c.TypeMeta)
		return &c
	}
	return nil
}

// skipName names a skipped kind in the Report: its kind, qualified by its group when a
// kind weir reads has the same name (a Knative Service is "Service.serving.knative.dev").
func skipName(gk schema.GroupKind) string {
	for used := range supportedVersions {
		if used.Kind == gk.Kind && gk.Group != "" {
			return gk.Kind + "." + gk.Group
		}
	}
	return gk.Kind
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
