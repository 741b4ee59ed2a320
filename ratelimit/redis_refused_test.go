package ratelimit

import (
	"context"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyai/gateway/internal/testredis"
	"github.com/redis/go-redis/v9"
)

// evalCalls returns how many script calls Redis has run (INFO commandstats).
func evalCalls(t *testing.T, c *redis.Client) int64 {
	t.Helper()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for line := range strings.SplitSeq(info, "\n") {
		if !strings.HasPrefix(line, "cmdstat_evalsha:") && !strings.HasPrefix(line, "cmdstat_eval:") {
			continue
		}
		_, rest, _ := strings.Cut(line, "calls=")
		v, _, _ := strings.Cut(rest, ",")
		k, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("parsing %q: %v", line, err)
		}
		n += k
	}
	return n
}

// TestRedisRefusedMemo: a key refused by its request bucket is refused again without a call to
// Redis for a second at a time until that bucket has room, with the wait and quota Redis would
// give; a change of its limits, a clock turned back or a token refusal go to Redis.
func TestRedisRefusedMemo(t *testing.T) {
	addr, _ := testredis.Start(t)
	client := newRedisClient(t, addr)

	t.Run("rpm refusals stay local, asked again once a second and when the bucket has room", func(t *testing.T) {
		clock := newClock()
		s := NewRedisStore(client, RedisOptions{Prefix: "memo1:", Now: clock.Now})
		l := NewLimiter(s, Options{OnStoreError: OnStoreErrorDeny})
		k := []Scope{scope("key:a", Limits{RPM: 2, TPM: 1000})}
		for range 2 {
			r, _ := mustAllow(t, l, k, tokens(10))
			settle(t, r, 5)
		}
		first := mustRefuse(t, l, k, tokens(10)) // Redis refuses: remembered
		if first.Dimension != DimensionRequests || first.Wait != 30*time.Second {
			t.Fatalf("Redis's refusal = %+v, want requests, wait 30s", first)
		}
		calls := evalCalls(t, client)
		for i := range 299 { // a refusal every 100 ms, up to 29.9 s after the first
			clock.Advance(100 * time.Millisecond)
			d := mustRefuse(t, l, k, tokens(10))
			wantWait := 30*time.Second - time.Duration(i+1)*100*time.Millisecond
			// the memo's clock is at most the reply's resolution (1 ms) ahead of Redis's
			if d.Dimension != DimensionRequests || d.Scope != "key:a" || d.Wait > wantWait || d.Wait < wantWait-time.Millisecond {
				t.Fatalf("refusal %d = %+v, want requests of key:a, wait %s", i, d, wantWait)
			}
			// the tokens: the reply's state (10 used), drained to now
			if d.Requests.Limit != 2 || d.Requests.Remaining != 0 || d.Tokens.Limit != 1000 || d.Tokens.Remaining < 990 {
				t.Fatalf("refusal %d quotas = %+v %+v", i, d.Requests, d.Tokens)
			}
		}
		// 299 refusals over 29.9 s: Redis asked once a second (the hold), not once a refusal
		if got := evalCalls(t, client) - calls; got < 28 || got > 30 {
			t.Fatalf("%d script calls for 299 refusals in 29.9 s, want one a second", got)
		}
		calls = evalCalls(t, client)
		clock.Advance(100*time.Millisecond + time.Millisecond) // 30.001 s after the refusal
		r, _ := mustAllow(t, l, k, tokens(10))
		settle(t, r, 10)
		if got := evalCalls(t, client) - calls; got != 2 {
			t.Fatalf("%d script calls once the bucket had room, want 2 (reserve, settle)", got)
		}
	})

	t.Run("raised limits, a clock turned back and other keys go to Redis", func(t *testing.T) {
		clock := newClock()
		s := NewRedisStore(client, RedisOptions{Prefix: "memo2:", Now: clock.Now})
		l := NewLimiter(s, Options{OnStoreError: OnStoreErrorDeny})
		k := []Scope{scope("key:a", Limits{RPM: 1})}
		r, _ := mustAllow(t, l, k, tokens(1))
		settle(t, r, 1)
		mustRefuse(t, l, k, tokens(1))
		r, _ = mustAllow(t, l, []Scope{scope("key:b", Limits{RPM: 1})}, tokens(1))
		settle(t, r, 1)
		raised := []Scope{scope("key:a", Limits{RPM: 2})}
		r, _ = mustAllow(t, l, raised, tokens(1))
		settle(t, r, 1)
		mustRefuse(t, l, raised, tokens(1)) // remembered again, at rpm 2

		clock.Advance(-time.Minute)
		calls := evalCalls(t, client)
		mustRefuse(t, l, raised, tokens(1)) // Redis refuses with its own clock: asked
		if got := evalCalls(t, client) - calls; got != 1 {
			t.Fatalf("%d script calls after the clock went back, want 1", got)
		}
	})

	t.Run("token refusals are asked every time: a settlement gives tokens back", func(t *testing.T) {
		clock := newClock()
		a := NewRedisStore(client, RedisOptions{Prefix: "memo3:", Now: clock.Now})
		b := NewRedisStore(client, RedisOptions{Prefix: "memo3:", Now: clock.Now})
		la := NewLimiter(a, Options{OnStoreError: OnStoreErrorDeny})
		lb := NewLimiter(b, Options{OnStoreError: OnStoreErrorDeny})
		k := []Scope{scope("key:a", Limits{RPM: 100, TPM: 100})}
		held, _ := mustAllow(t, lb, k, tokens(90))
		if d := mustRefuse(t, la, k, tokens(50)); d.Dimension != DimensionTokens {
			t.Fatalf("refusal = %+v, want tokens", d)
		}
		settle(t, held, 10) // on the other instance: 80 tokens back
		r, _ := mustAllow(t, la, k, tokens(50))
		settle(t, r, 50)
	})

	t.Run("a concurrency refusal is asked every time", func(t *testing.T) {
		clock := newClock()
		s := NewRedisStore(client, RedisOptions{Prefix: "memo4:", Now: clock.Now})
		l := NewLimiter(s, Options{OnStoreError: OnStoreErrorDeny})
		k := []Scope{scope("key:a", Limits{RPM: 100, MaxConcurrent: 1})}
		held, _ := mustAllow(t, l, k, tokens(1))
		if d := mustRefuse(t, l, k, tokens(1)); d.Dimension != DimensionConcurrency {
			t.Fatalf("refusal = %+v, want concurrency", d)
		}
		settle(t, held, 1)
		r, _ := mustAllow(t, l, k, tokens(1))
		settle(t, r, 1)
	})
}

