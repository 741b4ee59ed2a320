package caddymodule

import (
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/caddyai/gateway/internal/wire"
)

// OpenTelemetry. With Caddy's `tracing` directive on, the request's span (Caddy's, made by
// otelhttp) gets the GenAI semantic convention attributes when the request ends, and the stages
// that can take time get child spans: the token count (ai_gateway.count_tokens), the cache
// lookup (ai_gateway.cache_lookup), the admission queue (ai_gateway.admission) and the upstream
// until its first token (ai_gateway.upstream_first_token; for a JSON answer, until the answer).
// Without tracing nothing is recorded and nothing is allocated. Never a prompt, a completion or
// a key: the key's id, the models, counts and the refusal reason only.

// tracerName names the gateway's instrumentation scope.
const tracerName = "github.com/caddyai/gateway"

// The attributes: GenAI semantic conventions, plus the gateway's own under ai_gateway.*.
const (
	attrOperation    = attribute.Key("gen_ai.operation.name")
	attrReqModel     = attribute.Key("gen_ai.request.model")
	attrRespModel    = attribute.Key("gen_ai.response.model")
	attrInputTokens  = attribute.Key("gen_ai.usage.input_tokens")
	attrOutputTokens = attribute.Key("gen_ai.usage.output_tokens")
	attrMaxTokens    = attribute.Key("gen_ai.request.max_tokens")
	attrTemperature  = attribute.Key("gen_ai.request.temperature")
	attrErrorType    = attribute.Key("error.type")
	attrKeyID        = attribute.Key("ai_gateway.key_id")
	attrReject       = attribute.Key("ai_gateway.reject_reason")
	attrRequestID    = attribute.Key("ai_gateway.request_id")
	attrEndpoint     = attribute.Key("ai_gateway.endpoint")
	attrStream       = attribute.Key("ai_gateway.stream")
	attrCache        = attribute.Key("ai_gateway.cache")
	attrCachedTokens = attribute.Key("ai_gateway.usage.cached_tokens")
	attrEstimated    = attribute.Key("ai_gateway.usage.estimated")
	attrFallbackFrom = attribute.Key("ai_gateway.fallback_from")
	attrExact        = attribute.Key("ai_gateway.count.exact")
	attrPromptTokens = attribute.Key("ai_gateway.count.prompt_tokens")
)

// requestTrace is the request's part in a trace: Caddy's span of the request (nil when it is not
// recording) and the upstream span while it is open.
type requestTrace struct {
	span     trace.Span
	upstream trace.Span
}

// startTrace finds the request's span; only a recording one is kept.
func (ex *exchange) startTrace() {
	if s := trace.SpanFromContext(ex.r.Context()); s.IsRecording() {
		ex.trace.span = s
	}
}

// stage starts a child span of the request's span, or returns nil without tracing; end it with
// endStage.
func (ex *exchange) stage(name string) trace.Span {
	if ex.trace.span == nil {
		return nil
	}
	_, s := ex.trace.span.TracerProvider().Tracer(tracerName).Start(ex.r.Context(), name, trace.WithSpanKind(trace.SpanKindInternal))
	return s
}

func endStage(s trace.Span) {
	if s != nil {
		s.End()
	}
}

// endCount ends the token count's span with how the prompt was counted.
func (ex *exchange) endCount(s trace.Span) {
	if s != nil {
		s.SetAttributes(attrExact.Bool(ex.promptExact), attrPromptTokens.Int(ex.promptTokens))
		s.End()
	}
}

// endCacheLookup ends the cache lookup's span with its result.
func (ex *exchange) endCacheLookup(s trace.Span) {
	if s != nil {
		s.SetAttributes(attrCache.String(ex.cacheState))
		s.End()
	}
}

// startUpstreamSpan opens the span from the hand-off to the upstream's first token.
func (ex *exchange) startUpstreamSpan() {
	if ex.trace.span != nil && ex.trace.upstream == nil {
		ex.trace.upstream = ex.stage("ai_gateway.upstream_first_token")
		ex.trace.upstream.SetAttributes(attrRespModel.String(ex.modelName()))
	}
}

// endUpstreamSpan closes the upstream span, at the first token or when the attempt ends.
func (ex *exchange) endUpstreamSpan() {
	if ex.trace.upstream != nil {
		ex.trace.upstream.End()
		ex.trace.upstream = nil
	}
}

// operationName is gen_ai.operation.name of the request's endpoint.
func operationName(ex *exchange) string {
	switch ex.spec.Dialect {
	case wire.DialectChat, wire.DialectMessages:
		return "chat"
	case wire.DialectCompletion:
		return "text_completion"
	case wire.DialectEmbedding:
		return "embeddings"
	}
	return ex.spec.Name
}

// recordTrace sets the request span's attributes once the request has ended.
func (ex *exchange) recordTrace() {
	s := ex.trace.span
	if s == nil {
		return
	}
	ex.endUpstreamSpan()
	attrs := make([]attribute.KeyValue, 0, 18)
	attrs = append(attrs, attrOperation.String(operationName(ex)), attrEndpoint.String(ex.spec.Name),
		attrRequestID.String(ex.requestID))
	if id := ex.keyID(); id != "" {
		attrs = append(attrs, attrKeyID.String(id))
	}
	if ex.requestedModel != "" {
		attrs = append(attrs, attrReqModel.String(ex.requestedModel))
	}
	if m := ex.modelName(); m != "" && ex.reject == "" {
		attrs = append(attrs, attrRespModel.String(m))
	}
	if ex.info.MaxTokens > 0 {
		attrs = append(attrs, attrMaxTokens.Int(ex.info.MaxTokens))
	}
	if ex.info.Temperature != nil {
		attrs = append(attrs, attrTemperature.Float64(*ex.info.Temperature))
	}
	if ex.endpoint.HasBody() {
		attrs = append(attrs, attrStream.Bool(ex.stream))
	}
	if ex.reject != "" {
		attrs = append(attrs, attrReject.String(ex.reject), attrErrorType.String(ex.reject))
	} else if ex.usage.PromptTokens > 0 || ex.usage.CompletionTokens > 0 {
		attrs = append(attrs, attrInputTokens.Int64(ex.usage.PromptTokens), attrOutputTokens.Int64(ex.usage.CompletionTokens))
		if ex.usage.CachedTokens > 0 {
			attrs = append(attrs, attrCachedTokens.Int64(ex.usage.CachedTokens))
		}
		if ex.usage.Estimated {
			attrs = append(attrs, attrEstimated.Bool(true))
		}
	}
	if ex.cacheState != "" {
		attrs = append(attrs, attrCache.String(ex.cacheState))
	}
	if ex.fallbackFrom != "" {
		attrs = append(attrs, attrFallbackFrom.String(ex.fallbackFrom))
	}
	s.SetAttributes(attrs...)
}
