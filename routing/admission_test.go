package routing

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testAdmission returns a gate with a fake clock and hand-fired timers.
func testAdmission(maxConcurrent, queueSize int, timeout time.Duration) (*Admission, *fakeClock, *fakeTimers) {
	a := NewAdmission(maxConcurrent, queueSize, timeout)
	clock, timers := newClock(), newFakeTimers()
	a.now = clock.Now
	a.newTimer = timers.newTimer
	return a, clock, timers
}

func mustAcquire(t *testing.T, a *Admission, priority int) func() {
	t.Helper()
	release, err := a.Acquire(context.Background(), priority)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	return release
}

// result is what a background Acquire returned.
type result struct {
	id      int
	release func()
	err     error
}

// acquireAsync starts Acquire in a goroutine and sends its result on out.
func acquireAsync(ctx context.Context, a *Admission, id, priority int, out chan<- result) {
	go func() {
		release, err := a.Acquire(ctx, priority)
		out <- result{id, release, err}
	}()
}

func TestAdmissionImmediate(t *testing.T) {
	a, _, _ := testAdmission(2, 0, time.Minute)
	r1 := mustAcquire(t, a, 0)
	r2 := mustAcquire(t, a, 0)
	if in, q := a.Stats(); in != 2 || q != 0 {
		t.Fatalf("Stats = %d, %d", in, q)
	}
	if _, err := a.Acquire(context.Background(), 0); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("third Acquire without a queue: %v, want ErrQueueFull", err)
	}
	r1()
	r1() // idempotent: must not free a second slot
	if in, _ := a.Stats(); in != 1 {
		t.Fatalf("in flight after double release = %d, want 1", in)
	}
	r3 := mustAcquire(t, a, 0)
	if _, err := a.Acquire(context.Background(), 0); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("double release freed a slot: %v", err)
	}
	r2()
	r3()
	if in, q := a.Stats(); in != 0 || q != 0 {
		t.Fatalf("Stats = %d, %d", in, q)
	}
}

func TestAdmissionUnlimited(t *testing.T) {
	a, _, _ := testAdmission(0, 0, 0)
	var releases []func()
	for range 100 {
		releases = append(releases, mustAcquire(t, a, 0))
	}
	if in, _ := a.Stats(); in != 100 {
		t.Fatalf("in flight = %d", in)
	}
	for _, r := range releases {
		r()
	}
}

func TestAdmissionOrder(t *testing.T) {
	tests := []struct {
		name       string
		priorities []int // of waiters, in arrival order
		want       []int // admission order (waiter ids)
	}{
		{"FIFO", []int{0, 0, 0, 0}, []int{0, 1, 2, 3}},
		{"priority", []int{0, 5, 1, 5, -2, 1}, []int{1, 3, 2, 5, 0, 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, _, _ := testAdmission(1, 10, 0)
			hold := mustAcquire(t, a, 100)
			order := make(chan int, len(tt.priorities))
			var wg sync.WaitGroup
			for id, p := range tt.priorities {
				wg.Go(func() {
					release, err := a.Acquire(context.Background(), p)
					if err != nil {
						t.Errorf("waiter %d: %v", id, err)
						return
					}
					order <- id
					release()
				})
				waitStats(t, a, 1, id+1) // arrival order is the order of the loop
			}
			hold()
			wg.Wait()
			close(order)
			var got []int
			for id := range order {
				got = append(got, id)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("admitted %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("admitted %v, want %v", got, tt.want)
				}
			}
		})
	}
}

func TestAdmissionTimeout(t *testing.T) {
	a, _, timers := testAdmission(1, 4, 30*time.Second)
	hold := mustAcquire(t, a, 0)
	out := make(chan result, 2)
	acquireAsync(context.Background(), a, 1, 0, out)
	first := timers.next(t)
	acquireAsync(context.Background(), a, 2, 0, out)
	timers.next(t)
	waitStats(t, a, 1, 2)

	first <- time.Time{}
	r := recv(t, out)
	if r.id != 1 || !errors.Is(r.err, ErrQueueTimeout) {
		t.Fatalf("got %d %v, want waiter 1 ErrQueueTimeout", r.id, r.err)
	}
	waitStats(t, a, 1, 1)

	hold()
	r = recv(t, out)
	if r.id != 2 || r.err != nil {
		t.Fatalf("got %d %v, want waiter 2 admitted", r.id, r.err)
	}
	r.release()
	waitStats(t, a, 0, 0)
}

