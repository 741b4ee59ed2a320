package caddymodule

import (
	"strconv"
	"strings"
	"time"
)

// placeholder answers the gateway's placeholders (http.ai_gateway.*) from the exchange, as a
// caddy.ReplacerFunc registered once per request: the values are read when a log format or a
// handler asks for them, instead of being boxed into the replacer's map for every request. The
// request's placeholders are answered from the start; the outcome's (surface, endpoint, stream,
// reject reason, usage, ttft, cache) once the request is recorded, as when they were set.
func (ex *exchange) placeholder(key string) (any, bool) {
	if !strings.HasPrefix(key, "http.ai_gateway.") {
		return nil, false
	}
	switch key {
	case phRequestID:
		return ex.requestID, true
	case phKeyID:
		return ex.keyID(), true
	case phRequested:
		return ex.requestedModel, true
	case phModel:
		return ex.modelName(), true
	case phUpstream:
		if ex.route == nil {
			return nil, false
		}
		return ex.route.model.Upstream(), true
	case phAPIVersion:
		if ex.apiVersion == nil {
			return nil, false
		}
		return ex.apiVersion.Date, true
	}
	if !ex.phOutcome {
		return nil, false
	}
	switch key {
	case phSurface:
		return ex.surface.String(), true
	case phEndpoint:
		return ex.endpoint.String(), true
	case phStream:
		return ex.stream, true
	case phRejectReason:
		return ex.reject, true
	case phPrompt:
		return ex.usage.PromptTokens, true
	case phCompletion:
		return ex.usage.CompletionTokens, true
	case phTotal:
		return ex.usage.TotalTokens, true
	case phEstimated:
		return ex.usage.Estimated, true
	case phTTFT:
		if ex.firstToken.IsZero() {
			return nil, false
		}
		return float64(ex.firstToken.Sub(ex.start)) / float64(time.Millisecond), true
	case phCache:
		return ex.cacheState, true
	case phCost:
		if ex.cost == "" {
			return nil, false
		}
		return ex.cost, true
	}
	return nil, false
}

// statusLabels are the metric labels of the HTTP statuses 100 to 599, made once.
var statusLabels = func() (l [500]string) {
	for i := range l {
		l[i] = strconv.Itoa(100 + i)
	}
	return l
}()

// statusLabel is strconv.Itoa(code) without an allocation for the statuses a response can have.
func statusLabel(code int) string {
	if code >= 100 && code < 600 {
		return statusLabels[code-100]
	}
	return strconv.Itoa(code)
}
