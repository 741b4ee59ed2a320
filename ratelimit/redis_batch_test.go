package ratelimit

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddyai/gateway/internal/testredis"
	"github.com/redis/go-redis/v9"
)

// roundTrips counts the script calls a client sends, and the pipelines holding them.
type roundTrips struct{ pipelines, commands, single atomic.Int64 }

func isScript(cmd redis.Cmder) bool { return cmd.Name() == "evalsha" || cmd.Name() == "eval" }

func (c *roundTrips) hook() cmdHook {
	return cmdHook{before: func(cmds []redis.Cmder, pipelined bool) error {
		n := 0
		for _, cmd := range cmds {
			if isScript(cmd) {
				n++
			}
		}
		switch {
		case n > 0 && pipelined:
			c.pipelines.Add(1)
			c.commands.Add(int64(n))
		case n > 0:
			c.single.Add(int64(n))
		}
		return nil
	}}
}

// TestRedisPipelinesShared: calls made at once share round trips, and each caller still gets
// its own decision: 200 concurrent reserves on a key with room for 150 admit exactly 150,
// and each settlement is in Redis when Settle returns.
func TestRedisPipelinesShared(t *testing.T) {
	addr, _ := testredis.Start(t)
	client := faultClient(t, addr)
	rt := &roundTrips{}
	client.AddHook(rt.hook())
	clock := newClock()
	store := NewRedisStore(client, RedisOptions{Prefix: "shared:", Now: clock.Now})
	l := NewLimiter(store, Options{OnStoreError: OnStoreErrorDeny})
	k := []Scope{scope("key:a", Limits{RPM: 150, TPM: 1 << 20})}
	mustAllow(t, l, []Scope{scope("key:warm", Limits{RPM: 10})}, tokens(1)) // the scripts loaded
	rt.pipelines.Store(0)
	rt.commands.Store(0)

	const callers = 200
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		allowed atomic.Int64
		held    = make(chan *Reservation, callers)
	)
	for range callers {
		wg.Go(func() {
			<-start
			r, d, err := l.Reserve(context.Background(), k, tokens(100))
			if err != nil {
				t.Errorf("Reserve: %v", err)
				return
			}
			if d.Allowed {
				allowed.Add(1)
				held <- r
			}
		})
	}
	close(start)
	wg.Wait()
	close(held)
	if n := allowed.Load(); n != 150 {
		t.Fatalf("admitted %d of %d on rpm 150", n, callers)
	}
	// every admitted reserve is a command, and none is two; a caller arriving after a trip has
	// brought back a refusal of the key's request bucket is refused from that (redis_refused.go)
	// without one
	trips := rt.pipelines.Load()
	if cmds := rt.commands.Load(); cmds < 150 || cmds > callers || trips >= callers/4 {
		t.Fatalf("%d reserves sent as %d commands in %d round trips; want 150 to %d commands in fewer than %d", callers, cmds, trips, callers, callers/4)
	}
	t.Logf("%d concurrent reserves in %d round trips", callers, trips)

	for r := range held {
		settle(t, r, 10)
	}
	d, err := store.Peek(context.Background(), k, Cost{})
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(1<<20 - 150*10); d.Tokens.Remaining != want {
		t.Fatalf("tokens remaining after 150 settlements of 10 = %d, want %d", d.Tokens.Remaining, want)
	}
	if n := rt.single.Load(); n != 0 {
		t.Fatalf("%d commands sent outside pipelines", n)
	}
}

// TestRedisReserveGivenUp: a caller whose context ends while its reserve is in flight (Redis
// hangs) gets an error at once; what the reserve took when Redis runs it is released.
func TestRedisReserveGivenUp(t *testing.T) {
	srv := testredis.StartServer(t)
	client := faultClient(t, srv.Addr())
	clock := newClock()
	store := NewRedisStore(client, RedisOptions{Prefix: "givenup:", Now: clock.Now, Lease: time.Hour})
	runStore(t, store)
	k := []Scope{scope("key:a", Limits{TPM: 1000, MaxConcurrent: 1})}
	ctx := context.Background()
	if _, err := store.Peek(ctx, k, Cost{}); err != nil { // the scripts loaded, a connection open
		t.Fatal(err)
	}
	pid := redisPID(t, client)

	signal(t, pid, syscall.SIGSTOP)
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	began := time.Now()
	_, err := store.Reserve(short, Request{ID: "r1", Scopes: k, Cost: tokens(300)})
	took := time.Since(began)
	cancel()
	time.Sleep(100 * time.Millisecond) // within the client's 200 ms read timeout: Redis answers the pipeline
	signal(t, pid, syscall.SIGCONT)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, errAbandoned) || took > 150*time.Millisecond {
		t.Fatalf("Reserve with Redis stopped = %v after %s; want the caller's deadline at once", err, took)
	}
	eventually(t, "the given-up reservation released", 3*time.Second, func() bool {
		d, err := store.Peek(ctx, k, Cost{})
		return err == nil && d.Tokens.Remaining == 1000 && slotsFree(t, client, store, "key:a")
	})
	if _, d := mustAllow(t, NewLimiter(store, Options{}), k, tokens(1)); d.Fallback {
		t.Fatal("answered by the fallback")
	}
}
