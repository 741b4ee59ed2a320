package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyai/gateway/internal/testredis"
	"github.com/redis/go-redis/v9"
)

func newRedisClient(t testing.TB, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{
		Addr:         addr,
		DialTimeout:  time.Second,
		ReadTimeout:  2 * time.Second,
		WriteTimeout: 2 * time.Second,
		PoolSize:     32,
		// Fail fast while the server is down.
		DialerRetries: 1,
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// redisFactory returns stores on one server, each under its own prefix.
func redisFactory(client redis.UniversalClient) storeFactory {
	var n atomic.Int64
	return func(t *testing.T, clock *fakeClock) Store {
		t.Helper()
		prefix := "test" + strconv.FormatInt(n.Add(1), 10) + ":"
		return NewRedisStore(client, RedisOptions{Prefix: prefix, Now: clock.Now})
	}
}

func TestRedisStore(t *testing.T) {
	addr, _ := testredis.Start(t)
	runStoreSuite(t, redisFactory(newRedisClient(t, addr)))
}

func TestRedisKeys(t *testing.T) {
	addr, _ := testredis.Start(t)
	client := newRedisClient(t, addr)
	ctx := context.Background()

	t.Run("expire when refilled and vanish when full", func(t *testing.T) {
		clock := newClock()
		s := NewRedisStore(client, RedisOptions{Prefix: "ttl:", Now: clock.Now})
		l := NewLimiter(s, Options{OnStoreError: OnStoreErrorDeny})
		k := []Scope{scope("key:a", Limits{TPM: 600, RPM: 1000})}
		r, _ := mustAllow(t, l, k, tokens(60)) // 6s to refill tokens, 60ms requests
		ttl, err := client.PTTL(ctx, s.BucketKey("key:a")).Result()
		if err != nil {
			t.Fatal(err)
		}
		if ttl <= 6*time.Second || ttl > 7*time.Second {
			t.Fatalf("PTTL = %s, want refill time 6s plus 1s margin", ttl)
		}
		clock.Advance(time.Second)
		settle(t, r, 0)
		if n := client.Exists(ctx, s.BucketKey("key:a")).Val(); n != 0 {
			t.Fatalf("full bucket still stored (%d)", n)
		}
	})

	t.Run("a bucket is one string, exact at the largest limits", func(t *testing.T) {
		clock := newClock()
		s := NewRedisStore(client, RedisOptions{Prefix: "layout:", Now: clock.Now})
		l := NewLimiter(s, Options{OnStoreError: OnStoreErrorDeny})
		// a bucket of the hash layout under the old name, full: not read by this layout
		if err := client.HSet(ctx, "layout:b:key:a", "w2", "999999999999999", "t2", "1700000000000").Err(); err != nil {
			t.Fatal(err)
		}
		k := []Scope{scope("key:a", Limits{TPM: MaxLimit, TPD: MaxLimit, RPM: MaxLimit})}
		mustAllow(t, l, k, tokens(MaxLimit-7))
		if typ := client.Type(ctx, s.BucketKey("key:a")).Val(); typ != "string" {
			t.Fatalf("bucket type %q, want string", typ)
		}
		if n := client.StrLen(ctx, s.BucketKey("key:a")).Val(); n != 64 {
			t.Fatalf("bucket of %d bytes, want eight doubles (64)", n)
		}
		// 7 tokens left of 50 billion a minute and a day: w = 49,999,999,993 * 86,400 ticks
		// (4.3e15) and its refill are exact only if no digit is lost on the way
		_, d := mustAllow(t, l, k, tokens(7))
		if d.Tokens.Remaining != 0 {
			t.Fatalf("after taking the last 7 tokens %d remain, want 0", d.Tokens.Remaining)
		}
		if _, d := reserve(t, l, k, tokens(1)); d.Allowed {
			t.Fatalf("a token past the limit was allowed: %+v", d)
		}
		clock.Advance(time.Millisecond) // the minute's bucket refills 50e9/60000 tokens a ms
		if _, d := reserve(t, l, k, tokens(1)); d.Allowed || !d.Daily {
			t.Fatalf("after 1 ms the day's bucket still refuses, got %+v", d)
		}
	})

	t.Run("server time", func(t *testing.T) {
		s := NewRedisStore(client, RedisOptions{Prefix: "srvtime:"})
		l := NewLimiter(s, Options{OnStoreError: OnStoreErrorDeny})
		k := []Scope{scope("key:a", Limits{TPM: 600})}
		_, d := mustAllow(t, l, k, tokens(60))
		if d.Tokens != (Quota{Limit: 600, Remaining: 540, Reset: 6 * time.Second}) {
			t.Fatalf("tokens = %+v", d.Tokens)
		}
		mustAllow(t, l, k, tokens(540))
		d = mustRefuse(t, l, k, tokens(600))
		if d.Wait <= 0 || d.Wait > time.Minute {
			t.Fatalf("wait = %s", d.Wait)
		}
	})

	t.Run("instances share buckets", func(t *testing.T) {
		clock := newClock()
		a := NewLimiter(NewRedisStore(client, RedisOptions{Prefix: "shared:", Now: clock.Now}), Options{})
		b := NewLimiter(NewRedisStore(client, RedisOptions{Prefix: "shared:", Now: clock.Now}), Options{})
		k := []Scope{scope("key:a", Limits{TPM: 100, MaxConcurrent: 1})}
		r, _ := mustAllow(t, a, k, tokens(60))
		if d := mustRefuse(t, b, k, tokens(1)); d.Dimension != DimensionConcurrency {
			t.Fatalf("second instance = %+v", d)
		}
		settle(t, r, 60)
		if n := available(t, b, k...); n != 40 {
			t.Fatalf("second instance sees %d, want 40", n)
		}
	})

	t.Run("slots of a crashed instance expire with the lease", func(t *testing.T) {
		clock := newClock()
		s := NewRedisStore(client, RedisOptions{Prefix: "lease:", Now: clock.Now, Lease: time.Minute})
		l := NewLimiter(s, Options{})
		k := []Scope{scope("key:a", Limits{MaxConcurrent: 1})}
		mustAllow(t, l, k, tokens(1)) // never settled
		clock.Advance(time.Minute - time.Millisecond)
		mustRefuse(t, l, k, tokens(1))
		clock.Advance(time.Millisecond)
		mustAllow(t, l, k, tokens(1))
		if n := client.ZCard(ctx, s.SlotsKey("key:a")).Val(); n != 1 {
			t.Fatalf("slots held = %d, want 1 (the expired one removed)", n)
		}
	})
}

func TestRedisDownAndBack(t *testing.T) {
	srv := testredis.StartServer(t)
	client := newRedisClient(t, srv.Addr())
	clock := newClock()
	primary := NewRedisStore(client, RedisOptions{Now: clock.Now})
	k := []Scope{scope("key:a", Limits{TPM: 100})}

	var mu sync.Mutex
	var hooked []error
	hook := func(err error) {
		mu.Lock()
		hooked = append(hooked, err)
		mu.Unlock()
	}
	hooks := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(hooked)
	}
	allow := NewLimiter(primary, Options{
		Fallback:  NewMemoryStore(MemoryOptions{Now: clock.Now}),
		ErrorHook: hook,
	})
	deny := NewLimiter(primary, Options{OnStoreError: OnStoreErrorDeny, ErrorHook: hook})

	pending, d := mustAllow(t, allow, k, tokens(10))
	if d.Fallback {
		t.Fatal("answered from the fallback while Redis is up")
	}

	srv.Kill()

	_, d = mustAllow(t, allow, k, tokens(100))
	if !d.Fallback || hooks() != 1 {
		t.Fatalf("with Redis down: fallback=%t, hook calls=%d", d.Fallback, hooks())
	}
	if d = mustRefuse(t, allow, k, tokens(1)); !d.Fallback || d.Tokens.Limit != 100 {
		t.Fatalf("fallback does not hold the limit: %+v", d)
	}
	_, _, err := deny.Reserve(context.Background(), k, tokens(1))
	if !errors.Is(err, ErrStoreUnavailable) {
		t.Fatalf("deny with Redis down: err = %v, want ErrStoreUnavailable", err)
	}
	if _, err := deny.Available(context.Background(), k); !errors.Is(err, ErrStoreUnavailable) {
		t.Fatalf("deny Available with Redis down: err = %v", err)
	}
	if err := pending.Settle(context.Background(), 0); err == nil {
		t.Fatal("settling on a dead Redis reported no error")
	}
	if st := allow.Stats(); st.StoreErrors != 3 || st.FallbackDecisions != 2 {
		t.Fatalf("allow stats = %+v", st)
	}
	if st := deny.Stats(); st.Denied != 2 || st.StoreErrors != 2 {
		t.Fatalf("deny stats = %+v", st)
	}

	srv.Restart() // empty Redis

	_, d = mustAllow(t, allow, k, tokens(30))
	if d.Fallback || d.Tokens.Remaining != 70 {
		t.Fatalf("after restart: %+v, want Redis answering with 70 left", d)
	}
	if n := client.Exists(context.Background(), primary.BucketKey("key:a")).Val(); n != 1 {
		t.Fatal("Redis not used after restart")
	}
	if _, d = mustAllow(t, deny, k, tokens(70)); d.Fallback {
		t.Fatal("deny limiter did not recover")
	}
}

// TestStoresAgree runs one random sequence of reserves, settles, limit
// changes and clock moves against the memory and the Redis store and
// requires identical decisions: the Lua script mirrors the Go arithmetic.
func TestStoresAgree(t *testing.T) {
	addr, _ := testredis.Start(t)
	client := newRedisClient(t, addr)
	for seed := range uint64(5) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			clock := newClock()
			mem := NewLimiter(NewMemoryStore(MemoryOptions{Now: clock.Now}), Options{OnStoreError: OnStoreErrorDeny})
			// The memory store has no leases: here they never run out.
			red := NewLimiter(NewRedisStore(client, RedisOptions{Prefix: fmt.Sprint("agree", seed, ":"), Now: clock.Now, Lease: 24 * time.Hour}),
				Options{OnStoreError: OnStoreErrorDeny})
			runAgreement(t, rand.New(rand.NewPCG(seed, 2)), clock, mem, red)
		})
	}
}