func TestAdmissionQueueFull(t *testing.T) {
	a, _, _ := testAdmission(1, 2, 0)
	hold := mustAcquire(t, a, 0)
	out := make(chan result, 2)
	acquireAsync(context.Background(), a, 1, 0, out)
	acquireAsync(context.Background(), a, 2, 0, out)
	waitStats(t, a, 1, 2)
	// Priority does not jump a full queue.
	if _, err := a.Acquire(context.Background(), 1000); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("Acquire on a full queue: %v, want ErrQueueFull", err)
	}
	hold()
	for range 2 {
		r := recv(t, out)
		if r.err != nil {
			t.Fatalf("waiter %d: %v", r.id, r.err)
		}
		r.release()
	}
}

func TestAdmissionCancel(t *testing.T) {
	a, _, _ := testAdmission(1, 4, 0)
	hold := mustAcquire(t, a, 0)
	out := make(chan result, 3)
	ctx, cancel := context.WithCancel(context.Background())
	acquireAsync(context.Background(), a, 1, 0, out)
	waitStats(t, a, 1, 1)
	acquireAsync(ctx, a, 2, 9, out) // would be next: higher priority
	waitStats(t, a, 1, 2)

	cancel()
	r := recv(t, out)
	if r.id != 2 || !errors.Is(r.err, context.Canceled) {
		t.Fatalf("got %d %v, want waiter 2 context.Canceled", r.id, r.err)
	}
	if in, q := a.Stats(); in != 1 || q != 1 {
		t.Fatalf("cancelled waiter still counted: %d in flight, %d queued", in, q)
	}

	hold()
	r = recv(t, out)
	if r.id != 1 || r.err != nil {
		t.Fatalf("got %d %v, want waiter 1 admitted", r.id, r.err)
	}
	r.release()

	if _, err := a.Acquire(ctx, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire with a cancelled context: %v", err)
	}
	waitStats(t, a, 0, 0)
}

// TestAdmissionGrantRaces ends waits by a release and a cancellation (or timeout) at the same
// time, many times, and checks that no slot is lost or doubled whichever wins.
func TestAdmissionGrantRaces(t *testing.T) {
	for _, kind := range []string{"cancel", "timeout"} {
		t.Run(kind, func(t *testing.T) {
			a, _, timers := testAdmission(1, 1, time.Hour)
			for i := range 300 {
				hold := mustAcquire(t, a, 0)
				ctx, cancel := context.WithCancel(context.Background())
				out := make(chan result, 1)
				acquireAsync(ctx, a, i, 0, out)
				timer := timers.next(t)
				go hold()
				if kind == "cancel" {
					cancel()
				} else {
					timer <- time.Time{}
				}
				r := recv(t, out)
				cancel()
				switch {
				case r.err == nil:
					if in, q := a.Stats(); in != 1 || q != 0 {
						t.Fatalf("admitted, Stats = %d, %d", in, q)
					}
					r.release()
				case kind == "cancel" && !errors.Is(r.err, context.Canceled),
					kind == "timeout" && !errors.Is(r.err, ErrQueueTimeout):
					t.Fatalf("err = %v", r.err)
				}
				waitStats(t, a, 0, 0)
			}
		})
	}
}

