package ratelimit

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddyai/gateway/internal/testredis"
	"github.com/redis/go-redis/v9"
)

// faultClient is configured as the gateway configures its client: short
// timeouts and no retries.
func faultClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{
		Addr:          addr,
		DialTimeout:   200 * time.Millisecond,
		ReadTimeout:   200 * time.Millisecond,
		WriteTimeout:  200 * time.Millisecond,
		MaxRetries:    -1,
		DialerRetries: 1,
		PoolSize:      16,
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// warmPool opens n connections, so that commands sent while Redis hangs are
// written to a live connection (and run by Redis later), as on a busy
// gateway.
func warmPool(t *testing.T, c *redis.Client, n int) {
	t.Helper()
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() { _ = c.Do(context.Background(), "BLPOP", "warm:none", "0.1").Err() })
	}
	wg.Wait()
}

// redisPID returns the process id of the server c talks to.
func redisPID(t *testing.T, c *redis.Client) int {
	t.Helper()
	info, err := c.Info(context.Background(), "server").Result()
	if err != nil {
		t.Fatalf("INFO server: %v", err)
	}
	for line := range strings.SplitSeq(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "process_id:"); ok {
			pid, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("parsing process_id %q: %v", v, err)
			}
			return pid
		}
	}
	t.Fatal("INFO server has no process_id")
	return 0
}

// signal sends sig to pid; SIGSTOP is undone when the test ends.
func signal(t *testing.T, pid int, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(pid, sig); err != nil {
		t.Fatalf("kill -%d %d: %v", sig, pid, err)
	}
	if sig == syscall.SIGSTOP {
		t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
	}
}

// runStore runs s.Run until the test ends, logging what it reports.
func runStore(t *testing.T, s *RedisStore) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(ctx, func(err error) { t.Logf("Run reported: %v", err) })
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// eventually polls cond every 20ms and returns how long it took to hold.
func eventually(t *testing.T, what string, limit time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// slotsFree reports whether key's slot set holds nothing live.
func slotsFree(t *testing.T, c *redis.Client, s *RedisStore, scope string) bool {
	t.Helper()
	n, err := c.ZCard(context.Background(), s.SlotsKey(scope)).Result()
	return err == nil && n == 0
}

// TestRedisStallReleasesSlots is the stall of the issue: Redis stops
// (SIGSTOP) for 0.5s while 3 requests hold slots of a max_concurrent 4 key.
// Their settlements time out, and so does a fourth reserve, which Redis runs
// when it resumes (taking the last slot; with max_concurrent 3 it would be
// refused, if it ran before the settlements). The leases are an hour long on
// a clock that does not move, so only the background retries and releases
// can free the slots and refund the tokens.
func TestRedisStallReleasesSlots(t *testing.T) {
	srv := testredis.StartServer(t)
	client := faultClient(t, srv.Addr())
	clock := newClock()
	store := NewRedisStore(client, RedisOptions{Prefix: "stall:", Now: clock.Now, Lease: time.Hour})
	runStore(t, store)
	l := NewLimiter(store, Options{Fallback: NewMemoryStore(MemoryOptions{Now: clock.Now})})
	k := []Scope{scope("key:a", Limits{TPM: 1000, MaxConcurrent: 4})}
	ctx := context.Background()

	// Both scripts are loaded, as on a gateway that has served requests.
	r, _ := mustAllow(t, l, []Scope{scope("key:warm", Limits{TPM: 10})}, tokens(1))
	settle(t, r, 1)
	var held []*Reservation
	for range 3 {
		r, d := mustAllow(t, l, k, tokens(100))
		if d.Fallback {
			t.Fatal("reserved on the fallback while Redis is up")
		}
		held = append(held, r)
	}
	warmPool(t, client, 8)
	pid := redisPID(t, client)

	signal(t, pid, syscall.SIGSTOP)
	stopped := time.Now()
	var wg sync.WaitGroup
	var settleErrs atomic.Int64
	for _, r := range held {
		wg.Go(func() {
			if r.Settle(ctx, 10) != nil {
				settleErrs.Add(1)
			}
		})
	}
	var lost Decision
	wg.Go(func() {
		_, lost, _ = l.Reserve(ctx, k, tokens(100))
	})
	wg.Wait()
	time.Sleep(500*time.Millisecond - time.Since(stopped))
	signal(t, pid, syscall.SIGCONT)

	if settleErrs.Load() != 3 || !lost.Allowed || !lost.Fallback {
		t.Fatalf("during the stall: %d settle errors, reserve %+v; want 3 errors and the fallback", settleErrs.Load(), lost)
	}
	took := eventually(t, "slots free and tokens refunded", 3*time.Second, func() bool {
		n, err := store.Peek(ctx, k, Cost{})
		return err == nil && slotsFree(t, client, store, "key:a") && n.Tokens.Remaining == 970
	})
	t.Logf("slots free and the lost reserve refunded %s after Redis resumed", took.Round(10*time.Millisecond))
	for range 4 {
		if _, d := mustAllow(t, l, k, tokens(1)); d.Fallback {
			t.Fatal("answered by the fallback after Redis resumed")
		}
	}
	if d := mustRefuse(t, l, k, tokens(1)); d.Dimension != DimensionConcurrency {
		t.Fatalf("fifth request = %+v", d)
	}
}

// outage makes every command fail while down is set, as a Redis that is
// unreachable and comes back with its data (a restart from the AOF, a
// network partition) would.
type outage struct{ down atomic.Bool }

var errOutage = errors.New("dial tcp: connect: connection refused (test outage)")

func (o *outage) hook() cmdHook {
	return cmdHook{before: func(cmds []redis.Cmder, _ bool) error {
		if !o.down.Load() {
			return nil
		}
		for _, c := range cmds {
			c.SetErr(errOutage)
		}
		return errOutage
	}}
}

// cmdHook is a redis.Hook that calls before with what each call sends (one command, or the
// commands of a pipeline) before it leaves; an error from before fails the call with it.
type cmdHook struct {
	before func(cmds []redis.Cmder, pipelined bool) error
}

func (h cmdHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h cmdHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if err := h.before([]redis.Cmder{cmd}, false); err != nil {
			return err
		}
		return next(ctx, cmd)
	}
}

