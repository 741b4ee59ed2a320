package ratelimit

import (
	"context"
	"fmt"
	"testing"
	"time"
)

func TestMemorySweep(t *testing.T) {
	clock := newClock()
	s := NewMemoryStore(MemoryOptions{Now: clock.Now, IdleTTL: 10 * time.Minute})
	l := NewLimiter(s, Options{})
	for i := range 1000 {
		mustAllow(t, l, []Scope{scope(fmt.Sprintf("user:%d", i), Limits{RPM: 10})}, tokens(1))
	}
	debtor, _ := mustAllow(t, l, []Scope{scope("key:debt", Limits{TPD: 1000})}, tokens(10))
	settle(t, debtor, 1000) // full again only after a day
	busy := []Scope{scope("key:busy", Limits{MaxConcurrent: 1})}
	mustAllow(t, l, busy, tokens(1)) // holds its slot
	if n := s.Len(); n != 1002 {
		t.Fatalf("Len = %d, want 1002", n)
	}
	if n := s.Sweep(clock.Now().Add(10*time.Minute - time.Nanosecond)); n != 0 {
		t.Fatalf("swept %d before IdleTTL", n)
	}
	clock.Advance(10 * time.Minute)
	if n := s.Sweep(clock.Now()); n != 1000 {
		t.Fatalf("swept %d, want 1000", n)
	}
	if n := s.Len(); n != 2 {
		t.Fatalf("Len after sweep = %d, want 2 (the debtor and the busy key)", n)
	}
	if d := mustRefuse(t, l, busy, tokens(1)); d.Dimension != DimensionConcurrency {
		t.Fatalf("busy key lost its slot: %+v", d)
	}
	clock.Advance(24 * time.Hour)
	if n := s.Sweep(clock.Now()); n != 1 {
		t.Fatalf("swept %d after a day, want the debtor", n)
	}
	// A re-created bucket starts full, as the evicted one was.
	_, d := mustAllow(t, l, []Scope{scope("user:1", Limits{RPM: 10})}, tokens(1))
	if d.Requests.Remaining != 9 {
		t.Fatalf("re-created bucket: %+v", d.Requests)
	}
}

func TestMemoryPeekCreatesNothing(t *testing.T) {
	s := NewMemoryStore(MemoryOptions{})
	l := NewLimiter(s, Options{})
	if n := available(t, l, scope("key:a", Limits{TPM: 5})); n != 5 || s.Len() != 0 {
		t.Fatalf("available %d, Len %d", n, s.Len())
	}
}

func TestMemoryManyScopes(t *testing.T) {
	// More scopes than the stack buffers, several in the same shard.
	s := NewMemoryStore(MemoryOptions{})
	l := NewLimiter(s, Options{})
	var scopes []Scope
	for i := range 200 {
		scopes = append(scopes, scope(fmt.Sprintf("s%d", i), Limits{TPM: int64(100 + i), MaxConcurrent: 1}))
	}
	r, d := mustAllow(t, l, scopes, tokens(50))
	if d.Tokens.Limit != 100 || d.Tokens.Remaining != 50 {
		t.Fatalf("tokens = %+v", d.Tokens)
	}
	if d := mustRefuse(t, l, scopes[150:], tokens(1)); d.Dimension != DimensionConcurrency || d.Scope != "s150" {
		t.Fatalf("refusal = %+v", d)
	}
	if err := r.Settle(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	if n := available(t, l, scopes...); n != 100 {
		t.Fatalf("available = %d", n)
	}
}

func TestShardLockOrder(t *testing.T) {
	s := NewMemoryStore(MemoryOptions{})
	scopes := []Scope{{ID: "a"}, {ID: "b"}, {ID: "a"}, {ID: "zz"}, {ID: "b"}}
	locked := s.lock(scopes, nil)
	defer s.unlock(locked)
	for i := 1; i < len(locked); i++ {
		if locked[i-1] >= locked[i] {
			t.Fatalf("shards not strictly ascending: %v", locked)
		}
	}
	seen := map[uint8]bool{}
	for _, sc := range scopes {
		seen[shardOf(sc.ID)] = true
	}
	if len(locked) != len(seen) {
		t.Fatalf("locked %v, want each of %v once", locked, seen)
	}
}
