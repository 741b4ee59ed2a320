package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/ratelimit"
)

// RateLimit configures the gateway-wide limits and where limiter state lives.
type RateLimit struct {
	// Limits here apply to all requests together (the global scope).
	ratelimit.Limits
	// Store is where buckets live: "memory" (default; kept across config reloads) or "redis"
	// (shared by every gateway instance that uses the same Redis).
	Store string `json:"store,omitempty"`
	// RedisURL is the Redis URL for store redis, e.g. redis://:password@redis:6379/0. May be a
	// placeholder such as {env.REDIS_URL}.
	RedisURL string `json:"redis_url,omitempty"`
	// RedisPrefix namespaces the limiter's Redis keys. Default: aigw:rl:.
	RedisPrefix string `json:"redis_prefix,omitempty"`
	// OnStoreError decides what happens while Redis is unreachable: "allow" (default) answers
	// from a per-instance memory limiter and logs the error; "deny" refuses with 503.
	OnStoreError string `json:"on_store_error,omitempty"`
	// FallbackFraction is the share of every limit (key, model and global) that each instance's
	// memory limiter admits while Redis is unreachable under on_store_error allow, in (0, 1]:
	// each limit becomes max(1, floor(limit x fraction)). With n instances, 1/n keeps an outage
	// near the shared limits. Only with store redis. Default: 1 (each instance admits every limit
	// in full).
	FallbackFraction float64 `json:"fallback_fraction,omitempty"`
	// CapMaxTokensToBudget, when positive, lowers a request's max_tokens to the token budget
	// left instead of refusing it with 429, provided at least this many output tokens remain.
	CapMaxTokensToBudget int `json:"cap_max_tokens_to_budget,omitempty"`
	// DefaultMaxTokens is the output allowance reserved for a request that sets no max_tokens.
	// Default: the model's max_output_tokens, else 1024.
	DefaultMaxTokens int `json:"default_max_tokens,omitempty"`
}

// storePool holds limiter stores across config reloads, so a reload never resets anyone's
// limits. Keyed by "memory" or "redis|<url>|<prefix>".
var storePool = caddy.NewUsagePool()

type storeHandle struct {
	store    ratelimit.Store
	memory   *ratelimit.MemoryStore // the memory store, or the fallback of a Redis store
	redis    *ratelimit.RedisStore  // nil for the memory store
	client   *redis.Client
	stopOnce context.CancelFunc
}

// storeFlushTimeout bounds how long a Redis store being closed waits for the calls queued in it.
const storeFlushTimeout = 2 * time.Second

// Destruct closes the Redis client and stops the sweeper (and the Redis lease renewer) when the
// last config using the store is gone. The settlements queued without their answers waiting
// (Reservation.SettleNoWait) leave first, so that a store replaced by a reload or stopped keeps
// no slot or token of a request that was answered.
func (h *storeHandle) Destruct() error {
	h.stopOnce()
	if h.redis != nil {
		ctx, cancel := context.WithTimeout(context.Background(), storeFlushTimeout)
		if err := h.redis.Sync(ctx); err != nil {
			caddy.Log().Warn("rate limit store closed before its queued settlements were answered", zap.Error(err))
		}
		cancel()
	}
	if h.client != nil {
		return h.client.Close()
	}
	return nil
}

const defaultOutputAllowance = 1024