func (h cmdHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if err := h.before(cmds, true); err != nil {
			return err
		}
		return next(ctx, cmds)
	}
}

// TestRedisOutageReleasesSlots: settlements fail while Redis is unreachable
// and Redis comes back with the slots; they are released and the tokens
// refunded once it answers, and a settlement whose lease ran out meanwhile
// is dropped instead of retried forever.
func TestRedisOutageReleasesSlots(t *testing.T) {
	addr, _ := testredis.Start(t)
	client := faultClient(t, addr)
	out := &outage{}
	client.AddHook(out.hook())
	clock := newClock()
	store := NewRedisStore(client, RedisOptions{Prefix: "outage:", Now: clock.Now, Lease: time.Minute})
	runStore(t, store)
	l := NewLimiter(store, Options{Fallback: NewMemoryStore(MemoryOptions{Now: clock.Now})})
	k := []Scope{scope("key:a", Limits{TPM: 1000, MaxConcurrent: 3})}
	tok := []Scope{scope("key:t", Limits{TPM: 1000})} // tokens only, no slot
	ctx := context.Background()

	var held []*Reservation
	for range 3 {
		r, _ := mustAllow(t, l, k, tokens(100))
		held = append(held, r)
	}
	rt, _ := mustAllow(t, l, tok, tokens(500))
	out.down.Store(true)
	for _, r := range held {
		if err := r.Settle(ctx, 10); !errors.Is(err, errOutage) {
			t.Fatalf("Settle during the outage = %v", err)
		}
	}
	if err := rt.Settle(ctx, 50); err == nil {
		t.Fatal("Settle during the outage succeeded")
	}
	if _, d := mustAllow(t, l, k, tokens(100)); !d.Fallback {
		t.Fatalf("reserve during the outage = %+v, want the fallback", d)
	}
	out.down.Store(false)
	took := eventually(t, "slots free and tokens refunded", 3*time.Second, func() bool {
		a, errA := store.Peek(ctx, k, Cost{})
		b, errB := store.Peek(ctx, tok, Cost{})
		return errA == nil && errB == nil && slotsFree(t, client, store, "key:a") &&
			a.Tokens.Remaining == 970 && b.Tokens.Remaining == 950
	})
	t.Logf("slots free and tokens refunded %s after Redis answered again", took.Round(10*time.Millisecond))

	// A settlement that outlives its lease is dropped: the lease freed the
	// slot in Redis already.
	r, _ := mustAllow(t, l, k, tokens(100))
	out.down.Store(true)
	if err := r.Settle(ctx, 0); err == nil {
		t.Fatal("Settle during the outage succeeded")
	}
	clock.Advance(time.Minute)
	eventually(t, "the expired settlement dropped", 3*time.Second, func() bool {
		store.mu.Lock()
		defer store.mu.Unlock()
		return len(store.pending) == 0
	})
	out.down.Store(false)
	for range 3 {
		mustAllow(t, l, k, tokens(1))
	}
}

