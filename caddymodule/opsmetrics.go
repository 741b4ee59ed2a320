package caddymodule

import (
	"github.com/prometheus/client_golang/prometheus"
)

// opsMetrics are the collectors of the day-two features, registered once per Gateway (and
// reused across reloads like the others).
type opsMetrics struct {
	tokenizeFallbacks *prometheus.CounterVec // model, reason
	upstreamHealth    *prometheus.GaugeVec   // model, state
}

// opsMetricsOf returns the gateway's day-two collectors, creating and registering them on first
// use.
func (g *Gateway) opsMetricsOf() *opsMetrics {
	if g.ops.metrics != nil {
		return g.ops.metrics
	}
	m := &opsMetrics{
		tokenizeFallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metricsNamespace, Subsystem: metricsSubsystem,
			Name: "tokenize_fallbacks_total",
			Help: "Prompt texts of models with tokenizer upstream counted with the estimate because the model server's /tokenize " +
				"could not answer, by reason (error, timeout, unavailable)."}, []string{"model", "reason"}),
		upstreamHealth: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: metricsNamespace, Subsystem: metricsSubsystem,
			Name: "upstream_hosts",
			Help: "Upstream hosts of models with health_check, by the state their last probe found (healthy, loading, down, unknown)."},
			[]string{"model", "state"}),
	}
	if reg := g.ctx.GetMetricsRegistry(); reg != nil {
		if c, err := registerOrReuse(reg, m.tokenizeFallbacks); err == nil {
			m.tokenizeFallbacks = c
		}
		if c, err := registerOrReuse(reg, m.upstreamHealth); err == nil {
			m.upstreamHealth = c
		}
	}
	g.ops.metrics = m
	return m
}
