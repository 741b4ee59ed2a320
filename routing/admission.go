package routing

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Errors of Admission.Acquire that refuse a request; Overloaded turns them into the 503 the
// client gets.
var (
	// ErrQueueFull is returned when every slot is taken and the queue is full.
	ErrQueueFull = errors.New("admission queue full")
	// ErrQueueTimeout is returned when a request waited in the queue for the whole timeout.
	ErrQueueTimeout = errors.New("admission queue wait timed out")
)

// Bounds of Admission.RetryAfter.
const (
	MinRetryAfter = time.Second
	MaxRetryAfter = 30 * time.Second
)

// serviceAlpha is the weight of the newest interval in the moving average of the time between
// two releases.
const serviceAlpha = 0.2

// Admission is a bounded concurrency gate with a bounded queue, one per model: up to
// maxConcurrent requests in flight; beyond that up to queueSize wait, higher priority first and
// in arrival order within a priority, for at most timeout. A full queue or a timeout is a
// refusal the caller turns into 503 model_overloaded with Retry-After (Anthropic: 529), see
// Overloaded. A waiter whose context ends leaves the queue at once. Under sustained
// high-priority load, low-priority waiters are not served and time out: priorities are strict.
// Safe for concurrent use.
type Admission struct {
	mu            sync.Mutex
	maxConcurrent int // <= 0: unlimited
	queueSize     int
	timeout       time.Duration // <= 0: wait until the context ends
	inFlight      int
	queue         waitQueue
	seq           uint64

	// Service rate, for RetryAfter: a moving average of the time between two releases while
	// busy, the last release and when the gate last became busy.
	avgInterval time.Duration
	samples     int
	lastRelease time.Time
	busySince   time.Time

	now      func() time.Time
	newTimer func(time.Duration) (<-chan time.Time, func() bool)
	onFree   func() // called after a release that left its slot free; see OnFree
}

// OnFree sets fn to be called (outside the gate's lock, on the releasing goroutine) after each
// release whose slot no waiter took: spare-capacity work waiting for a free slot can try again
// at once instead of polling. fn must be quick; nil removes it.
func (a *Admission) OnFree(fn func()) {
	a.mu.Lock()
	a.onFree = fn
	a.mu.Unlock()
}

// NewAdmission returns a gate admitting maxConcurrent requests at once (<= 0: unlimited), with
// queueSize waiting (<= 0: refuse at once when full) each for at most timeout (<= 0: until its
// context ends).
func NewAdmission(maxConcurrent, queueSize int, timeout time.Duration) *Admission {
	a := &Admission{now: time.Now, newTimer: realTimer}
	a.setLimits(maxConcurrent, queueSize, timeout)
	return a
}

// realTimer starts a runtime timer.
func realTimer(d time.Duration) (<-chan time.Time, func() bool) {
	t := time.NewTimer(d)
	return t.C, t.Stop
}

// hasRoom tells whether one more request may be in flight. Call with mu held.
func (a *Admission) hasRoom() bool {
	return a.maxConcurrent <= 0 || a.inFlight < a.maxConcurrent
}

// Acquire admits a request, waiting in the queue when every slot is taken. It returns a release
// to call once the request has ended (calling it again has no effect), or ErrQueueFull,
// ErrQueueTimeout or ctx.Err(). Higher priority values are served first.
func (a *Admission) Acquire(ctx context.Context, priority int) (release func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	a.mu.Lock()
	if a.queue.Len() == 0 && a.hasRoom() {
		a.admitLocked()
		a.mu.Unlock()
		return a.releaser(), nil
	}
	if a.queue.Len() >= a.queueSize {
		a.mu.Unlock()
		return nil, ErrQueueFull
	}
	w := &waiter{ready: make(chan struct{}), priority: priority, seq: a.seq}
	a.seq++
	a.queue.push(w)
	timeout := a.timeout
	a.mu.Unlock()

	var expired <-chan time.Time
	if timeout > 0 {
		c, stop := a.newTimer(timeout)
		defer stop()
		expired = c
	}
	select {
	case <-w.ready:
		return a.releaser(), nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-expired:
		err = ErrQueueTimeout
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	if !w.admitted {
		a.queue.remove(w)
		return nil, err
	}
	// A slot was granted as the wait ended.
	if errors.Is(err, ErrQueueTimeout) {
		return a.releaser(), nil
	}
	// The client is gone: hand the slot to the next waiter.
	a.inFlight--
	a.dispatchLocked()
	return nil, err
}

// TryAcquire admits a request only when more than reserve slots are free and nobody is waiting,
// and never queues: the lowest priority of all, for work that may only use spare capacity (batch
// lines), so that no waiting request is ever passed by it and the reserve slots stay free for
// requests arriving (a slot freed by a request that ends goes to the next one its client sends,
// not to the batch that was quicker). It returns the release and true, or nil and false.
func (a *Admission) TryAcquire(reserve int) (release func(), ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.spareLocked(reserve) {
		return nil, false
	}
	a.admitLocked()
	return a.releaser(), true
}

// Spare reports whether TryAcquire(reserve) would admit a request now, without taking anything:
// a cheap check before work that only spare capacity may do.
func (a *Admission) Spare(reserve int) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.spareLocked(reserve)
}