// TestRedisLeaseRenewal: a request that runs for several leases keeps its
// slot while Run renews it; once its instance stops renewing (a crash), the
// slot is free again within a lease. Real time, on the server's clock.
func TestRedisLeaseRenewal(t *testing.T) {
	addr, _ := testredis.Start(t)
	client := faultClient(t, addr)
	const lease = 600 * time.Millisecond
	crashed := NewRedisStore(client, RedisOptions{Prefix: "renew:", Lease: lease})
	ctx, crash := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		crashed.Run(ctx, nil)
	}()
	other := NewLimiter(NewRedisStore(client, RedisOptions{Prefix: "renew:", Lease: lease}), Options{OnStoreError: OnStoreErrorDeny})
	l := NewLimiter(crashed, Options{OnStoreError: OnStoreErrorDeny})
	k := []Scope{scope("key:a", Limits{MaxConcurrent: 1, TPM: 1000})}

	r, _ := mustAllow(t, l, k, tokens(100))
	for end := time.Now().Add(3 * lease); time.Now().Before(end); time.Sleep(lease / 6) {
		if d := mustRefuse(t, other, k, tokens(1)); d.Dimension != DimensionConcurrency {
			t.Fatalf("refusal = %+v", d)
		}
	}
	settle(t, r, 100)
	rb, _ := mustAllow(t, other, k, tokens(1))
	settle(t, rb, 1)

	mustAllow(t, l, k, tokens(1)) // never settled
	crash()
	<-done
	took := eventually(t, "the crashed instance's slot free", 2*lease, func() bool {
		r, d, err := other.Reserve(context.Background(), k, tokens(1))
		if err == nil && d.Allowed {
			_ = r.Release(context.Background())
		}
		return err == nil && d.Allowed
	})
	t.Logf("slot of a stopped renewer free %s after it stopped (lease %s)", took.Round(10*time.Millisecond), lease)
}

// TestRedisRestartWhileHeld: Redis restarts empty while slots are held.
// Renewal and settlement find the reservations gone (and reload the
// scripts); nothing is refunded into the fresh buckets and nothing stays
// pending.
func TestRedisRestartWhileHeld(t *testing.T) {
	srv := testredis.StartServer(t)
	client := faultClient(t, srv.Addr())
	clock := newClock()
	store := NewRedisStore(client, RedisOptions{Prefix: "restart:", Now: clock.Now, Lease: 3 * time.Second})
	l := NewLimiter(store, Options{Fallback: NewMemoryStore(MemoryOptions{Now: clock.Now})})
	k := []Scope{scope("key:a", Limits{TPM: 1000, MaxConcurrent: 2})}
	ctx := context.Background()
	a, _ := mustAllow(t, l, k, tokens(100))
	b, _ := mustAllow(t, l, k, tokens(100))
	srv.Restart()
	if err := a.Settle(ctx, 0); err != nil {
		t.Fatalf("Settle after the restart: %v", err) // a reply saying there was nothing to apply
	}
	clock.Advance(time.Second) // b's renewal is due
	if err := store.maintain(ctx); err != nil {
		t.Fatalf("maintain after the restart: %v", err)
	}
	store.mu.Lock()
	held, pending := len(store.held), len(store.pending)
	store.mu.Unlock()
	if held != 0 || pending != 0 {
		t.Fatalf("after the restart %d held, %d pending; want none", held, pending)
	}
	if err := b.Settle(ctx, 0); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, d := mustAllow(t, l, k, tokens(100)); d.Fallback || d.Tokens.Remaining < 800 {
			t.Fatalf("after the restart: %+v", d)
		}
	}
	if n, _ := store.Peek(ctx, k, Cost{}); n.Tokens.Remaining != 800 {
		t.Fatalf("remaining = %d, want 800 (nothing refunded into the fresh bucket)", n.Tokens.Remaining)
	}
}

