package ratelimit

import (
	"strings"
	"testing"
	"time"
)

func TestExplain(t *testing.T) {
	tests := []struct {
		name    string
		d       Decision
		typ     string
		reason  string
		msg     string
		retry   time.Duration
		noRetry bool
	}{
		{"tokens per minute", Decision{Dimension: DimensionTokens, Scope: "key:team-a", Wait: 1200 * time.Millisecond, Tokens: Quota{Limit: 1000}},
			"tokens", "rate_limited_tokens", "Rate limit reached on tokens per minute for key:team-a: Limit 1000, Requested 250. Please try again in 1.2s.", 1200 * time.Millisecond, false},
		{"tokens that never fit", Decision{Dimension: DimensionTokens, Scope: "model:llama", Impossible: true, Tokens: Quota{Limit: 100}},
			"tokens", "rate_limited_tokens", "Request too large for the model limit on tokens per minute (model:llama): Limit 100, Requested 250.", 0, true},
		{"requests per day: a long wait says do not retry", Decision{Dimension: DimensionRequests, Scope: "global", Daily: true, Wait: 6 * time.Hour, Requests: Quota{Limit: 5}},
			"requests", "rate_limited_requests", "Rate limit reached on requests per day for global: Limit 5. Please try again in 6h0m0s.", 6 * time.Hour, true},
		{"requests per minute: exactly the longest wait still retries", Decision{Dimension: DimensionRequests, Scope: "key:k", Wait: NoRetryAfter, Requests: Quota{Limit: 3}},
			"requests", "rate_limited_requests", "Please try again in 1m0s.", NoRetryAfter, false},
		{"requests that never fit", Decision{Dimension: DimensionRequests, Scope: "key:k", Impossible: true},
			"requests", "rate_limited_requests", "The request limit per minute for key:k does not allow this request.", 0, true},
		{"concurrency", Decision{Dimension: DimensionConcurrency, Scope: "key:k"},
			"requests", "rate_limited_concurrency", "Too many concurrent requests for key:k. Please try again in 1s.", time.Second, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Explain(tt.d, Cost{Requests: 1, Tokens: 250})
			if r.Type != tt.typ || r.Reason != tt.reason || !strings.Contains(r.Message, tt.msg) || r.RetryAfter != tt.retry || r.NoRetry != tt.noRetry {
				t.Errorf("Explain = %+v", r)
			}
		})
	}
}

func TestHumanWaitAndScopeKind(t *testing.T) {
	for d, want := range map[time.Duration]string{120 * time.Millisecond: "120ms", 1234 * time.Millisecond: "1.2s", 6 * time.Minute: "6m0s"} {
		if got := HumanWait(d); got != want {
			t.Errorf("HumanWait(%s) = %q, want %q", d, got, want)
		}
	}
	for id, want := range map[string]string{"global": "global", "key:a": "key", "model:m": "model", "key:": "unknown", "x": "unknown"} {
		if got := ScopeKind(id); got != want {
			t.Errorf("ScopeKind(%q) = %q, want %q", id, got, want)
		}
	}
}
