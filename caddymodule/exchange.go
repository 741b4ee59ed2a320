package caddymodule

import (
	"net/http"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/caddyai/gateway/cache"
	"github.com/caddyai/gateway/internal/wire"
	"github.com/caddyai/gateway/ledger"
	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/policy/tokens"
	"github.com/caddyai/gateway/predict"
	"github.com/caddyai/gateway/ratelimit"
	"github.com/caddyai/gateway/routing"
)

// varExchange is the Caddy request variable holding the request's *exchange, read by the
// ai_gateway dynamic upstreams and by later handlers.
const varExchange = "ai_gateway.exchange"

// exchange is the one request-scoped record of the gateway: each stage fills what it learns and
// later stages (routing, the response tap, placeholders, logs) read it instead of recomputing.
type exchange struct {
	r              *http.Request
	start          time.Time
	handoff        time.Time // when the request left for the upstream
	requestID      string
	surface        wire.Surface
	endpoint       wire.Endpoint
	spec           *wire.Spec // the endpoint's row of the table
	pathParam      string     // the path's parameter: the id of GET /v1/models/{id}, of /v1/files/{file_id}
	key            *policy.Key
	batchLine      *batchLine // set when the request is a line of a batch, run by the batch runner
	requestedModel string
	apiVersion     *policy.APIVersion
	versionHeader  string // the API version header's name, when versions are configured
	route          *modelRoute
	primary        *modelRoute // the requested model's route, once a fallback took over
	fallbackIdx    int
	fallbackFrom   string
	bodyModel      string             // the model the body names now
	releases       []func()           // admission slots and load-tracker charges, released when the request ends
	info           policy.RequestInfo // what validation learnt of the body
	stream         bool
	injectedUsage  bool // the gateway asked the upstream for stream usage the client did not ask for
	body           requestBody

	promptTokens   int
	promptExact    bool // promptTokens is the tokenizer's count, not the byte bound
	promptBound    bool // a token limit applies and takes the byte bound (boundSuffices)
	recount        bool // the bound's reservation was refused: count exactly
	reservedOutput int
	decision       ratelimit.Decision
	reservation    *ratelimit.Reservation
	budget         *ledger.Hold // the request's budget reservation, settled by account

	tap              *responseTap // the response tap of the request's (last) upstream attempt
	tapFinished      bool         // the tap completed the response and ex.usage is its usage
	status           int
	firstToken       time.Time
	usage            wire.Usage
	streamIncomplete bool
	responseID       string       // the Responses answer's id, once recorded as the key's
	bridged          *bridgeState // a Responses request sent to chat completions
	reject           string

	cacheable  bool
	cacheKey   [32]byte
	cacheTTL   time.Duration
	cacheState string // HIT, MISS, BYPASS; empty when no cache applies
	cost       string // the request's cost in the accounting currency; empty without accounting
	cacheEntry *cache.Entry

	trace               requestTrace       // OpenTelemetry, with Caddy's tracing on (tracing.go)
	predictReq          *predict.Request   // the validated body of a predict request
	phMapped, phOutcome bool               // placeholders registered; the outcome ones answered too
	idHeader, idAnswer  [1]string          // the X-Request-Id values of the request and of the answer, kept here rather than allocated
	scopeBuf            [3]ratelimit.Scope // the rate-limit scopes of the check and of the reservation (which copies them)
}

// modelRoute is a model with where it runs and how its tokens are counted.
type modelRoute struct {
	model         *policy.Model
	dials         []string
	authorization string
	secrets       []string // the upstream credential, redacted from what upstreams say
	scopeID       string   // rate-limit scope id, "model:<name>"
	counter       tokens.Counter
	chat          *tokens.ChatCounter
	rewriter      *policy.Rewriter
	gate          *routing.Admission // nil without max_concurrent
	batch         *batchModel        // nil without a batch block
	batchReserve  int                // slots of gate batch lines leave free (BatchModelConfig.Reserve)
	cacheOff      bool
	cache         cache.Policy // the model's own cache settings, over the gateway's
	fallbacks     []*modelRoute
	counted       promptCounts   // caddy_ai_gateway_prompt_counts_total of the model, by how
	series        *routeSeries   // the model's series every request touches
	health        *poolHealth    // nil without health_check
	bridge        *bridgeRoute   // Responses requests go to chat completions; nil: served natively
	predict       *predict.Model // a predict model's compiled schema and protocol; nil for chat models
	countPredict  bool           // the predict model has a tokenizer: its usage counts tokens
	// streamUsage is how many of the model's streams in a row ended with the upstream's own
	// usage (see learnedStreamUsage); a stream that ends without it resets it. Shared by the
	// route's copies (fine-tuned models served on it).
	streamUsage *atomic.Int32
}

// learnedStreamUsage is the number of streams in a row that must end with the upstream's usage
// before the model's next streams stop collecting their text to count it should the usage not
// come: per chunk, that collection is most of the tap's work.
const learnedStreamUsage = 8

// promptCounts are a model's prompt_counts_total counters, resolved once.
type promptCounts struct{ bound, lowerBound, partial, exact prometheus.Counter }