func TestAdmissionExactMix(t *testing.T) {
	a := NewAdmission(4, 8, time.Hour)
	const n = 40
	start := make(chan struct{})
	out := make(chan result, n)
	for id := range n {
		go func() {
			<-start
			release, err := a.Acquire(context.Background(), 0)
			out <- result{id, release, err}
		}()
	}
	close(start)

	// Without a release, exactly 4 are admitted and every refusal means the 8 queue places are
	// taken, so 4 + 28 results arrive and 8 stay waiting.
	var admitted []func()
	full := 0
	for range 4 + 28 {
		r := recv(t, out)
		switch {
		case r.err == nil:
			admitted = append(admitted, r.release)
		case errors.Is(r.err, ErrQueueFull):
			full++
		default:
			t.Fatalf("waiter %d: %v", r.id, r.err)
		}
	}
	if len(admitted) != 4 || full != 28 {
		t.Fatalf("admitted %d, refused %d; want 4 and 28", len(admitted), full)
	}
	waitStats(t, a, 4, 8)

	// Each release admits the next waiter.
	total := len(admitted)
	for len(admitted) > 0 {
		admitted[0]()
		admitted = admitted[1:]
		if total < 12 {
			r := recv(t, out)
			if r.err != nil {
				t.Fatalf("queued waiter %d: %v", r.id, r.err)
			}
			admitted = append(admitted, r.release)
			total++
		}
	}
	if total != 12 || full != 28 {
		t.Fatalf("admitted %d in all, refused %d; want 12 and 28", total, full)
	}
	waitStats(t, a, 0, 0)
}

func TestAdmissionSetLimits(t *testing.T) {
	a, _, _ := testAdmission(2, 4, 0)
	out := make(chan result, 8)
	var releases []func()
	for range 2 {
		releases = append(releases, mustAcquire(t, a, 0))
	}
	for id := range 4 {
		acquireAsync(context.Background(), a, id, 0, out)
		waitStats(t, a, 2, id+1)
	}

	// Raising the limit admits waiters at once.
	a.SetLimits(4, 4, 0)
	for range 2 {
		r := recv(t, out)
		if r.err != nil {
			t.Fatal(r.err)
		}
		releases = append(releases, r.release)
	}
	waitStats(t, a, 4, 2)

	// Lowering keeps everyone: 4 in flight over a limit of 1, 2 queued over a queue of 1.
	a.SetLimits(1, 1, 0)
	if in, q := a.Stats(); in != 4 || q != 2 {
		t.Fatalf("after lowering Stats = %d, %d; want 4, 2", in, q)
	}
	if _, err := a.Acquire(context.Background(), 0); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("Acquire over the lowered queue: %v", err)
	}
	// Releases admit no one until in flight is under the new limit.
	for i := range 3 {
		releases[i]()
	}
	if in, q := a.Stats(); in != 1 || q != 2 {
		t.Fatalf("after 3 releases Stats = %d, %d; want 1, 2", in, q)
	}
	releases[3]()
	r := recv(t, out)
	if r.err != nil {
		t.Fatal(r.err)
	}
	waitStats(t, a, 1, 1)
	r.release()
	r = recv(t, out)
	if r.err != nil {
		t.Fatal(r.err)
	}
	r.release()
	waitStats(t, a, 0, 0)

	a.SetLimits(-1, -1, -time.Second) // negative: unlimited, no queue, no timeout
	if a.maxConcurrent != 0 || a.queueSize != 0 || a.timeout != 0 {
		t.Errorf("limits = %d, %d, %v", a.maxConcurrent, a.queueSize, a.timeout)
	}
}

func TestAdmissionRace(t *testing.T) {
	a := NewAdmission(3, 5, time.Second)
	var active, peak atomic.Int64
	var admitted, refused atomic.Int64
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 200 {
				ctx, cancel := context.WithCancel(context.Background())
				if (g+i)%7 == 0 {
					cancel()
				}
				release, err := a.Acquire(ctx, i%3)
				if err != nil {
					refused.Add(1)
					cancel()
					continue
				}
				admitted.Add(1)
				n := active.Add(1)
				for {
					p := peak.Load()
					if n <= p || peak.CompareAndSwap(p, n) {
						break
					}
				}
				if i%50 == 0 {
					a.SetLimits(3, 5, time.Second)
					_ = a.RetryAfter()
				}
				active.Add(-1)
				release()
				cancel()
			}
		})
	}
	wg.Wait()
	if peak.Load() > 3 {
		t.Errorf("%d in flight at once over a limit of 3", peak.Load())
	}
	if admitted.Load()+refused.Load() != 16*200 || admitted.Load() == 0 {
		t.Errorf("admitted %d, refused %d", admitted.Load(), refused.Load())
	}
	waitStats(t, a, 0, 0)
}

