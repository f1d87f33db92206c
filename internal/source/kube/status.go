package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilrand "k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"weir.dev/weir/internal/model"
)

// The controller names weir answers to by default: the model's.
const (
	DefaultGatewayControllerName = model.GatewayControllerName
	DefaultIngressControllerName = model.IngressControllerName
)

// StatusOptions configure status write-back.
type StatusOptions struct {
	// GatewayControllerName is the GatewayClass spec.controllerName weir implements.
	GatewayControllerName string
	// IngressControllerName is the IngressClass spec.controller weir implements.
	IngressControllerName string
	// Addresses (IPs or hostnames) published in Ingress status.loadBalancer and Gateway
	// status.addresses.
	Addresses []string
	// Compute derives the wanted statuses from the objects. Default: ModelStatuses (the
	// gateway's conditions from model.Translate). BasicStatuses is the simpler
	// alternative that needs no translation.
	Compute func(objs *model.Objects) *Statuses
	// Served, when set, corrects ModelStatuses' statuses with what the data plane knows
	// (gateway.Gateway.Served: listeners it could not bind are not Programmed).
	Served func(*model.Snapshot) *model.Snapshot
	// MinInterval between two status rounds (each may translate). Default 1 s.
	MinInterval time.Duration

	// Lease for the leader election; one replica writes status.
	LeaseNamespace string        // default "weir-system"
	LeaseName      string        // default "weir-status"
	Identity       string        // default hostname plus a random suffix
	LeaseDuration  time.Duration // default 15 s
	RenewDeadline  time.Duration // default 10 s
	RetryPeriod    time.Duration // default 2 s
	// Resync re-checks every status this often even without events. Default 1 min.
	Resync time.Duration
}

func (o *StatusOptions) setDefaults() error {
	if o.GatewayControllerName == "" {
		o.GatewayControllerName = DefaultGatewayControllerName
	}
	if o.IngressControllerName == "" {
		o.IngressControllerName = DefaultIngressControllerName
	}
	if o.Compute == nil {
		opts := *o
		o.Compute = func(objs *model.Objects) *Statuses { return ModelStatuses(objs, opts) }
	}
	if o.LeaseNamespace == "" {
		o.LeaseNamespace = "weir-system"
	}
	if o.LeaseName == "" {
		o.LeaseName = "weir-status"
	}
	if o.Identity == "" {
		host, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("kube source: status identity: %w", err)
		}
		o.Identity = host + "-" + utilrand.String(5)
	}
	if o.LeaseDuration <= 0 {
		o.LeaseDuration = 15 * time.Second
	}
	if o.RenewDeadline <= 0 {
		o.RenewDeadline = 10 * time.Second
	}
	if o.RetryPeriod <= 0 {
		o.RetryPeriod = 2 * time.Second
	}
	if o.MinInterval <= 0 {
		o.MinInterval = time.Second
	}
	if o.Resync <= 0 {
		o.Resync = time.Minute
	}
	return nil
}

// Statuses is the status weir wants on the objects it manages. An object missing from a
// map is left alone, except Routes: weir's own parent entries are removed from a Route
// that no longer attaches to one of weir's Gateways.
type Statuses struct {
	// GatewayClasses: conditions by GatewayClass name.
	GatewayClasses map[string][]metav1.Condition
	Gateways       map[types.NamespacedName]gatewayv1.GatewayStatus
	// Route parent statuses with weir's controllerName.
	HTTPRoutes map[types.NamespacedName][]gatewayv1.RouteParentStatus
	GRPCRoutes map[types.NamespacedName][]gatewayv1.RouteParentStatus
	TLSRoutes  map[types.NamespacedName][]gatewayv1.RouteParentStatus
	// Ingresses: status.loadBalancer.ingress.
	Ingresses map[types.NamespacedName][]networkingv1.IngressLoadBalancerIngress
}

