package ratelimit

import (
	"fmt"
	"strings"
	"time"
)

// NoRetryAfter is the longest wait a refusal still tells clients to wait out; beyond it they are
// told not to retry now (SDKs would sleep too long or ignore the hint).
const NoRetryAfter = 60 * time.Second

// Refusal is what a client is told about a refused reservation: the OpenAI error type
// ("requests" or "tokens"), a low-cardinality reason for logs and metrics, the message, how long
// to wait, and whether to retry at all.
type Refusal struct {
	Type       string
	Reason     string
	Message    string
	RetryAfter time.Duration
	NoRetry    bool
}

// Explain words a refusing Decision for a request of cost as OpenAI words its own 429s
// ("Rate limit reached on tokens per minute ... Please try again in 1.2s."). A cost that can
// never fit, or a wait over NoRetryAfter, says not to retry; a concurrency refusal says 1s.
func Explain(d Decision, cost Cost) Refusal {
	window := "per minute"
	if d.Daily {
		window = "per day"
	}
	r := Refusal{Type: "requests", Reason: "rate_limited_" + string(d.Dimension)}
	switch d.Dimension {
	case DimensionTokens:
		r.Type = "tokens"
		if d.Impossible {
			r.NoRetry = true
			r.Message = fmt.Sprintf("Request too large for the %s limit on tokens %s (%s): Limit %d, Requested %d. Reduce the prompt or max_tokens.",
				ScopeKind(d.Scope), window, d.Scope, d.Tokens.Limit, cost.Tokens)
			return r
		}
		r.Message = fmt.Sprintf("Rate limit reached on tokens %s for %s: Limit %d, Requested %d. Please try again in %s.",
			window, d.Scope, d.Tokens.Limit, cost.Tokens, HumanWait(d.Wait))
	case DimensionConcurrency:
		r.Message = fmt.Sprintf("Too many concurrent requests for %s. Please try again in 1s.", d.Scope)
		r.RetryAfter = time.Second
		return r
	default:
		if d.Impossible {
			r.NoRetry = true
			r.Message = fmt.Sprintf("The request limit %s for %s does not allow this request.", window, d.Scope)
			return r
		}
		r.Message = fmt.Sprintf("Rate limit reached on requests %s for %s: Limit %d. Please try again in %s.",
			window, d.Scope, d.Requests.Limit, HumanWait(d.Wait))
	}
	r.RetryAfter = d.Wait
	r.NoRetry = d.Wait > NoRetryAfter
	return r
}

// HumanWait renders a wait as OpenAI does ("1.2s", "6m0s", "120ms").
func HumanWait(d time.Duration) string {
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(100 * time.Millisecond).String()
}

// ScopeKind returns the kind of a scope id ("key:<id>", "model:<name>", "global"): "key",
// "model", "global" or "unknown", a low-cardinality metric label.
func ScopeKind(id string) string {
	switch {
	case id == "global":
		return "global"
	case strings.HasPrefix(id, "key:") && len(id) > 4:
		return "key"
	case strings.HasPrefix(id, "model:") && len(id) > 6:
		return "model"
	}
	return "unknown"
}
