package routing

import (
	"sync"
	"sync/atomic"
	"testing"
)

func TestWatchers(t *testing.T) {
	var w Watchers
	w.Notify() // none yet
	var a, b atomic.Int32
	removeA := w.Add(func() { a.Add(1) })
	removeB := w.Add(func() { b.Add(1) })
	w.Notify()
	removeA()
	removeA() // twice is harmless
	w.Notify()
	if a.Load() != 1 || b.Load() != 2 {
		t.Fatalf("a %d (want 1), b %d (want 2)", a.Load(), b.Load())
	}
	removeB()
	w.Notify()
	if b.Load() != 2 {
		t.Fatalf("b told after its removal: %d", b.Load())
	}
	if n := testing.AllocsPerRun(100, w.Notify); n != 0 {
		t.Errorf("Notify allocates %.0f times", n)
	}
}

// Watchers come and go while others notify (run with -race).
func TestWatchersConcurrent(t *testing.T) {
	var w Watchers
	var told atomic.Int64
	stay := w.Add(func() { told.Add(1) })
	defer stay()
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for range 1000 {
				w.Notify()
			}
		}()
		go func() {
			defer wg.Done()
			for range 200 {
				w.Add(func() {})()
			}
		}()
	}
	wg.Wait()
	if told.Load() != 4000 {
		t.Errorf("the watcher that stayed was told %d times, want 4000", told.Load())
	}
}

// Signal coalesces a burst into the one signal its reader has not taken.
func TestSignal(t *testing.T) {
	c := make(chan struct{}, 1)
	var w Watchers
	defer w.Add(Signal(c))()
	w.Notify()
	w.Notify()
	if len(c) != 1 {
		t.Fatalf("%d signals pending, want 1", len(c))
	}
	<-c
	w.Notify()
	select {
	case <-c:
	default:
		t.Fatal("no signal after the reader took the first")
	}
}
