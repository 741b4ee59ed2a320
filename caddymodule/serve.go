package caddymodule

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/tidwall/sjson"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddyai/gateway/cache"
	"github.com/caddyai/gateway/internal/wire"
	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/policy/tokens"
	"github.com/caddyai/gateway/ratelimit"
)

// ServeHTTP runs one request through the gateway's pipeline. Each stage either fills the
// request's exchange record or returns a *wire.Error, which is rendered once, in the envelope of
// the request's API surface. The request has one exit, the deferred finish step (release,
// settle once, record), so a stage may return anywhere and nothing leaks. Admitted requests go
// to the next handler (reverse_proxy) through a response tap that completes usage and
// normalises errors.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if g.serveWithoutCredentialHeaders(w, r) {
		return nil // served again without the credential headers Caddy's access log would show
	}
	if g.isReadiness(r) {
		return g.serveReadiness(w, r) // no request of a model: not counted as one
	}
	ex := newExchange(r, g.now())
	caddyhttp.SetVar(r.Context(), varExchange, ex)
	defer g.finish(ex, r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer))

	if werr := g.admit(ex, r); werr != nil {
		g.refuse(w, ex, werr)
		return nil
	}
	switch ex.endpoint {
	case wire.EndpointModels, wire.EndpointModel:
		return g.serveModels(w, r, ex)
	case wire.EndpointMessagesCountTokens:
		return g.serveCountTokens(w, ex)
	case wire.EndpointFiles, wire.EndpointFile, wire.EndpointFileContent:
		return g.serveFiles(w, r, ex)
	case wire.EndpointBatches, wire.EndpointBatch, wire.EndpointBatchCancel:
		return g.serveBatches(w, r, ex)
	case wire.EndpointMessageBatches, wire.EndpointMessageBatch, wire.EndpointMessageBatchCancel, wire.EndpointMessageBatchResults:
		return g.serveMessageBatches(w, r, ex)
	case wire.EndpointUsage:
		return g.serveUsage(w, r, ex)
	case wire.EndpointResponse, wire.EndpointResponseCancel, wire.EndpointResponseInputItems:
		return g.serveStoredResponse(w, r, next, ex)
	case wire.EndpointFineTuningJobs, wire.EndpointFineTuningJob, wire.EndpointFineTuningJobCancel, wire.EndpointFineTuningJobPause,
		wire.EndpointFineTuningJobResume, wire.EndpointFineTuningJobEvents, wire.EndpointFineTuningJobCheckpoints:
		return g.serveFineTuning(w, r, ex)
	}
	if g.prepareCache(ex, r) {
		span := ex.stage("ai_gateway.cache_lookup")
		entry := g.cacheGet(r.Context(), ex)
		ex.endCacheLookup(span)
		if entry != nil {
			return g.serveHit(w, ex, entry) // a hit takes a request from the limits, not tokens
		}
	}
	if !ex.cacheable {
		return g.dispatch(w, r, next, ex)
	}
	// a miss: identical requests arriving meanwhile wait for this one's answer (single flight)
	var ran bool
	var err error
	entry, _, gerr := g.cache.group.Do(r.Context(), ex.cacheKey, func() (*cache.Entry, error) {
		ran = true
		err = g.dispatch(w, r, next, ex)
		return ex.cacheEntry, err
	})
	switch {
	case ran:
		return err
	case entry != nil:
		return g.serveHit(w, ex, entry)
	case gerr != nil: // the client went away while waiting
		ex.status, ex.reject = 499, "client_closed"
		return nil
	}
	return g.dispatch(w, r, next, ex)
}

