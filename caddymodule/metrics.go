package caddymodule

import (
	"errors"

	"github.com/caddyai/gateway/policy/tokens"
	"github.com/prometheus/client_golang/prometheus"
)

// gatewayMetrics are the gateway's Prometheus collectors, registered on Caddy's metrics registry
// (namespace caddy, subsystem ai_gateway). Labels stay low-cardinality: model, code, reason,
// scope kind; key_id only when the operator turns metrics_key_id on.
type gatewayMetrics struct {
	requests       *prometheus.CounterVec   // model, code, reason, key_id
	tokens         *prometheus.CounterVec   // model, kind, key_id
	ttft           *prometheus.HistogramVec // model
	itl            *prometheus.HistogramVec // model
	upstream       *prometheus.HistogramVec // model
	inFlight       *prometheus.GaugeVec     // model
	rateLimited    *prometheus.CounterVec   // scope, dimension
	incomplete     *prometheus.CounterVec   // model
	storeErrors    prometheus.Counter
	cache          *prometheus.CounterVec // result: hit, miss, bypass
	cacheBytes     prometheus.Gauge
	cacheEvictions prometheus.Gauge
	keysReloaded   *prometheus.CounterVec // result
	promptCounts   *prometheus.CounterVec // model, how: bound, lower_bound, partial, exact
	batchLines     *prometheus.CounterVec // model, outcome: done, failed, retried
	batchTokens    *prometheus.CounterVec // model, kind
	cost           *prometheus.CounterVec // model, currency
	budgetWarnings *prometheus.CounterVec // scope kind, period, dimension
	budgetRefused  *prometheus.CounterVec // scope kind, period, dimension
}

const (
	metricsNamespace = "caddy"
	metricsSubsystem = "ai_gateway"
)

func newGatewayMetrics() *gatewayMetrics {
	opts := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: name, Help: help}
	}
	hist := func(name, help string, buckets []float64) prometheus.HistogramOpts {
		return prometheus.HistogramOpts{Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: name, Help: help, Buckets: buckets}
	}
	latency := []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
	return &gatewayMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts(opts("requests_total",
			"AI requests handled, by model, HTTP status code and reject reason (empty when served).")), []string{"model", "code", "reject_reason", "key_id"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts(opts("tokens_total",
			"Tokens by model and kind (prompt, completion, cached).")), []string{"model", "kind", "key_id"}),
		ttft: prometheus.NewHistogramVec(hist("time_to_first_token_seconds",
			"Time from the request's arrival to the first generated token of a stream.", latency), []string{"model"}),
		itl: prometheus.NewHistogramVec(hist("inter_token_latency_seconds",
			"Time between generated stream events.", []float64{.001, .0025, .005, .01, .02, .04, .08, .16, .32, .64, 1.28}), []string{"model"}),
		upstream: prometheus.NewHistogramVec(hist("upstream_duration_seconds",
			"Time from the hand-off to the upstream until the response ended.", latency), []string{"model"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts(opts("in_flight_requests",
			"Requests handed to an upstream and not yet finished.")), []string{"model"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts(opts("rate_limited_total",
			"Requests refused by a rate limit, by scope kind (key, model, global) and dimension.")), []string{"scope", "dimension"}),
		incomplete: prometheus.NewCounterVec(prometheus.CounterOpts(opts("stream_incomplete_total",
			"Upstream streams that ended without [DONE] or message_stop; the client got an error frame.")), []string{"model"}),
		storeErrors: prometheus.NewCounter(prometheus.CounterOpts(opts("rate_limit_store_errors_total",
			"Errors of the rate-limit store (Redis); requests were answered by the fallback or refused."))),
		cache: prometheus.NewCounterVec(prometheus.CounterOpts(opts("cache_requests_total",
			"Response cache lookups by result (hit, miss, bypass).")), []string{"result"}),
		cacheBytes: prometheus.NewGauge(prometheus.GaugeOpts(opts("cache_bytes",
			"Bytes held by the in-memory response cache."))),
		cacheEvictions: prometheus.NewGauge(prometheus.GaugeOpts(opts("cache_evictions",
			"Entries evicted from the in-memory response cache since it was created."))),
		keysReloaded: prometheus.NewCounterVec(prometheus.CounterOpts(opts("keys_file_reloads_total",
			"Keys file reloads by result (ok, error).")), []string{"result"}),
		promptCounts: prometheus.NewCounterVec(prometheus.CounterOpts(opts("prompt_counts_total",
			"Prompts by how they were counted: bound (the byte upper bound sufficed), lower_bound (refused by a lower bound, "+
				"not counted), partial (counting stopped once the window or the tokens left were passed), exact.")), []string{"model", "how"}),
		batchLines: prometheus.NewCounterVec(prometheus.CounterOpts(opts("batch_lines_total",
			"Batch lines run through the gateway, by model and outcome: done (2xx, in the output file), failed (refused, in the "+
				"error file), retried (deferred for spare capacity, rate limited, overloaded or unreachable; sent again later).")),
			[]string{"model", "outcome"}),
		batchTokens: prometheus.NewCounterVec(prometheus.CounterOpts(opts("batch_tokens_total",
			"Tokens of batch lines by model and kind (prompt, completion); also counted in tokens_total.")), []string{"model", "kind"}),
		cost: prometheus.NewCounterVec(prometheus.CounterOpts(opts("cost_total",
			"Cost of the requests recorded in the usage ledger, by model, in the accounting currency.")), []string{"model", "currency"}),
		budgetWarnings: prometheus.NewCounterVec(prometheus.CounterOpts(opts("budget_warnings_total",
			"Budgets whose warning share was crossed, by scope kind (key, label), period (daily, monthly) and dimension (tokens, spend).")),
			[]string{"scope", "period", "dimension"}),
		budgetRefused: prometheus.NewCounterVec(prometheus.CounterOpts(opts("budget_refused_total",
			"Requests refused with insufficient_quota because a budget was spent, by scope kind, period and dimension.")),
			[]string{"scope", "period", "dimension"}),
	}
}

