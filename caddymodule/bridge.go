package caddymodule

import (
	"cmp"
	"fmt"
	"net/http"

	"github.com/caddyai/gateway/bridge"
	"github.com/caddyai/gateway/internal/wire"
	"github.com/caddyai/gateway/policy"
)

// The values of a model's upstream_api.
const (
	upstreamAPIResponses = "responses"
	upstreamAPIChat      = "chat_completions"
)

// bridgeRoute is a model whose servers speak chat completions only: Responses requests are
// translated (package bridge).
type bridgeRoute struct {
	maxField string // the chat field max_output_tokens becomes (max_tokens_field)
}

// provisionBridge sets a model's bridge from its upstream_api.
func provisionBridge(route *modelRoute, mc ModelConfig, global policy.RewriteConfig) error {
	switch mc.UpstreamAPI {
	case "", upstreamAPIResponses:
		return nil
	case upstreamAPIChat:
		f := cmp.Or(mc.MaxTokensField, global.MaxTokensField)
		if f == policy.Off {
			f = ""
		}
		route.bridge = &bridgeRoute{maxField: f}
		return nil
	}
	return fmt.Errorf("upstream_api: want %s or %s, got %q", upstreamAPIResponses, upstreamAPIChat, mc.UpstreamAPI)
}

// bridgeState is a bridged request: what its answer's translation needs, and the Responses
// body to start again from should a fallback serve it natively.
type bridgeState struct {
	req      *bridge.Request
	src      []byte // the Responses body (nil without fallbacks)
	srcModel string // its model
	stream   *bridge.Stream
}

// bridgeRequest translates a Responses request into a chat completions request when its
// model's servers speak only that, and undoes an earlier translation when a fallback's do not.
// The prompt is counted (once) on the Responses body first, so usage estimates read it.
func (g *Gateway) bridgeRequest(ex *exchange, r *http.Request) *wire.Error {
	if ex.spec.Dialect != wire.DialectResponses {
		return nil
	}
	if b := ex.bridged; b != nil {
		if ex.route.bridge != nil {
			return nil // translated already, for a model that wants the same
		}
		if b.src == nil {
			return wire.Internal()
		}
		ex.body.replace(b.src)
		ex.bodyModel, ex.bridged = b.srcModel, nil
		r.URL.Path, r.URL.RawPath = "/v1/responses", ""
		return nil
	}
	if ex.route.bridge == nil {
		return nil
	}
	body := ex.body.bytes()
	if !ex.promptExact && ex.route != nil {
		if n, err := ex.route.chat.Count(wire.DialectResponses, body); err == nil {
			ex.promptTokens, ex.promptExact = n, true
		}
	}
	chat, req, werr := bridge.ToChat(body, ex.route.bridge.maxField)
	if werr != nil {
		return werr
	}
	b := &bridgeState{req: req, srcModel: ex.bodyModel}
	if len(ex.primaryRoute().fallbacks) > 0 {
		b.src = append([]byte(nil), body...)
	}
	ex.bridged = b
	ex.info.NoStore = true // nothing is stored upstream: there is no response to own
	ex.body.replace(chat)
	r.URL.Path, r.URL.RawPath = "/v1/chat/completions", ""
	return nil
}