// finish is the one exit of every request, deferred by ServeHTTP: it gives the body buffer
// back, releases admission slots and load charges, settles the reservation once with the
// tokens the request produced (0 for refusals and cache hits), and publishes the outcome. A
// panic raised on the way (a bug: a later handler's panics are caught by proxy) still settles,
// is logged with its stack and goes on up; http.ErrAbortHandler, a client that went away, goes
// on up silently.
func (g *Gateway) finish(ex *exchange, repl *caddy.Replacer) {
	v := recover()
	if v != nil && v != http.ErrAbortHandler {
		g.logger.Error("panic while serving a request", zap.String("request_id", ex.requestID), zap.Any("panic", v),
			zap.ByteString("stack", debug.Stack()))
		ex.status, ex.reject = http.StatusInternalServerError, "panic"
	}
	if v != nil && ex.tap != nil && !ex.tapFinished {
		ex.usage = ex.tap.produced()
	}
	ex.body.release()
	ex.releaseAll()
	g.settle(ex, ex.charge())
	g.account(ex)
	g.record(ex, repl)
	if v != nil {
		panic(v)
	}
}

// serveCountTokens answers Anthropic's /v1/messages/count_tokens from the gateway's own count
// with the model's tokenizer (model servers rarely implement it): {"input_tokens": N}.
func (g *Gateway) serveCountTokens(w http.ResponseWriter, ex *exchange) error {
	body := strconv.AppendInt([]byte(`{"input_tokens":`), int64(ex.promptTokens), 10)
	return answerJSON(w, ex.r, ex, append(body, '}'))
}

// dispatch takes a slot of the model's admission gate (or a fallback's), prepares the body for
// the upstream and forwards the request.
func (g *Gateway) dispatch(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, ex *exchange) error {
	span := ex.stage("ai_gateway.admission")
	werr := g.admitToModel(r.Context(), ex)
	for werr != nil && capacityRefusal(werr) && g.switchToFallback(ex) {
		werr = g.admitToModel(r.Context(), ex)
	}
	endStage(span)
	if werr == nil {
		werr = g.handOff(ex, r)
	}
	if werr != nil {
		g.refuse(w, ex, werr)
		return nil
	}
	return g.forward(w, r, next, ex)
}

// forward hands the request to its model's upstream pool through the response tap, and to the
// model's fallbacks while the pool has no capacity and nothing has reached the client yet.
func (g *Gateway) forward(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, ex *exchange) error {
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	var proxyErr error
	for {
		if ex.route.authorization != "" {
			r.Header["Authorization"] = []string{ex.route.authorization}
		} else {
			delete(r.Header, "Authorization")
		}
		ex.setRequestPlaceholders(repl)
		ex.tap = newResponseTap(g, w, ex)
		series := ex.route.series
		series.inFlightGauge().Inc()
		ex.handoff = g.now()
		ex.startUpstreamSpan()
		proxyErr = g.proxy(ex.tap, r, next)
		ex.endUpstreamSpan()
		series.inFlightGauge().Dec()
		series.upstreamObserver().Observe(g.now().Sub(ex.handoff).Seconds())
		if !g.tryFallback(ex, ex.tap, proxyErr, r) {
			break
		}
	}
	usage, err := ex.tap.finish(proxyErr)
	ex.usage, ex.tapFinished = usage, true
	if ex.cacheable {
		g.fillCache(ex, ex.tap.cacheBody())
	}
	if proxyErr == errAborted && ex.clientGone() {
		panic(http.ErrAbortHandler) // nobody is listening; let the server drop the connection
	}
	return err
}

// proxy runs the next handler. reverse_proxy aborts a response it cannot finish with
// http.ErrAbortHandler; that becomes errAborted so the tap can still end the response properly
// (an error frame, never a silent cut). Any other panic of a later handler is logged with its
// stack and becomes errHandlerPanic: the client gets a 500 in its envelope (or the error frame
// of its stream) and the request ends through the one exit like any other.
func (g *Gateway) proxy(tap *responseTap, r *http.Request, next caddyhttp.Handler) (err error) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				err = errAborted
				return
			}
			g.logger.Error("handler after ai_gateway panicked", zap.String("request_id", tap.ex.requestID), zap.Any("panic", v),
				zap.ByteString("stack", debug.Stack()))
			err = errHandlerPanic
		}
	}()
	return next.ServeHTTP(tap, r)
}

