package caddymodule

import (
	"fmt"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddyai/gateway/simulator"
)

func init() {
	caddy.RegisterModule(Simulator{})
	httpcaddyfile.RegisterHandlerDirective("ai_simulator", parseHandler[Simulator])
	httpcaddyfile.RegisterDirectiveOrder("ai_simulator", httpcaddyfile.Before, "respond")
}

// Simulator is a simulated OpenAI- and Anthropic-compatible model server, for demos, tests and
// benchmarks. It answers chat completions, completions, embeddings, images, models and
// Anthropic messages, streamed or not, with deterministic text and exact usage, /tokenize in the
// shapes of vLLM, TGI and llama.cpp server, and /health, and can inject the faults of real model
// servers (vLLM, TGI, llama.cpp, Ollama). It is a terminal handler.
type Simulator struct {
	// TTFT is the delay before the first token. Default: 0.
	TTFT caddy.Duration `json:"ttft,omitempty"`
	// TokensPerSecond paces generated tokens, streamed or not (a JSON answer comes when its stream
	// would have ended); 0 generates as fast as possible. Default: 0.
	TokensPerSecond float64 `json:"tokens_per_second,omitempty"`
	// ResponseTokens is the natural length of a completion in tokens. Default: 16.
	ResponseTokens int `json:"response_tokens,omitempty"`
	// ContextWindow makes the simulator refuse prompts over this many tokens the way the
	// error_shape's server does. 0 = unlimited.
	ContextWindow int `json:"context_window,omitempty"`
	// ErrorShape is the error body format: openai (default), vllm, vllm_flat, tgi, llamacpp,
	// ollama or text.
	ErrorShape string `json:"error_shape,omitempty"`
	// Models are the model ids listed by GET /v1/models. Default: sim-model.
	Models []string `json:"models,omitempty"`
	// Fault is a fault applied to every request, in the syntax of the X-Sim-Fault request
	// header (e.g. "kind=overloaded"). Default: none.
	Fault string `json:"fault,omitempty"`

	srv *simulator.Server
}

// CaddyModule returns the Caddy module information.
func (Simulator) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.ai_simulator",
		New: func() caddy.Module { return new(Simulator) },
	}
}

// Provision builds the simulated server.
func (s *Simulator) Provision(ctx caddy.Context) error {
	srv, err := simulator.New(simulator.Config{
		TTFT:            time.Duration(s.TTFT),
		TokensPerSecond: s.TokensPerSecond,
		ResponseTokens:  s.ResponseTokens,
		ContextWindow:   s.ContextWindow,
		ErrorShape:      s.ErrorShape,
		Models:          s.Models,
		Fault:           s.Fault,
	})
	if err != nil {
		return fmt.Errorf("provisioning ai_simulator: %w", err)
	}
	s.srv = srv
	return nil
}

// ServeHTTP answers the request as a model server would. It never calls next.
func (s *Simulator) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	s.srv.ServeHTTP(w, r)
	return nil
}

// UnmarshalCaddyfile sets up the simulator from Caddyfile tokens. Syntax:
//
//	ai_simulator {
//	    ttft <duration>
//	    tokens_per_second <n>
//	    response_tokens <n>
//	    context_window <tokens>
//	    error_shape openai|vllm|vllm_flat|tgi|llamacpp|ollama|text
//	    models <id>...
//	    fault <spec>
//	}
func (s *Simulator) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	if d.NextArg() {
		return d.ArgErr()
	}
	return newSubdirectives("ai_simulator").each(d, func(name string) (err error) {
		switch name {
		case "ttft":
			s.TTFT, err = durationArg(d)
		case "tokens_per_second":
			var v string
			if v, err = stringArg(d); err == nil {
				if _, serr := fmt.Sscanf(v, "%g", &s.TokensPerSecond); serr != nil || s.TokensPerSecond < 0 {
					return d.Errf("tokens_per_second: %q is not a non-negative number", v)
				}
			}
		case "response_tokens":
			s.ResponseTokens, err = intArg(d)
		case "context_window":
			s.ContextWindow, err = intArg(d)
		case "error_shape":
			s.ErrorShape, err = stringArg(d)
		case "models":
			s.Models = d.RemainingArgs()
			if len(s.Models) == 0 {
				return d.ArgErr()
			}
		case "fault":
			s.Fault, err = stringArg(d)
		default:
			return d.Errf("unrecognized ai_simulator subdirective %q", name)
		}
		return err
	})
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Simulator)(nil)
	_ caddyhttp.MiddlewareHandler = (*Simulator)(nil)
	_ caddyfile.Unmarshaler       = (*Simulator)(nil)
)
