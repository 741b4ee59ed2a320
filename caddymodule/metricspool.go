package caddymodule

import "github.com/caddyserver/caddy/v2"

// metricsPool holds the gateway's collectors across config reloads. Caddy gives every config a
// new metrics registry; registering the same collectors on it (instead of new ones) keeps every
// caddy_ai_gateway_* series and its count through a reload, including one that adds a model.
var metricsPool = caddy.NewUsagePool()

// metricsHandle is the pooled set of collectors; nothing to close.
type metricsHandle struct{ m *gatewayMetrics }

func (metricsHandle) Destruct() error { return nil }

// sharedMetrics returns the collectors shared by every config that runs a gateway (created by
// the first), as a copy of the set: register writes the copy's fields, never the shared set that
// running requests read. The caller must release it with metricsPool.Delete("metrics").
func sharedMetrics() (*gatewayMetrics, error) {
	v, _, err := metricsPool.LoadOrNew("metrics", func() (caddy.Destructor, error) {
		return metricsHandle{m: newGatewayMetrics()}, nil
	})
	if err != nil {
		return nil, err
	}
	m := *v.(metricsHandle).m
	return &m, nil
}
