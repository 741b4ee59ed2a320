package store

import (
	"errors"
	"slices"
	"strconv"
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
		PoolSize:     16,
		// Fail fast while the server is down.
		MaxRetries:    -1,
		DialerRetries: 1,
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestRedisConformance runs the suite on one real redis-server, each case
// under its own prefix; the peer is a second client, as another instance
// has.
func TestRedisConformance(t *testing.T) {
	srv := testredis.StartServer(t)
	client, other := newRedisClient(t, srv.Addr()), newRedisClient(t, srv.Addr())
	var n atomic.Int64
	runSuite(t, func(t *testing.T, clock *fakeClock) (Backend, func() Backend) {
		opts := RedisOptions{Prefix: "t" + strconv.FormatInt(n.Add(1), 10) + ":", Now: clock.Now}
		return NewRedis(client, opts), func() Backend { return NewRedis(other, opts) }
	})
}

// TestRedisLazyAndUnavailable builds a backend on a Redis that is down:
// construction does no I/O, calls fail with ErrUnavailable, and work once
// Redis is back.
func TestRedisLazyAndUnavailable(t *testing.T) {
	srv := testredis.StartServer(t)
	srv.Kill()
	s := NewRedis(newRedisClient(t, srv.Addr()), RedisOptions{})
	q := s.Queue("lines")
	rec := Record{Kind: "file", Owner: "k", ID: "file-1", Data: []byte("1")}
	for name, err := range map[string]error{
		"Put":     s.Put(ctx, rec),
		"Get":     second(s.Get(ctx, "file", "k", "file-1")),
		"List":    second(s.List(ctx, "file", "k", ListOptions{})),
		"Update":  second(s.Update(ctx, "file", "k", "file-1", func(b []byte) ([]byte, error) { return b, nil })),
		"Delete":  s.Delete(ctx, "file", "k", "file-1"),
		"Sweep":   second(s.Sweep(ctx)),
		"Enqueue": q.Enqueue(ctx, "batch_1", lines("a")),
		"Claim":   second(q.Claim(ctx, "i1", 1, time.Minute)),
		"Pending": second(q.Pending(ctx, "batch_1")),
	} {
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("%s with Redis down = %v, want ErrUnavailable", name, err)
		}
	}
	srv.Restart()
	if err := s.Put(ctx, rec); err != nil {
		t.Fatalf("Put once Redis is back: %v", err)
	}
	if r, err := s.Get(ctx, "file", "k", "file-1"); err != nil || string(r.Data) != "1" {
		t.Fatalf("Get once Redis is back: %+v, %v", r, err)
	}
	// A script the old server had is loaded again into the new one
	// (NOSCRIPT, then EVAL).
	if err := q.Enqueue(ctx, "batch_1", lines("a")); err != nil {
		t.Fatal(err)
	}
	if got := itemData(claim(t, q, "i1", 10, time.Minute)); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("claimed %v", got)
	}
	srv.Restart()
	if err := q.Enqueue(ctx, "batch_1", lines("b")); err != nil {
		t.Fatal(err)
	}
	if got := itemData(claim(t, q, "i1", 10, time.Minute)); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("claimed %v from the restarted (empty) server", got)
	}
}

func second[T any](_ T, err error) error { return err }

// TestRedisKeyLayout checks the documented layout, which operators read
// with redis-cli: the owner is in the record's key.
func TestRedisKeyLayout(t *testing.T) {
	srv := testredis.StartServer(t)
	client := newRedisClient(t, srv.Addr())
	s := NewRedis(client, RedisOptions{Prefix: "{gw}:"})
	if err := s.Put(ctx, Record{Kind: "file", Owner: "team:a", ID: "file-1", Data: []byte(`{}`),
		ExpiresAt: time.UnixMilli(4_000_000_000_000)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Queue("lines").Enqueue(ctx, "batch_1", lines("0")); err != nil {
		t.Fatal(err)
	}
	keys, err := client.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	want := []string{"{gw}:exp", "{gw}:idx:file:team%3Aa", "{gw}:obj:file:team%3Aa:file-1",
		"{gw}:q:lines:b:batch_1", "{gw}:q:lines:i:1", "{gw}:q:lines:ready", "{gw}:q:lines:seq"}
	if !slices.Equal(keys, want) {
		t.Fatalf("keys = %q\nwant %q", keys, want)
	}
	h, err := client.HGetAll(ctx, "{gw}:obj:file:team%3Aa:file-1").Result()
	if err != nil || h["d"] != "{}" || h["v"] != "1" || h["e"] != "4000000000000" {
		t.Fatalf("record hash = %v, %v", h, err)
	}
}