// TestRedisSettleOnce: a settlement repeated (a retry whose first attempt
// ran) applies once, a reserve repeated under the same id (a go-redis retry)
// takes nothing, and a release that reaches Redis before its reserve makes
// that reserve take nothing.
func TestRedisSettleOnce(t *testing.T) {
	addr, _ := testredis.Start(t)
	client := faultClient(t, addr)
	clock := newClock()
	store := NewRedisStore(client, RedisOptions{Prefix: "once:", Now: clock.Now})
	k := []Scope{scope("key:a", Limits{TPM: 1000, MaxConcurrent: 5})}
	ctx := context.Background()
	remaining := func() int64 {
		t.Helper()
		d, err := store.Peek(ctx, k, Cost{})
		if err != nil {
			t.Fatal(err)
		}
		return d.Tokens.Remaining
	}

	req := Request{ID: "r1", Scopes: k, Cost: tokens(100)}
	if d, err := store.Reserve(ctx, req); err != nil || !d.Allowed {
		t.Fatalf("Reserve = %+v, %v", d, err)
	}
	for range 2 {
		if err := store.Settle(ctx, req, 40); err != nil {
			t.Fatal(err)
		}
	}
	if n := remaining(); n != 960 {
		t.Fatalf("remaining after two settlements = %d, want 960", n)
	}

	req2 := Request{ID: "r2", Scopes: k, Cost: tokens(100)}
	if _, err := store.Reserve(ctx, req2); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Reserve(ctx, req2); err == nil || !strings.Contains(err.Error(), "AIGWSEEN") {
		t.Fatalf("second Reserve under one id = %v, want AIGWSEEN", err)
	}
	// The caller saw an error, so Run releases the reservation it did get.
	if err := store.maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if n := remaining(); n != 960 || !slotsFree(t, client, store, "key:a") {
		t.Fatalf("remaining = %d (want 960), slots free %t", n, slotsFree(t, client, store, "key:a"))
	}

	// A release that arrives first leaves a tombstone.
	req3 := Request{ID: "r3", Scopes: k, Cost: tokens(100)}
	store.queue(req3, -100, 0)
	if err := store.maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Reserve(ctx, req3); err == nil {
		t.Fatal("a released reservation was taken")
	}
	if err := store.maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if n := remaining(); n != 960 || !slotsFree(t, client, store, "key:a") {
		t.Fatalf("remaining = %d (want 960), slots free %t", n, slotsFree(t, client, store, "key:a"))
	}
	if _, err := store.Reserve(ctx, Request{Scopes: k, Cost: tokens(1)}); !errors.Is(err, ErrInvalidRequest) {
		t.Fatalf("Reserve without an id = %v", err)
	}
}

// TestRedisOutageBudget measures what two instances sharing one Redis admit
// on an rpm 20 key across a Redis kill and restart (an empty Redis), on a
// clock that does not move: nothing refills, so every admission is budget
// handed out by the outage. The key is at its limit when Redis dies, and
// both instances remember Redis's refusal; the clock moves on by the hold of
// a remembered refusal (a second) after the kill and after the restart, so
// that they ask Redis again, as they would a second into any outage. The
// README's rate-limit section quotes these numbers.
func TestRedisOutageBudget(t *testing.T) {
	srv := testredis.StartServer(t)
	k := []Scope{scope("key:a", Limits{RPM: 20})}
	tests := []struct {
		mode     string
		fraction float64
		want     [3]int // before the kill, while down, after the restart
	}{
		{OnStoreErrorAllow, 0, [3]int{20, 40, 20}},
		{OnStoreErrorAllow, 0.5, [3]int{20, 20, 20}},
		{OnStoreErrorAllow, 0.25, [3]int{20, 10, 20}},
		{OnStoreErrorDeny, 0, [3]int{20, 0, 20}},
	}
	for _, tc := range tests {
		t.Run(tc.mode+"_"+strconv.FormatFloat(tc.fraction, 'g', -1, 64), func(t *testing.T) {
			clock := newClock()
			var (
				instances []*Limiter
				clients   []*redis.Client
			)
			for range 2 {
				opts := Options{OnStoreError: tc.mode, FallbackFraction: tc.fraction}
				if tc.mode == OnStoreErrorAllow {
					opts.Fallback = NewMemoryStore(MemoryOptions{Now: clock.Now})
				}
				if err := opts.Validate(); err != nil {
					t.Fatal(err)
				}
				c := faultClient(t, srv.Addr())
				clients = append(clients, c)
				store := NewRedisStore(c, RedisOptions{Prefix: t.Name() + ":", Now: clock.Now})
				instances = append(instances, NewLimiter(store, opts))
			}
			// admit sends requests to both instances in turn until both refuse
			// or fail, and returns how many were admitted.
			admit := func() int {
				n := 0
				for range 1000 {
					stuck := 0
					for _, l := range instances {
						r, d, err := l.Reserve(context.Background(), k, Cost{Requests: 1})
						if err != nil || !d.Allowed {
							stuck++
							continue
						}
						n++
						_ = r.Settle(context.Background(), 0)
					}
					if stuck == len(instances) {
						return n
					}
				}
				t.Fatal("the limiters never refused")
				return n
			}
			var got [3]int
			got[0] = admit()
			srv.Kill()
			clock.Advance(time.Duration(refusedHold))
			got[1] = admit()
			srv.Restart()
			clock.Advance(time.Duration(refusedHold))
			for _, c := range clients { // let the pools drop their dead connections
				eventually(t, "reconnecting", 2*time.Second, func() bool { return c.Ping(context.Background()).Err() == nil })
			}
			got[2] = admit()
			total := got[0] + got[1] + got[2]
			t.Logf("on_store_error %s, fallback_fraction %v, 2 instances, rpm 20: %d before the kill + %d while Redis was down + %d after the restart = %d admitted",
				tc.mode, tc.fraction, got[0], got[1], got[2], total)
			if got != tc.want {
				t.Fatalf("admitted %v, want %v", got, tc.want)
			}
		})
	}
}

