package caddymodule

import (
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/caddyai/gateway/routing"
)

// HealthCheckConfig turns on the gateway's own active health checks of a model's upstreams (Caddy
// runs active health checks only for static upstreams, not for `dynamic ai_gateway`). Each
// upstream is probed in the background; hosts that fail, or answer that they are still loading,
// are kept out of the pool handed to reverse_proxy, and a model with no host left is answered at
// once: 503 model_loading or model_unavailable with Retry-After (529 on the Anthropic surface),
// or its fallback. A 2xx answer is healthy; a 503 that says the model is loading (llama.cpp
// server's /health) is loading; anything else, or no answer within Timeout, is down. Hosts not
// probed yet are used.
type HealthCheckConfig struct {
	// Path is the path probed with GET on each upstream: /health for vLLM, TGI and llama.cpp
	// server, / for Ollama, /v2/health/ready for KServe and Triton. Default: /health.
	Path string `json:"path,omitempty"`
	// Interval is the time between two probes of each upstream. Default: 5s.
	Interval caddy.Duration `json:"interval,omitempty"`
	// Timeout bounds one probe. Default: 2s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
}

// healthPool holds the one table of probed hosts, kept across reloads so that a reload neither
// forgets a host that is down nor refuses requests while its first probes run.
var healthPool = caddy.NewUsagePool()

type healthHandle struct{ health *routing.Health }

func (healthHandle) Destruct() error { return nil }

// opsState is the gateway's day-two state: pool health and the upstream tokenizers' metric.
type opsState struct {
	health      *routing.Health
	healthHeld  bool
	unwatch     func() // stops publishing on changes of the shared table
	gauges      *healthGauges
	metrics     *opsMetrics
	metricsHeld bool
}

// poolHealth is the probed state of a model's hosts, index for index with modelRoute.dials.
type poolHealth struct {
	hosts    []*routing.HostHealth
	interval time.Duration
}

// available tells whether the i-th host of the pool may take requests (always without checks).
func (p *poolHealth) available(i int) bool {
	return p == nil || p.hosts[i].State().Available()
}

// status counts the pool's hosts by state.
func (p *poolHealth) status() routing.PoolStatus {
	if p == nil {
		return routing.PoolStatus{}
	}
	return routing.Summarize(p.hosts)
}

// healthGauges sets the upstream_hosts gauges of every model with health_check. It runs on any
// change of the shared table: a host two models share is probed by both models' probers, and
// the one that sees a change first is not necessarily the one whose gauge it moves.
type healthGauges struct {
	mu         sync.Mutex
	publishers []func() // per model: sets its gauges from its hosts' states
}

func (h *healthGauges) add(publish func()) {
	h.mu.Lock()
	h.publishers = append(h.publishers, publish)
	h.mu.Unlock()
	publish()
}

func (h *healthGauges) publishAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, publish := range h.publishers {
		publish()
	}
}

// provisionHealth loads the shared table of probed hosts and starts the model's prober, which
// runs until the config's context ends (a reload or a shutdown). Call it once the route's dials
// and upstream credential are set.
func (g *Gateway) provisionHealth(route *modelRoute, mc ModelConfig) error {
	hc := mc.HealthCheck
	if hc == nil || len(route.dials) == 0 {
		return nil
	}
	if !g.ops.healthHeld {
		val, _, err := healthPool.LoadOrNew("health", func() (caddy.Destructor, error) {
			return healthHandle{health: routing.NewHealth()}, nil
		})
		if err != nil {
			return err
		}
		g.ops.health, g.ops.healthHeld = val.(healthHandle).health, true
		g.ops.gauges = new(healthGauges)
		g.ops.unwatch = g.ops.health.Watch(g.ops.gauges.publishAll)
	}
	path := hc.Path
	if path == "" {
		path = routing.DefaultHealthPath
	} else if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	interval := time.Duration(hc.Interval)
	if interval <= 0 {
		interval = routing.DefaultHealthInterval
	}
	ph := &poolHealth{interval: interval}
	var targets []routing.ProbeTarget
	for i, dial := range route.dials {
		if strings.HasPrefix(dial, "unix/") {
			ph.hosts = append(ph.hosts, new(routing.HostHealth)) // not probed: always used
			continue
		}
		scheme := "http"
		if strings.HasPrefix(mc.Upstreams[i], "https://") {
			scheme = "https"
		}
		url := scheme + "://" + dial + path
		host := g.ops.health.Host(url)
		ph.hosts = append(ph.hosts, host)
		targets = append(targets, routing.ProbeTarget{URL: url, Host: host})
	}
	route.health = ph
	var header http.Header
	if route.authorization != "" {
		header = http.Header{"Authorization": {route.authorization}}
	}
	model := mc.Name
	gauge := g.opsMetricsOf().upstreamHealth
	publish := func() {
		st := ph.status()
		gauge.WithLabelValues(model, "healthy").Set(float64(st.Healthy))
		gauge.WithLabelValues(model, "loading").Set(float64(st.Loading))
		gauge.WithLabelValues(model, "down").Set(float64(st.Down))
		gauge.WithLabelValues(model, "unknown").Set(float64(st.Unknown))
	}
	g.ops.gauges.add(publish)
	prober := routing.NewProber(nil, routing.ProberOptions{
		Interval: interval,
		Timeout:  time.Duration(hc.Timeout),
		Header:   header,
		OnChange: func(url string, from, to routing.HostState, err error) {
			fields := []zap.Field{zap.String("model", model), zap.String("upstream", url), zap.String("from", from.String()), zap.String("to", to.String())}
			if err != nil {
				fields = append(fields, zap.String("error", wire.Redact(err.Error(), route.secrets...)))
			}
			g.logger.Info("upstream health changed", fields...)
		},
	})
	if len(targets) > 0 {
		go func() {
			defer logPanic(g.logger, "health prober panicked")
			prober.Run(g.ctx, targets)
		}()
	}
	return nil
}

// poolRefusal is the answer to a request for a model none of whose hosts may take it: 503
// model_loading while one is loading, else model_unavailable, with Retry-After. Nil while a
// host is available or the model has no health checks.
func (r *modelRoute) poolRefusal() *wire.Error {
	if r.health == nil {
		return nil
	}
	switch r.health.status().Refusal() {
	case "":
		return nil
	case "model_loading":
		return wire.ModelLoading(r.model.Name, max(wire.LoadingRetryAfter, r.health.interval))
	}
	return wire.ModelUnavailable(r.model.Name, max(time.Second, r.health.interval))
}

// capacityRefusal tells whether a refusal is for lack of capacity of the model's pool, which
// moves the request to the model's fallback.
func capacityRefusal(werr *wire.Error) bool {
	switch werr.Code {
	case "model_overloaded", "model_loading", "model_unavailable":
		return true
	}
	return false
}

// contextStatus is the status of every context_length_exceeded answer, the gateway's own and an
// upstream's: context_status, 413 by default.
func (g *Gateway) contextStatus() int {
	if g.ContextStatus == http.StatusBadRequest {
		return http.StatusBadRequest
	}
	return http.StatusRequestEntityTooLarge
}

// provisionPool sets up what the gateway does with the model's pool itself: health checks,
// then the upstream tokenizer (which asks healthy hosts only).
func (g *Gateway) provisionPool(route *modelRoute, mc ModelConfig) error {
	if err := g.provisionHealth(route, mc); err != nil {
		return err
	}
	return g.provisionUpstreamTokenizer(route, mc)
}