// provisionLimiter loads (or creates) the store shared across reloads and builds the limiter.
func (g *Gateway) provisionLimiter(repl *caddy.Replacer) error {
	rl := g.RateLimit
	if rl.Store == "" {
		rl.Store = "memory"
	}
	if rl.OnStoreError == "" {
		rl.OnStoreError = ratelimit.OnStoreErrorAllow
	}
	var poolKey string
	var redisOpts *redis.Options
	switch rl.Store {
	case "memory":
		poolKey = "memory"
	case "redis":
		u, err := repl.ReplaceOrErr(rl.RedisURL, true, true)
		if err != nil {
			return fmt.Errorf("rate_limit: resolving redis url: %w", err)
		}
		redisOpts, err = redis.ParseURL(u)
		if err != nil {
			return fmt.Errorf("rate_limit: parsing redis url: %w", errors.New(redactURLError(err)))
		}
		redisOpts.MaxRetries = -1 // a lost reply must not take a reservation twice
		redisOpts.DialTimeout = 500 * time.Millisecond
		redisOpts.ReadTimeout = 500 * time.Millisecond
		redisOpts.WriteTimeout = 500 * time.Millisecond
		poolKey = "redis|" + u + "|" + rl.RedisPrefix
	default:
		return fmt.Errorf("rate_limit: store must be memory or redis, got %q", rl.Store)
	}
	if rl.FallbackFraction != 0 && rl.Store != "redis" {
		return fmt.Errorf("rate_limit: fallback_fraction applies to store redis only")
	}
	val, _, err := storePool.LoadOrNew(poolKey, func() (caddy.Destructor, error) {
		mem := ratelimit.NewMemoryStore(ratelimit.MemoryOptions{})
		ctx, cancel := context.WithCancel(context.Background())
		h := &storeHandle{store: mem, memory: mem, stopOnce: cancel}
		if redisOpts != nil {
			h.client = redis.NewClient(redisOpts) // connects lazily
			rs := ratelimit.NewRedisStore(h.client, ratelimit.RedisOptions{Prefix: rl.RedisPrefix})
			h.store, h.redis = rs, rs
			go renewLeases(ctx, rs)
		}
		go sweep(ctx, mem)
		return h, nil
	})
	if err != nil {
		return err
	}
	g.storeKey = poolKey
	h := val.(*storeHandle)
	opts := ratelimit.Options{
		OnStoreError:     rl.OnStoreError,
		FallbackFraction: rl.FallbackFraction,
		ErrorHook: func(err error) {
			g.logger.Error("rate limit store error", zap.String("store", rl.Store), zap.Error(err))
			g.metrics.storeErrors.Inc()
		},
	}
	if h.client != nil {
		opts.Fallback = h.memory
		opts.RetryPrimaryAfter = time.Second
	}
	if err := opts.Validate(); err != nil {
		return fmt.Errorf("rate_limit: %w", err)
	}
	g.limiter = ratelimit.NewLimiter(h.store, opts)
	if g.limiter.Remote() {
		g.quotas = ratelimit.NewQuotaMemo()
	}
	return nil
}

// redactURLError keeps a Redis URL's password out of an error message.
func redactURLError(err error) string {
	return "invalid URL (" + strconv.Quote(errors.Unwrap(err).Error()) + ")"
}

// sweep evicts idle buckets once a minute until the store is destroyed.
func sweep(ctx context.Context, mem *ratelimit.MemoryStore) {
	defer logPanic(caddy.Log(), "rate limit sweeper panicked")
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			mem.Sweep(now)
		}
	}
}

// renewLeases runs the Redis store's renewer (leases of the requests in flight, retried
// settlements and releases) until the store is destroyed.
func renewLeases(ctx context.Context, rs *ratelimit.RedisStore) {
	defer func() {
		if v := recover(); v != nil {
			caddy.Log().Error("rate limit lease renewer panicked", zap.Any("panic", v))
		}
	}()
	rs.Run(ctx, func(err error) { caddy.Log().Error("rate limit lease renewer", zap.Error(err)) })
}

// scopes returns the scopes a request is limited by: its key, its model and the gateway.
func (g *Gateway) scopes(ex *exchange, buf []ratelimit.Scope) []ratelimit.Scope {
	s := buf[:0]
	if ex.key != nil && !ex.key.Limits.IsZero() {
		s = append(s, ratelimit.Scope{ID: ex.key.ScopeID(), Limits: ex.key.Limits})
	}
	if m := ex.route.model; !m.Limits.IsZero() {
		l := m.Limits
		l.MaxConcurrent = 0 // a model's concurrency is its admission gate (queue, then 503)
		if !l.IsZero() {
			s = append(s, ratelimit.Scope{ID: ex.route.scopeID, Limits: l})
		}
	}
	if !g.globalLimits.IsZero() {
		s = append(s, ratelimit.Scope{ID: "global", Limits: g.globalLimits})
	}
	return s
}

