package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/caddyai/gateway/internal/testredis"
	"github.com/caddyai/gateway/internal/wire"
	"github.com/redis/go-redis/v9"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func testKey(s string) [32]byte { return sha256.Sum256([]byte(s)) }

func testEntry(body string) *Entry {
	return &Entry{
		Body:    []byte(body),
		Created: time.Unix(1767322800, 123456789),
		Usage:   wire.Usage{PromptTokens: 12, CompletionTokens: 5, TotalTokens: 17, CachedTokens: 3, Estimated: true},
		Model:   "llama-3.1-8b",
	}
}

func newMemoryStore(t testing.TB, maxBytes int64, opts ...MemoryOption) *MemoryStore {
	t.Helper()
	s, err := NewMemoryStore(maxBytes, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func TestMemoryStoreGetSetTTL(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s := newMemoryStore(t, 1<<20, WithClock(clk.now))
	k := testKey("a")

	if e, ok, err := s.Get(ctx, k); e != nil || ok || err != nil {
		t.Fatalf("Get on empty store = %v, %v, %v", e, ok, err)
	}
	want := testEntry(`{"id":"x"}`)
	if err := s.Set(ctx, k, want, time.Minute); err != nil {
		t.Fatal(err)
	}
	got, ok, err := s.Get(ctx, k)
	if err != nil || !ok || got != want {
		t.Fatalf("Get after Set = %v, %v, %v", got, ok, err)
	}
	if _, ok, _ := s.Get(ctx, testKey("b")); ok {
		t.Fatal("another key hit")
	}
	// A key sharing the 64 bits ristretto indexes by is a miss, never the other's entry.
	twin := k
	twin[31] ^= 1
	if _, ok, _ := s.Get(ctx, twin); ok {
		t.Fatal("a key differing only past the index bits hit")
	}

	clk.advance(59 * time.Second)
	if _, ok, _ := s.Get(ctx, k); !ok {
		t.Fatal("entry gone before its TTL")
	}
	clk.advance(time.Second)
	if _, ok, _ := s.Get(ctx, k); ok {
		t.Fatal("entry served at its TTL")
	}

	// Overwriting replaces the entry and its expiry.
	second := testEntry(`{"id":"y"}`)
	if err := s.Set(ctx, k, second, time.Hour); err != nil {
		t.Fatal(err)
	}
	if got, ok, _ := s.Get(ctx, k); !ok || got != second {
		t.Fatalf("Get after overwrite = %v, %v", got, ok)
	}
	// ttl <= 0 means DefaultTTL.
	if err := s.Set(ctx, testKey("d"), second, 0); err != nil {
		t.Fatal(err)
	}
	clk.advance(DefaultTTL - time.Second)
	if _, ok, _ := s.Get(ctx, testKey("d")); !ok {
		t.Fatal("default TTL entry gone early")
	}
	clk.advance(time.Second)
	if _, ok, _ := s.Get(ctx, testKey("d")); ok {
		t.Fatal("default TTL entry served late")
	}

	hits, misses, _, bytes := s.Metrics()
	if hits != 4 || misses != 5 {
		t.Fatalf("hits, misses = %d, %d; want 4, 5", hits, misses)
	}
	if bytes <= 0 {
		t.Fatalf("bytes = %d with entries held", bytes)
	}
	if err := s.Set(ctx, k, nil, time.Minute); err == nil {
		t.Fatal("Set(nil) succeeded")
	}
}

func TestMemoryStoreBound(t *testing.T) {
	ctx := context.Background()
	const maxBytes = 64 << 10
	s := newMemoryStore(t, maxBytes)
	body := bytes.Repeat([]byte("x"), 1000)
	perEntry := int64(len(body)+len("llama-3.1-8b")) + entryOverhead
	for i := range 1000 {
		e := &Entry{Body: body, Model: "llama-3.1-8b"}
		if err := s.Set(ctx, testKey(strconv.Itoa(i)), e, time.Hour); err != nil {
			t.Fatal(err)
		}
		if _, _, _, held := s.Metrics(); held > maxBytes {
			t.Fatalf("after %d sets the store holds %d bytes, over its %d", i+1, held, maxBytes)
		}
	}
	_, _, evictions, held := s.Metrics()
	if held < perEntry {
		t.Fatalf("store holds %d bytes: nothing was kept", held)
	}
	if evictions == 0 {
		t.Fatalf("%d bytes written into %d without an eviction", 1000*perEntry, maxBytes)
	}
	kept := 0
	for i := range 1000 {
		if _, ok, _ := s.Get(ctx, testKey(strconv.Itoa(i))); ok {
			kept++
		}
	}
	if int64(kept)*perEntry > maxBytes {
		t.Fatalf("%d entries of %d bytes readable from a %d-byte store", kept, perEntry, maxBytes)
	}
	// An entry larger than the store is not kept.
	huge := &Entry{Body: bytes.Repeat([]byte("y"), maxBytes)}
	if err := s.Set(ctx, testKey("huge"), huge, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Get(ctx, testKey("huge")); ok {
		t.Fatal("an entry larger than the store was kept")
	}
	if _, err := NewMemoryStore(0); err == nil {
		t.Fatal("NewMemoryStore(0) succeeded")
	}
}

func TestEnvelope(t *testing.T) {
	for _, e := range []*Entry{
		testEntry(`{"id":"chatcmpl-1","choices":[]}`),
		{Body: []byte{}, Model: ""},
		{Body: []byte(`{}`), Usage: wire.Usage{PromptTokens: 1 << 40}},
		{Body: []byte(`{}`), Marked: true},
	} {
		b := encodeEntry(nil, e)
		got, err := decodeEntry(b)
		if err != nil {
			t.Fatalf("decoding %q: %v", b, err)
		}
		if !bytes.Equal(got.Body, e.Body) || got.Model != e.Model || got.Usage != e.Usage || !got.Created.Equal(e.Created) || got.Marked != e.Marked {
			t.Fatalf("round trip: got %+v, want %+v", got, e)
		}
	}
	good := encodeEntry(nil, testEntry(`{}`))
	for _, bad := range [][]byte{nil, {0xCA}, {0x00, 1}, {0xCA, 9}, good[:5], append(append([]byte{}, good[:12]...), 0xff, 0xff)} {
		if _, err := decodeEntry(bad); err == nil {
			t.Errorf("decodeEntry(%q) succeeded", bad)
		}
	}
}

func TestRedisStore(t *testing.T) {
	ctx := context.Background()
	srv := testredis.StartServer(t)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1})
	t.Cleanup(func() { _ = client.Close() })
	s := NewRedisStore(client, "test:")
	k := testKey("a")

	if e, ok, err := s.Get(ctx, k); e != nil || ok || err != nil {
		t.Fatalf("Get on empty store = %v, %v, %v", e, ok, err)
	}
	want := testEntry(`{"id":"chatcmpl-1","object":"chat.completion"}`)
	if err := s.Set(ctx, k, want, 90*time.Second); err != nil {
		t.Fatal(err)
	}
	got, ok, err := s.Get(ctx, k)
	if err != nil || !ok {
		t.Fatalf("Get after Set = %v, %v", ok, err)
	}
	if !bytes.Equal(got.Body, want.Body) || got.Model != want.Model || got.Usage != want.Usage || !got.Created.Equal(want.Created) {
		t.Fatalf("Get = %+v, want %+v", got, want)
	}
	// Redis holds the TTL (SET ... PX/EX): check it rather than wait for it.
	rk := s.redisKey(&k)
	ttl, err := client.PTTL(ctx, rk).Result()
	if err != nil || ttl <= 80*time.Second || ttl > 90*time.Second {
		t.Fatalf("PTTL = %v, %v; want about 90s", ttl, err)
	}
	if err := s.Set(ctx, testKey("ms"), want, 1500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if ttl, _ := client.PTTL(ctx, s.redisKey(ptr(testKey("ms")))).Result(); ttl <= time.Second || ttl > 1500*time.Millisecond {
		t.Fatalf("PTTL = %v, want about 1.5s", ttl)
	}
	if rk != "test:"+hexKey(k) {
		t.Fatalf("redis key %q", rk)
	}
	// A value that is not an envelope is an error, not a hit.
	if err := client.Set(ctx, rk, "garbage", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if e, ok, err := s.Get(ctx, k); err == nil || ok || e != nil {
		t.Fatalf("Get of garbage = %v, %v, %v", e, ok, err)
	}
	// Another prefix is another cache.
	if _, ok, _ := NewRedisStore(client, "").Get(ctx, k); ok {
		t.Fatal("default prefix sees the test prefix's entries")
	}
	// Redis going away is an error the caller can treat as a miss.
	srv.Kill()
	if _, ok, err := s.Get(ctx, k); err == nil || ok {
		t.Fatalf("Get with redis down = %v, %v", ok, err)
	}
	if err := s.Set(ctx, k, want, time.Minute); err == nil {
		t.Fatal("Set with redis down succeeded")
	}
}

func ptr[T any](v T) *T { return &v }

func hexKey(k [32]byte) string {
	const digits = "0123456789abcdef"
	b := make([]byte, 64)
	for i, c := range k {
		b[2*i], b[2*i+1] = digits[c>>4], digits[c&0xf]
	}
	return string(b)
}
