package ratelimit

import (
	"context"
	"errors"
	"math"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// flakyStore wraps a store and fails while down is set.
type flakyStore struct {
	Store
	down  atomic.Bool
	calls atomic.Int64
}

var errDown = errors.New("connection refused")

func (f *flakyStore) Reserve(ctx context.Context, req Request) (Decision, error) {
	f.calls.Add(1)
	if f.down.Load() {
		return Decision{}, errDown
	}
	return f.Store.Reserve(ctx, req)
}

func (f *flakyStore) Peek(ctx context.Context, scopes []Scope, cost Cost) (Decision, error) {
	f.calls.Add(1)
	if f.down.Load() {
		return Decision{}, errDown
	}
	return f.Store.Peek(ctx, scopes, cost)
}

func (f *flakyStore) Settle(ctx context.Context, req Request, actual int64) error {
	if f.down.Load() {
		return errDown
	}
	return f.Store.Settle(ctx, req, actual)
}

func TestLimiterStoreErrors(t *testing.T) {
	k := []Scope{scope("key:a", Limits{TPM: 100, MaxConcurrent: 5})}
	ctx := context.Background()

	t.Run("allow answers from the fallback and recovers", func(t *testing.T) {
		clock := newClock()
		primary := &flakyStore{Store: NewMemoryStore(MemoryOptions{Now: clock.Now})}
		var hooked atomic.Int64
		l := NewLimiter(primary, Options{
			Fallback: NewMemoryStore(MemoryOptions{Now: clock.Now}),
			ErrorHook: func(err error) {
				if !errors.Is(err, errDown) {
					t.Errorf("hook got %v", err)
				}
				hooked.Add(1)
			},
		})
		mustAllow(t, l, k, tokens(10))
		primary.down.Store(true)
		r, d := mustAllow(t, l, k, tokens(90))
		if !d.Fallback || d.Tokens.Remaining != 10 || hooked.Load() != 1 {
			t.Fatalf("fallback decision = %+v, hook calls %d", d, hooked.Load())
		}
		if n := available(t, l, k...); n != 10 {
			t.Fatalf("fallback available = %d", n)
		}
		settle(t, r, 0) // settles on the fallback that granted it
		primary.down.Store(false)
		_, d = mustAllow(t, l, k, tokens(90))
		if d.Fallback || d.Tokens.Remaining != 0 {
			t.Fatalf("after recovery = %+v, want the primary with 0 left", d)
		}
		want := Stats{StoreErrors: 2, FallbackDecisions: 2}
		if st := l.Stats(); st != want {
			t.Fatalf("stats = %+v, want %+v", st, want)
		}
	})

	t.Run("deny returns the store error", func(t *testing.T) {
		primary := &flakyStore{Store: NewMemoryStore(MemoryOptions{})}
		primary.down.Store(true)
		l := NewLimiter(primary, Options{OnStoreError: OnStoreErrorDeny, Fallback: NewMemoryStore(MemoryOptions{})})
		r, d, err := l.Reserve(ctx, k, tokens(1))
		if !errors.Is(err, ErrStoreUnavailable) || !errors.Is(err, errDown) || r != nil || d.Allowed {
			t.Fatalf("Reserve = %v, %+v, %v", r, d, err)
		}
		if st := l.Stats(); st.Denied != 1 || st.StoreErrors != 1 {
			t.Fatalf("stats = %+v", st)
		}
	})

	t.Run("allow without fallback fails open", func(t *testing.T) {
		primary := &flakyStore{Store: NewMemoryStore(MemoryOptions{})}
		primary.down.Store(true)
		l := NewLimiter(primary, Options{})
		r, d := mustAllow(t, l, k, tokens(1000))
		if !d.Fallback || l.Stats().FailOpen != 1 {
			t.Fatalf("decision = %+v, stats %+v", d, l.Stats())
		}
		settle(t, r, 5)
		if n := available(t, l, k...); n != Unlimited {
			t.Fatalf("available = %d", n)
		}
	})

	t.Run("settle error goes to the hook", func(t *testing.T) {
		primary := &flakyStore{Store: NewMemoryStore(MemoryOptions{})}
		var hooked atomic.Int64
		l := NewLimiter(primary, Options{ErrorHook: func(error) { hooked.Add(1) }})
		r, _ := mustAllow(t, l, k, tokens(1))
		primary.down.Store(true)
		if err := r.Settle(ctx, 1); !errors.Is(err, errDown) {
			t.Fatalf("Settle = %v", err)
		}
		if hooked.Load() != 1 || l.Stats().StoreErrors != 1 {
			t.Fatalf("hook calls %d, stats %+v", hooked.Load(), l.Stats())
		}
		if err := r.Settle(ctx, 1); err != nil {
			t.Fatalf("second Settle = %v", err)
		}
	})

	t.Run("the fallback admits a fraction of each limit", func(t *testing.T) {
		clock := newClock()
		primary := &flakyStore{Store: NewMemoryStore(MemoryOptions{Now: clock.Now})}
		l := NewLimiter(primary, Options{Fallback: NewMemoryStore(MemoryOptions{Now: clock.Now}), FallbackFraction: 0.5})
		k := []Scope{scope("key:a", Limits{TPM: 100, RPM: 3, RPD: 1, MaxConcurrent: 5})}
		primary.down.Store(true)
		if n := available(t, l, k...); n != 50 {
			t.Fatalf("fallback available = %d, want 50", n)
		}
		r, d := mustAllow(t, l, k, tokens(40))
		if !d.Fallback || d.Tokens != (Quota{Limit: 50, Remaining: 10, Reset: 48 * time.Second}) || d.Requests.Limit != 1 {
			t.Fatalf("fallback decision = %+v, want tpm 50 and rpd 1 (never below 1)", d)
		}
		if k[0].Limits.TPM != 100 {
			t.Fatal("the caller's scopes were scaled")
		}
		settle(t, r, 10) // settles on the fallback with the scaled limits
		if n := available(t, l, k...); n != 40 {
			t.Fatalf("fallback available after settling = %d, want 40", n)
		}
		d = mustRefuse(t, l, k, tokens(1))
		if d.Dimension != DimensionRequests || !d.Daily {
			t.Fatalf("second request = %+v, want the scaled rpd 1", d)
		}
		primary.down.Store(false)
		if _, d = mustAllow(t, l, k, tokens(100)); d.Fallback || d.Tokens.Limit != 100 {
			t.Fatalf("primary back = %+v, want the full limits", d)
		}
	})

	t.Run("retry primary after a pause", func(t *testing.T) {
		clock := newClock()
		primary := &flakyStore{Store: NewMemoryStore(MemoryOptions{Now: clock.Now})}
		l := NewLimiter(primary, Options{
			Fallback:          NewMemoryStore(MemoryOptions{Now: clock.Now}),
			RetryPrimaryAfter: time.Second,
			Now:               clock.Now,
		})
		primary.down.Store(true)
		mustAllow(t, l, k, tokens(1))
		mustAllow(t, l, k, tokens(1))
		if n := primary.calls.Load(); n != 1 {
			t.Fatalf("primary called %d times during the pause, want 1", n)
		}
		primary.down.Store(false)
		clock.Advance(time.Second)
		if _, d := mustAllow(t, l, k, tokens(1)); d.Fallback {
			t.Fatal("primary not retried after the pause")
		}
	})
}

func TestLimiterInvalidRequests(t *testing.T) {
	l := NewLimiter(NewMemoryStore(MemoryOptions{}), Options{})
	ok := Limits{TPM: 10}
	tests := []struct {
		name   string
		scopes []Scope
		cost   Cost
		want   string
	}{
		{"negative tokens", []Scope{scope("a", ok)}, Cost{Requests: 1, Tokens: -1}, "negative cost"},
		{"negative requests", []Scope{scope("a", ok)}, Cost{Requests: -1}, "negative cost"},
		{"empty id", []Scope{scope("", ok)}, tokens(1), "empty scope id"},
		{"duplicate id", []Scope{scope("a", ok), scope("b", ok), scope("a", ok)}, tokens(1), `duplicate scope id "a"`},
		{"negative limit", []Scope{scope("a", Limits{RPM: -1})}, tokens(1), "out of range"},
		{"limit too large", []Scope{scope("a", Limits{TPD: MaxLimit + 1})}, tokens(1), "out of range"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, d, err := l.Reserve(context.Background(), tc.scopes, tc.cost)
			if !errors.Is(err, ErrInvalidRequest) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrInvalidRequest with %q", err, tc.want)
			}
			if r != nil || d.Allowed {
				t.Fatalf("invalid request allowed: %+v", d)
			}
		})
	}
	if _, err := l.Available(context.Background(), []Scope{scope("", ok)}); !errors.Is(err, ErrInvalidRequest) {
		t.Fatalf("Available with empty id: %v", err)
	}
}

