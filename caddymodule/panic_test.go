package caddymodule_test

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/tidwall/gjson"

	"github.com/caddyai/gateway/internal/testredis"
	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/simulator"
)

func init() {
	caddy.RegisterModule(panicker{})
	httpcaddyfile.RegisterHandlerDirective("test_panic", func(httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
		return panicker{}, nil
	})
}

// panicker is a handler placed after ai_gateway that panics as the request's X-Test-Panic
// header says: "boom" before answering, "stream" after the first event of a stream, "abort"
// with http.ErrAbortHandler (as reverse_proxy does when it cannot finish a response).
type panicker struct{}

func (panicker) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.test_panic", New: func() caddy.Module { return new(panicker) }}
}

func (panicker) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	switch r.Header.Get("X-Test-Panic") {
	case "boom":
		panic("a handler bug")
	case "stream":
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		fmt.Fprint(w, "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"demo-llama\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"finish_reason\":null}]}\n\n")
		http.NewResponseController(w).Flush()
		panic("a handler bug mid-stream")
	case "abort":
		panic(http.ErrAbortHandler)
	}
	return next.ServeHTTP(w, r)
}

// TestPanicAfterGatewaySettles: whatever a handler after ai_gateway does (panic before answering,
// panic mid-stream, abort), the request ends through the gateway's one exit: the client gets an
// answer in its envelope (or the error frame of its stream), the key's max_concurrent slot comes
// back and the token reservation is settled, in the memory store and in Redis.
func TestPanicAfterGatewaySettles(t *testing.T) {
	for _, store := range []string{"memory", "redis"} {
		t.Run(store, func(t *testing.T) {
			rl := ""
			if store == "redis" {
				addr, stop := testredis.Start(t)
				defer stop()
				rl = "rate_limit {\n\t\t\t\tstore redis redis://" + addr + "/0\n\t\t\t\tredis_prefix " + t.Name() + ":\n\t\t\t}"
			}
			up := newUpstream(t, simulator.Config{})
			port := freePort(t)
			startCaddy(t, globalOptions+fmt.Sprintf(`
:%d {
	route {
		ai_gateway {
			key %s {
				id limited
				max_concurrent 1
				tpm 20000
			}
			model demo-llama {
				alias llama
				context_window 8192
				upstream %s
			}
			%s
		}
		test_panic
		reverse_proxy {
			dynamic ai_gateway
		}
	}
}
`, port, policy.FormatHash(policy.HashSecret(secretAll)), up.addr(), rl))
			s := &usageSetup{port: port, upstream: up}
			const body = `{"model":"llama","messages":[{"role":"user","content":"Tell me about gateways"}],"max_tokens":5000}`
			const stream = `{"model":"llama","stream":true,"messages":[{"role":"user","content":"Tell me about gateways"}],"max_tokens":5000}`
			for _, tt := range []struct{ mode, body string }{{"boom", body}, {"stream", stream}, {"abort", body}} {
				resp, b := s.do(t, "/v1/chat/completions", "", tt.body, "X-Test-Panic", tt.mode)
				switch tt.mode {
				case "boom":
					if resp.StatusCode != 500 || gjson.GetBytes(b, "error.type").Str != "server_error" {
						t.Errorf("boom: %d %s", resp.StatusCode, b)
					}
				case "stream":
					if resp.StatusCode != 200 || !strings.Contains(string(b), `"error"`) || !strings.HasSuffix(string(b), "data: [DONE]\n\n") {
						t.Errorf("stream: %d, not ended with an error frame and [DONE]:\n%s", resp.StatusCode, b)
					}
				case "abort":
					if resp.StatusCode < 500 || !gjson.GetBytes(b, "error.message").Exists() {
						t.Errorf("abort: %d %s", resp.StatusCode, b)
					}
				}
				// the slot came back: with max_concurrent 1 the next request is admitted at once
				resp, b = s.do(t, "/v1/chat/completions", "", chatBody)
				if resp.StatusCode != 200 {
					t.Fatalf("after %s: %d %s (the concurrency slot was not released)", tt.mode, resp.StatusCode, b)
				}
				// and the reservation was settled: the 5000+ tokens reserved for the panicking
				// request are back (what was charged is its prompt, some tens of tokens)
				remaining, _ := strconv.Atoi(resp.Header.Get("X-Ratelimit-Remaining-Tokens"))
				if remaining < 16000 {
					t.Errorf("after %s: %d tokens remaining of 20000: the panicking request's reservation was kept", tt.mode, remaining)
				}
			}
		})
	}
}
