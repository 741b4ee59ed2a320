package caddymodule

import (
	"context"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/caddyai/gateway/ratelimit"
)

// AuthGuard limits failed key checks per client IP, so keys cannot be guessed by brute force.
type AuthGuard struct {
	// MaxFailures is how many failed authentications a client IP may make per minute; past it,
	// the IP's requests get 429 without their key being checked until the bucket refills.
	// Default: 30. -1 turns the guard off.
	MaxFailures int64 `json:"max_failures,omitempty"`
}

// guardPool holds the failure buckets across reloads.
var guardPool = caddy.NewUsagePool()

type guardHandle struct {
	store *ratelimit.MemoryStore
	stop  context.CancelFunc
}

// Destruct stops the sweeper when no config uses the guard any more.
func (h guardHandle) Destruct() error {
	h.stop()
	return nil
}

const defaultMaxAuthFailures = 30

func (g *Gateway) provisionAuthGuard() error {
	if g.AuthFailures == nil {
		g.AuthFailures = &AuthGuard{}
	}
	if g.AuthFailures.MaxFailures == 0 {
		g.AuthFailures.MaxFailures = defaultMaxAuthFailures
	}
	if g.AuthFailures.MaxFailures < 0 {
		return nil
	}
	val, _, err := guardPool.LoadOrNew("auth", func() (caddy.Destructor, error) {
		mem := ratelimit.NewMemoryStore(ratelimit.MemoryOptions{IdleTTL: 2 * time.Minute})
		ctx, cancel := context.WithCancel(context.Background())
		go sweep(ctx, mem) // buckets of addresses that stopped failing are evicted
		return guardHandle{store: mem, stop: cancel}, nil
	})
	if err != nil {
		return err
	}
	g.guard = val.(guardHandle).store
	g.guardHeld = true
	return nil
}

func (g *Gateway) guardScope(r *http.Request) []ratelimit.Scope {
	ip, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	if ip == "" {
		ip = r.RemoteAddr
	}
	return []ratelimit.Scope{{ID: "authfail:" + ip, Limits: ratelimit.Limits{RPM: g.AuthFailures.MaxFailures}}}
}

// guardBlocked reports whether the client IP has used up its failed authentications.
func (g *Gateway) guardBlocked(r *http.Request) *wire.Error {
	if g.guard == nil {
		return nil
	}
	d, err := g.guard.Peek(context.Background(), g.guardScope(r), ratelimit.Cost{})
	if err != nil || d.Requests.Remaining > 0 {
		return nil
	}
	return tooManyFailures(d.Requests)
}

// guardFailed charges a failed authentication to the client IP.
func (g *Gateway) guardFailed(r *http.Request, ex *exchange) {
	if g.guard == nil {
		return
	}
	scopes := g.guardScope(r)
	d, err := g.guard.Reserve(context.Background(), ratelimit.Request{Scopes: scopes, Cost: ratelimit.Cost{Requests: 1}})
	if err == nil && d.Requests.Remaining == 0 {
		g.logger.Warn("client IP reached its limit of failed authentications", zap.String("scope", scopes[0].ID),
			zap.String("request_id", ex.requestID))
	}
}

// authFailureWindow is the window of max_failures, whose bucket is an rpm bucket.
const authFailureWindow = time.Minute

// tooManyFailures is the refusal of an address whose failure bucket q is used up. The bucket
// drains limit failures per window, so one more failure fits once it has drained to limit-1:
// Reset (the time until it is empty) minus the time the other limit-1 failures take to drain.
func tooManyFailures(q ratelimit.Quota) *wire.Error {
	wait := time.Second
	if q.Limit > 0 {
		perFailure := authFailureWindow / time.Duration(q.Limit)
		wait = max(q.Reset-authFailureWindow+perFailure, time.Second)
	}
	return &wire.Error{Status: http.StatusTooManyRequests, Type: wire.TypeRequests, Code: "too_many_auth_failures", Reason: "auth_blocked",
		RetryAfter: wait, Message: "Too many failed authentication attempts from this address. Please try again later."}
}