// tryFallback moves the request to the model's next usable fallback when the attempt failed for
// lack of capacity (no reachable upstream, or an overloaded or loading one) before anything
// reached the client and before any byte of the body reached an upstream.
func (g *Gateway) tryFallback(ex *exchange, tap *responseTap, proxyErr error, r *http.Request) bool {
	primary := ex.primaryRoute()
	if len(primary.fallbacks) == 0 || ex.clientGone() || !ex.body.untouched() {
		return false
	}
	unavailable := tap.mode == modeUnset && proxyErr != nil && proxyErr != errHandlerPanic
	overloaded := tap.mode == modeError && (ex.status == http.StatusServiceUnavailable || ex.status == 529)
	if !unavailable && !overloaded {
		return false
	}
	for g.switchToFallback(ex) {
		ex.releaseAll()
		if werr := g.admitToModel(r.Context(), ex); werr != nil {
			continue
		}
		if werr := g.handOff(ex, r); werr != nil {
			return false
		}
		return true
	}
	return false
}

// switchToFallback makes the next fallback of the request's model (that its key may use) the
// request's route.
func (g *Gateway) switchToFallback(ex *exchange) bool {
	primary := ex.primaryRoute()
	for ex.fallbackIdx < len(primary.fallbacks) {
		fb := primary.fallbacks[ex.fallbackIdx]
		ex.fallbackIdx++
		if !ex.key.AllowsModel(fb.model) || fb.model.Deprecation.Gone(g.now()) {
			continue
		}
		ex.primary, ex.fallbackFrom, ex.route = primary, primary.model.Name, fb
		return true
	}
	return false
}

var (
	errAborted      = errors.New("upstream response aborted")
	errHandlerPanic = errors.New("a handler after ai_gateway panicked")
)

// record publishes the outcome: placeholders, access-log fields and metrics.
func (g *Gateway) record(ex *exchange, repl *caddy.Replacer) {
	ex.setPlaceholders(repl)
	ex.logFields()
	ex.recordTrace()
	model := ex.modelName()
	keyID := ""
	if g.MetricsKeyID {
		keyID = ex.keyID()
	}
	status := ex.status
	var series *routeSeries
	if ex.route != nil && ex.route.series != nil && !g.MetricsKeyID {
		series = ex.route.series
	}
	switch {
	case ex.reject == codeBatchDeferred: // a batch line put off for spare capacity is no request yet
	case series != nil && status == 200 && ex.reject == "":
		series.servedCounter().Inc()
	default:
		g.metrics.requests.WithLabelValues(model, statusLabel(status), ex.reject, keyID).Inc()
	}
	if ex.usage.PromptTokens > 0 {
		if series != nil {
			series.tokensCounter(false).Add(float64(ex.usage.PromptTokens))
		} else {
			g.metrics.tokens.WithLabelValues(model, "prompt", keyID).Add(float64(ex.usage.PromptTokens))
		}
	}
	if ex.usage.CompletionTokens > 0 {
		switch {
		case ex.cacheState == cacheHit: // replayed from the response cache, not generated
			g.metrics.tokens.WithLabelValues(model, "cached_completion", keyID).Add(float64(ex.usage.CompletionTokens))
		case series != nil:
			series.tokensCounter(true).Add(float64(ex.usage.CompletionTokens))
		default:
			g.metrics.tokens.WithLabelValues(model, "completion", keyID).Add(float64(ex.usage.CompletionTokens))
		}
	}
	if ex.usage.CachedTokens > 0 {
		g.metrics.tokens.WithLabelValues(model, "cached", keyID).Add(float64(ex.usage.CachedTokens))
	}
	if ex.batchLine != nil {
		g.recordBatchLine(ex, model)
	}
	if ex.predictReq != nil {
		g.recordPredict(ex, model)
	}
	if ex.streamIncomplete {
		g.metrics.incomplete.WithLabelValues(model).Inc()
		if c := g.logger.Check(zapcore.WarnLevel, "upstream stream ended before completion; the client got an error frame"); c != nil {
			c.Write(zap.String("request_id", ex.requestID), zap.String("model", model), zap.String("key_id", ex.keyID()))
		}
	}
}