// routeSeries are the series of a model that every request it serves touches, each looked up
// on its first use and kept (WithLabelValues hashes the labels and takes the vector's lock each
// time; a series is still created only when first counted, as before). served, prompt and
// completion are requests_total{code 200, no reject} and tokens_total{prompt, completion}
// without a key id: with metrics_key_id the vectors are asked per request. ttft and itl are a
// stream's, cost the accounting's (in the one currency of the gateway's prices).
type routeSeries struct {
	m                          *gatewayMetrics
	model                      string
	inFlight                   atomic.Pointer[prometheus.Gauge]
	upstream, ttft, itl        atomic.Pointer[prometheus.Observer]
	served, prompt, completion atomic.Pointer[prometheus.Counter]
	cost                       atomic.Pointer[prometheus.Counter]
}

func newRouteSeries(m *gatewayMetrics, model string) *routeSeries {
	return &routeSeries{m: m, model: model}
}

// series returns what p holds, or, the first time, what lookup gives.
func series[T any](p *atomic.Pointer[T], lookup func() T) T {
	if v := p.Load(); v != nil {
		return *v
	}
	v := lookup()
	p.Store(&v)
	return v
}

func (s *routeSeries) inFlightGauge() prometheus.Gauge {
	return series(&s.inFlight, func() prometheus.Gauge { return s.m.inFlight.WithLabelValues(s.model) })
}

func (s *routeSeries) upstreamObserver() prometheus.Observer {
	return series(&s.upstream, func() prometheus.Observer { return s.m.upstream.WithLabelValues(s.model) })
}

func (s *routeSeries) ttftObserver() prometheus.Observer {
	return series(&s.ttft, func() prometheus.Observer { return s.m.ttft.WithLabelValues(s.model) })
}

func (s *routeSeries) itlObserver() prometheus.Observer {
	return series(&s.itl, func() prometheus.Observer { return s.m.itl.WithLabelValues(s.model) })
}

func (s *routeSeries) costCounter(currency string) prometheus.Counter {
	return series(&s.cost, func() prometheus.Counter { return s.m.cost.WithLabelValues(s.model, currency) })
}

func (s *routeSeries) servedCounter() prometheus.Counter {
	return series(&s.served, func() prometheus.Counter { return s.m.requests.WithLabelValues(s.model, statusLabel(200), "", "") })
}

func (s *routeSeries) tokensCounter(completion bool) prometheus.Counter {
	if completion {
		return series(&s.completion, func() prometheus.Counter { return s.m.tokens.WithLabelValues(s.model, "completion", "") })
	}
	return series(&s.prompt, func() prometheus.Counter { return s.m.tokens.WithLabelValues(s.model, "prompt", "") })
}

func (ex *exchange) primaryRoute() *modelRoute {
	if ex.primary != nil {
		return ex.primary
	}
	return ex.route
}

// releaseAll gives back admission slots and load-tracker charges.
func (ex *exchange) releaseAll() {
	for _, release := range ex.releases {
		release()
	}
	ex.releases = ex.releases[:0]
}

func newExchange(r *http.Request, now time.Time) *exchange {
	ex := &exchange{r: r, start: now}
	ex.endpoint, ex.pathParam = wire.Route(r.URL.Path)
	ex.spec = ex.endpoint.Spec()
	ex.surface = wire.SurfaceOf(r.URL.Path)
	if ex.spec.AnthropicNotFound && wire.FromAnthropicSDK(r) {
		ex.surface = wire.Anthropic // its refusals (even a 401) in the envelope its SDK reads
	}
	if id := r.Header.Get("X-Request-Id"); wire.ValidRequestID(id) {
		ex.requestID = id
	} else {
		ex.requestID = wire.NewRequestID()
	}
	// exactly one id travels upstream: the one the client gets back (a repeated header's
	// other values are dropped)
	ex.idHeader[0] = ex.requestID
	r.Header["X-Request-Id"] = ex.idHeader[:1:1]
	ex.startTrace()
	return ex
}

func exchangeFrom(r *http.Request) *exchange {
	ex, _ := caddyhttp.GetVar(r.Context(), varExchange).(*exchange)
	return ex
}

func (ex *exchange) keyID() string {
	if ex.key == nil {
		return ""
	}
	return ex.key.ID
}

func (ex *exchange) modelName() string {
	if ex.route == nil {
		return ""
	}
	return ex.route.model.Name
}

func (ex *exchange) counter() tokens.Counter {
	if ex.route == nil || ex.route.counter == nil {
		return tokens.Estimate()
	}
	return ex.route.counter
}

func (ex *exchange) clientGone() bool { return ex.r.Context().Err() != nil }

// overhead is the time the gateway spent on the request before it left for the upstream (or,
// when it never did, until now).
func (ex *exchange) overhead(now time.Time) time.Duration {
	if ex.handoff.IsZero() {
		return now.Sub(ex.start)
	}
	return ex.handoff.Sub(ex.start)
}

// charge is what the request's reservation is settled with: the tokens of the upstream's
// answer, 0 when nothing went upstream (a refusal, a cache hit, an answer of the gateway's own).
func (ex *exchange) charge() int64 {
	if ex.tap == nil {
		return 0
	}
	return ex.usage.TotalTokens
}

