package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddyai/gateway/policy"
)

// provisionGateway provisions a gateway from its JSON config, with before (if not nil) run
// on it first; it is cleaned up when the test ends.
func provisionGateway(tb testing.TB, raw string, before func(*Gateway)) *Gateway {
	tb.Helper()
	g := new(Gateway)
	if err := json.Unmarshal([]byte(raw), g); err != nil {
		tb.Fatal(err)
	}
	if before != nil {
		before(g)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	tb.Cleanup(cancel)
	if err := g.Provision(ctx); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = g.Cleanup() })
	return g
}

// BenchmarkGatewayJSONAccounting is BenchmarkGatewayJSON with accounting on: a priced model, the
// embedded ledger and a label budget on the key (reserved and settled per request). Compare the
// two for the ledger's and the budget's cost on the request path.
func BenchmarkGatewayJSONAccounting(b *testing.B) {
	for _, bc := range []struct{ name, budgets string }{
		{"ledger", `[]`},
		{"ledger+budget", `[{"label": "team=bench", "monthly_tokens": 1000000000000}]`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			raw := fmt.Sprintf(`{
				"keys": [{"secret": %q, "id": "bench", "rpm": 1000000000, "tpm": 10000000000, "labels": {"team": "bench"}}],
				"models": [{"name": "demo-llama", "aliases": ["llama"], "context_window": 8192, "tokenizer": "cl100k_base",
					"price": {"input": 0.5, "output": 1.5}}],
				"storage": {"dir": %q},
				"accounting": {"budgets": %s}
			}`, policy.FormatHash(policy.HashSecret("sk-bench")), b.TempDir(), bc.budgets)
			g := provisionGateway(b, raw, nil)
			g.logger = zap.NewNop()
			benchJSON(b, g)
		})
	}
}

// TestBudgetRetryAfter: a spent budget's 429 carries Retry-After only when the budget renews
// within a minute, and always x-should-retry: false.
func TestBudgetRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		now        time.Time
		retryAfter string
	}{
		{time.Date(2026, 12, 1, 23, 59, 30, 0, time.UTC), "30"},
		{time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC), ""},
	} {
		raw := fmt.Sprintf(`{
			"keys": [{"secret": %q, "id": "bench"}],
			"models": [{"name": "demo-llama", "aliases": ["llama"]}],
			"storage": {"dir": %q},
			"accounting": {"budgets": [{"key": "bench", "daily_tokens": 1}]}
		}`, policy.FormatHash(policy.HashSecret("sk-bench")), t.TempDir())
		now := tc.now
		g := provisionGateway(t, raw, func(g *Gateway) { g.now = func() time.Time { return now } })
		rec := httptest.NewRecorder()
		next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { t.Fatal("admitted"); return nil })
		if err := g.ServeHTTP(rec, benchRequest(benchChatBody), next); err != nil {
			t.Fatal(err)
		}
		if rec.Code != 429 || rec.Header().Get("Retry-After") != tc.retryAfter || rec.Header().Get("X-Should-Retry") != "false" ||
			!strings.Contains(rec.Body.String(), `"type":"insufficient_quota"`) {
			t.Errorf("at %s: %d retry-after %q should-retry %q %s", tc.now, rec.Code, rec.Header().Get("Retry-After"),
				rec.Header().Get("X-Should-Retry"), rec.Body)
		}
	}
}