// admit runs the stages that decide whether the request may be served, in order: credentials
// (and the brute-force guard), the endpoint and method, the API version, the body (read once),
// validation and the model, content policy, rewriting, the prompt count and context check, and
// the rate limits. On success the exchange holds the key, the model, the rewritten body and the
// reservation.
func (g *Gateway) admit(ex *exchange, r *http.Request) *wire.Error {
	secret, _ := requestCredential(r)
	if line := batchLineOf(r); line != nil {
		// a line of a batch, run by the batch runner as a request of the key that owns it
		if werr := g.authenticateLine(ex, line); werr != nil {
			return werr
		}
	} else if werr := g.authenticate(ex, secret); werr != nil {
		// the key is checked first (one hash): a valid key is never refused for the failures of
		// others behind the same address; only failures are counted, and slowed past the limit
		if werr.Status == http.StatusUnauthorized {
			if blocked := g.guardBlocked(r); blocked != nil {
				return blocked
			}
			g.guardFailed(r, ex)
		}
		return werr
	}
	switch {
	case ex.spec.AnthropicNotFound && ex.surface == wire.Anthropic:
		// the Anthropic SDK's files beta: this path is the OpenAI API's
		return &wire.Error{Status: http.StatusNotFound, Type: wire.TypeInvalidRequest, Reason: "anthropic_not_served",
			Message: fmt.Sprintf("%s %s is not served: this gateway's %s is the OpenAI API's, and the Anthropic beta of that path is not available.",
				r.Method, r.URL.Path, r.URL.Path)}
	case ex.endpoint == wire.EndpointBadVersion:
		return wire.Errorf(http.StatusNotFound, "unsupported_api_version", "",
			"The API version in the path %s is not supported. Supported versions: v1.", r.URL.Path)
	case ex.spec.Answer == wire.AnswerNone:
		return wire.InvalidURL(r.Method, r.URL.Path)
	case !ex.spec.Allows(r.Method):
		return wire.MethodNotAllowed(r.Method, r.URL.Path)
	case !ex.endpoint.HasBody():
		return nil
	}
	if ex.surface == wire.Anthropic {
		if werr := g.checkAnthropicVersion(r); werr != nil {
			return werr
		}
	} else if g.versions != nil {
		v, werr := g.versions.Negotiate(r.Header.Get(g.versions.Header), g.now())
		ex.apiVersion, ex.versionHeader = v, g.versions.Header
		if werr != nil {
			return werr
		}
	}
	if werr := ex.body.read(r, g.MaxBody); werr != nil {
		return werr
	}
	if ex.apiVersion != nil && len(ex.apiVersion.Renames) > 0 {
		out, err := ex.apiVersion.Apply(ex.body.bytes())
		if err != nil {
			return wire.InvalidRequest("", "API version %s: %s.", ex.apiVersion.Date, err)
		}
		ex.body.replace(out)
	}
	if werr := g.resolveModel(ex); werr != nil {
		return werr
	}
	if ex.batchLine != nil {
		if werr := g.admitBatchLine(r.Context(), ex); werr != nil {
			return werr
		}
	}
	if werr := g.checkPreviousResponse(r.Context(), ex); werr != nil {
		return werr
	}
	if g.content != nil {
		if werr := g.content.Check(ex.endpoint, ex.body.bytes()); werr != nil {
			return werr
		}
	}
	if out, werr := ex.route.rewriter.Apply(ex.endpoint, ex.body.bytes(), &ex.info); werr != nil {
		return werr
	} else if len(out) != len(ex.body.bytes()) || &out[0] != &ex.body.bytes()[0] {
		ex.body.replace(out)
	}
	if werr := g.admitPrompt(ex); werr != nil {
		return werr
	}
	return g.admitBudgets(r.Context(), ex)
}

// admitPrompt counts the prompt (or takes its bound) and reserves the request's limits. A
// reservation at the bound that its tokens refuse (the bucket was taken from since the look) is
// not the answer: the prompt is counted exactly and reserved once more.
func (g *Gateway) admitPrompt(ex *exchange) *wire.Error {
	for {
		span := ex.stage("ai_gateway.count_tokens")
		werr := g.countPrompt(ex)
		ex.endCount(span)
		if werr != nil {
			return werr
		}
		werr = g.admitLimits(ex.r.Context(), ex)
		if werr == errRecount {
			ex.promptBound, ex.recount = false, true
			continue
		}
		if ex.promptBound {
			ex.route.counted.bound.Inc()
		}
		return werr
	}
}

