package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
	"sync/atomic"
	"time"
)

// What a Limiter does when its store fails.
const (
	// OnStoreErrorAllow answers from the fallback store (limits then hold per
	// instance) or, without a fallback, allows the request.
	OnStoreErrorAllow = "allow"
	// OnStoreErrorDeny refuses with an error wrapping ErrStoreUnavailable.
	OnStoreErrorDeny = "deny"
)

// Options configure a Limiter.
type Options struct {
	// Fallback answers when the primary store fails and OnStoreError is
	// "allow". Normally a MemoryStore. Nil allows requests unlimited while
	// the primary is down.
	Fallback Store
	// OnStoreError is "allow" or "deny". Default: "allow".
	OnStoreError string
	// FallbackFraction is the share of every limit the Fallback admits
	// while the primary fails, in (0, 1]: each limit becomes
	// max(1, floor(limit x fraction)) on this instance. With n instances
	// sharing a primary, 1/n keeps an outage at about the shared limit.
	// Default: 0, meaning 1 (every instance admits the full limit).
	FallbackFraction float64
	// ErrorHook, when set, is called with every store error. It must be safe
	// for concurrent use and fast.
	ErrorHook func(error)
	// RetryPrimaryAfter skips the primary for this long after it failed, so
	// that a dead Redis does not cost a timeout on every request. Default: 0
	// (try the primary on every call).
	RetryPrimaryAfter time.Duration
	// Now returns the current time, used only for RetryPrimaryAfter.
	// Default: time.Now.
	Now func() time.Time
}

// Validate reports an unknown OnStoreError value or negative durations.
func (o Options) Validate() error {
	switch o.OnStoreError {
	case "", OnStoreErrorAllow, OnStoreErrorDeny:
	default:
		return fmt.Errorf("validating options: unknown on_store_error %q (want allow or deny)", o.OnStoreError)
	}
	if o.RetryPrimaryAfter < 0 {
		return fmt.Errorf("validating options: negative retry_primary_after %s", o.RetryPrimaryAfter)
	}
	switch f := o.FallbackFraction; {
	case f == 0:
	case !(f > 0 && f <= 1): // also NaN
		return fmt.Errorf("validating options: fallback_fraction %v out of range (0, 1]", f)
	case o.OnStoreError == OnStoreErrorDeny:
		return fmt.Errorf("validating options: fallback_fraction applies to on_store_error allow, not deny")
	case o.Fallback == nil:
		return fmt.Errorf("validating options: fallback_fraction needs a fallback store")
	}
	return nil
}

// Stats are the limiter's counters.
type Stats struct {
	// StoreErrors counts errors returned by the primary store.
	StoreErrors uint64
	// FallbackDecisions counts Reserve and Available calls answered by the
	// fallback store.
	FallbackDecisions uint64
	// FailOpen counts requests allowed without any store.
	FailOpen uint64
	// Denied counts calls refused because the store failed.
	Denied uint64
}

// Limiter reserves and settles against a Store, falling back when it fails.
// It is safe for concurrent use and holds no bucket state itself.
type Limiter struct {
	primary   Store
	fallback  Store
	fraction  float64 // of every limit on the fallback; 1 = all
	deny      bool
	ids       bool // name every reservation, not only those with a concurrency slot
	hook      func(error)
	retry     int64
	now       func() time.Time
	idBase    string
	idSeq     atomic.Uint64
	downUntil atomic.Int64

	storeErrors, fallbacks, failOpen, denied atomic.Uint64
}

// NewLimiter returns a limiter over store. An OnStoreError other than "deny"
// means "allow"; check it first with Options.Validate.
func NewLimiter(store Store, opts Options) *Limiter {
	l := &Limiter{
		primary:  store,
		fallback: opts.Fallback,
		fraction: opts.FallbackFraction,
		deny:     opts.OnStoreError == OnStoreErrorDeny,
		hook:     opts.ErrorHook,
		retry:    int64(opts.RetryPrimaryAfter),
		now:      opts.Now,
	}
	if l.now == nil {
		l.now = time.Now
	}
	if l.fraction <= 0 || l.fraction > 1 || math.IsNaN(l.fraction) {
		l.fraction = 1
	}
	_, l.ids = store.(interface{ wantsReservationIDs() })
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails on supported platforms
	l.idBase = hex.EncodeToString(b[:]) + "-"
	return l
}

// Stats returns a snapshot of the counters.
func (l *Limiter) Stats() Stats {
	return Stats{
		StoreErrors:       l.storeErrors.Load(),
		FallbackDecisions: l.fallbacks.Load(),
		FailOpen:          l.failOpen.Load(),
		Denied:            l.denied.Load(),
	}
}

func validate(scopes []Scope, cost Cost) error {
	if cost.Requests < 0 || cost.Tokens < 0 {
		return fmt.Errorf("checking cost: %w: negative cost", ErrInvalidRequest)
	}
	for i := range scopes {
		if scopes[i].ID == "" {
			return fmt.Errorf("checking scopes: %w: empty scope id", ErrInvalidRequest)
		}
		if err := scopes[i].Limits.Validate(); err != nil {
			return fmt.Errorf("checking scope %q: %w: %w", scopes[i].ID, ErrInvalidRequest, err)
		}
		for j := range i {
			if scopes[j].ID == scopes[i].ID {
				return fmt.Errorf("checking scopes: %w: duplicate scope id %q", ErrInvalidRequest, scopes[i].ID)
			}
		}
	}
	return nil
}