// register registers every collector, reusing collectors already registered by an earlier
// config (a reload) so counters keep counting.
func (m *gatewayMetrics) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	var err error
	m.requests, err = registerOrReuse(reg, m.requests)
	if err != nil {
		return err
	}
	if m.tokens, err = registerOrReuse(reg, m.tokens); err != nil {
		return err
	}
	if m.ttft, err = registerOrReuse(reg, m.ttft); err != nil {
		return err
	}
	if m.itl, err = registerOrReuse(reg, m.itl); err != nil {
		return err
	}
	if m.upstream, err = registerOrReuse(reg, m.upstream); err != nil {
		return err
	}
	if m.inFlight, err = registerOrReuse(reg, m.inFlight); err != nil {
		return err
	}
	if m.rateLimited, err = registerOrReuse(reg, m.rateLimited); err != nil {
		return err
	}
	if m.incomplete, err = registerOrReuse(reg, m.incomplete); err != nil {
		return err
	}
	if m.storeErrors, err = registerOrReuse(reg, m.storeErrors); err != nil {
		return err
	}
	if m.cache, err = registerOrReuse(reg, m.cache); err != nil {
		return err
	}
	if m.cacheBytes, err = registerOrReuse(reg, m.cacheBytes); err != nil {
		return err
	}
	if m.cacheEvictions, err = registerOrReuse(reg, m.cacheEvictions); err != nil {
		return err
	}
	if m.keysReloaded, err = registerOrReuse(reg, m.keysReloaded); err != nil {
		return err
	}
	if m.promptCounts, err = registerOrReuse(reg, m.promptCounts); err != nil {
		return err
	}
	if m.batchLines, err = registerOrReuse(reg, m.batchLines); err != nil {
		return err
	}
	if m.batchTokens, err = registerOrReuse(reg, m.batchTokens); err != nil {
		return err
	}
	return m.registerAccounting(reg)
}

// registerCountingEstimates exports how many long texts were estimated instead of counted
// because the bound on text counted at once was full (one process-wide counter: a reload keeps
// the collector registered by the first config).
func (m *gatewayMetrics) registerCountingEstimates(reg prometheus.Registerer, f *tokens.Inflight) {
	if reg == nil || f == nil {
		return
	}
	c := prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "count_estimated_total",
		Help: "Long prompt texts estimated with the upper bound because the bytes counted exactly at once were at their bound."},
		func() float64 { return float64(f.Fallbacks()) })
	_, _ = registerOrReuse[prometheus.Collector](reg, c)
}

func registerOrReuse[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}

// registerAccounting registers the accounting collectors (cost, budget warnings and refusals).
func (m *gatewayMetrics) registerAccounting(reg prometheus.Registerer) error {
	var err error
	if m.cost, err = registerOrReuse(reg, m.cost); err != nil {
		return err
	}
	if m.budgetWarnings, err = registerOrReuse(reg, m.budgetWarnings); err != nil {
		return err
	}
	m.budgetRefused, err = registerOrReuse(reg, m.budgetRefused)
	return err
}