func (g *Gateway) authenticate(ex *exchange, secret string) *wire.Error {
	key, status := g.lookupKey(secret)
	switch status {
	case policy.KeyMissing:
		if ex.surface == wire.Anthropic {
			return wire.InvalidAPIKey("x-api-key header is required")
		}
		return wire.InvalidAPIKey("You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
	case policy.KeyUnknown:
		return wire.InvalidAPIKey("Incorrect API key provided.")
	case policy.KeyDisabled:
		ex.key = key
		return &wire.Error{Status: http.StatusUnauthorized, Type: wire.TypeInvalidRequest, Code: "invalid_api_key", Reason: "key_disabled",
			Message: "This API key has been disabled."}
	case policy.KeyExpired:
		ex.key = key
		return &wire.Error{Status: http.StatusUnauthorized, Type: wire.TypeInvalidRequest, Code: "invalid_api_key", Reason: "key_expired",
			Message: "This API key has expired."}
	}
	ex.key = key
	return nil
}

func (g *Gateway) checkAnthropicVersion(r *http.Request) *wire.Error {
	v := r.Header.Get("Anthropic-Version")
	if v == "" {
		return wire.InvalidRequest("anthropic-version", "anthropic-version: header is required")
	}
	if _, ok := g.anthropic[v]; !ok {
		return wire.Errorf(http.StatusBadRequest, "unsupported_api_version", "anthropic-version",
			"anthropic-version: %q is not a supported version. Supported versions: %s.", v, strings.Join(g.AnthropicVersions, ", "))
	}
	return nil
}

// resolveModel validates the body (parsed once; what later stages need lands in ex.info),
// resolves the model (aliases, the key's pins) and checks the key's allow-list.
func (g *Gateway) resolveModel(ex *exchange) *wire.Error {
	if ex.spec.Dialect == wire.DialectPredict {
		return g.resolvePredict(ex)
	}
	info, werr := policy.Validate(ex.endpoint, ex.body.bytes())
	if werr != nil {
		return werr
	}
	ex.info = info
	ex.requestedModel, ex.bodyModel = info.Model, info.Model
	m, ok := g.catalog.ResolveFor(ex.key, info.Model)
	if !ok {
		if route := g.fineTunedRoute(ex, info.Model); route != nil {
			ex.route, ex.stream = route, info.Stream // a fine-tuned model of the caller's
			return nil
		}
		return wire.ModelNotFound(info.Model)
	}
	if !ex.key.AllowsModel(m) {
		return wire.ModelNotAllowed(info.Model)
	}
	ex.route = g.routes[m]
	ex.stream = info.Stream
	if ex.route.predict != nil {
		return notPredictEndpoint(ex, info.Model)
	}
	if m.Deprecation.Gone(g.now()) {
		return policy.ModelSunset(m.Name, m.Deprecation)
	}
	return nil
}

// countPrompt counts the prompt's tokens and checks the model's context window, cheapest check
// first: a byte upper bound that proves the request fits (when no token limit needs the number)
// ends it; every limit that does not need the count is checked (with a lower bound of the
// prompt); only then is the prompt counted. A body over exactRefusalBytes is refused without
// any count when its lower bound cannot fit the window, and its count stops as soon as it
// passes the window or the tokens left (its refusal then says "at least"); a smaller one is
// counted in full, so its refusal gives the exact number, as OpenAI's does.
func (g *Gateway) countPrompt(ex *exchange) *wire.Error {
	m := ex.route.model
	body := ex.body.bytes()
	ex.reservedOutput = policy.ReservedOutput(ex.endpoint, &ex.info, g.RateLimit.DefaultMaxTokens, m.MaxOutputTokens, m.ContextWindow)
	window := m.ContextWindow
	if ex.spec.AlwaysCount {
		window = 0 // count_tokens answers the count, whatever the window
	}
	// the byte bound ends it when nothing needs the count: no exact counting, or a prompt that
	// fits the window with no token limit to charge it to (not walked when one is)
	if !ex.spec.ExactCount || !ex.spec.AlwaysCount && !g.tokenLimited(ex) {
		bound := tokens.UpperBound(body)
		if !ex.spec.ExactCount || window == 0 || bound+ex.info.MaxTokens <= window {
			ex.promptTokens = bound
			ex.route.counted.bound.Inc()
			return nil
		}
	}
	chat, d := ex.route.chat, ex.spec.Dialect
	// the most prompt the window can take: with fit_max_tokens the output may still shrink
	windowRoom := math.MaxInt
	if window > 0 {
		out := ex.info.MaxTokens
		if g.FitMaxTokens > 0 && out > 0 && ex.spec.MaxTokens {
			out = min(out, g.FitMaxTokens)
		}
		windowRoom = window - out
	}
	// A prompt up to exactRefusalBytes is counted in full whatever it is: its lower bound would
	// only refuse it early on the window, which the count does as well for a few microseconds.
	// Its limits are still looked at first, with no prompt, so that a key over its requests or
	// tokens is refused before anything is counted.
	lower := 0
	if len(body) > exactRefusalBytes {
		var err error
		if lower, err = chat.LowerBound(d, body); err != nil {
			return unreadablePrompt(ex, err)
		}
		if window > 0 && lower > windowRoom {
			ex.route.counted.lowerBound.Inc()
			return policy.ContextLengthExceeded(ex.endpoint, window, lower, ex.info.MaxTokens, g.ContextStatus, true)
		}
	}
	var dec, look ratelimit.Decision
	if len(body) > cheapCountBytes || !g.limiter.Remote() {
		// (a look at limits in Redis is a round trip, which costs more than counting a
		// prompt this small; the reservation after the count refuses it as well)
		var werr *wire.Error
		if dec, werr = g.checkLimitsFirst(ex.r.Context(), ex, lower); werr != nil {
			ex.route.counted.lowerBound.Inc()
			return werr
		}
		look = dec
	} else if q, ok := g.quotas.Get(ex.keyID(), m.Name); ok {
		// what the key's last reservation through this instance left stands in for the look
		look = ratelimit.Decision{Allowed: true, Tokens: q}
	}
	if !ex.spec.AlwaysCount && boundSuffices(look, body, window, ex) {
		return nil
	}
	budgetRoom := math.MaxInt
	if dec.Tokens.Limit > 0 && g.RateLimit.CapMaxTokensToBudget == 0 {
		budgetRoom = int(max(dec.Tokens.Remaining-int64(ex.reservedOutput), 0))
	}
	limit := min(windowRoom, budgetRoom)
	if len(body) <= exactRefusalBytes {
		limit = math.MaxInt
	}
	return g.countExact(ex, chat, d, body, window, windowRoom, limit)
}

// boundSuffices takes the prompt at its byte upper bound, without counting it, when the bound
// fits the window and the limits' look (dec; zero when none was taken) shows the most
// constraining token bucket keeps at least half its capacity after the bound and the reserved
// output are taken from it. The reservation is then larger than the exact one, as the reserved
// max_tokens already is (OpenAI's own limiter estimates from characters too), and is settled on
// the upstream's usage; an answer without usage is counted then (responseTap.estimate). Close to
// a limit every prompt is counted exactly, so the excess held by requests in flight is bounded
// by half a bucket, and a reservation the bound gets refused is retried on the exact count
// (admitPrompt). With Redis a small prompt is not looked for (cheapCountBytes: the round trip
// costs more than the count): the quota the key's last reservation through this instance
// reported stands in for the look (Gateway.quotas), so the first prompt of a key is counted, and
// with several instances the half bucket is as exact as their last replies (a bucket another
// instance emptied since refuses the bound, which is then counted).
func boundSuffices(dec ratelimit.Decision, body []byte, window int, ex *exchange) bool {
	q := dec.Tokens
	if !dec.Allowed || q.Limit <= 0 || ex.recount {
		return false
	}
	bound := tokens.UpperBound(body)
	if window > 0 && bound+ex.info.MaxTokens > window {
		return false
	}
	if q.Remaining-int64(bound+ex.reservedOutput) < q.Limit/2 {
		return false
	}
	ex.promptTokens, ex.promptBound = bound, true
	return true
}

// countExact counts the prompt, stopping past limit (the most the window, windowRoom, or the
// tokens left can take), and refuses what does not fit.
func (g *Gateway) countExact(ex *exchange, chat *tokens.ChatCounter, d wire.Dialect, body []byte, window, windowRoom, limit int) *wire.Error {
	n, exceeded, err := chat.CountLimit(ex.r.Context(), d, body, limit)
	switch {
	case err != nil && !errors.Is(err, tokens.ErrMalformed):
		return wire.ClientClosed() // the client went away while its prompt was counted
	case err != nil:
		return unreadablePrompt(ex, err)
	case exceeded && n > windowRoom:
		ex.route.counted.partial.Inc()
		return policy.ContextLengthExceeded(ex.endpoint, window, n, ex.info.MaxTokens, g.ContextStatus, true)
	case exceeded:
		// over the tokens left: refused as the limiter refuses a cost of at least n, unless the
		// bucket refilled meanwhile, then counted in full
		if _, werr := g.checkLimitsFirst(ex.r.Context(), ex, n); werr != nil {
			ex.route.counted.partial.Inc()
			return werr
		}
		if n, err = chat.Count(d, body); err != nil {
			return unreadablePrompt(ex, err)
		}
	}
	ex.promptTokens, ex.promptExact = n, true
	ex.route.counted.exact.Inc()
	if window > 0 && n+ex.info.MaxTokens > window {
		return g.fitOrRefuse(ex, window, n)
	}
	return nil
}

// cheapCountBytes is the body size up to which counting a prompt costs about as much as a round
// trip to Redis (some 40 µs for 4 KiB of text, under a millisecond for adversarial text).
const cheapCountBytes = 4 << 10

// exactRefusalBytes is the body size up to which a prompt is counted in full even when it
// cannot fit (a few milliseconds at most), so that its refusal names the exact count.
const exactRefusalBytes = 256 << 10

// unreadablePrompt is the refusal of a prompt the counter could not read (a shape validation
// let through).
func unreadablePrompt(ex *exchange, err error) *wire.Error {
	return wire.InvalidRequest(ex.spec.ContextParam, "The request's %s could not be read: %s", ex.spec.ContextParam,
		strings.TrimPrefix(err.Error(), "counting chat body: "))
}

// fitOrRefuse lowers max_tokens to what fits the window when fit_max_tokens allows it, else
// refuses with context_length_exceeded.
func (g *Gateway) fitOrRefuse(ex *exchange, window, prompt int) *wire.Error {
	if room, ok := policy.FitRoom(ex.endpoint, window, prompt, ex.info.MaxTokens, g.FitMaxTokens); ok {
		if out, err := policy.SetMaxTokens(ex.endpoint, ex.body.bytes(), &ex.info, room); err == nil {
			ex.body.replace(out)
			ex.reservedOutput = room * ex.info.Generations()
			return nil
		}
	}
	return policy.ContextLengthExceeded(ex.endpoint, window, prompt, ex.info.MaxTokens, g.ContextStatus, false)
}

// tokenLimited reports whether any scope of the request limits tokens.
func (g *Gateway) tokenLimited(ex *exchange) bool {
	l := g.globalLimits
	if l.TPM > 0 || l.TPD > 0 {
		return true
	}
	if l = ex.route.model.Limits; l.TPM > 0 || l.TPD > 0 {
		return true
	}
	l = ex.key.Limits
	return l.TPM > 0 || l.TPD > 0
}

// handOff rewrites the body for the upstream (its model name, stream usage) and installs it. A
// request that asks for a protocol upgrade is sent as a plain request (a tunnel would skip every
// check after it, on the gateway's upstream credential), and Connection tokens are reduced to
// close and keep-alive (a client naming Authorization or X-Request-Id there would have the proxy
// strip the headers the gateway sets).
func (g *Gateway) handOff(ex *exchange, r *http.Request) *wire.Error {
	delete(r.Header, "Upgrade")
	if conn, ok := r.Header["Connection"]; ok {
		var kept []string
		for _, v := range conn {
			for _, tok := range strings.Split(v, ",") {
				if tok = strings.TrimSpace(tok); strings.EqualFold(tok, "close") || strings.EqualFold(tok, "keep-alive") {
					kept = append(kept, tok)
				}
			}
		}
		if len(kept) == 0 {
			delete(r.Header, "Connection")
		} else {
			r.Header["Connection"] = kept
		}
	}
	if werr := g.bridgeRequest(ex, r); werr != nil {
		return werr
	}
	if ex.predictReq != nil {
		return g.handOffPredict(ex, r)
	}
	raw := ex.body.bytes()
	out := raw
	var err error
	if up := ex.route.model.Upstream(); up != ex.bodyModel {
		out, err = setModel(out, up)
		ex.bodyModel = up
	}
	if p := ex.batchPriority(); err == nil && p != 0 {
		out, err = sjson.SetBytes(out, "priority", p) // for vLLM's priority scheduling
	}
	if err == nil && ex.stream && !ex.info.IncludeUsage && ex.spec.InjectStreamUsage {
		// ask for the usage chunk upstream; the tap removes it from what the client sees
		out, err = askStreamUsage(out, !ex.info.StreamOptions && ex.bridged == nil)
		ex.injectedUsage = err == nil
	}
	if err != nil {
		if c := g.logger.Check(zapcore.ErrorLevel, "rewriting request body"); c != nil {
			c.Write(zap.Error(err), zap.String("request_id", ex.requestID))
		}
		return wire.Internal()
	}
	if &out[0] != &raw[0] || len(out) != len(raw) {
		ex.body.replace(out)
	}
	ex.body.install(r)
	return nil
}

// refuse renders a gateway error in the surface's envelope and records why.
func (g *Gateway) refuse(w http.ResponseWriter, ex *exchange, werr *wire.Error) {
	ex.reject = werr.ReasonOrCode()
	ex.status = werr.StatusFor(ex.surface)
	h := w.Header()
	ex.setResponseHeaders(h)
	setRateLimitHeaders(h, ex.surface, ex.decision, ex.start)
	h["X-Gateway-Overhead-Ms"] = []string{formatMS(g.now().Sub(ex.start))}
	if ex.body.unread(ex.r) {
		// the server would read (or wait for, after Expect: 100-continue) the body it was
		// promised before the client sees the refusal; close the connection instead
		h["Connection"] = []string{"close"}
	}
	if c := g.logger.Check(zapcore.DebugLevel, "request refused"); c != nil {
		c.Write(zap.String("request_id", ex.requestID), zap.String("key_id", ex.keyID()),
			zap.Int("status", ex.status), zap.String("reject_reason", ex.reject))
	}
	if err := wire.Write(w, ex.surface, werr, ex.requestID); err != nil {
		if c := g.logger.Check(zapcore.DebugLevel, "writing refusal"); c != nil {
			c.Write(zap.String("request_id", ex.requestID), zap.Error(err))
		}
	}
}

// takeCredential returns the client's API key and the header that carried it, and removes every
// credential header so that it reaches neither the upstream nor a later handler.
func takeCredential(h http.Header) (secret, header string) {
	if v := h.Get("Authorization"); v != "" {
		if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
			secret, header = strings.TrimSpace(v[7:]), "Authorization"
		}
	}
	if secret == "" {
		if secret = strings.TrimSpace(h.Get("X-Api-Key")); secret != "" {
			header = "X-Api-Key"
		}
	}
	if secret == "" {
		if secret = strings.TrimSpace(h.Get("Api-Key")); secret != "" {
			header = "Api-Key"
		}
	}
	delete(h, "Authorization")
	delete(h, "X-Api-Key")
	delete(h, "Api-Key")
	return secret, header
}