func TestRetryAfter(t *testing.T) {
	t.Run("no history: the queue timeout", func(t *testing.T) {
		for _, tt := range []struct{ timeout, want time.Duration }{
			{10 * time.Second, 10 * time.Second},
			{0, time.Second},
			{200 * time.Millisecond, time.Second},
			{5 * time.Minute, 30 * time.Second},
		} {
			a, _, _ := testAdmission(1, 1, tt.timeout)
			if got := a.RetryAfter(); got != tt.want {
				t.Errorf("timeout %v: RetryAfter = %v, want %v", tt.timeout, got, tt.want)
			}
		}
	})
	t.Run("from the service rate", func(t *testing.T) {
		a, clock, _ := testAdmission(1, 10, time.Minute)
		// Idle time before the first request does not count.
		clock.Advance(time.Hour)
		r := mustAcquire(t, a, 0)
		clock.Advance(2 * time.Second)
		r() // one interval: 2s
		clock.Advance(time.Hour)
		r = mustAcquire(t, a, 0)

		out := make(chan result, 3)
		for id := range 3 {
			acquireAsync(context.Background(), a, id, 0, out)
			waitStats(t, a, 1, id+1)
		}
		clock.Advance(500 * time.Millisecond)
		// 2s per release, 3 waiting + 1: 8s.
		if got := a.RetryAfter(); got != 8*time.Second {
			t.Errorf("RetryAfter = %v, want 8s", got)
		}
		// A release that is overdue stretches the estimate: 3s since busy, 4 places.
		clock.Advance(2500 * time.Millisecond)
		if got := a.RetryAfter(); got != 12*time.Second {
			t.Errorf("overdue RetryAfter = %v, want 12s", got)
		}
		// Releases every 1s pull the moving average down: 2 + 0.2*(3-2) = 2.2, then the
		// next waiter is released after 1s: 2.2 + 0.2*(1-2.2) = 1.96.
		r()
		w := recv(t, out)
		clock.Advance(time.Second)
		w.release()
		w = recv(t, out)
		if got, want := a.avgInterval, 1960*time.Millisecond; got != want {
			t.Errorf("average interval = %v, want %v", got, want)
		}
		// 1 waiting + 1 = 2 places at 1.96s.
		if got := a.RetryAfter(); got != 3920*time.Millisecond {
			t.Errorf("RetryAfter = %v, want 3.92s", got)
		}
		w.release()
		w = recv(t, out)
		w.release()
	})
	t.Run("bounded by the timeout and 30s", func(t *testing.T) {
		a, clock, _ := testAdmission(1, 100, 5*time.Second)
		r := mustAcquire(t, a, 0)
		clock.Advance(4 * time.Second)
		r()
		r = mustAcquire(t, a, 0)
		if got := a.RetryAfter(); got != 4*time.Second {
			t.Errorf("RetryAfter = %v, want 4s", got)
		}
		out := make(chan result, 3)
		for id := range 3 {
			acquireAsync(context.Background(), a, id, 0, out)
			waitStats(t, a, 1, id+1)
		}
		if got := a.RetryAfter(); got != 5*time.Second {
			t.Errorf("RetryAfter = %v, want the 5s timeout", got)
		}
		a.SetLimits(1, 100, 0)
		if got := a.RetryAfter(); got != 16*time.Second {
			t.Errorf("RetryAfter without a timeout = %v, want 16s", got)
		}
		clock.Advance(time.Minute)
		if got := a.RetryAfter(); got != 30*time.Second {
			t.Errorf("RetryAfter = %v, want the 30s cap", got)
		}
		r()
		for range 3 {
			w := recv(t, out)
			w.release()
		}
	})
}

func TestRefusalReason(t *testing.T) {
	tests := []struct {
		err    error
		reason string
	}{
		{ErrQueueFull, "queue_full"},
		{fmt.Errorf("admitting: %w", ErrQueueTimeout), "queue_timeout"},
		{context.Canceled, ""},
		{context.DeadlineExceeded, ""},
		{nil, ""},
	}
	for _, tt := range tests {
		reason, ok := RefusalReason(tt.err)
		if reason != tt.reason || ok != (tt.reason != "") {
			t.Errorf("RefusalReason(%v) = %q, %v; want %q", tt.err, reason, ok, tt.reason)
		}
	}
}

