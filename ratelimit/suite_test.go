package ratelimit

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// storeSuite holds behaviours every Store must show. Each case gets a fresh
// store, a limiter over it and a clock that only moves when told.
var storeSuite = []struct {
	name string
	run  func(t *testing.T, l *Limiter, clock *fakeClock)
}{
	{"exact wait for the cost", func(t *testing.T, l *Limiter, clock *fakeClock) {
		k := []Scope{scope("key:a", Limits{TPM: 600})} // 10 tokens/s
		_, d := mustAllow(t, l, k, tokens(600))
		if d.Tokens != (Quota{Limit: 600, Remaining: 0, Reset: time.Minute}) {
			t.Fatalf("tokens quota after emptying = %+v", d.Tokens)
		}
		d = mustRefuse(t, l, k, tokens(25))
		want := Decision{Dimension: DimensionTokens, Scope: "key:a", Wait: 2500 * time.Millisecond,
			Tokens: Quota{Limit: 600, Remaining: 0, Reset: time.Minute}}
		if d != want {
			t.Fatalf("refusal = %+v, want %+v", d, want)
		}
		clock.Advance(2499 * time.Millisecond)
		if d = mustRefuse(t, l, k, tokens(25)); d.Wait != time.Millisecond {
			t.Fatalf("wait 1ms before = %s", d.Wait)
		}
		clock.Advance(time.Millisecond)
		_, d = mustAllow(t, l, k, tokens(25))
		if d.Tokens.Remaining != 0 || d.Tokens.Reset != time.Minute {
			t.Fatalf("tokens quota = %+v", d.Tokens)
		}
	}},
	{"continuous refill", func(t *testing.T, l *Limiter, clock *fakeClock) {
		k := []Scope{scope("key:a", Limits{TPM: 60})}
		mustAllow(t, l, k, tokens(60))
		clock.Advance(1500 * time.Millisecond)
		if n := available(t, l, k...); n != 1 {
			t.Fatalf("available after 1.5s = %d, want 1", n)
		}
		_, d := mustAllow(t, l, k, tokens(1))
		if d.Tokens.Reset != 59500*time.Millisecond {
			t.Fatalf("reset = %s, want 59.5s", d.Tokens.Reset)
		}
		clock.Advance(time.Hour)
		if n := available(t, l, k...); n != 60 {
			t.Fatalf("available after an hour = %d", n)
		}
	}},
	{"refund on settle", func(t *testing.T, l *Limiter, clock *fakeClock) {
		k := []Scope{scope("key:a", Limits{TPM: 100})}
		r, _ := mustAllow(t, l, k, tokens(100))
		if r.Tokens() != 100 {
			t.Fatalf("Tokens() = %d", r.Tokens())
		}
		settle(t, r, 40)
		if n := available(t, l, k...); n != 60 {
			t.Fatalf("available after refund = %d, want 60", n)
		}
		settle(t, r, 0) // idempotent: no second refund
		if n := available(t, l, k...); n != 60 {
			t.Fatalf("available after second settle = %d, want 60", n)
		}
	}},
	{"refund capped at capacity", func(t *testing.T, l *Limiter, clock *fakeClock) {
		k := []Scope{scope("key:a", Limits{TPM: 100})}
		r, _ := mustAllow(t, l, k, tokens(50))
		clock.Advance(time.Minute) // refilled meanwhile
		settle(t, r, 0)
		if n := available(t, l, k...); n != 100 {
			t.Fatalf("available = %d, want 100", n)
		}
		mustAllow(t, l, k, tokens(100))
		mustRefuse(t, l, k, tokens(1))
	}},
	{"excess goes into debt", func(t *testing.T, l *Limiter, clock *fakeClock) {
		k := []Scope{scope("key:a", Limits{TPM: 100})} // 0.6 s per token
		r, _ := mustAllow(t, l, k, tokens(10))
		settle(t, r, 110)
		d := mustRefuse(t, l, k, tokens(1))
		if d.Wait != 6600*time.Millisecond || d.Tokens.Remaining != 0 || d.Tokens.Reset != 66*time.Second {
			t.Fatalf("after debt = %+v, want wait 6.6s, reset 66s", d)
		}
		if n := available(t, l, k...); n != 0 {
			t.Fatalf("available in debt = %d", n)
		}
		clock.Advance(6600 * time.Millisecond)
		mustAllow(t, l, k, tokens(1))
	}},
	{"release keeps the reserved amount", func(t *testing.T, l *Limiter, clock *fakeClock) {
		k := []Scope{scope("key:a", Limits{TPM: 100, MaxConcurrent: 1})}
		r, _ := mustAllow(t, l, k, tokens(50))
		if err := r.Release(context.Background()); err != nil {
			t.Fatal(err)
		}
		if n := available(t, l, k...); n != 50 {
			t.Fatalf("available after release = %d, want 50", n)
		}
		mustAllow(t, l, k, tokens(50)) // the slot was freed
	}},
	{"daily limits", func(t *testing.T, l *Limiter, clock *fakeClock) {
		k := []Scope{scope("key:a", Limits{TPD: 86400, RPD: 2})} // 1 token/s, 1 request/12h
		mustAllow(t, l, k, tokens(86000))
		d := mustRefuse(t, l, k, tokens(410))
		if d.Wait != 10*time.Second || !d.Daily || d.Dimension != DimensionTokens {
			t.Fatalf("tpd refusal = %+v, want 10s daily tokens", d)
		}
		mustAllow(t, l, k, tokens(1))
		d = mustRefuse(t, l, k, tokens(1))
		if d.Dimension != DimensionRequests || !d.Daily || d.Wait != 12*time.Hour {
			t.Fatalf("rpd refusal = %+v, want 12h daily requests", d)
		}
		if d.Requests != (Quota{Limit: 2, Remaining: 0, Reset: 24 * time.Hour}) {
			t.Fatalf("requests quota = %+v", d.Requests)
		}
	}},
	{"impossible costs", func(t *testing.T, l *Limiter, clock *fakeClock) {
		k := []Scope{scope("key:a", Limits{TPM: 600, RPM: 1}), scope("model:m", Limits{TPM: 1000})}
		d := mustRefuse(t, l, k, tokens(601))
		if !d.Impossible || d.Wait != 0 || d.Scope != "key:a" || d.Dimension != DimensionTokens || d.Daily {
			t.Fatalf("over capacity = %+v", d)
		}
		d = mustRefuse(t, l, k, Cost{Requests: 2})
		if !d.Impossible || d.Dimension != DimensionRequests {
			t.Fatalf("two requests against rpm 1 = %+v", d)
		}
		if n := available(t, l, k...); n != 600 {
			t.Fatalf("impossible cost took tokens: available %d", n)
		}
	}},
	{"all or nothing across scopes", func(t *testing.T, l *Limiter, clock *fakeClock) {
		key := scope("key:a", Limits{TPM: 1000, RPM: 100})
		model := scope("model:m", Limits{TPM: 10})
		d := mustRefuse(t, l, []Scope{key, model}, tokens(20))
		if !d.Impossible || d.Scope != "model:m" {
			t.Fatalf("refusal = %+v", d)
		}
		mustAllow(t, l, []Scope{model}, tokens(8))
		d = mustRefuse(t, l, []Scope{key, model}, tokens(5))
		if d.Impossible || d.Scope != "model:m" || d.Wait != 18*time.Second {
			t.Fatalf("refusal = %+v, want model:m after 18s", d)
		}
		if n := available(t, l, key); n != 1000 {
			t.Fatalf("key lost tokens: %d", n)
		}
		_, d = mustAllow(t, l, []Scope{key}, tokens(1))
		if d.Requests.Remaining != 99 {
			t.Fatalf("key lost a request: %+v", d.Requests)
		}
	}},
	{"longest wait wins", func(t *testing.T, l *Limiter, clock *fakeClock) {
		key := scope("key:a", Limits{TPM: 60})    // 1 token/s
		model := scope("model:m", Limits{TPM: 6}) // 1 token/10s
		both := []Scope{key, model}
		mustAllow(t, l, both, tokens(6))
		d := mustRefuse(t, l, both, tokens(2))
		if d.Scope != "model:m" || d.Wait != 20*time.Second {
			t.Fatalf("refusal = %+v, want model:m 20s", d)
		}
		mustAllow(t, l, []Scope{key}, tokens(54))
		clock.Advance(20 * time.Second)
		mustAllow(t, l, both, tokens(2))
	}},
	{"most constraining quotas", func(t *testing.T, l *Limiter, clock *fakeClock) {
		key := scope("key:a", Limits{RPM: 100, TPM: 1000})
		model := scope("model:m", Limits{RPM: 10, TPD: 100000})
		_, d := mustAllow(t, l, []Scope{key, model}, tokens(300))
		if d.Requests != (Quota{Limit: 10, Remaining: 9, Reset: 6 * time.Second}) {
			t.Fatalf("requests = %+v", d.Requests)
		}
		if d.Tokens != (Quota{Limit: 1000, Remaining: 700, Reset: 18 * time.Second}) {
			t.Fatalf("tokens = %+v", d.Tokens)
		}
		if n := available(t, l, key, model); n != 700 {
			t.Fatalf("available = %d", n)
		}
		if n := available(t, l, scope("model:none", Limits{RPM: 5})); n != Unlimited {
			t.Fatalf("available without token limits = %d", n)
		}
		_, d = mustAllow(t, l, []Scope{scope("none", Limits{})}, tokens(1))
		if d.Requests.Limit != 0 || d.Tokens.Limit != 0 {
			t.Fatalf("quotas without limits = %+v", d)
		}
	}},
	{"changed limits keep usage", func(t *testing.T, l *Limiter, clock *fakeClock) {
		k := scope("key:a", Limits{TPM: 100})
		mustAllow(t, l, []Scope{k}, tokens(60))
		k.Limits.TPM = 200
		if n := available(t, l, k); n != 140 {
			t.Fatalf("available after raise = %d, want 140", n)
		}
		k.Limits.TPM = 50
		d := mustRefuse(t, l, []Scope{k}, tokens(1))
		if d.Wait != 13200*time.Millisecond || d.Tokens.Remaining != 0 {
			t.Fatalf("after lowering = %+v, want wait 13.2s", d)
		}
		k.Limits.TPM = 0
		mustAllow(t, l, []Scope{k}, tokens(1000))
		k.Limits.TPM = 100
		if n := available(t, l, k); n != 100 {
			t.Fatalf("available after unlimited interlude = %d, want 100 (an unlimited dimension keeps no usage)", n)
		}
	}},
	{"concurrency slots", func(t *testing.T, l *Limiter, clock *fakeClock) {
		k := []Scope{scope("key:a", Limits{MaxConcurrent: 2}), scope("model:m", Limits{TPM: 1000})}
		r1, _ := mustAllow(t, l, k, tokens(1))
		mustAllow(t, l, k, tokens(1))
		d := mustRefuse(t, l, k, tokens(1))
		if d.Dimension != DimensionConcurrency || d.Scope != "key:a" || d.Wait != 0 || d.Impossible {
			t.Fatalf("refusal = %+v", d)
		}
		if n := available(t, l, k[1]); n != 998 {
			t.Fatalf("refused request took tokens: %d", n)
		}
		settle(t, r1, 1)
		settle(t, r1, 1) // releases once only
		mustAllow(t, l, k, tokens(1))
		mustRefuse(t, l, k, tokens(1))
	}},
	{"zero cost is allowed in debt", func(t *testing.T, l *Limiter, clock *fakeClock) {
		k := []Scope{scope("key:a", Limits{TPM: 10})}
		r, _ := mustAllow(t, l, k, tokens(10))
		settle(t, r, 15)
		mustAllow(t, l, k, Cost{})
		mustRefuse(t, l, k, tokens(1))
	}},
	{"200 goroutines never exceed the limit", func(t *testing.T, l *Limiter, clock *fakeClock) {
		k := []Scope{scope("key:a", Limits{TPM: 1000}), scope("model:m", Limits{TPM: 5000, RPM: 150})}
		var admitted, tokensTaken atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, 200)
		for range 200 {
			wg.Go(func() {
				r, d, err := l.Reserve(context.Background(), k, tokens(7))
				if err != nil {
					errs <- err
					return
				}
				if d.Allowed {
					admitted.Add(1)
					tokensTaken.Add(r.Tokens())
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if got := tokensTaken.Load(); got > 1000 || admitted.Load() != 1000/7 {
			t.Fatalf("admitted %d requests, %d tokens; want %d requests, at most 1000 tokens", admitted.Load(), got, 1000/7)
		}
	}},
}

func runStoreSuite(t *testing.T, newStore storeFactory) {
	for _, tc := range storeSuite {
		t.Run(tc.name, func(t *testing.T) {
			clock := newClock()
			l := NewLimiter(newStore(t, clock), Options{OnStoreError: OnStoreErrorDeny})
			tc.run(t, l, clock)
		})
	}
}

func TestMemoryStore(t *testing.T) { runStoreSuite(t, memoryFactory) }