// spareLocked tells whether more than reserve slots are free and nobody is waiting. Call with mu
// held.
func (a *Admission) spareLocked(reserve int) bool {
	return a.queue.Len() == 0 && (a.maxConcurrent <= 0 || a.inFlight+max(reserve, 0) < a.maxConcurrent)
}

// admitLocked takes a slot. Call with mu held.
func (a *Admission) admitLocked() {
	if a.inFlight == 0 {
		a.busySince = a.now()
	}
	a.inFlight++
}

// dispatchLocked admits waiters while there is room. Call with mu held.
func (a *Admission) dispatchLocked() {
	for a.queue.Len() > 0 && a.hasRoom() {
		w := a.queue.pop()
		w.admitted = true
		a.admitLocked()
		close(w.ready)
	}
}

// releaser returns the idempotent release of one admitted request.
func (a *Admission) releaser() func() {
	var done atomic.Bool
	return func() {
		if !done.CompareAndSwap(false, true) {
			return
		}
		a.mu.Lock()
		a.inFlight--
		a.noteReleaseLocked()
		a.dispatchLocked()
		onFree := a.onFree
		if a.queue.Len() > 0 || !a.hasRoom() {
			onFree = nil // a waiter took the slot
		}
		a.mu.Unlock()
		if onFree != nil {
			onFree()
		}
	}
}

// noteReleaseLocked updates the service rate with a release. Intervals only count time the
// gate was busy, so idle periods do not slow the estimate. Call with mu held.
func (a *Admission) noteReleaseLocked() {
	now := a.now()
	from := a.lastRelease
	if a.busySince.After(from) {
		from = a.busySince
	}
	if !from.IsZero() {
		d := max(now.Sub(from), 0)
		if a.samples == 0 {
			a.avgInterval = d
		} else {
			a.avgInterval += time.Duration(serviceAlpha * float64(d-a.avgInterval))
		}
		a.samples++
	}
	a.lastRelease = now
}

// Stats returns the number of requests in flight and waiting.
func (a *Admission) Stats() (inFlight, queued int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.inFlight, a.queue.Len()
}

// SetLimits changes the limits (a config reload) and keeps every request in flight and queued:
// a larger limit admits waiters at once, a smaller one lets in-flight requests finish and a
// smaller queue refuses newcomers until it has drained below the new size. A new timeout applies
// to requests that queue from now on.
func (a *Admission) SetLimits(maxConcurrent, queueSize int, timeout time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.setLimits(maxConcurrent, queueSize, timeout)
	a.dispatchLocked()
}

func (a *Admission) setLimits(maxConcurrent, queueSize int, timeout time.Duration) {
	a.maxConcurrent = max(maxConcurrent, 0)
	a.queueSize = max(queueSize, 0)
	a.timeout = max(timeout, 0)
}

// RetryAfter suggests a Retry-After for a refusal: the time the queue needs to serve everyone
// waiting plus one, from the moving average of the time between two releases (or, while no
// release is overdue that long, the time since the last one). It never exceeds the queue timeout
// (by then every current waiter is gone) and is kept between 1s and 30s. With no release seen
// yet it is the queue timeout.
func (a *Admission) RetryAfter() time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	var est time.Duration
	if a.samples > 0 {
		interval := a.avgInterval
		if a.inFlight > 0 {
			from := a.lastRelease
			if a.busySince.After(from) {
				from = a.busySince
			}
			interval = max(interval, a.now().Sub(from))
		}
		est = interval * time.Duration(a.queue.Len()+1)
		if est < 0 { // overflow
			est = MaxRetryAfter
		}
	} else {
		est = a.timeout
	}
	if a.timeout > 0 {
		est = min(est, a.timeout)
	}
	return min(max(est, MinRetryAfter), MaxRetryAfter)
}

// RefusalReason names why Acquire refused a request: "queue_full" or "queue_timeout" (the
// model is overloaded), or "" with ok false when err is not a refusal (nil, or the caller's
// context ended: the client went away).
func RefusalReason(err error) (reason string, ok bool) {
	switch {
	case errors.Is(err, ErrQueueFull):
		return "queue_full", true
	case errors.Is(err, ErrQueueTimeout):
		return "queue_timeout", true
	}
	return "", false
}
