package caddymodule

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/policy/tokens"
	"github.com/caddyai/gateway/ratelimit"
)

// takingStore is a memory store that records the cost of every reservation and, before the
// first one, lets another request take what the first's cost leaves plus one token: the
// bucket is taken from between the gateway's look and its reservation.
type takingStore struct {
	*ratelimit.MemoryStore
	mu      sync.Mutex
	take    bool
	reserve []int64
}

func (s *takingStore) Reserve(ctx context.Context, req ratelimit.Request) (ratelimit.Decision, error) {
	s.mu.Lock()
	s.reserve = append(s.reserve, req.Cost.Tokens)
	take := s.take && len(s.reserve) == 1
	s.mu.Unlock()
	if take {
		left := req.Scopes[0].Limits.TPM - req.Cost.Tokens + 1
		other := ratelimit.Request{Scopes: req.Scopes, Cost: ratelimit.Cost{Requests: 1, Tokens: left}}
		if d, err := s.MemoryStore.Reserve(ctx, other); err != nil || !d.Allowed {
			return d, fmt.Errorf("the other request was not admitted: %v %+v", err, d)
		}
	}
	return s.MemoryStore.Reserve(ctx, req)
}

// TestPromptAtItsBound: a prompt on a tpm-limited key far from its limit is reserved at its
// byte upper bound, without being counted; close to the limit it is counted exactly; and a
// reservation at the bound refused because the bucket was taken from since the look is made
// again on the exact count, which fits: the client gets its answer, not a 429.
func TestPromptAtItsBound(t *testing.T) {
	bound := int64(tokens.UpperBound([]byte(benchChatBody)))
	const out = 64 // benchChatBody's max_tokens
	for _, tc := range []struct {
		name         string
		tpm          int64
		take         bool
		bound, exact float64
	}{
		{"far from the limit", 1000000, false, 1, 0},
		{"close to the limit", 3 * (bound + out) / 2, false, 0, 1},
		{"taken from since the look", 1000000, true, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := fmt.Sprintf(`{
				"keys": [{"secret": %q, "id": "bench", "tpm": %d}],
				"models": [{"name": "demo-llama", "aliases": ["llama"], "context_window": 8192, "tokenizer": "cl100k_base"}]
			}`, policy.FormatHash(policy.HashSecret("sk-bench")), tc.tpm)
			g := provisionGateway(t, raw, nil)
			g.logger = zap.NewNop()
			store := &takingStore{MemoryStore: ratelimit.NewMemoryStore(ratelimit.MemoryOptions{}), take: tc.take}
			g.limiter = ratelimit.NewLimiter(store, ratelimit.Options{})
			var upstream int
			next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				upstream++
				w.Header().Set("Content-Type", "application/json")
				_, err := w.Write([]byte(benchCompletion))
				return err
			})
			rec := httptest.NewRecorder()
			if err := g.ServeHTTP(rec, benchRequest(benchChatBody), next); err != nil {
				t.Fatal(err)
			}
			if rec.Code != 200 || upstream != 1 {
				t.Fatalf("%d, %d upstream requests: %s", rec.Code, upstream, rec.Body)
			}
			var counted promptCounts
			for _, r := range g.routes {
				counted = r.counted
			}
			if b, e := counterValue(t, counted.bound), counterValue(t, counted.exact); b != tc.bound || e != tc.exact {
				t.Errorf("counted: bound %v, exact %v; want %v, %v", b, e, tc.bound, tc.exact)
			}
			last := store.reserve[len(store.reserve)-1]
			switch {
			case tc.take && (len(store.reserve) != 2 || store.reserve[0] != bound+out || last >= bound+out):
				t.Errorf("reservations %v: want the bound's %d, then the exact count's, less", store.reserve, bound+out)
			case !tc.take && tc.bound == 1 && last != bound+out:
				t.Errorf("reserved %d, want the bound %d plus %d", last, bound, out)
			case !tc.take && tc.exact == 1 && last >= bound+out:
				t.Errorf("reserved %d close to the limit: the bound's %d, not the count's", last, bound+out)
			}
		})
	}
}

// counterValue reads c through a registry of its own.
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 || len(mfs[0].GetMetric()) != 1 {
		t.Fatalf("gathering a counter: %v %v", mfs, err)
	}
	return mfs[0].GetMetric()[0].GetCounter().GetValue()
}