// runStatus takes part in the leader election until ctx ends; the leader writes status.
func (s *Source) runStatus(ctx context.Context) {
	so := s.opts.Status
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: so.LeaseNamespace, Name: so.LeaseName},
		Client:     s.clients.Kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: so.Identity},
	}
	// A node proxy's ServiceAccount has no Lease rights: it writes no status, quietly.
	allowed, err := s.mayAccess(ctx, "update", "coordination.k8s.io", "leases", so.LeaseNamespace)
	if err != nil || !allowed {
		s.log.Info("status write-back off: not allowed to update Leases", "namespace", so.LeaseNamespace, "err", err)
		return
	}
	for ctx.Err() == nil {
		if !s.waitLeaseNamespace(ctx) {
			return
		}
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			LeaseDuration:   so.LeaseDuration,
			RenewDeadline:   so.RenewDeadline,
			RetryPeriod:     so.RetryPeriod,
			ReleaseOnCancel: true,
			Name:            "weir-status",
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: s.statusLoop,
				OnStoppedLeading: func() { s.m.leader.Set(0) },
			},
		})
		if err != nil {
			s.log.Error("status write-back disabled: leader election", "err", err)
			return
		}
		le.Run(ctx) // returns when leadership is lost or ctx ends
		select {
		case <-ctx.Done():
		case <-time.After(so.RetryPeriod):
		}
	}
}

// waitLeaseNamespace returns once the Lease's namespace exists (true) or ctx ends
// (false). While it is missing, leader election could only fail every RetryPeriod, so
// status write-back is off: that is said once, and the namespace is looked for again
// with a backoff (RetryPeriod doubling up to 5 min). When the namespace cannot be read (no
// right to get it), the election runs and reports for itself.
func (s *Source) waitLeaseNamespace(ctx context.Context) bool {
	ns := s.opts.Status.LeaseNamespace
	wait, said := s.opts.Status.RetryPeriod, false
	for {
		_, err := s.clients.Kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if ctx.Err() != nil {
			return false
		}
		if !apierrors.IsNotFound(err) {
			if said {
				s.log.Info("status write-back on: the Lease namespace exists", "namespace", ns)
			}
			return true
		}
		if !said {
			s.log.Warn("status write-back off until the Lease namespace exists (create it, e.g. with deploy/base); looking again with a backoff",
				"namespace", ns, "lease", ns+"/"+s.opts.Status.LeaseName)
			said = true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Minute)
	}
}

// statusLoop writes status while this replica leads.
func (s *Source) statusLoop(ctx context.Context) {
	s.log.Info("leading status write-back", "identity", s.opts.Status.Identity)
	s.m.leader.Set(1)
	defer s.m.leader.Set(0)
	t := time.NewTicker(s.opts.Status.Resync)
	defer t.Stop()
	for {
		objs := s.Objects()
		s.syncGatewayServices(ctx, objs)
		s.WriteStatus(ctx, s.opts.Status.Compute(objs))
		// At most one round per MinInterval: rebuilds meanwhile leave one wake-up pending.
		select {
		case <-ctx.Done():
			s.log.Info("stopped leading status write-back")
			return
		case <-time.After(s.opts.Status.MinInterval):
		}
		select {
		case <-ctx.Done():
			s.log.Info("stopped leading status write-back")
			return
		case <-s.rebuilt:
		case <-t.C:
		}
	}
}