func runAgreement(t *testing.T, rng *rand.Rand, clock *fakeClock, mem, red *Limiter) {
	scopes := []Scope{
		scope("key:a", Limits{RPM: 20, TPM: 600, MaxConcurrent: 4}),
		scope("model:m", Limits{TPM: 250, TPD: 5000}),
		scope("global", Limits{RPM: 30, RPD: 400, TPD: 20000}),
	}
	type pair struct {
		m, r   *Reservation
		tokens int64 // reserved
	}
	var open []pair
	ctx := context.Background()
	for i := range 3000 {
		switch op := rng.IntN(10); {
		case op < 5:
			sc := scopes[rng.IntN(2) : 2+rng.IntN(2)]
			cost := Cost{Requests: int64(rng.IntN(2)), Tokens: int64(rng.IntN(120))}
			rm, dm, err := mem.Reserve(ctx, sc, cost)
			if err != nil {
				t.Fatal(err)
			}
			rr, dr, err := red.Reserve(ctx, sc, cost)
			if err != nil {
				t.Fatal(err)
			}
			if dm != dr {
				t.Fatalf("op %d: reserve %+v on %v:\nmemory %+v\nredis  %+v", i, cost, sc, dm, dr)
			}
			if dm.Allowed {
				open = append(open, pair{rm, rr, cost.Tokens})
			}
		case op < 7 && len(open) > 0:
			j := rng.IntN(len(open))
			actual := int64(rng.IntN(200))
			if rng.IntN(3) == 0 {
				actual = open[j].tokens // exactly what was reserved: the Redis settlement leaves the buckets alone
			}
			settle(t, open[j].m, actual)
			settle(t, open[j].r, actual)
			open = append(open[:j], open[j+1:]...)
		case op == 7:
			clock.Advance(time.Duration(rng.IntN(5000)) * time.Millisecond)
		case op == 8 && rng.IntN(10) == 0:
			s := &scopes[rng.IntN(len(scopes))]
			s.Limits.TPM = int64(rng.IntN(4)) * 200
		default:
			am, rm := available(t, mem, scopes...), available(t, red, scopes...)
			if am != rm {
				t.Fatalf("op %d: available memory %d, redis %d", i, am, rm)
			}
		}
	}
}
