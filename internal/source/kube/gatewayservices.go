package kube

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"weir.dev/weir/internal/model"
)

// GatewayServiceOptions configure the Services weir makes for Gateways: one per
// Gateway of weir's classes, in Namespace, selecting the gateway Pods, with one port per
// distinct listener port whose targetPort weir allocates from [PortMin, PortMax], unique
// across Gateways. Every replica reads them (the model binds each Gateway's listeners on
// its targetPorts); the status-writing replica makes, updates and deletes them.
type GatewayServiceOptions struct {
	// Namespace holds the Services: the gateway Pods' own (a Service selects Pods of its
	// namespace only). Default "weir-system".
	Namespace string
	// Type of the Services: LoadBalancer (default), NodePort or ClusterIP.
	Type corev1.ServiceType
	// Selector selects the gateway Pods. Default app.kubernetes.io/name=weir-gateway.
	Selector map[string]string
	// PortMin and PortMax bound the targetPorts. Default 20000 and 29999.
	PortMin, PortMax int32
}

// The defaults of GatewayServiceOptions.
const (
	DefaultGatewayServicePortMin = 20000
	DefaultGatewayServicePortMax = 29999
)

func (o *GatewayServiceOptions) setDefaults() error {
	if o.Namespace == "" {
		o.Namespace = "weir-system"
	}
	switch o.Type {
	case "":
		o.Type = corev1.ServiceTypeLoadBalancer
	case corev1.ServiceTypeLoadBalancer, corev1.ServiceTypeNodePort, corev1.ServiceTypeClusterIP:
	default:
		return fmt.Errorf("kube source: Gateway Service type %q: want LoadBalancer, NodePort or ClusterIP", o.Type)
	}
	if len(o.Selector) == 0 {
		o.Selector = map[string]string{"app.kubernetes.io/name": "weir-gateway"}
	}
	if o.PortMin == 0 && o.PortMax == 0 {
		o.PortMin, o.PortMax = DefaultGatewayServicePortMin, DefaultGatewayServicePortMax
	}
	if o.PortMin < 1 || o.PortMax > 65535 || o.PortMin > o.PortMax {
		return fmt.Errorf("kube source: Gateway Service ports %d-%d: want a range within 1-65535", o.PortMin, o.PortMax)
	}
	return nil
}

// gatewayServiceSelector selects, in the Services' namespace, those weir made.
var gatewayServiceSelector = model.GatewayServiceManagedByLabel + "=" + model.GatewayServiceManagedBy + "," + model.GatewayOwnerNamespaceLabel

// stripGatewayService keeps a Gateway's Service whole but for managedFields and the
// last-applied annotation: its labels and annotations name the Gateway.
func stripGatewayService(obj any) (any, error) {
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return stripObject(obj)
	}
	svc.ManagedFields = nil
	delete(svc.Annotations, lastAppliedAnnotation)
	return svc, nil
}

// shortHash is 10 hex digits of the SHA-256 of s.
func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:10]
}

// shorten cuts s to at most max characters, replacing its tail with a hash of key when
// it is longer, and ends it with a letter or digit.
func shorten(s string, max int, key string) string {
	if len(s) <= max {
		return s
	}
	return strings.TrimRight(s[:max-11], "-.") + "-" + shortHash(key)
}

// GatewayServiceName is the name of Gateway ns/name's Service: weir-gw-<ns>-<name>
// (dots become dashes), shortened with a hash of the Gateway's key when longer than 63
// characters. hashed always appends the hash (used when the plain name is taken).
func GatewayServiceName(ns, name string, hashed bool) string {
	key := ns + "/" + name
	base := "weir-gw-" + ns + "-" + strings.ReplaceAll(name, ".", "-")
	if hashed {
		return shorten(base, 63-11, key) + "-" + shortHash(key)
	}
	return shorten(base, 63, key)
}

// gatewayServicePlan is what the leader changes to make the Services match the Gateways.
type gatewayServicePlan struct {
	create, update, remove []*corev1.Service
	// exhausted names the Gateways left without a port for want of free targetPorts.
	exhausted []string
}