func TestOptionsValidate(t *testing.T) {
	fallback := NewMemoryStore(MemoryOptions{})
	tests := []struct {
		opts Options
		ok   bool
	}{
		{Options{}, true},
		{Options{OnStoreError: "allow"}, true},
		{Options{OnStoreError: "deny"}, true},
		{Options{OnStoreError: "maybe"}, false},
		{Options{RetryPrimaryAfter: -time.Second}, false},
		{Options{Fallback: fallback, FallbackFraction: 0.5}, true},
		{Options{Fallback: fallback, FallbackFraction: 1}, true},
		{Options{Fallback: fallback, FallbackFraction: 1.5}, false},
		{Options{Fallback: fallback, FallbackFraction: -0.5}, false},
		{Options{Fallback: fallback, FallbackFraction: math.NaN()}, false},
		{Options{Fallback: fallback, FallbackFraction: 0.5, OnStoreError: "deny"}, false},
		{Options{FallbackFraction: 0.5}, false}, // no fallback to scale
	}
	for _, tc := range tests {
		if err := tc.opts.Validate(); (err == nil) != tc.ok {
			t.Errorf("Validate(%+v) = %v", tc.opts, err)
		}
	}
}

func TestNilReservation(t *testing.T) {
	var r *Reservation
	if r.Tokens() != 0 || r.Settle(context.Background(), 1) != nil || r.Release(context.Background()) != nil {
		t.Fatal("nil reservation is not a no-op")
	}
}

