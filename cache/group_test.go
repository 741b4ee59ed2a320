package cache

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
)

func TestGroupDedup(t *testing.T) {
	var g Group
	key := testKey("k")
	const callers = 50
	var runs atomic.Int32
	release := make(chan struct{})
	want := testEntry(`{"id":"x"}`)
	fn := func() (*Entry, error) {
		runs.Add(1)
		<-release
		return want, nil
	}
	var wg sync.WaitGroup
	var sharedCount atomic.Int32
	errs := make(chan error, callers)
	for range callers {
		wg.Go(func() {
			e, shared, err := g.Do(context.Background(), key, fn)
			if err != nil || e != want {
				errs <- errors.New("caller did not get the entry")
				return
			}
			if shared {
				sharedCount.Add(1)
			}
		})
	}
	// Release the leader once every other caller waits on its call.
	waitFor(t, func() bool { return g.waiters(key) == callers-1 })
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := runs.Load(); n != 1 {
		t.Fatalf("fn ran %d times, want 1", n)
	}
	if n := sharedCount.Load(); n != callers-1 {
		t.Fatalf("%d callers shared the result, want %d", n, callers-1)
	}
	// The key is free again: the next caller runs fn itself.
	if _, shared, _ := g.Do(context.Background(), key, func() (*Entry, error) { return want, nil }); shared {
		t.Fatal("a later call shared a finished call")
	}
}

func TestGroupFailureLetsOthersRetry(t *testing.T) {
	var g Group
	key := testKey("k")
	const callers = 50
	boom := errors.New("upstream failed")
	var runs atomic.Int32
	release, release2 := make(chan struct{}), make(chan struct{})
	want := testEntry(`{"id":"retry"}`)
	fn := func() (*Entry, error) {
		switch runs.Add(1) {
		case 1:
			<-release
			return nil, boom
		case 2:
			<-release2
		}
		return want, nil
	}
	var wg sync.WaitGroup
	var failed, got atomic.Int32
	for range callers {
		wg.Go(func() {
			e, _, err := g.Do(context.Background(), key, fn)
			switch {
			case errors.Is(err, boom):
				failed.Add(1)
			case err == nil && e == want:
				got.Add(1)
			}
		})
	}
	waitFor(t, func() bool { return g.waiters(key) == callers-1 })
	close(release)
	// The others go around again: one leads the retry, the rest join it.
	waitFor(t, func() bool { return runs.Load() == 2 && g.waiters(key) == callers-2 })
	close(release2)
	wg.Wait()
	if failed.Load() != 1 || got.Load() != callers-1 {
		t.Fatalf("%d failed and %d got the entry; want 1 and %d", failed.Load(), got.Load(), callers-1)
	}
	// The retry was deduplicated too: one failed run and one successful one.
	if n := runs.Load(); n != 2 {
		t.Fatalf("fn ran %d times, want 2", n)
	}
}

func TestGroupNoEntryIsNotShared(t *testing.T) {
	var g Group
	key := testKey("k")
	release := make(chan struct{})
	var runs atomic.Int32
	leaderDone := make(chan struct{})
	go func() {
		defer close(leaderDone)
		e, shared, err := g.Do(context.Background(), key, func() (*Entry, error) {
			runs.Add(1)
			<-release
			return nil, nil // not cacheable
		})
		if e != nil || shared || err != nil {
			t.Errorf("leader got %v, %v, %v", e, shared, err)
		}
	}()
	waitFor(t, func() bool { return g.inFlight(key) })
	done := make(chan struct{})
	go func() {
		defer close(done)
		e, shared, err := g.Do(context.Background(), key, func() (*Entry, error) {
			runs.Add(1)
			return testEntry(`{}`), nil
		})
		if e == nil || shared || err != nil {
			t.Errorf("waiter got %v, %v, %v", e, shared, err)
		}
	}()
	waitFor(t, func() bool { return g.waiters(key) == 1 })
	close(release)
	<-done
	<-leaderDone
	if runs.Load() != 2 {
		t.Fatalf("fn ran %d times, want 2", runs.Load())
	}
}

func TestGroupWaiterContext(t *testing.T) {
	var g Group
	key := testKey("k")
	release := make(chan struct{})
	leaderDone := make(chan struct{})
	go func() {
		defer close(leaderDone)
		_, _, _ = g.Do(context.Background(), key, func() (*Entry, error) {
			<-release
			return testEntry(`{}`), nil
		})
	}()
	waitFor(t, func() bool { return g.inFlight(key) })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ran := false
	e, shared, err := g.Do(ctx, key, func() (*Entry, error) { ran = true; return nil, nil })
	if !errors.Is(err, context.Canceled) || e != nil || shared || ran {
		t.Fatalf("cancelled waiter got %v, %v, %v (ran %v)", e, shared, err, ran)
	}
	close(release)
	<-leaderDone
}

func TestGroupLeaderPanic(t *testing.T) {
	var g Group
	key := testKey("k")
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("panic swallowed")
			}
		}()
		_, _, _ = g.Do(context.Background(), key, func() (*Entry, error) { panic("boom") })
	}()
	if g.inFlight(key) {
		t.Fatal("a panicked call stays in flight")
	}
}

func TestGroupPersistentFailure(t *testing.T) {
	var g Group
	key := testKey("k")
	const callers = 20
	boom := errors.New("upstream down")
	var runs atomic.Int32
	release := make(chan struct{})
	fn := func() (*Entry, error) {
		if runs.Add(1) == 1 {
			<-release
		}
		return nil, boom
	}
	var wg sync.WaitGroup
	var failed atomic.Int32
	for range callers {
		wg.Go(func() {
			if _, _, err := g.Do(context.Background(), key, fn); errors.Is(err, boom) {
				failed.Add(1)
			}
		})
	}
	waitFor(t, func() bool { return g.waiters(key) == callers-1 })
	close(release)
	wg.Wait()
	// Every caller gets the failure, and none runs fn more than once.
	if failed.Load() != callers {
		t.Fatalf("%d of %d callers saw the failure", failed.Load(), callers)
	}
	if n := runs.Load(); n < 2 || n > callers {
		t.Fatalf("fn ran %d times, want between 2 and %d", n, callers)
	}
}