// storeFailed counts and reports err and starts the RetryPrimaryAfter pause.
func (l *Limiter) storeFailed(err error) {
	l.storeErrors.Add(1)
	if l.retry > 0 {
		l.downUntil.Store(l.now().UnixNano() + l.retry)
	}
	if l.hook != nil {
		l.hook(err)
	}
}

// primaryDown reports whether the primary is being skipped after a failure.
func (l *Limiter) primaryDown() bool {
	if l.retry <= 0 {
		return false
	}
	until := l.downUntil.Load()
	return until != 0 && l.now().UnixNano() < until
}

// Reserve takes cost from every bucket of every scope, all or nothing. When
// the decision refuses, the reservation is nil. The error is non-nil only for
// an invalid request or a failed store under "deny" (or failed fallback).
// The caller must not modify scopes during the call; the reservation keeps
// its own copy.
func (l *Limiter) Reserve(ctx context.Context, scopes []Scope, cost Cost) (*Reservation, Decision, error) {
	if err := validate(scopes, cost); err != nil {
		return nil, Decision{}, fmt.Errorf("reserving: %w", err)
	}
	r := &Reservation{l: l}
	if len(scopes) <= len(r.scopeBuf) {
		r.req.Scopes = append(r.scopeBuf[:0], scopes...)
	} else {
		r.req.Scopes = append([]Scope(nil), scopes...)
	}
	r.req.Cost = cost
	for i := range scopes {
		if l.ids || scopes[i].Limits.MaxConcurrent > 0 {
			var buf [48]byte
			r.req.ID = string(strconv.AppendUint(append(buf[:0], l.idBase...), l.idSeq.Add(1), 36))
			break
		}
	}
	var (
		d   Decision
		err error
	)
	if !l.primaryDown() {
		d, err = l.primary.Reserve(ctx, r.req)
		if err == nil {
			if !d.Allowed {
				return nil, d, nil
			}
			r.store = l.primary
			return r, d, nil
		}
		l.storeFailed(err)
	} else {
		err = ErrStoreUnavailable
	}
	if l.deny {
		l.denied.Add(1)
		return nil, Decision{}, fmt.Errorf("reserving: %w: %w", ErrStoreUnavailable, err)
	}
	if l.fallback == nil {
		l.failOpen.Add(1)
		return r, Decision{Allowed: true, Fallback: true}, nil
	}
	l.fallbacks.Add(1)
	// The reservation keeps the scaled limits: its settlement refills the
	// fallback's buckets with them.
	l.scale(r.req.Scopes)
	d, ferr := l.fallback.Reserve(ctx, r.req)
	if ferr != nil {
		l.denied.Add(1)
		return nil, Decision{}, fmt.Errorf("reserving from fallback: %w: %w", ErrStoreUnavailable, ferr)
	}
	d.Fallback = true
	if !d.Allowed {
		return nil, d, nil
	}
	r.store = l.fallback
	return r, d, nil
}

// Remote reports whether the limiter's store is across the network (Redis): every Check,
// Reserve and Settle is a round trip. A nil Limiter is not.
func (l *Limiter) Remote() bool {
	if l == nil {
		return false
	}
	_, ok := l.primary.(*RedisStore)
	return ok
}

// Check reports whether a request of cost would be admitted on every scope now, without
// taking anything: a cheap look before expensive work (counting a prompt exactly) that a
// refusal would waste. The later Reserve decides; Check only refuses early. Store errors follow
// OnStoreError like Reserve (allow: an answer from the fallback, or allowed).
func (l *Limiter) Check(ctx context.Context, scopes []Scope, cost Cost) (Decision, error) {
	if err := validate(scopes, cost); err != nil {
		return Decision{}, fmt.Errorf("checking limits: %w", err)
	}
	if len(scopes) == 0 {
		return Decision{Allowed: true}, nil
	}
	var (
		d   Decision
		err error
	)
	if !l.primaryDown() {
		if d, err = l.primary.Peek(ctx, scopes, cost); err == nil {
			return d, nil
		}
		l.storeFailed(err)
	} else {
		err = ErrStoreUnavailable
	}
	switch {
	case l.deny:
		return Decision{}, fmt.Errorf("checking limits: %w: %w", ErrStoreUnavailable, err)
	case l.fallback == nil:
		return Decision{Allowed: true}, nil
	}
	var buf [3]Scope
	scaled := append(buf[:0], scopes...)
	l.scale(scaled)
	if d, err = l.fallback.Peek(ctx, scaled, cost); err != nil {
		return Decision{}, fmt.Errorf("checking limits in the fallback: %w: %w", ErrStoreUnavailable, err)
	}
	return d, nil
}