func TestSettleIgnoresCancellation(t *testing.T) {
	l := NewLimiter(NewMemoryStore(MemoryOptions{}), Options{})
	k := []Scope{scope("key:a", Limits{TPM: 100, MaxConcurrent: 1})}
	r, _ := mustAllow(t, l, k, tokens(100))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.Settle(ctx, 30); err != nil {
		t.Fatal(err)
	}
	if n := available(t, l, k...); n != 70 {
		t.Fatalf("available = %d, want 70", n)
	}
	mustAllow(t, l, k, tokens(1))
}

// TestLimiterCheck: Check says whether a cost would be admitted, takes nothing, and follows
// OnStoreError like Reserve.
func TestLimiterCheck(t *testing.T) {
	ctx := context.Background()
	mem := NewMemoryStore(MemoryOptions{})
	l := NewLimiter(mem, Options{})
	scopes := []Scope{{ID: "key:a", Limits: Limits{RPM: 1, TPM: 1000}}}
	if d, err := l.Check(ctx, scopes, Cost{Requests: 1, Tokens: 900}); err != nil || !d.Allowed {
		t.Fatalf("a fitting cost: %+v %v", d, err)
	}
	if d, err := l.Check(ctx, scopes, Cost{Requests: 1, Tokens: 1001}); err != nil || d.Allowed || d.Dimension != DimensionTokens {
		t.Fatalf("a cost over tpm: %+v %v", d, err)
	}
	if _, _, err := l.Reserve(ctx, scopes, Cost{Requests: 1, Tokens: 10}); err != nil {
		t.Fatal(err)
	}
	if d, err := l.Check(ctx, scopes, Cost{Requests: 1}); err != nil || d.Allowed || d.Dimension != DimensionRequests {
		t.Fatalf("after the only request of the minute: %+v %v", d, err)
	}
	// Check took nothing: a second key's budget is untouched by any number of checks
	other := []Scope{{ID: "key:b", Limits: Limits{RPM: 1}}}
	for range 5 {
		if d, _ := l.Check(ctx, other, Cost{Requests: 1}); !d.Allowed {
			t.Fatal("Check took from the bucket")
		}
	}
	if _, d, _ := l.Reserve(ctx, other, Cost{Requests: 1}); !d.Allowed {
		t.Fatal("Check took from the bucket")
	}
	down := &flakyStore{Store: mem}
	down.down.Store(true)
	failing := NewLimiter(down, Options{OnStoreError: OnStoreErrorDeny})
	if _, err := failing.Check(ctx, scopes, Cost{Requests: 1}); err == nil {
		t.Error("deny: a store error is not reported")
	}
}

func TestLimiterRemote(t *testing.T) {
	var nilLimiter *Limiter
	if nilLimiter.Remote() {
		t.Error("a nil limiter is remote")
	}
	if l := NewLimiter(NewMemoryStore(MemoryOptions{}), Options{}); l.Remote() {
		t.Error("the memory store is remote")
	}
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled
	defer client.Close()
	if l := NewLimiter(NewRedisStore(client, RedisOptions{}), Options{}); !l.Remote() {
		t.Error("the Redis store is not remote")
	}
}

// TestSettleNoWaitMemory: on a store that cannot queue a settlement (the memory store),
// SettleNoWait settles at once, once.
func TestSettleNoWaitMemory(t *testing.T) {
	clock := newClock()
	l := NewLimiter(NewMemoryStore(MemoryOptions{Now: clock.Now}), Options{})
	k := []Scope{scope("key:a", Limits{TPM: 100, MaxConcurrent: 1})}
	r, _ := mustAllow(t, l, k, tokens(60))
	if err := r.SettleNoWait(10); err != nil {
		t.Fatal(err)
	}
	if n := available(t, l, k...); n != 90 {
		t.Fatalf("after SettleNoWait: %d tokens, want 90", n)
	}
	if err := r.SettleNoWait(0); err != nil || available(t, l, k...) != 90 {
		t.Fatal("a second settlement changed the tokens")
	}
	mustAllow(t, l, k, tokens(1)) // the slot is free
	var none *Reservation
	if err := none.SettleNoWait(1); err != nil {
		t.Fatal(err)
	}
}