// checkLimitsFirst refuses, before the prompt is counted exactly, a request that its limits
// would refuse whatever the count says: its requests or concurrency are used up, or the tokens
// left cannot hold even promptAtLeast (a lower bound of the prompt) plus the output it
// reserves. It looks without taking anything, and refuses as Reserve would. Counting is the
// expensive stage; a refusal must not pay for it. The decision tells the tokens left, which
// bound the count; the reservation after the count decides for good.
func (g *Gateway) checkLimitsFirst(ctx context.Context, ex *exchange, promptAtLeast int) (ratelimit.Decision, *wire.Error) {
	prompt := promptAtLeast
	scopes := g.scopes(ex, ex.scopeBuf[:])
	if len(scopes) == 0 {
		return ratelimit.Decision{Allowed: true}, nil
	}
	out := ex.reservedOutput
	if min := g.RateLimit.CapMaxTokensToBudget; min > 0 && ex.info.MaxTokens > 0 {
		out = min * ex.info.Generations() // capping may still make it fit
	}
	cost := ratelimit.Cost{Requests: 1, Tokens: int64(prompt + out)}
	dec, err := g.limiter.Check(ctx, scopes, cost)
	if err != nil || dec.Allowed {
		return dec, nil // a store error is for the reservation to handle
	}
	ex.decision = dec
	g.metrics.rateLimited.WithLabelValues(ratelimit.ScopeKind(dec.Scope), string(dec.Dimension)).Inc()
	return dec, rateLimitError(dec, cost)
}

// admitLimits reserves the request's cost on every scope at once.
func (g *Gateway) admitLimits(ctx context.Context, ex *exchange) *wire.Error {
	scopes := g.scopes(ex, ex.scopeBuf[:])
	if len(scopes) == 0 {
		return nil
	}
	if min := g.RateLimit.CapMaxTokensToBudget; min > 0 && ex.info.MaxTokens > 0 && g.tokenLimited(ex) {
		g.capToBudget(ctx, ex, scopes, min)
	}
	cost := ratelimit.Cost{Requests: 1, Tokens: int64(ex.promptTokens + ex.reservedOutput)}
	res, dec, err := g.limiter.Reserve(ctx, scopes, cost)
	ex.decision = dec
	g.quotas.Put(ex.keyID(), ex.route.model.Name, dec.Tokens)
	if err != nil {
		g.logger.Error("rate limit reservation failed", zap.String("request_id", ex.requestID), zap.Error(err))
		return &wire.Error{Status: http.StatusServiceUnavailable, Type: wire.TypeServer, Code: "rate_limit_unavailable",
			Message: "The gateway cannot check rate limits right now. Please try again shortly.", RetryAfter: time.Second}
	}
	if !dec.Allowed {
		if ex.promptBound && dec.Dimension == ratelimit.DimensionTokens {
			return errRecount // the exact count may fit: admitPrompt tries again with it
		}
		g.metrics.rateLimited.WithLabelValues(ratelimit.ScopeKind(dec.Scope), string(dec.Dimension)).Inc()
		return rateLimitError(dec, cost)
	}
	ex.reservation = res
	return nil
}

// errRecount is admitLimits' answer when the tokens refuse a prompt taken at its byte bound;
// never sent.
var errRecount = &wire.Error{Status: http.StatusTooManyRequests, Code: "recount"}

// capToBudget lowers max_tokens to the token budget left when the request would not fit it but
// at least min output tokens would.
func (g *Gateway) capToBudget(ctx context.Context, ex *exchange, scopes []ratelimit.Scope, min int) {
	avail, err := g.limiter.Available(ctx, scopes)
	if err != nil || avail >= int64(ex.promptTokens+ex.reservedOutput) {
		return
	}
	gens := int64(ex.info.Generations())
	room := (avail - int64(ex.promptTokens)) / gens // each generated sequence gets the same room
	if room < int64(min) || room >= int64(ex.info.MaxTokens) {
		return
	}
	out, err := policy.SetMaxTokens(ex.endpoint, ex.body.bytes(), &ex.info, int(room))
	if err != nil {
		return
	}
	ex.body.replace(out)
	ex.reservedOutput = int(room * gens)
}

// rateLimitError is the 429 of a refused reservation, worded by ratelimit.Explain.
func rateLimitError(d ratelimit.Decision, cost ratelimit.Cost) *wire.Error {
	r := ratelimit.Explain(d, cost)
	return &wire.Error{Status: http.StatusTooManyRequests, Type: r.Type, Code: "rate_limit_exceeded", Reason: r.Reason,
		Message: r.Message, RetryAfter: r.RetryAfter, NoRetry: r.NoRetry}
}

