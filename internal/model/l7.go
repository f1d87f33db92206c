package model

// GatewayConfig is the L7 part of a Snapshot: listeners, TLS certificates, route tables
// and their resolved policies, and the status conditions of Gateway API and Ingress
// objects. Owned by the L7 gateway work (issue 3); filled by translateGateways.
type GatewayConfig struct{}
