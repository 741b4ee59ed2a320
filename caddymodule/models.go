package caddymodule

import (
	"net/http"
	"strconv"
	"time"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/caddyai/gateway/policy"
)

// serveModels answers GET /v1/models and /v1/models/{id} with the models the caller's key may
// use: OpenAI's list format, or Anthropic's when the request carries anthropic-version.
func (g *Gateway) serveModels(w http.ResponseWriter, r *http.Request, ex *exchange) error {
	anthropic := r.Header.Get("Anthropic-Version") != ""
	var body []byte
	if ex.endpoint == wire.EndpointModel {
		m, ok := g.catalog.Resolve(ex.pathParam)
		if !ok || !ex.key.AllowsModel(m) {
			g.refuse(w, ex, wire.ModelNotFound(ex.pathParam))
			return nil
		}
		if anthropic {
			body = g.appendAnthropicModel(nil, m)
		} else {
			body = g.appendOpenAIModel(nil, m)
			body = g.appendPredictReadiness(r.Context(), body, m)
		}
	} else {
		allowed := make([]*policy.Model, 0, len(g.catalog.Models()))
		for _, m := range g.catalog.Models() {
			if ex.key.AllowsModel(m) {
				allowed = append(allowed, m)
			}
		}
		if anthropic {
			body = g.appendAnthropicList(nil, allowed)
		} else {
			body = append(body, `{"object":"list","data":[`...)
			for i, m := range allowed {
				if i > 0 {
					body = append(body, ',')
				}
				body = g.appendOpenAIModel(body, m)
			}
			body = append(body, "]}"...)
		}
	}
	return answerJSON(w, r, ex, body)
}

// answerJSON writes a 200 JSON answer of the gateway's own (models, count_tokens, files) with
// the headers every response carries; a HEAD request gets the headers only.
func answerJSON(w http.ResponseWriter, r *http.Request, ex *exchange, body []byte) error {
	h := w.Header()
	ex.setResponseHeaders(h)
	setRateLimitHeaders(h, ex.surface, ex.decision, ex.start)
	h["Content-Type"] = []string{"application/json"}
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	ex.status = http.StatusOK
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return nil
	}
	_, err := w.Write(body)
	return err
}

func (g *Gateway) appendOpenAIModel(dst []byte, m *policy.Model) []byte {
	dst = append(dst, `{"id":`...)
	dst = wire.AppendString(dst, m.Name)
	dst = append(dst, `,"object":"model","created":`...)
	dst = strconv.AppendInt(dst, g.created, 10)
	dst = append(dst, `,"owned_by":"ai_gateway"`...)
	if m.ContextWindow > 0 {
		dst = append(dst, `,"context_window":`...)
		dst = strconv.AppendInt(dst, int64(m.ContextWindow), 10)
	}
	if m.MaxOutputTokens > 0 {
		dst = append(dst, `,"max_output_tokens":`...)
		dst = strconv.AppendInt(dst, int64(m.MaxOutputTokens), 10)
	}
	if d := m.Deprecation; !d.IsZero() {
		if !d.Deprecated.IsZero() {
			dst = append(dst, `,"deprecated_at":`...)
			dst = wire.AppendString(dst, d.Deprecated.UTC().Format(time.RFC3339))
		}
		if !d.Sunset.IsZero() {
			dst = append(dst, `,"sunset_at":`...)
			dst = wire.AppendString(dst, d.Sunset.UTC().Format(time.RFC3339))
		}
	}
	if route := g.routes[m]; route != nil && route.predict != nil {
		dst = append(dst, `,"kind":"predict","protocol":`...)
		dst = wire.AppendString(dst, route.predict.Protocol())
	}
	dst = append(dst, `,"aliases":[`...)
	for i, a := range m.Aliases {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = wire.AppendString(dst, a)
	}
	return append(dst, "]}"...)
}

func (g *Gateway) appendAnthropicModel(dst []byte, m *policy.Model) []byte {
	dst = append(dst, `{"type":"model","id":`...)
	dst = wire.AppendString(dst, m.Name)
	dst = append(dst, `,"display_name":`...)
	dst = wire.AppendString(dst, m.Name)
	dst = append(dst, `,"created_at":`...)
	dst = wire.AppendString(dst, time.Unix(g.created, 0).UTC().Format(time.RFC3339))
	return append(dst, '}')
}

func (g *Gateway) appendAnthropicList(dst []byte, models []*policy.Model) []byte {
	dst = append(dst, `{"data":[`...)
	for i, m := range models {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = g.appendAnthropicModel(dst, m)
	}
	dst = append(dst, `],"has_more":false,"first_id":`...)
	if len(models) == 0 {
		dst = append(dst, `null,"last_id":null}`...)
		return dst
	}
	dst = wire.AppendString(dst, models[0].Name)
	dst = append(dst, `,"last_id":`...)
	dst = wire.AppendString(dst, models[len(models)-1].Name)
	return append(dst, '}')
}
