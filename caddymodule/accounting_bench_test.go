package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddyai/gateway/policy"
)

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
			g := new(Gateway)
			if err := json.Unmarshal([]byte(raw), g); err != nil {
				b.Fatal(err)
			}
			ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
			b.Cleanup(cancel)
			if err := g.Provision(ctx); err != nil {
				b.Fatal(err)
			}
			g.logger = zap.NewNop()
			b.Cleanup(func() { _ = g.Cleanup() })
			next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusOK)
				_, err := w.Write([]byte(benchCompletion))
				return err
			})
			b.ReportAllocs()
			b.SetBytes(int64(len(benchChatBody)))
			for b.Loop() {
				rec := httptest.NewRecorder()
				if err := g.ServeHTTP(rec, benchRequest(benchChatBody), next); err != nil || rec.Code != 200 {
					b.Fatalf("%v %d %s", err, rec.Code, rec.Body)
				}
			}
		})
	}
}
