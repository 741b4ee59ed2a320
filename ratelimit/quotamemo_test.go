package ratelimit

import (
	"fmt"
	"sync"
	"testing"
)

// TestQuotaMemo: a quota is found under its key and model only, the latest one wins, a quota
// without a limit is not kept, a nil memo holds nothing, and a full table forgets rather than
// answers with another set's quota.
func TestQuotaMemo(t *testing.T) {
	m := NewQuotaMemo()
	if _, ok := m.Get("a", "llama"); ok {
		t.Fatal("an empty memo answered")
	}
	m.Put("a", "llama", Quota{Limit: 1000, Remaining: 900})
	m.Put("a", "llama", Quota{Limit: 1000, Remaining: 800})
	m.Put("a", "other", Quota{}) // no limit: not kept
	if q, ok := m.Get("a", "llama"); !ok || q.Remaining != 800 || q.Limit != 1000 {
		t.Errorf("got %+v %v, want the latest quota", q, ok)
	}
	for _, k := range [][2]string{{"a", "other"}, {"b", "llama"}, {"al", "lama"}, {"", "allama"}} {
		if q, ok := m.Get(k[0], k[1]); ok {
			t.Errorf("%q on %q answered %+v", k[0], k[1], q)
		}
	}
	var none *QuotaMemo
	none.Put("a", "llama", Quota{Limit: 1})
	if _, ok := none.Get("a", "llama"); ok {
		t.Error("a nil memo answered")
	}
	// more sets than slots: each answer is its own set's
	for i := range 3 * quotaMemoSlots {
		m.Put(fmt.Sprint("key-", i), "llama", Quota{Limit: 1 << 20, Remaining: int64(i)})
	}
	kept := 0
	for i := range 3 * quotaMemoSlots {
		if q, ok := m.Get(fmt.Sprint("key-", i), "llama"); ok {
			kept++
			if q.Remaining != int64(i) {
				t.Fatalf("key-%d answered key-%d's quota", i, q.Remaining)
			}
		}
	}
	if kept == 0 || kept > quotaMemoSlots {
		t.Errorf("%d of %d sets kept in %d slots", kept, 3*quotaMemoSlots, quotaMemoSlots)
	}
}

// TestQuotaMemoConcurrent runs Put and Get at once (for the race detector): a quota read is one
// that was written whole.
func TestQuotaMemoConcurrent(t *testing.T) {
	m := NewQuotaMemo()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 2000 {
				n := int64(w*10000 + i)
				m.Put("k", "m", Quota{Limit: n + 1, Remaining: n})
				if q, ok := m.Get("k", "m"); ok && q.Limit != q.Remaining+1 {
					t.Errorf("a torn quota: %+v", q)
					return
				}
			}
		})
	}
	wg.Wait()
}