// TestRedisSettleNoWait: a settlement its caller does not wait for returns while Redis has not
// answered it, is applied before any later call of the same store runs (one queue, in order),
// is seen by another instance once applied, and is retried by Run when Redis fails it.
func TestRedisSettleNoWait(t *testing.T) {
	addr, _ := testredis.Start(t)
	client := faultClient(t, addr)
	gate := make(chan struct{})
	var held atomic.Bool // pipelines wait for the gate
	client.AddHook(cmdHook{before: func([]redis.Cmder, bool) error {
		if held.Load() {
			<-gate
		}
		return nil
	}})
	out := &outage{}
	client.AddHook(out.hook())
	clock := newClock()
	a := NewRedisStore(client, RedisOptions{Prefix: "nowait:", Now: clock.Now})
	runStore(t, a)
	la := NewLimiter(a, Options{OnStoreError: OnStoreErrorDeny})
	lb := NewLimiter(NewRedisStore(client, RedisOptions{Prefix: "nowait:", Now: clock.Now}), Options{OnStoreError: OnStoreErrorDeny})
	k := []Scope{scope("key:a", Limits{TPM: 100, MaxConcurrent: 1})}
	ctx := context.Background()

	r, _ := mustAllow(t, la, k, tokens(60))
	held.Store(true)
	returned := make(chan error, 1)
	go func() { returned <- r.SettleNoWait(10) }()
	select {
	case err := <-returned:
		if err != nil {
			t.Fatalf("SettleNoWait: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("SettleNoWait waited for Redis")
	}
	// The next reserve of this instance queues behind the settlement in flight, so it finds the
	// slot freed and the tokens refunded.
	type result struct {
		r   *Reservation
		d   Decision
		err error
	}
	got := make(chan result, 1)
	go func() {
		r, d, err := la.Reserve(ctx, k, tokens(1))
		got <- result{r, d, err}
	}()
	eventually(t, "the reserve queued behind the settlement", 3*time.Second, func() bool {
		a.batch.mu.Lock()
		defer a.batch.mu.Unlock()
		return len(a.batch.queue) == 1
	})
	close(gate)
	res := <-got
	if res.err != nil || !res.d.Allowed || res.d.Tokens.Remaining != 89 {
		t.Fatalf("the reserve after the settlement = %+v, %v; want its slot and 89 tokens left", res.d, res.err)
	}
	if n := available(t, lb, k...); n != 89 {
		t.Fatalf("the other instance sees %d tokens, want 89", n)
	}
	r.SettleNoWait(0) // settled already: nothing more
	if n := available(t, la, k...); n != 89 {
		t.Fatalf("a second settlement changed the tokens to %d", n)
	}

	// A settlement Redis fails is retried by Run once it answers again.
	held.Store(false)
	settle(t, res.r, 1)
	rs, _ := mustAllow(t, la, k, tokens(1)) // 88 left
	out.down.Store(true)
	if err := rs.SettleNoWait(0); err != nil {
		t.Fatalf("SettleNoWait during the outage: %v", err)
	}
	eventually(t, "the failed settlement kept for Run", 3*time.Second, func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return len(a.pending) == 1
	})
	out.down.Store(false)
	eventually(t, "the settlement retried", 3*time.Second, func() bool {
		d, err := a.Peek(ctx, k, Cost{})
		return err == nil && slotsFree(t, client, a, "key:a") && d.Tokens.Remaining == 89
	})
}