// setRateLimitHeaders writes the x-ratelimit-* headers (OpenAI names) or the
// anthropic-ratelimit-* headers for the most constraining scope of each dimension.
func setRateLimitHeaders(h http.Header, s wire.Surface, d ratelimit.Decision, now time.Time) {
	names := &rateLimitHeaderNames[0]
	if s == wire.Anthropic {
		names = &rateLimitHeaderNames[1]
	}
	// The values are appended to one buffer and sliced from one string, and the header slices
	// share one array: a few allocations in all instead of three per header.
	var buf [160]byte
	b := buf[:0]
	var ends [6]int // where value i ends in b; -1 for a quota without a limit
	for i, q := range [2]ratelimit.Quota{d.Requests, d.Tokens} {
		if q.Limit == 0 {
			ends[3*i], ends[3*i+1], ends[3*i+2] = -1, -1, -1
			continue
		}
		b = strconv.AppendInt(b, q.Limit, 10)
		ends[3*i] = len(b)
		b = strconv.AppendInt(b, q.Remaining, 10)
		ends[3*i+1] = len(b)
		if s == wire.Anthropic {
			b = now.Add(q.Reset).UTC().AppendFormat(b, time.RFC3339)
		} else {
			b = appendDuration(b, q.Reset.Round(time.Millisecond))
		}
		ends[3*i+2] = len(b)
	}
	if len(b) == 0 {
		return
	}
	str := string(b)
	vals := make([]string, 6)
	prev := 0
	for i, end := range ends {
		if end < 0 {
			continue
		}
		vals[i] = str[prev:end]
		h[names[i]] = vals[i : i+1 : i+1]
		prev = end
	}
}

// rateLimitHeaderNames are the header names of setRateLimitHeaders, in canonical form, for
// requests then tokens: limit, remaining, reset; OpenAI's then Anthropic's.
var rateLimitHeaderNames = [2][6]string{
	{"X-Ratelimit-Limit-Requests", "X-Ratelimit-Remaining-Requests", "X-Ratelimit-Reset-Requests",
		"X-Ratelimit-Limit-Tokens", "X-Ratelimit-Remaining-Tokens", "X-Ratelimit-Reset-Tokens"},
	{"Anthropic-Ratelimit-Requests-Limit", "Anthropic-Ratelimit-Requests-Remaining", "Anthropic-Ratelimit-Requests-Reset",
		"Anthropic-Ratelimit-Tokens-Limit", "Anthropic-Ratelimit-Tokens-Remaining", "Anthropic-Ratelimit-Tokens-Reset"},
}

// settle charges the reservation with what the response actually used. The answer does not wait
// for a Redis store's reply: the settlement leaves in the store's next pipeline, ahead of every
// later call of this instance (ratelimit.Reservation.SettleNoWait).
func (g *Gateway) settle(ex *exchange, actual int64) {
	if ex.reservation == nil {
		return
	}
	if err := ex.reservation.SettleNoWait(actual); err != nil {
		g.logger.Error("settling rate limit reservation", zap.String("request_id", ex.requestID), zap.Error(err))
	}
}

// appendDuration appends d as time.Duration.String formats it ("1h2m0.5s", "12ms", "0s"),
// without the string String allocates.
func appendDuration(b []byte, d time.Duration) []byte {
	if d < 0 {
		b = append(b, '-')
		if d == math.MinInt64 {
			return append(b, "2562047h47m16.854775808s"...)
		}
		d = -d
	}
	u := uint64(d)
	if u < uint64(time.Second) {
		switch {
		case u == 0:
			return append(b, "0s"...)
		case u < uint64(time.Microsecond):
			return append(strconv.AppendUint(b, u, 10), "ns"...)
		case u < uint64(time.Millisecond):
			return append(appendFrac(b, u, 3), "µs"...)
		default:
			return append(appendFrac(b, u, 6), "ms"...)
		}
	}
	if h := u / uint64(time.Hour); h > 0 {
		b = append(strconv.AppendUint(b, h, 10), 'h')
	}
	if u >= uint64(time.Minute) {
		b = append(strconv.AppendUint(b, u/uint64(time.Minute)%60, 10), 'm')
	}
	return append(appendFrac(b, u%uint64(time.Minute), 9), 's')
}

// appendFrac appends v / 10^prec with the fraction's trailing zeros (and a bare point) dropped.
func appendFrac(b []byte, v uint64, prec int) []byte {
	pow := uint64(1)
	for range prec {
		pow *= 10
	}
	b = strconv.AppendUint(b, v/pow, 10)
	frac := v % pow
	if frac == 0 {
		return b
	}
	for prec > 0 && frac%10 == 0 {
		frac /= 10
		prec--
	}
	b = append(b, '.')
	var buf [20]byte
	n := len(strconv.AppendUint(buf[:0], frac, 10))
	for range prec - n {
		b = append(b, '0')
	}
	return append(b, buf[:n]...)
}