// planGatewayServices compares the Services the Gateways need with those that exist.
// Existing allocations are kept (read back from the Services, so they survive restarts
// and leader changes); new ports take the lowest free targetPort in the range.
func planGatewayServices(want []model.GatewayPorts, have []*corev1.Service, o *GatewayServiceOptions) gatewayServicePlan {
	var plan gatewayServicePlan
	have = slices.Clone(have)
	slices.SortFunc(have, func(a, b *corev1.Service) int { return strings.Compare(a.Name, b.Name) })
	wanted := map[string]bool{}
	for _, g := range want {
		wanted[g.Namespace+"/"+g.Name] = true
	}
	// Each Gateway's existing Service; the others (no owner, owner gone, a duplicate)
	// are removed.
	current := map[string]*corev1.Service{}
	names := map[string]string{} // Service name -> owner
	for _, svc := range have {
		owner, ok := model.GatewayServiceOwner(svc)
		if !ok || !wanted[owner] || current[owner] != nil {
			plan.remove = append(plan.remove, svc)
			continue
		}
		current[owner] = svc
		names[svc.Name] = owner
	}
	// Keep every existing allocation first, so that a new port never takes one.
	used := map[int32]bool{}
	alloc := map[string]map[int32]int32{} // owner -> listener port -> targetPort
	for _, g := range want {
		key := g.Namespace + "/" + g.Name
		alloc[key] = map[int32]int32{}
		svc := current[key]
		if svc == nil {
			continue
		}
		for _, p := range svc.Spec.Ports {
			tp := int32(p.TargetPort.IntValue())
			if p.TargetPort.Type != intstr.Int || tp < o.PortMin || tp > o.PortMax || used[tp] || !slices.Contains(g.Ports, p.Port) {
				continue
			}
			if _, dup := alloc[key][p.Port]; dup {
				continue
			}
			used[tp] = true
			alloc[key][p.Port] = tp
		}
	}
	next := o.PortMin
	free := func() int32 {
		for ; next <= o.PortMax; next++ {
			if !used[next] {
				used[next] = true
				return next
			}
		}
		return 0
	}
	for _, g := range want {
		key := g.Namespace + "/" + g.Name
		var ports []corev1.ServicePort
		for _, p := range g.Ports {
			tp, ok := alloc[key][p]
			if !ok {
				if tp = free(); tp == 0 {
					plan.exhausted = append(plan.exhausted, key)
					continue
				}
			}
			ports = append(ports, corev1.ServicePort{Name: "port-" + strconv.Itoa(int(p)), Protocol: corev1.ProtocolTCP, Port: p, TargetPort: intstr.FromInt32(tp)})
		}
		svc := current[key]
		if len(ports) == 0 {
			if svc != nil {
				plan.remove = append(plan.remove, svc)
			}
			continue
		}
		if svc == nil {
			name := GatewayServiceName(g.Namespace, g.Name, false)
			if names[name] != "" && names[name] != key {
				name = GatewayServiceName(g.Namespace, g.Name, true)
			}
			names[name] = key
			plan.create = append(plan.create, &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Namespace: o.Namespace, Name: name, Labels: gatewayServiceLabels(g), Annotations: map[string]string{model.GatewayOwnerAnnotation: key}},
				Spec:       corev1.ServiceSpec{Type: o.Type, Selector: maps.Clone(o.Selector), Ports: ports},
			})
			continue
		}
		if upd := updatedGatewayService(svc, g, ports, o); upd != nil {
			plan.update = append(plan.update, upd)
		}
	}
	return plan
}

func gatewayServiceLabels(g model.GatewayPorts) map[string]string {
	return map[string]string{
		model.GatewayServiceManagedByLabel: model.GatewayServiceManagedBy,
		model.GatewayOwnerNamespaceLabel:   g.Namespace,
		model.GatewayOwnerNameLabel:        shorten(g.Name, 63, g.Namespace+"/"+g.Name),
	}
}

