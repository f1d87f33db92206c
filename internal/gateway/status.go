package gateway

import (
	"maps"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"weir.dev/weir/internal/model"
)

// bound records the outcome of binding a listener's configured address. Called under
// g.mu.
func (g *Gateway) bound(addr string, err error) {
	if err == nil {
		delete(g.bindErrs, addr)
		return
	}
	if g.bindErrs == nil {
		g.bindErrs = map[string]string{}
	}
	g.bindErrs[addr] = err.Error()
}

// ListenerErrors returns, by configured address, the listeners of the last Sync that
// could not be bound and why. A listener bound since, or no longer configured, is not
// listed.
func (g *Gateway) ListenerErrors() map[string]string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return maps.Clone(g.bindErrs)
}

// Status returns cfg's object statuses as the data plane serves them: a Gateway
// listener whose address could not be bound (failed, from ListenerErrors) is
// Programmed=False with reason Invalid and the error as message, and a Gateway none of
// whose listeners is served then is Programmed=False too. cfg is not modified; the
// statuses it holds are returned unchanged when nothing failed.
func Status(cfg *model.GatewayConfig, failed map[string]string) []model.ObjectStatus {
	if cfg == nil {
		return nil
	}
	if len(failed) == 0 {
		return cfg.Status
	}
	// "namespace/gateway" → listener name → the bind error.
	down := map[string]map[string]string{}
	for _, l := range cfg.Listeners {
		msg, ok := failed[l.Address]
		if !ok || l.Ingress != "" {
			continue
		}
		for _, sec := range l.Sections {
			i := strings.LastIndexByte(sec.Name, '/')
			if i < 0 {
				continue
			}
			gw, name := sec.Name[:i], sec.Name[i+1:]
			if down[gw] == nil {
				down[gw] = map[string]string{}
			}
			down[gw][name] = msg
		}
	}
	if len(down) == 0 {
		return cfg.Status
	}
	out := slices.Clone(cfg.Status)
	for i := range out {
		st := &out[i]
		names := down[st.Namespace+"/"+st.Name]
		if st.Kind != "Gateway" || names == nil {
			continue
		}
		st.Listeners = slices.Clone(st.Listeners)
		served := false
		for j := range st.Listeners {
			ls := &st.Listeners[j]
			msg, isDown := names[ls.Name]
			if !isDown {
				if c := findCondition(ls.Conditions, string(gatewayv1.ListenerConditionProgrammed)); c != nil && c.Status == metav1.ConditionTrue {
					served = true
				}
				continue
			}
			ls.Conditions = setCondition(ls.Conditions, string(gatewayv1.ListenerConditionProgrammed), string(gatewayv1.ListenerReasonInvalid), msg)
		}
		if !served {
			st.Conditions = setCondition(st.Conditions, string(gatewayv1.GatewayConditionProgrammed), string(gatewayv1.GatewayReasonInvalid),
				"no listener could be bound; see listener status")
		}
	}
	return out
}

func findCondition(cs []metav1.Condition, t string) *metav1.Condition {
	for i := range cs {
		if cs[i].Type == t {
			return &cs[i]
		}
	}
	return nil
}

// setCondition returns a copy of cs with condition t False for reason and message
// (its observed generation kept).
func setCondition(cs []metav1.Condition, t, reason, msg string) []metav1.Condition {
	cs = slices.Clone(cs)
	if c := findCondition(cs, t); c != nil {
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, reason, msg
		return cs
	}
	return append(cs, metav1.Condition{Type: t, Status: metav1.ConditionFalse, Reason: reason, Message: msg})
}

// Served returns snap as the data plane serves it: snap itself when every listener is
// bound, else a copy whose GatewayConfig.Status marks the listeners that could not be
// bound (Status). For the admin API and anything else that shows status.
func (g *Gateway) Served(snap *model.Snapshot) *model.Snapshot {
	if snap == nil || snap.Gateway == nil {
		return snap
	}
	failed := g.ListenerErrors()
	if len(failed) == 0 {
		return snap
	}
	s, gc := *snap, *snap.Gateway
	gc.Status = Status(snap.Gateway, failed)
	s.Gateway = &gc
	return &s
}
