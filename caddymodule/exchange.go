package caddymodule

import (
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/caddyai/gateway/policy"
)

// varExchange is the Caddy request variable holding the request's *exchange, read by the
// ai_gateway dynamic upstreams and by later handlers.
const varExchange = "ai_gateway.exchange"

// exchange is the one request-scoped record of the gateway: each stage fills what it learns and
// later stages (routing, the response tap, placeholders, logs) read it instead of recomputing.
type exchange struct {
	start          time.Time
	requestID      string
	surface        wire.Surface
	endpoint       wire.Endpoint
	modelID        string // the id of GET /v1/models/{id}
	key            *policy.Key
	requestedModel string
	route          *modelRoute
	stream         bool
	body           requestBody
	reject         string
	status         int
}

// modelRoute is a model with where it runs.
type modelRoute struct {
	model         *policy.Model
	dials         []string
	authorization string
}

func newExchange(r *http.Request, now time.Time) *exchange {
	ex := &exchange{start: now}
	ex.endpoint, ex.modelID = wire.Route(r.URL.Path)
	ex.surface = wire.SurfaceOf(r.URL.Path)
	if id := r.Header.Get("X-Request-Id"); wire.ValidRequestID(id) {
		ex.requestID = id
	} else {
		ex.requestID = wire.NewRequestID()
		r.Header["X-Request-Id"] = []string{ex.requestID}
	}
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

// setResponseHeaders sets the headers every response carries.
func (ex *exchange) setResponseHeaders(h http.Header) {
	h["X-Request-Id"] = []string{ex.requestID}
	if ex.surface == wire.Anthropic {
		h["Request-Id"] = []string{ex.requestID}
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
)

func (ex *exchange) setPlaceholders(repl *caddy.Replacer) {
	repl.Set(phRequestID, ex.requestID)
	repl.Set(phSurface, ex.surface.String())
	repl.Set(phEndpoint, ex.endpoint.String())
	repl.Set(phKeyID, ex.keyID())
	repl.Set(phRequested, ex.requestedModel)
	repl.Set(phModel, ex.modelName())
	if ex.route != nil {
		repl.Set(phUpstream, ex.route.model.Upstream())
	}
	repl.Set(phStream, ex.stream)
	repl.Set(phRejectReason, ex.reject)
}
