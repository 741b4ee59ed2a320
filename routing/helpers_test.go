package routing

import (
	"runtime"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fakeTimers hands an Admission timers the test fires by hand.
type fakeTimers struct {
	started chan chan time.Time // one per timer, in creation order
}

func newFakeTimers() *fakeTimers { return &fakeTimers{started: make(chan chan time.Time, 64)} }

func (f *fakeTimers) newTimer(time.Duration) (<-chan time.Time, func() bool) {
	c := make(chan time.Time, 1)
	f.started <- c
	return c, func() bool { return true }
}

// next returns the next timer created, failing the test if none comes.
func (f *fakeTimers) next(t *testing.T) chan time.Time {
	t.Helper()
	select {
	case c := <-f.started:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no queue timer was started")
		return nil
	}
}

// waitFor yields until cond holds, failing the test after a generous real-time bound (a guard
// against hangs, not a timing assertion).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		runtime.Gosched()
	}
}

// waitStats waits until the gate has inFlight admitted and queued waiting.
func waitStats(t *testing.T, a *Admission, inFlight, queued int) {
	t.Helper()
	waitFor(t, "admission stats", func() bool {
		i, q := a.Stats()
		return i == inFlight && q == queued
	})
}

// recv receives from c, failing the test if nothing comes.
func recv[T any](t *testing.T, c <-chan T) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("nothing received")
		var zero T
		return zero
	}
}