// WriteStatus compares want with the cached objects and patches only what differs.
// Conditions keep their lastTransitionTime while their status does not change. It must
// not run concurrently with itself (the leader's status loop calls it).
func (s *Source) WriteStatus(ctx context.Context, want *Statuses) {
	if want == nil {
		return
	}
	if s.inflight == nil || len(s.inflight) > 10000 {
		s.inflight = map[string]string{}
	}
	if inf := s.informerFor(kindGatewayClass); inf != nil {
		for _, it := range inf.GetStore().List() {
			gc, ok := it.(*gatewayv1.GatewayClass)
			if !ok {
				continue
			}
			conds, ok := want.GatewayClasses[gc.Name]
			if !ok {
				continue
			}
			merged := mergeConditions(gc.Status.Conditions, conds)
			if equality.Semantic.DeepEqual(merged, gc.Status.Conditions) {
				continue
			}
			s.patch(ctx, kindGatewayClass, gc.ObjectMeta, map[string]any{"conditions": merged}, func(body []byte) error {
				_, err := s.clients.Gateway.GatewayV1().GatewayClasses().Patch(ctx, gc.Name, types.MergePatchType, body, metav1.PatchOptions{FieldManager: "weir"}, "status")
				return err
			})
		}
	}
	if inf := s.informerFor(kindGateway); inf != nil {
		for _, it := range inf.GetStore().List() {
			gw, ok := it.(*gatewayv1.Gateway)
			if !ok {
				continue
			}
			st, ok := want.Gateways[types.NamespacedName{Namespace: gw.Namespace, Name: gw.Name}]
			if !ok {
				continue
			}
			merged := mergeGatewayStatus(gw.Status, st)
			if equality.Semantic.DeepEqual(merged, gw.Status) {
				continue
			}
			s.patch(ctx, kindGateway, gw.ObjectMeta, map[string]any{"addresses": merged.Addresses, "conditions": merged.Conditions, "listeners": merged.Listeners}, func(body []byte) error {
				_, err := s.clients.Gateway.GatewayV1().Gateways(gw.Namespace).Patch(ctx, gw.Name, types.MergePatchType, body, metav1.PatchOptions{FieldManager: "weir"}, "status")
				return err
			})
		}
	}
	ctrl := gatewayv1.GatewayController(s.opts.Status.GatewayControllerName)
	s.writeRoutes(ctx, kindHTTPRoute, ctrl, want.HTTPRoutes, func(it any) (*metav1.ObjectMeta, []gatewayv1.RouteParentStatus, bool) {
		r, ok := it.(*gatewayv1.HTTPRoute)
		if !ok {
			return nil, nil, false
		}
		return &r.ObjectMeta, r.Status.Parents, true
	}, func(ns, name string, body []byte) error {
		_, err := s.clients.Gateway.GatewayV1().HTTPRoutes(ns).Patch(ctx, name, types.MergePatchType, body, metav1.PatchOptions{FieldManager: "weir"}, "status")
		return err
	})
	s.writeRoutes(ctx, kindGRPCRoute, ctrl, want.GRPCRoutes, func(it any) (*metav1.ObjectMeta, []gatewayv1.RouteParentStatus, bool) {
		r, ok := it.(*gatewayv1.GRPCRoute)
		if !ok {
			return nil, nil, false
		}
		return &r.ObjectMeta, r.Status.Parents, true
	}, func(ns, name string, body []byte) error {
		_, err := s.clients.Gateway.GatewayV1().GRPCRoutes(ns).Patch(ctx, name, types.MergePatchType, body, metav1.PatchOptions{FieldManager: "weir"}, "status")
		return err
	})
	s.writeRoutes(ctx, kindTLSRoute, ctrl, want.TLSRoutes, func(it any) (*metav1.ObjectMeta, []gatewayv1.RouteParentStatus, bool) {
		r, ok := it.(*gatewayv1.TLSRoute)
		if !ok {
			return nil, nil, false
		}
		return &r.ObjectMeta, r.Status.Parents, true
	}, func(ns, name string, body []byte) error {
		_, err := s.clients.Gateway.GatewayV1().TLSRoutes(ns).Patch(ctx, name, types.MergePatchType, body, metav1.PatchOptions{FieldManager: "weir"}, "status")
		return err
	})
	if inf := s.informerFor(kindIngress); inf != nil {
		for _, it := range inf.GetStore().List() {
			ing, ok := it.(*networkingv1.Ingress)
			if !ok {
				continue
			}
			lb, ok := want.Ingresses[types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name}]
			if !ok || equality.Semantic.DeepEqual(lb, ing.Status.LoadBalancer.Ingress) || (len(lb) == 0 && len(ing.Status.LoadBalancer.Ingress) == 0) {
				continue
			}
			s.patch(ctx, kindIngress, ing.ObjectMeta, map[string]any{"loadBalancer": map[string]any{"ingress": lb}}, func(body []byte) error {
				_, err := s.clients.Kube.NetworkingV1().Ingresses(ing.Namespace).Patch(ctx, ing.Name, types.MergePatchType, body, metav1.PatchOptions{FieldManager: "weir"}, "status")
				return err
			})
		}
	}
}

// writeRoutes replaces weir's parent entries in each Route's status and keeps the other
// controllers' entries.
func (s *Source) writeRoutes(ctx context.Context, name string, ctrl gatewayv1.GatewayController, want map[types.NamespacedName][]gatewayv1.RouteParentStatus,
	get func(any) (*metav1.ObjectMeta, []gatewayv1.RouteParentStatus, bool), patch func(ns, name string, body []byte) error) {
	inf := s.informerFor(name)
	if inf == nil {
		return
	}
	for _, it := range inf.GetStore().List() {
		om, parents, ok := get(it)
		if !ok {
			continue
		}
		merged := mergeParents(parents, want[types.NamespacedName{Namespace: om.Namespace, Name: om.Name}], ctrl)
		if equality.Semantic.DeepEqual(merged, parents) || (len(merged) == 0 && len(parents) == 0) {
			continue
		}
		s.patch(ctx, name, *om, map[string]any{"parents": merged}, func(body []byte) error { return patch(om.Namespace, om.Name, body) })
	}
}

