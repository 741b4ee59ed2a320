package cache

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/dgraph-io/ristretto/v2"
)

// Entry is a cached successful, complete response in its non-streamed (JSON) form. Stores hand
// out shared entries: treat an Entry as read-only once stored or returned.
type Entry struct {
	// Body is the JSON response body.
	Body []byte
	// Created is when the response was made.
	Created time.Time
	// Usage is the token accounting of the original response.
	Usage wire.Usage
	// Model is the model that produced the answer.
	Model string
	// Marked says Body's usage already says every prompt token came from the cache (MarkCached
	// ran when the entry was stored), so a hit serves Body as it is. Entries stored without it
	// (by an older instance sharing a Redis cache) are marked on each hit.
	Marked bool
}

// Store holds entries by key. Get reports a miss as (nil, false, nil); an error means the store
// could not answer (the caller then treats the request as a miss and carries on).
type Store interface {
	Get(ctx context.Context, key [32]byte) (*Entry, bool, error)
	Set(ctx context.Context, key [32]byte, e *Entry, ttl time.Duration) error
}

// entryOverhead approximates the memory of an entry beyond its body and model name: the Entry,
// the item wrapper and ristretto's own bookkeeping.
const entryOverhead = 256

// memItem is what the memory store keeps: the entry, the full key (ristretto indexes by 64 bits
// of it; the rest is checked on Get so a collision is a miss, never a wrong answer) and the
// expiry on the store's clock.
type memItem struct {
	key     [32]byte
	entry   *Entry
	expires time.Time
}

// MemoryStore is an in-process Store bounded in bytes, built on ristretto (TinyLFU admission,
// sampled LFU eviction). Set is synchronous: an entry is visible to Get when Set returns, unless
// the admission policy turned it down.
type MemoryStore struct {
	c   *ristretto.Cache[uint64, *memItem]
	now func() time.Time

	hits, misses, evictions atomic.Int64
}

// MemoryOption configures a MemoryStore.
type MemoryOption func(*MemoryStore)

// WithClock makes the store read time from now, which tests move instead of sleeping. Expiry is
// checked against it on every Get.
func WithClock(now func() time.Time) MemoryOption {
	return func(s *MemoryStore) { s.now = now }
}

// NewMemoryStore returns a store holding at most about maxBytes of entries (body, model name and
// a fixed per-entry overhead). Close it when done.
func NewMemoryStore(maxBytes int64, opts ...MemoryOption) (*MemoryStore, error) {
	if maxBytes <= 0 {
		return nil, fmt.Errorf("creating memory cache: max bytes must be positive, got %d", maxBytes)
	}
	s := &MemoryStore{now: time.Now}
	for _, o := range opts {
		o(s)
	}
	// Ristretto wants about ten counters per item it may hold; guess items from a small entry.
	counters := max(maxBytes/(entryOverhead+512)*10, 1000)
	c, err := ristretto.NewCache(&ristretto.Config[uint64, *memItem]{
		NumCounters:        counters,
		MaxCost:            maxBytes,
		BufferItems:        64,
		IgnoreInternalCost: true,
		OnEvict:            func(*ristretto.Item[*memItem]) { s.evictions.Add(1) },
	})
	if err != nil {
		return nil, fmt.Errorf("creating memory cache: %w", err)
	}
	s.c = c
	return s, nil
}

// hashKey picks the 64 bits ristretto indexes by. The key is a SHA-256 digest, so any 8 bytes
// are uniformly distributed.
func hashKey(key *[32]byte) uint64 {
	return binary.LittleEndian.Uint64(key[:8])
}

// Get returns the live entry stored under key.
func (s *MemoryStore) Get(_ context.Context, key [32]byte) (*Entry, bool, error) {
	it, ok := s.c.Get(hashKey(&key))
	if !ok || it == nil || it.key != key || !s.now().Before(it.expires) {
		s.misses.Add(1)
		return nil, false, nil
	}
	s.hits.Add(1)
	return it.entry, true, nil
}

// Set stores e under key for ttl (DefaultTTL when ttl <= 0). The store keeps e itself: do not
// modify it afterwards. An entry larger than the whole store is not kept.
func (s *MemoryStore) Set(_ context.Context, key [32]byte, e *Entry, ttl time.Duration) error {
	if e == nil {
		return errors.New("storing cache entry: nil entry")
	}
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	cost := int64(len(e.Body)+len(e.Model)) + entryOverhead
	if cost > s.c.MaxCost() {
		return nil
	}
	it := &memItem{key: key, entry: e, expires: s.now().Add(ttl)}
	// Ristretto's own TTL (on the wall clock) reclaims the memory of expired entries; the item's
	// expiry (on the store's clock) decides what Get serves.
	if s.c.SetWithTTL(hashKey(&key), it, cost, ttl) {
		s.c.Wait()
	}
	return nil
}

// Metrics returns the store's counters: Get hits and misses, entries evicted (to make room or
// because they expired) and the bytes (cost) of the entries held now.
func (s *MemoryStore) Metrics() (hits, misses, evictions, bytes int64) {
	return s.hits.Load(), s.misses.Load(), s.evictions.Load(), s.c.MaxCost() - s.c.RemainingCost()
}

// Close stops the store's goroutines and drops its entries. The store must not be used after.
func (s *MemoryStore) Close() {
	s.c.Close()
}

// Interface guards
var (
	_ Store = (*MemoryStore)(nil)
	_ Store = (*RedisStore)(nil)
)