func TestAdmissionTryAcquireSpareOnly(t *testing.T) {
	a, _, _ := testAdmission(1, 4, time.Minute)
	if !a.Spare(0) {
		t.Fatal("an idle gate has no spare slot")
	}
	rel, ok := a.TryAcquire(0)
	if !ok {
		t.Fatal("TryAcquire on an idle gate refused")
	}
	if _, ok := a.TryAcquire(0); ok || a.Spare(0) {
		t.Fatal("TryAcquire admitted past max_concurrent")
	}
	waiting := make(chan func())
	go func() {
		r, err := a.Acquire(context.Background(), -100)
		if err != nil {
			t.Error(err)
		}
		waiting <- r
	}()
	for _, q := a.Stats(); q == 0; _, q = a.Stats() {
		time.Sleep(time.Millisecond)
	}
	rel() // the slot goes to the waiter, whatever its priority
	r := <-waiting
	if _, ok := a.TryAcquire(0); ok {
		t.Fatal("TryAcquire took the waiter's slot")
	}
	r()
	if !a.Spare(0) {
		t.Fatal("a free slot nobody waits for is not spare")
	}
	if rel, ok := a.TryAcquire(0); !ok {
		t.Fatal("TryAcquire refused a free slot")
	} else {
		rel()
	}
	if in, q := a.Stats(); in != 0 || q != 0 {
		t.Fatalf("Stats = %d, %d", in, q)
	}
}

// TestAdmissionTryAcquireReserve: spare work leaves the reserve slots free for requests that
// arrive, which still take them (and queue only past max_concurrent).
func TestAdmissionTryAcquireReserve(t *testing.T) {
	a, _, _ := testAdmission(4, 4, time.Minute)
	var spare []func()
	for {
		rel, ok := a.TryAcquire(1)
		if !ok {
			break
		}
		spare = append(spare, rel)
	}
	if len(spare) != 3 || a.Spare(1) || !a.Spare(0) {
		t.Fatalf("with a reserve of 1 slot of 4: %d spare admitted, Spare(1)=%t Spare(0)=%t", len(spare), a.Spare(1), a.Spare(0))
	}
	live, err := a.Acquire(context.Background(), 0)
	if err != nil {
		t.Fatalf("a live request did not get the reserved slot: %v", err)
	}
	if in, q := a.Stats(); in != 4 || q != 0 {
		t.Fatalf("Stats = %d, %d", in, q)
	}
	spare[0]()
	if a.Spare(1) {
		t.Fatal("the slot a spare request freed is spare although only the reserve is left")
	}
	if _, ok := a.TryAcquire(1); ok {
		t.Fatal("TryAcquire took the reserve")
	}
	live()
	if rel, ok := a.TryAcquire(1); !ok {
		t.Fatal("two free slots, a reserve of one: refused")
	} else {
		rel()
	}
	for _, rel := range spare[1:] {
		rel()
	}
	var freed atomic.Int64
	a.OnFree(func() { freed.Add(1) })
	held := mustAcquire(t, a, 0)
	held()
	if freed.Load() != 1 {
		t.Fatalf("a release that left its slot free told OnFree %d times", freed.Load())
	}
	full := []func(){mustAcquire(t, a, 0), mustAcquire(t, a, 0), mustAcquire(t, a, 0), mustAcquire(t, a, 0)}
	got := make(chan func())
	go func() {
		r, err := a.Acquire(context.Background(), 0)
		if err != nil {
			t.Error(err)
			r = func() {}
		}
		got <- r
	}()
	for _, q := a.Stats(); q == 0; _, q = a.Stats() {
		time.Sleep(time.Millisecond)
	}
	full[0]() // the waiter takes the slot: nothing is free
	waiter := <-got
	if freed.Load() != 1 {
		t.Fatalf("a slot a waiter took was told free: %d", freed.Load())
	}
	for _, rel := range append(full[1:], waiter) {
		rel()
	}
	if freed.Load() != 5 {
		t.Fatalf("OnFree told %d times, want 5", freed.Load())
	}
	unlimited, _, _ := testAdmission(0, 0, time.Minute)
	if !unlimited.Spare(100) {
		t.Fatal("a gate without max_concurrent has no spare capacity")
	}
}