// patch sends a JSON merge patch of status, guarded by the cached resourceVersion so a
// concurrent writer's change is not overwritten (the next rebuild retries).
func (s *Source) patch(ctx context.Context, kind string, om metav1.ObjectMeta, status map[string]any, do func([]byte) error) {
	key := kind + "/" + om.Namespace + "/" + om.Name
	if om.ResourceVersion != "" && s.inflight[key] == om.ResourceVersion {
		return // written against this version; the cache has not seen the result yet
	}
	body, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"resourceVersion": om.ResourceVersion},
		"status":   status,
	})
	if err == nil {
		err = do(body)
	}
	if err != nil {
		delete(s.inflight, key)
		s.m.statusWrites.WithLabelValues(kind, "error").Inc()
		s.log.Warn("status write failed", "kind", kind, "namespace", om.Namespace, "name", om.Name, "err", err)
		return
	}
	s.inflight[key] = om.ResourceVersion
	s.m.statusWrites.WithLabelValues(kind, "ok").Inc()
	s.log.Debug("status written", "kind", kind, "namespace", om.Namespace, "name", om.Name)
}

// mergeConditions applies want over have, keeping lastTransitionTime when a condition's
// status is unchanged and keeping conditions of other types.
func mergeConditions(have, want []metav1.Condition) []metav1.Condition {
	out := slices.Clone(have)
	for _, c := range want {
		meta.SetStatusCondition(&out, c)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func mergeGatewayStatus(have, want gatewayv1.GatewayStatus) gatewayv1.GatewayStatus {
	out := gatewayv1.GatewayStatus{
		Addresses:  want.Addresses,
		Conditions: mergeConditions(have.Conditions, want.Conditions),
	}
	for _, l := range want.Listeners {
		for _, h := range have.Listeners {
			if h.Name == l.Name {
				l.Conditions = mergeConditions(h.Conditions, l.Conditions)
			}
		}
		l.Conditions = mergeConditions(nil, l.Conditions)
		out.Listeners = append(out.Listeners, l)
	}
	if len(out.Addresses) == 0 && len(have.Addresses) == 0 {
		out.Addresses = have.Addresses
	}
	return out
}

func mergeParents(have, want []gatewayv1.RouteParentStatus, ctrl gatewayv1.GatewayController) []gatewayv1.RouteParentStatus {
	var out []gatewayv1.RouteParentStatus
	for _, p := range have {
		if p.ControllerName != ctrl {
			out = append(out, p)
		}
	}
	for _, w := range want {
		var prev []metav1.Condition
		for _, p := range have {
			if p.ControllerName == ctrl && equality.Semantic.DeepEqual(p.ParentRef, w.ParentRef) {
				prev = p.Conditions
			}
		}
		w.ControllerName = ctrl
		w.Conditions = mergeConditions(prev, w.Conditions)
		out = append(out, w)
	}
	return out
}

// ingressAddresses turns IPs and hostnames into Ingress load-balancer entries.
func ingressAddresses(addrs []string) []networkingv1.IngressLoadBalancerIngress {
	var out []networkingv1.IngressLoadBalancerIngress
	for _, a := range addrs {
		if _, err := netip.ParseAddr(a); err == nil {
			out = append(out, networkingv1.IngressLoadBalancerIngress{IP: a})
		} else {
			out = append(out, networkingv1.IngressLoadBalancerIngress{Hostname: a})
		}
	}
	return out
}

// gatewayAddresses turns IPs and hostnames into Gateway status addresses.
func gatewayAddresses(addrs []string) []gatewayv1.GatewayStatusAddress {
	var out []gatewayv1.GatewayStatusAddress
	for _, a := range addrs {
		t := gatewayv1.HostnameAddressType
		if _, err := netip.ParseAddr(a); err == nil {
			t = gatewayv1.IPAddressType
		}
		out = append(out, gatewayv1.GatewayStatusAddress{Type: &t, Value: a})
	}
	return out
}