// Available returns the least remaining token room across scopes (Unlimited
// when none limits tokens), so the caller can lower max_tokens before
// reserving. Store errors follow OnStoreError like Reserve.
func (l *Limiter) Available(ctx context.Context, scopes []Scope) (int64, error) {
	if err := validate(scopes, Cost{}); err != nil {
		return 0, fmt.Errorf("checking available tokens: %w", err)
	}
	var (
		d   Decision
		err error
	)
	if !l.primaryDown() {
		if d, err = l.primary.Peek(ctx, scopes, Cost{}); err == nil {
			return availableOf(d), nil
		}
		l.storeFailed(err)
	} else {
		err = ErrStoreUnavailable
	}
	switch {
	case l.deny:
		l.denied.Add(1)
		return 0, fmt.Errorf("checking available tokens: %w: %w", ErrStoreUnavailable, err)
	case l.fallback == nil:
		l.failOpen.Add(1)
		return Unlimited, nil
	}
	l.fallbacks.Add(1)
	var buf [3]Scope
	scaled := append(buf[:0], scopes...)
	l.scale(scaled)
	d, err = l.fallback.Peek(ctx, scaled, Cost{})
	if err != nil {
		return 0, fmt.Errorf("checking available tokens from fallback: %w: %w", ErrStoreUnavailable, err)
	}
	return availableOf(d), nil
}

// scale lowers every limit of scopes to the fallback's fraction of it, in
// place.
func (l *Limiter) scale(scopes []Scope) {
	if l.fraction >= 1 {
		return
	}
	f := func(v int64) int64 {
		if v <= 0 {
			return v
		}
		return max(1, int64(float64(v)*l.fraction))
	}
	for i := range scopes {
		lim := &scopes[i].Limits
		lim.RPM, lim.TPM, lim.RPD, lim.TPD, lim.MaxConcurrent = f(lim.RPM), f(lim.TPM), f(lim.RPD), f(lim.TPD), f(lim.MaxConcurrent)
	}
}

func availableOf(d Decision) int64 {
	if d.Tokens.Limit == 0 {
		return Unlimited
	}
	return d.Tokens.Remaining
}

// Reservation is a granted Reserve. Settle or Release it exactly once when
// the response has ended; further calls do nothing. Its methods are safe from
// any goroutine and on a nil *Reservation.
type Reservation struct {
	l        *Limiter
	store    Store // nil when allowed without a store
	req      Request
	scopeBuf [3]Scope // key, model, global without a second allocation
	done     atomic.Bool
}

// Tokens returns the tokens reserved.
func (r *Reservation) Tokens() int64 {
	if r == nil {
		return 0
	}
	return r.req.Cost.Tokens
}

// Settle refunds the reserved tokens not used (or charges the excess, which
// may put buckets in debt) and releases the concurrency slots. It ignores
// ctx's cancellation (a client that went away must still release its slot)
// but keeps its values. A store error is reported to the ErrorHook, counted
// and returned; the Redis store then retries the settlement in the
// background (RedisStore.Run) until it applies or its lease has run out.
func (r *Reservation) Settle(ctx context.Context, actualTokens int64) error {
	if r == nil || !r.done.CompareAndSwap(false, true) || r.store == nil {
		return nil
	}
	if actualTokens < 0 {
		actualTokens = 0
	}
	if ctx.Done() != nil {
		ctx = context.WithoutCancel(ctx) // a settlement outlives its request; one that cannot end needs no wrapper
	}
	if err := r.store.Settle(ctx, r.req, actualTokens); err != nil {
		if r.store == r.l.primary {
			r.l.storeFailed(err)
		}
		return fmt.Errorf("settling reservation: %w", err)
	}
	return nil
}

// SettleNoWait settles as Settle does, but does not wait for a store that answers over the
// network (RedisStore.SettleNoWait) when the store can queue the settlement in order: for a
// reservation whose request is answered, where nothing waits on the settlement but the
// instance's next calls, which the store's queue puts behind it. Such a settlement's failure is
// retried and reported by the store's Run, not returned; a store that cannot queue it is
// settled with Settle, whose error is returned.
func (r *Reservation) SettleNoWait(actualTokens int64) error {
	q, ok := r.noWaitStore()
	if !ok {
		return r.Settle(context.Background(), actualTokens)
	}
	if !r.done.CompareAndSwap(false, true) {
		return nil
	}
	q.SettleNoWait(r.req, max(actualTokens, 0))
	return nil
}

// noWaitSettler is a Store that can queue a settlement without its caller waiting for it.
type noWaitSettler interface {
	SettleNoWait(req Request, actualTokens int64)
}

// noWaitStore returns r's store as a noWaitSettler when it is one.
func (r *Reservation) noWaitStore() (noWaitSettler, bool) {
	if r == nil || r.store == nil {
		return nil, false
	}
	q, ok := r.store.(noWaitSettler)
	return q, ok
}

// Release settles with the reserved amount (no refund, no charge), for when
// the usage is unknown.
func (r *Reservation) Release(ctx context.Context) error {
	if r == nil {
		return nil
	}
	return r.Settle(ctx, r.req.Cost.Tokens)
}
