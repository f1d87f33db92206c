package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// TrafficPolicy attaches weir's traffic settings to Services and routes.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=wtp
// +kubebuilder:subresource:status
type TrafficPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   TrafficPolicySpec   `json:"spec"`
	Status TrafficPolicyStatus `json:"status,omitempty"`
}

// TrafficPolicyList is a list of TrafficPolicy.
//
// +kubebuilder:object:root=true
type TrafficPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []TrafficPolicy `json:"items"`
}

// TrafficPolicySpec is what a TrafficPolicy sets. Every section is optional; an unset
// section keeps weir's defaults (which follow Envoy and Istio where they have one).
type TrafficPolicySpec struct {
	// TargetRefs names the objects the policy applies to: Services (group "", kind
	// Service), HTTPRoutes or GRPCRoutes (group gateway.networking.k8s.io), in the
	// policy's own namespace. SectionName narrows a Service to one named port or a route
	// to one named rule.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	TargetRefs []gatewayv1.LocalPolicyTargetReferenceWithSectionName `json:"targetRefs"`

	LoadBalancer   *LoadBalancer   `json:"loadBalancer,omitempty"`
	HealthCheck    *HealthCheck    `json:"healthCheck,omitempty"`
	Outlier        *Outlier        `json:"outlierDetection,omitempty"`
	Timeouts       *Timeouts       `json:"timeouts,omitempty"`
	Retry          *Retry          `json:"retry,omitempty"`
	CircuitBreaker *CircuitBreaker `json:"circuitBreaker,omitempty"`
	SlowStart      *SlowStart      `json:"slowStart,omitempty"`
	RateLimit      *RateLimit      `json:"rateLimit,omitempty"`
	CanaryAnalysis *CanaryAnalysis `json:"canaryAnalysis,omitempty"`
}

// Algorithm names a scheduler.
// +kubebuilder:validation:Enum=RoundRobin;WeightedRoundRobin;LeastConnections;WeightedLeastConnections;Random;PowerOfTwoChoices;PeakEWMA;SourceHash;DestinationHash;Maglev
type Algorithm string

// The schedulers weir implements (internal/balance).
const (
	RoundRobin               Algorithm = "RoundRobin"
	WeightedRoundRobin       Algorithm = "WeightedRoundRobin"
	LeastConnections         Algorithm = "LeastConnections"
	WeightedLeastConnections Algorithm = "WeightedLeastConnections"
	Random                   Algorithm = "Random"
	PowerOfTwoChoices        Algorithm = "PowerOfTwoChoices"
	PeakEWMA                 Algorithm = "PeakEWMA"
	SourceHash               Algorithm = "SourceHash"
	DestinationHash          Algorithm = "DestinationHash"
	Maglev                   Algorithm = "Maglev"
)

// LoadBalancer chooses the scheduler.
type LoadBalancer struct {
	// Algorithm defaults to RoundRobin.
	// +optional
	Algorithm Algorithm `json:"algorithm,omitempty"`
	// HashOn says what Maglev hashes at L7. At L4 Maglev and SourceHash hash the client IP.
	// +optional
	HashOn *HashOn `json:"hashOn,omitempty"`
	// Maglev tunes the Maglev table.
	// +optional
	Maglev *MaglevConfig `json:"maglev,omitempty"`
}

// HashOn picks the request attribute a hashing scheduler hashes (at most one field).
type HashOn struct {
	// +optional
	Header string `json:"header,omitempty"`
	// +optional
	Cookie string `json:"cookie,omitempty"`
	// +optional
	QueryParam string `json:"queryParam,omitempty"`
	// +optional
	SourceIP bool `json:"sourceIP,omitempty"`
}

// MaglevConfig tunes a Maglev table.
type MaglevConfig struct {
	// TableSize must be prime. Unset, it is automatic: 16381 (Cilium's default) for up to
	// 20 backends, growing to 32749, 65521 and 131071 so that removing one of N backends
	// moves at most 1/N + 1 % of keys.
	// +kubebuilder:validation:Minimum=251
	// +kubebuilder:validation:Maximum=131071
	// +optional
	TableSize int32 `json:"tableSize,omitempty"`
	// Seed makes two weir instances build the same table.
	// +optional
	Seed int64 `json:"seed,omitempty"`
}

// HealthCheck is an active health check.
type HealthCheck struct {
	// Type is TCP (connect) or HTTP (GET Path, expect ExpectedStatuses). Default TCP.
	// +kubebuilder:validation:Enum=TCP;HTTP
	// +optional
	Type string `json:"type,omitempty"`
	// Interval between probes of one endpoint. Default 5s.
	// +optional
	Interval *metav1.Duration `json:"interval,omitempty"`
	// Timeout of one probe. Default 1s.
	// +optional
	Timeout *metav1.Duration `json:"timeout,omitempty"`
	// HealthyThreshold is the consecutive successes that make an endpoint healthy. Default 1.
	// +kubebuilder:validation:Minimum=1
	// +optional
	HealthyThreshold int32 `json:"healthyThreshold,omitempty"`
	// UnhealthyThreshold is the consecutive failures that make it unhealthy. Default 3.
	// +kubebuilder:validation:Minimum=1
	// +optional
	UnhealthyThreshold int32 `json:"unhealthyThreshold,omitempty"`
	// HTTP settings, used when Type is HTTP.
	// +optional
	HTTP *HTTPHealthCheck `json:"http,omitempty"`
}

// HTTPHealthCheck is the request an HTTP health check makes.
type HTTPHealthCheck struct {
	// Path defaults to "/".
	// +optional
	Path string `json:"path,omitempty"`
	// Host header; default the endpoint address.
	// +optional
	Host string `json:"host,omitempty"`
	// ExpectedStatuses default to [200].
	// +optional
	ExpectedStatuses []int32 `json:"expectedStatuses,omitempty"`
}