// setResponseHeaders sets the headers every response carries.
func (ex *exchange) setResponseHeaders(h http.Header) {
	ex.idAnswer[0] = ex.requestID
	h["X-Request-Id"] = ex.idAnswer[:1:1]
	if ex.surface == wire.Anthropic {
		h["Request-Id"] = []string{ex.requestID}
	}
	if ex.apiVersion != nil {
		h[ex.versionHeader] = []string{ex.apiVersion.Date}
		if !ex.apiVersion.Deprecation.IsZero() {
			ex.apiVersion.Deprecation.SetHeaders(h)
		}
	}
	if ex.cacheState != "" {
		h["X-Cache"] = []string{ex.cacheState}
	}
	if ex.fallbackFrom != "" {
		h["X-Gateway-Fallback"] = []string{ex.fallbackFrom}
	}
	if ex.route != nil && !ex.route.model.Deprecation.IsZero() {
		ex.route.model.Deprecation.SetHeaders(h)
	}
}

// The placeholders the gateway sets, all under http.ai_gateway.
const (
	phKeyID        = "http.ai_gateway.key_id"
	phModel        = "http.ai_gateway.model"
	phRequested    = "http.ai_gateway.requested_model"
	phUpstream     = "http.ai_gateway.upstream_model"
	phRequestID    = "http.ai_gateway.request_id"
	phSurface      = "http.ai_gateway.surface"
	phEndpoint     = "http.ai_gateway.endpoint"
	phStream       = "http.ai_gateway.stream"
	phRejectReason = "http.ai_gateway.reject_reason"
	phPrompt       = "http.ai_gateway.prompt_tokens"
	phCompletion   = "http.ai_gateway.completion_tokens"
	phTotal        = "http.ai_gateway.total_tokens"
	phEstimated    = "http.ai_gateway.usage_estimated"
	phTTFT         = "http.ai_gateway.ttft_ms"
	phAPIVersion   = "http.ai_gateway.api_version"
	phCache        = "http.ai_gateway.cache"
)

// setRequestPlaceholders publishes what is known when the request leaves for the upstream (so
// reverse_proxy's header_up can use them). The placeholders are answered by the exchange itself
// (placeholder, placeholders.go), registered once: nothing is boxed into the replacer's map.
func (ex *exchange) setRequestPlaceholders(repl *caddy.Replacer) {
	if !ex.phMapped {
		ex.phMapped = true
		repl.Map(ex.placeholder)
	}
}

// setPlaceholders publishes everything, once the outcome is known (for log formats and
// handlers that run after the gateway).
func (ex *exchange) setPlaceholders(repl *caddy.Replacer) {
	ex.setRequestPlaceholders(repl)
	ex.phOutcome = true
}

// accessLogFields returns the extra fields of r's access log entry, or nil when the server
// writes no access log (the fields would be built for nothing).
func accessLogFields(r *http.Request) *caddyhttp.ExtraLogFields {
	if srv, ok := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); ok && srv.Logs == nil {
		return nil
	}
	extra, _ := r.Context().Value(caddyhttp.ExtraLogFieldsCtxKey).(*caddyhttp.ExtraLogFields)
	return extra
}

// logFields adds the gateway's fields to Caddy's access log entry for the request.
func (ex *exchange) logFields() {
	extra := accessLogFields(ex.r)
	if extra == nil {
		return
	}
	fields := []zap.Field{
		zap.String("ai_request_id", ex.requestID),
		zap.String("ai_key_id", ex.keyID()),
		zap.String("ai_model", ex.modelName()),
		zap.Bool("ai_stream", ex.stream),
		zap.Int64("ai_prompt_tokens", ex.usage.PromptTokens),
		zap.Int64("ai_completion_tokens", ex.usage.CompletionTokens),
		zap.Int64("ai_total_tokens", ex.usage.TotalTokens),
	}
	if ex.usage.Estimated {
		fields = append(fields, zap.Bool("ai_usage_estimated", true))
	}
	if ex.usage.CachedTokens > 0 {
		fields = append(fields, zap.Int64("ai_cached_tokens", ex.usage.CachedTokens))
	}
	if ex.usage.ReasoningTokens > 0 {
		fields = append(fields, zap.Int64("ai_reasoning_tokens", ex.usage.ReasoningTokens))
	}
	if ex.responseID != "" {
		fields = append(fields, zap.String("ai_response_id", ex.responseID))
	}
	if !ex.firstToken.IsZero() {
		fields = append(fields, zap.Float64("ai_ttft_ms", float64(ex.firstToken.Sub(ex.start))/float64(time.Millisecond)))
	}
	if ex.reject != "" {
		fields = append(fields, zap.String("ai_reject_reason", ex.reject))
	}
	if ex.batchLine != nil {
		fields = append(fields, zap.String("ai_batch_id", ex.batchLine.batchID), zap.String("ai_custom_id", ex.batchLine.customID))
	}
	for _, f := range fields {
		extra.Set(f)
	}
}
