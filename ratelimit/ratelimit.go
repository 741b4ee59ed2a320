// Package ratelimit holds the gateway's request and token limits.
//
// The caller reserves before a request goes upstream and settles on the
// actual usage once the response has ended:
//
//	res, dec, err := limiter.Reserve(ctx, scopes, ratelimit.Cost{Requests: 1, Tokens: prompt + maxTokens})
//	if err != nil { /* store down and OnStoreError is "deny": answer 503 */ }
//	if !dec.Allowed { /* answer 429 with dec.Wait, or without retry hint when dec.Impossible */ }
//	defer res.Settle(ctx, usage.TotalTokens)
//
// Every limit is a bucket of capacity = limit that refills continuously
// (requests or tokens per minute over 60s, per day over 24h). A bucket keeps
// its usage as an integer level measured in token-ticks: taking n tokens adds
// n×P (P is the window in ticks) and every tick drains limit. With a tick of
// one millisecond for per-minute buckets and one second for per-day buckets
// the arithmetic is exact in int64 and in the float64 numbers of Redis's Lua,
// so the memory and Redis stores agree to the unit. A changed limit (config
// reload) keeps the level, hence keeps what was used.
//
// Redis reservations are held on a lease that RedisStore.Run renews while
// the request runs; Run also retries what a Redis stall or outage left
// undone (settlements, and the release of reserves whose reply was lost), so
// slots and tokens come back once Redis answers again.
//
// Nothing here knows about HTTP or Caddy.
package ratelimit

import (
	"context"
	"errors"
	"time"
)

// MaxLimit is the largest accepted value for any limit. It keeps every bucket
// level below 2^53 so the Redis script computes exactly.
const MaxLimit int64 = 50_000_000_000

// Unlimited is what Available returns when no scope limits tokens.
const Unlimited int64 = 1<<63 - 1

// Dimension names what a refusal was about. The values match the OpenAI
// error types ("requests", "tokens") plus "concurrency".
type Dimension string

// The dimensions a Decision reports.
const (
	DimensionRequests    Dimension = "requests"
	DimensionTokens      Dimension = "tokens"
	DimensionConcurrency Dimension = "concurrency"
)

// Errors returned by the limiter.
var (
	// ErrStoreUnavailable wraps the store's error when OnStoreError is "deny"
	// (or when no fallback could answer). Callers map it to 503.
	ErrStoreUnavailable = errors.New("rate limit store unavailable")
	// ErrInvalidRequest is returned for negative costs, negative or too large
	// limits, an empty or duplicated scope id.
	ErrInvalidRequest = errors.New("invalid rate limit request")
)

// Limits are the rate limits of one scope: an API key, a model (summed over all keys) or the
// whole gateway. It is the one limits type of the gateway: the configuration embeds it (so the
// JSON fields are rpm, tpm, rpd, tpd and max_concurrent) and policy's keys and models carry it.
// Zero means unlimited for that dimension, which then keeps no usage (setting it again starts
// from a full bucket). Every limit is at most MaxLimit.
type Limits struct {
	// RPM is the number of requests a scope may make per minute. Default: 0 (unlimited).
	RPM int64 `json:"rpm,omitempty"`
	// TPM is the number of tokens (prompt plus completion) a scope may use per minute. A
	// request reserves its prompt tokens plus its output allowance before it goes upstream
	// and is settled on the actual usage once it ends. Default: 0 (unlimited).
	TPM int64 `json:"tpm,omitempty"`
	// RPD is the number of requests a scope may make per day (a rolling 24-hour bucket).
	// Default: 0 (unlimited).
	RPD int64 `json:"rpd,omitempty"`
	// TPD is the number of tokens a scope may use per day (a rolling 24-hour bucket), counted
	// like TPM. Default: 0 (unlimited).
	TPD int64 `json:"tpd,omitempty"`
	// MaxConcurrent is the number of requests a scope may have in flight at once (reserved
	// and not yet settled). Default: 0 (unlimited).
	MaxConcurrent int64 `json:"max_concurrent,omitempty"`
}

// IsZero reports whether no limit is set.
func (l Limits) IsZero() bool { return l == Limits{} }

// Validate reports limits that are negative or above MaxLimit.
func (l Limits) Validate() error {
	for _, v := range [...]int64{l.RPM, l.TPM, l.RPD, l.TPD, l.MaxConcurrent} {
		if v < 0 || v > MaxLimit {
			return errors.New("limit out of range [0, 50000000000]")
		}
	}
	return nil
}

// Scope is one owner of buckets: an API key, a model, the whole gateway.
type Scope struct {
	// ID names the buckets, e.g. "key:team-a", "model:llama", "global". It
	// must be unique within one call.
	ID string
	// Limits apply to this scope. They may change between calls (config
	// reload) without resetting what was used.
	Limits Limits
}

// Cost is what one request takes.
type Cost struct {
	// Requests is normally 1.
	Requests int64
	// Tokens is the prompt plus the maximum output reserved.
	Tokens int64
}

// Quota describes the most constraining bucket of one dimension, for the
// x-ratelimit-* headers.
type Quota struct {
	// Limit is the bucket's capacity; 0 when no scope limits the dimension.
	Limit int64
	// Remaining is what is left after this reservation (never negative).
	Remaining int64
	// Reset is the time until the bucket is full again.
	Reset time.Duration
}

// Decision is the answer to a Reserve. The quotas are filled whether the
// request was allowed or not.
type Decision struct {
	// Allowed is true when every bucket had room and all were taken.
	Allowed bool
	// Impossible is true when the cost exceeds a bucket's capacity: waiting
	// will never help, so the caller answers without a retry hint.
	Impossible bool
	// Dimension says what refused: requests, tokens or concurrency.
	Dimension Dimension
	// Scope is the id of the refusing scope.
	Scope string
	// Daily is true when the refusing bucket is a per-day one.
	Daily bool
	// Wait is the exact time until every refusing bucket has room for this
	// cost. It is zero for Impossible and for concurrency refusals.
	Wait time.Duration
	// Requests describes the most constraining request bucket.
	Requests Quota
	// Tokens describes the most constraining token bucket.
	Tokens Quota
	// Fallback is true when the fallback store answered because the primary
	// store failed.
	Fallback bool
}

// Request is what a Store reserves or settles.
type Request struct {
	// ID identifies the reservation across instances. The Limiter sets it
	// when a scope has MaxConcurrent (it names the concurrency slot) and,
	// for the Redis store, always (it names the reservation's record).
	ID string
	// Scopes are checked and taken together, all or nothing.
	Scopes []Scope
	// Cost is taken from every bucket of every scope.
	Cost Cost
}

// Store keeps buckets. Implementations must make Reserve atomic across all
// scopes and dimensions and must be safe for concurrent use.
type Store interface {
	// Reserve takes req.Cost from every bucket of every scope and a
	// concurrency slot where MaxConcurrent is set, or takes nothing.
	Reserve(ctx context.Context, req Request) (Decision, error)
	// Settle adjusts the token buckets of a granted reservation by
	// actual-req.Cost.Tokens (a refund when negative, capped at capacity) and
	// releases its concurrency slots. The Limiter calls it once per
	// reservation.
	Settle(ctx context.Context, req Request, actualTokens int64) error
	// Peek reports the quotas of the scopes, and whether cost would be admitted now (Allowed,
	// Dimension, Wait as Reserve reports them), without taking anything.
	Peek(ctx context.Context, scopes []Scope, cost Cost) (Decision, error)
}