// Outlier is passive health checking (Envoy's outlier detection).
type Outlier struct {
	// ConsecutiveFailures (connect failures at L4; 5xx at L7) that eject an endpoint. Default 5.
	// +optional
	ConsecutiveFailures int32 `json:"consecutiveFailures,omitempty"`
	// ConsecutiveGatewayErrors (502, 503, 504 and connect failures) that eject. Default 0 (off).
	// +optional
	ConsecutiveGatewayErrors int32 `json:"consecutiveGatewayErrors,omitempty"`
	// Interval of the ejection sweep. Default 10s.
	// +optional
	Interval *metav1.Duration `json:"interval,omitempty"`
	// BaseEjectionTime doubles with each recent ejection of an endpoint (at most 300s). Default 30s.
	// +optional
	BaseEjectionTime *metav1.Duration `json:"baseEjectionTime,omitempty"`
	// MaxEjectionPercent of a Service's endpoints may be ejected at once. Default 50.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +optional
	MaxEjectionPercent int32 `json:"maxEjectionPercent,omitempty"`
	// PanicThresholdPercent: below this share of healthy endpoints, traffic goes to all. Default 50.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +optional
	PanicThresholdPercent *int32 `json:"panicThresholdPercent,omitempty"`
}

// Timeouts for connections and requests.
type Timeouts struct {
	// Connect timeout to an endpoint. Default 5s.
	// +optional
	Connect *metav1.Duration `json:"connect,omitempty"`
	// Idle timeout of a proxied connection or UDP flow. Default 1h (TCP), 30s (UDP).
	// +optional
	Idle *metav1.Duration `json:"idle,omitempty"`
	// Request timeout at L7 when the route sets none. Default none.
	// +optional
	Request *metav1.Duration `json:"request,omitempty"`
	// Response timeout at L7: how long a try waits for the response head after sending
	// the request (nginx's proxy_read_timeout); past it the try fails (504, or a retry).
	// Default 60s.
	// +optional
	Response *metav1.Duration `json:"response,omitempty"`
}

// Retry is L7 retry policy.
type Retry struct {
	// Attempts after the first. Default 2.
	// +optional
	Attempts *int32 `json:"attempts,omitempty"`
	// PerTryTimeout bounds one attempt. Default none.
	// +optional
	PerTryTimeout *metav1.Duration `json:"perTryTimeout,omitempty"`
	// RetryOn lists the conditions: connect-failure, refused-stream, reset, 502, 503, 504,
	// 5xx. Default connect-failure, refused-stream, 503.
	// +optional
	RetryOn []string `json:"retryOn,omitempty"`
	// BackoffBase default 25ms, doubled per attempt with jitter, capped at 10× the base.
	// +optional
	BackoffBase *metav1.Duration `json:"backoffBase,omitempty"`
	// BudgetPercent of active requests may be retries. Default 20.
	// +optional
	BudgetPercent *int32 `json:"budgetPercent,omitempty"`
	// MinRetryConcurrency is always allowed regardless of the budget. Default 3.
	// +optional
	MinRetryConcurrency *int32 `json:"minRetryConcurrency,omitempty"`
	// RetryNonIdempotent allows retrying POST, PATCH and others. Default false.
	// +optional
	RetryNonIdempotent bool `json:"retryNonIdempotent,omitempty"`
}

// CircuitBreaker limits per backend Service; each defaults to 1024, as in Envoy.
type CircuitBreaker struct {
	// +optional
	MaxConnections *int32 `json:"maxConnections,omitempty"`
	// +optional
	MaxPendingRequests *int32 `json:"maxPendingRequests,omitempty"`
	// +optional
	MaxRequests *int32 `json:"maxRequests,omitempty"`
}

// SlowStart ramps a new endpoint's share of traffic (Envoy's slow start, Istio's warmup).
type SlowStart struct {
	// Window over which the weight ramps to full.
	Window metav1.Duration `json:"window"`
	// Aggression shapes the ramp: weight × (t/window)^(1/aggression). Default "1.0" (linear).
	// +optional
	Aggression string `json:"aggression,omitempty"`
	// MinWeightPercent is the starting share. Default 10.
	// +optional
	MinWeightPercent *int32 `json:"minWeightPercent,omitempty"`
}

// RateLimit is a local token bucket.
type RateLimit struct {
	// Requests allowed per Period.
	// +kubebuilder:validation:Minimum=1
	Requests int32 `json:"requests"`
	// Period of the bucket. Default 1s.
	// +optional
	Period *metav1.Duration `json:"period,omitempty"`
	// Burst is the bucket size. Default Requests.
	// +optional
	Burst int32 `json:"burst,omitempty"`
	// Key: "route" (one bucket, the default), "sourceIP", or "header:<Name>".
	// +optional
	Key string `json:"key,omitempty"`
}

// CanaryAnalysis rolls a canary backend back when its error rate rises.
type CanaryAnalysis struct {
	// Backend is the canary Service (in the policy's namespace) among the route's backendRefs.
	Backend string `json:"backend"`
	// Window is the sliding window of the error rate. Default 30s.
	// +optional
	Window *metav1.Duration `json:"window,omitempty"`
	// MinRequests in the window before a verdict. Default 20.
	// +optional
	MinRequests int32 `json:"minRequests,omitempty"`
	// MaxErrorPercent of 5xx answers above which weir rolls back. Default 5.
	// +optional
	MaxErrorPercent *int32 `json:"maxErrorPercent,omitempty"`
}

// TrafficPolicyStatus reports, per target, whether the policy was accepted.
type TrafficPolicyStatus struct {
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}
