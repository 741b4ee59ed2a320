package ratelimit

import (
	"context"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// storeFactory returns a fresh, isolated store on clock.
type storeFactory func(t *testing.T, clock *fakeClock) Store

func memoryFactory(t *testing.T, clock *fakeClock) Store {
	t.Helper()
	return NewMemoryStore(MemoryOptions{Now: clock.Now})
}

func reserve(t *testing.T, l *Limiter, scopes []Scope, cost Cost) (*Reservation, Decision) {
	t.Helper()
	r, d, err := l.Reserve(context.Background(), scopes, cost)
	if err != nil {
		t.Fatalf("Reserve(%v, %+v): %v", scopes, cost, err)
	}
	if d.Allowed != (r != nil) {
		t.Fatalf("Reserve: Allowed=%t but reservation=%v", d.Allowed, r)
	}
	return r, d
}

func mustAllow(t *testing.T, l *Limiter, scopes []Scope, cost Cost) (*Reservation, Decision) {
	t.Helper()
	r, d := reserve(t, l, scopes, cost)
	if !d.Allowed {
		t.Fatalf("Reserve(%+v) refused: %+v", cost, d)
	}
	return r, d
}

func mustRefuse(t *testing.T, l *Limiter, scopes []Scope, cost Cost) Decision {
	t.Helper()
	_, d := reserve(t, l, scopes, cost)
	if d.Allowed {
		t.Fatalf("Reserve(%+v) allowed: %+v", cost, d)
	}
	return d
}

func available(t *testing.T, l *Limiter, scopes ...Scope) int64 {
	t.Helper()
	n, err := l.Available(context.Background(), scopes)
	if err != nil {
		t.Fatalf("Available: %v", err)
	}
	return n
}

func settle(t *testing.T, r *Reservation, actual int64) {
	t.Helper()
	if err := r.Settle(context.Background(), actual); err != nil {
		t.Fatalf("Settle(%d): %v", actual, err)
	}
}

func scope(id string, l Limits) Scope { return Scope{ID: id, Limits: l} }

func tokens(n int64) Cost { return Cost{Requests: 1, Tokens: n} }
