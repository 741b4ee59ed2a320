package tokens

import (
	"strconv"
	"sync"
	"testing"
)

func TestMemoHitMiss(t *testing.T) {
	lc := &lenCounter{}
	m := NewMemo(64)
	if got := m.Count(lc, "hello"); got != 5 {
		t.Fatalf("Count = %d", got)
	}
	if got := m.Count(lc, "hello"); got != 5 {
		t.Fatalf("Count = %d", got)
	}
	if n := lc.calls.Load(); n != 1 {
		t.Errorf("counter called %d times for one text, want 1", n)
	}
	// The counter name is part of the key.
	if m.Key("a", "x") == m.Key("b", "x") || m.Key("a", "xy") == m.Key("ax", "y") {
		t.Error("keys of different (name, text) pairs collide")
	}
	if _, ok := m.Get(m.Key("len", "other")); ok {
		t.Error("Get hit for a text never counted")
	}
	var nilMemo *Memo
	if got := nilMemo.Count(lc, "abc"); got != 3 || nilMemo.Len() != 0 {
		t.Errorf("nil memo Count = %d, Len = %d", got, nilMemo.Len())
	}
}

func TestMemoBound(t *testing.T) {
	for _, size := range []int{1, 16, 100, 1000} {
		m := NewMemo(size)
		for i := range 10 * size {
			m.Put(uint64(i)*0x9E3779B97F4A7C15, i)
		}
		if limit := max(size, memoShards); m.Len() > limit+memoShards {
			t.Errorf("NewMemo(%d) holds %d entries", size, m.Len())
		}
	}
}

// TestMemoClock checks the eviction order within one shard: an entry read
// since the hand last passed survives, one never read goes.
func TestMemoClock(t *testing.T) {
	m := NewMemo(3 * memoShards)                              // 3 entries per shard
	k := func(i int) uint64 { return uint64(i) * memoShards } // all in shard 0
	m.Put(k(1), 1)
	m.Put(k(2), 2)
	m.Put(k(3), 3)
	m.Get(k(1))
	m.Get(k(3))
	m.Put(k(4), 4) // evicts 2, the only entry not read
	for i, want := range map[int]bool{1: true, 2: false, 3: true, 4: true} {
		if _, ok := m.Get(k(i)); ok != want {
			t.Errorf("entry %d present = %v, want %v", i, ok, want)
		}
	}
	m.Put(k(1), 10) // update in place
	if n, _ := m.Get(k(1)); n != 10 {
		t.Errorf("updated entry = %d, want 10", n)
	}
}

func TestMemoConcurrent(t *testing.T) {
	m := NewMemo(128)
	lc := &lenCounter{}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				s := strconv.Itoa((i*7 + g) % 300)
				if got := m.Count(lc, s); got != len(s) {
					t.Errorf("Count(%q) = %d", s, got)
					return
				}
			}
		}()
	}
	wg.Wait()
	if m.Len() > 128+memoShards {
		t.Errorf("Len = %d", m.Len())
	}
}
