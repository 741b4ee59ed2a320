package caddymodule

import (
	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// opsMetrics are the collectors of pool health and the upstream tokenizers. Like the gateway's
// others (metricsPool) they live across config reloads, so their series keep their counts.
type opsMetrics struct {
	tokenizeFallbacks *prometheus.CounterVec // model, reason
	upstreamHealth    *prometheus.GaugeVec   // model, state
}

var opsMetricsPool = caddy.NewUsagePool()

type opsMetricsHandle struct{ m *opsMetrics }

func (opsMetricsHandle) Destruct() error { return nil }

func newOpsMetrics() *opsMetrics {
	return &opsMetrics{
		tokenizeFallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metricsNamespace, Subsystem: metricsSubsystem,
			Name: "tokenize_fallbacks_total",
			Help: "Prompt texts of models with tokenizer upstream counted with the estimate because the model server's /tokenize " +
				"could not answer, by reason (error, timeout, unavailable)."}, []string{"model", "reason"}),
		upstreamHealth: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: metricsNamespace, Subsystem: metricsSubsystem,
			Name: "upstream_hosts",
			Help: "Upstream hosts of models with health_check, by the state their last probe found (healthy, loading, down, unknown)."},
			[]string{"model", "state"}),
	}
}

// opsMetricsOf returns the shared day-two collectors, registered on this config's registry on
// first use (the hold is released in Cleanup).
func (g *Gateway) opsMetricsOf() *opsMetrics {
	if g.ops.metrics != nil {
		return g.ops.metrics
	}
	v, _, err := opsMetricsPool.LoadOrNew("ops", func() (caddy.Destructor, error) {
		return opsMetricsHandle{m: newOpsMetrics()}, nil
	})
	var m opsMetrics
	if err == nil {
		m, g.ops.metricsHeld = *v.(opsMetricsHandle).m, true
	} else {
		m = *newOpsMetrics()
	}
	if reg := g.ctx.GetMetricsRegistry(); reg != nil {
		if c, err := registerOrReuse(reg, m.tokenizeFallbacks); err == nil {
			m.tokenizeFallbacks = c
		}
		if c, err := registerOrReuse(reg, m.upstreamHealth); err == nil {
			m.upstreamHealth = c
		}
	}
	g.ops.metrics = &m
	return g.ops.metrics
}