// TestRedisRefusedMemoExact runs random traffic of two instances on shared keys (each key with
// its limits, as one config gives them) and checks every refusal the memo answers against what
// Redis answers at the same moment (a peek past the memo): Redis refuses too, with the same
// remaining requests and, when a request bucket is what refuses, the same wait, to the reply's
// resolution.
func TestRedisRefusedMemoExact(t *testing.T) {
	addr, _ := testredis.Start(t)
	client := newRedisClient(t, addr)
	ctx := context.Background()
	clock := newClock()
	rng := rand.New(rand.NewPCG(1, 2))
	stores := []*RedisStore{
		NewRedisStore(client, RedisOptions{Prefix: "exact:", Now: clock.Now}),
		NewRedisStore(client, RedisOptions{Prefix: "exact:", Now: clock.Now}),
	}
	limits := []Limits{{RPM: 3}, {RPM: 5, TPM: 400}, {RPM: 4, RPD: 6}, {RPD: 3, TPM: 300}}
	var open []struct {
		s *RedisStore
		r Request
	}
	local := 0
	for i := range 3000 {
		s := stores[rng.IntN(len(stores))]
		key := rng.IntN(len(limits))
		scopes := []Scope{scope("key:"+strconv.Itoa(key), limits[key])}
		cost := Cost{Requests: 1, Tokens: int64(rng.IntN(120))}
		if d, ok := s.refused.refuse(scopes, cost, s.localNow()); ok {
			local++
			want, err := s.run(ctx, Request{Scopes: scopes, Cost: cost}, s.keys(scopes, ""), false)
			if err != nil {
				t.Fatal(err)
			}
			if want.Allowed || d.Requests.Remaining != want.Requests.Remaining || d.Requests.Limit != want.Requests.Limit {
				t.Fatalf("step %d: memo %+v, Redis %+v", i, d, want)
			}
			if want.Dimension == DimensionRequests && (d.Wait > want.Wait || d.Wait < want.Wait-time.Millisecond) {
				t.Fatalf("step %d: memo wait %s, Redis %s (%+v)", i, d.Wait, want.Wait, want)
			}
		}
		req := Request{ID: "r" + strconv.Itoa(i), Scopes: scopes, Cost: cost}
		d, err := s.Reserve(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed {
			open = append(open, struct {
				s *RedisStore
				r Request
			}{s, req})
		}
		if len(open) > 0 && rng.IntN(2) == 0 {
			j := rng.IntN(len(open))
			o := open[j]
			open = append(open[:j], open[j+1:]...)
			if err := o.s.Settle(ctx, o.r, int64(rng.IntN(int(o.r.Cost.Tokens)+1))); err != nil {
				t.Fatal(err)
			}
		}
		clock.Advance(time.Duration(rng.IntN(400)) * time.Millisecond)
	}
	if local < 100 {
		t.Fatalf("only %d refusals answered by the memo: the test does not exercise it", local)
	}
	t.Logf("%d refusals answered by the memo, each checked against Redis", local)
}

// TestRefusedMemoBound: the memo holds at most maxRefused refusals; once full, a new one is
// remembered after the expired ones are swept, and the sweep runs at most once per second.
func TestRefusedMemoBound(t *testing.T) {
	var m refusedMemo
	now := int64(1_700_000_000) * int64(time.Second)
	lim := Limits{RPM: 1}
	used := func(at int64) []scopeState { // one request used at at: refused for a minute
		return []scopeState{{lv: [numDims]level{dimRPM: {w: periodTicks(dimRPM), t: at}}}}
	}
	for i := range maxRefused + 10 {
		m.remember([]Scope{scope("s"+strconv.Itoa(i), lim)}, used(now), now, 0)
	}
	if len(m.m) != maxRefused {
		t.Fatalf("%d remembered, want the bound %d", len(m.m), maxRefused)
	}
	if _, ok := m.refuse([]Scope{scope("s0", lim)}, Cost{Requests: 1}, now+int64(500*time.Millisecond)); !ok {
		t.Fatal("a remembered refusal was not answered")
	}
	later := now + int64(time.Minute) // every refusal so far has expired
	m.remember([]Scope{scope("new", lim)}, used(later), later, 0)
	if len(m.m) != 1 {
		t.Fatalf("%d remembered after the sweep, want only the new one", len(m.m))
	}
	if _, ok := m.refuse([]Scope{scope("new", lim)}, Cost{Requests: 1}, later); !ok {
		t.Fatal("the refusal remembered after the sweep was not answered")
	}
	if _, ok := m.refuse([]Scope{scope("new", lim)}, Cost{Requests: 1}, later+refusedHold); ok {
		t.Fatal("a refusal was answered past the hold, its bucket still without room")
	}
	// Full of live refusals: the next sweep waits a second whatever arrives meanwhile.
	for i := range maxRefused {
		m.remember([]Scope{scope("t"+strconv.Itoa(i), lim)}, used(later), later, 0)
	}
	swept := m.swept
	m.remember([]Scope{scope("u", lim)}, used(later), later+int64(500*time.Millisecond), 0)
	if m.swept != swept {
		t.Fatal("swept twice within a second")
	}
	m.remember([]Scope{scope("u", lim)}, used(later), later+int64(time.Second), 0)
	if m.swept == swept {
		t.Fatal("not swept a second after the last sweep")
	}
}