// updatedGatewayService is svc changed to what it must be, or nil when it already is.
// Node ports already assigned are kept.
func updatedGatewayService(svc *corev1.Service, g model.GatewayPorts, ports []corev1.ServicePort, o *GatewayServiceOptions) *corev1.Service {
	if o.Type != corev1.ServiceTypeClusterIP {
		for i := range ports {
			for _, p := range svc.Spec.Ports {
				if p.Port == ports[i].Port && p.Protocol == ports[i].Protocol {
					ports[i].NodePort = p.NodePort
				}
			}
		}
	}
	same := svc.Spec.Type == o.Type && maps.Equal(svc.Spec.Selector, o.Selector) && len(svc.Spec.Ports) == len(ports)
	for i := 0; same && i < len(ports); i++ {
		p := svc.Spec.Ports[i]
		same = p.Name == ports[i].Name && p.Port == ports[i].Port && p.Protocol == ports[i].Protocol &&
			p.TargetPort == ports[i].TargetPort && p.NodePort == ports[i].NodePort
	}
	labels := gatewayServiceLabels(g)
	for k, v := range labels {
		same = same && svc.Labels[k] == v
	}
	if same {
		return nil
	}
	out := svc.DeepCopy()
	if out.Labels == nil {
		out.Labels = map[string]string{}
	}
	maps.Copy(out.Labels, labels)
	out.Spec.Type = o.Type
	out.Spec.Selector = maps.Clone(o.Selector)
	out.Spec.Ports = ports
	if o.Type == corev1.ServiceTypeClusterIP {
		out.Spec.ExternalTrafficPolicy = ""
		out.Spec.HealthCheckNodePort = 0
		out.Spec.AllocateLoadBalancerNodePorts = nil
	}
	return out
}

// syncGatewayServices makes the Gateways' Services match the Gateways (the leader calls
// it before each status round). Without the Gateway kind watched nothing is done, so
// Services are never removed because the Gateway API is not (yet) served.
func (s *Source) syncGatewayServices(ctx context.Context, objs *model.Objects) {
	o := s.opts.GatewayServices
	svcInf := s.informerFor(kindGatewayService)
	if o == nil || svcInf == nil || s.informerFor(kindGateway) == nil || s.informerFor(kindGatewayClass) == nil {
		return
	}
	var have []*corev1.Service
	for _, it := range svcInf.GetStore().List() {
		if svc, ok := it.(*corev1.Service); ok {
			have = append(have, svc)
		}
	}
	plan := planGatewayServices(model.GatewaysNeedingServices(objs), have, o)
	if len(plan.exhausted) > 0 && !s.portsExhaustedSaid {
		s.log.Warn("no free targetPort for some Gateway listeners; they stay Pending", "range", fmt.Sprintf("%d-%d", o.PortMin, o.PortMax), "gateways", plan.exhausted)
		s.portsExhaustedSaid = true
	}
	services := s.clients.Kube.CoreV1().Services(o.Namespace)
	if s.gwSvcErrs == nil || len(s.gwSvcErrs) > 10000 {
		s.gwSvcErrs = map[string]string{}
	}
	report := func(op string, svc *corev1.Service, err error) {
		key := op + " " + svc.Namespace + "/" + svc.Name
		result := "ok"
		switch {
		case err == nil:
			delete(s.gwSvcErrs, key)
			s.log.Info("Gateway Service "+op+"d", "namespace", svc.Namespace, "name", svc.Name, "gateway", svc.Annotations[model.GatewayOwnerAnnotation])
		case apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) || apierrors.IsNotFound(err):
			result = "error" // the cache is behind; the next round sees the change
		default:
			result = "error"
			if s.gwSvcErrs[key] != err.Error() {
				s.gwSvcErrs[key] = err.Error()
				s.log.Warn("Gateway Service "+op+" failed; retried every status round, logged again when the error changes",
					"namespace", svc.Namespace, "name", svc.Name, "err", err)
			}
		}
		s.m.statusWrites.WithLabelValues("Service", result).Inc()
	}
	for _, svc := range plan.remove {
		err := services.Delete(ctx, svc.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &svc.UID}})
		report("delete", svc, err)
	}
	for _, svc := range plan.update {
		_, err := services.Update(ctx, svc, metav1.UpdateOptions{FieldManager: "weir"})
		report("update", svc, err)
	}
	for _, svc := range plan.create {
		_, err := services.Create(ctx, svc, metav1.CreateOptions{FieldManager: "weir"})
		report("create", svc, err)
	}
}
