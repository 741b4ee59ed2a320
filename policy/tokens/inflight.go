package tokens

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// MinInflightText is the length from which a text counts against an
// Inflight bound; shorter texts are counted at once.
const MinInflightText = segmentTarget

// Inflight bounds the bytes of text that the ChatCounters sharing it count
// exactly at the same time, so that concurrent large prompts cannot take
// the CPU and memory of a process. (The scratch memory of one count no
// longer grows with its text: pieces are merged in parts of at most 64 KiB
// and regexps see 16 KiB segments. What still grows is a copy or two of the
// text, such as the parts of a content array joined or a normalizer's
// output, and the CPU, one core per count.)
//
// A text of at least MinInflightText bytes takes its length from the bound
// (at most the whole bound) while it is counted. When there is no room, it
// waits up to the Inflight's wait, in arrival order, and then, if there is
// still none, is counted with Estimate instead: an upper bound, never fewer
// tokens than the exact count, so a request may then be refused as too long
// or reserve more than it will use, but never slips under a limit. Fallbacks
// reports how often that happened, for a metric.
//
// An Inflight is safe for concurrent use; one is meant to be shared by every
// ChatCounter of a process (a field of each, not a hidden global).
type Inflight struct {
	max  int
	wait time.Duration

	mu      sync.Mutex
	used    int
	waiters []*inflightWaiter

	fallbacks atomic.Uint64
}

// inflightWaiter is a text waiting for room.
type inflightWaiter struct {
	n     int
	ready chan struct{} // closed once the bytes are granted
}

// NewInflight returns a bound of maxBytes bytes of text counted at once
// (at least MinInflightText), where a text waits up to wait for room before
// it is estimated. For example NewInflight(32<<20, 50*time.Millisecond)
// lets eight 4 MiB prompts count at once.
func NewInflight(maxBytes int, wait time.Duration) *Inflight {
	return &Inflight{max: max(maxBytes, MinInflightText), wait: max(wait, 0)}
}

// acquire takes room for a text of n bytes. It returns true when the text
// may be counted exactly (and must then be released), false when it should
// be estimated, or ctx's error when ctx was done while waiting.
func (f *Inflight) acquire(ctx context.Context, n int) (bool, error) {
	if n < MinInflightText {
		return true, nil
	}
	n = min(n, f.max)
	f.mu.Lock()
	if len(f.waiters) == 0 && f.used+n <= f.max {
		f.used += n
		f.mu.Unlock()
		return true, nil
	}
	if f.wait == 0 {
		f.mu.Unlock()
		f.fallbacks.Add(1)
		return false, nil
	}
	w := &inflightWaiter{n: n, ready: make(chan struct{})}
	f.waiters = append(f.waiters, w)
	f.mu.Unlock()

	if ctx == nil {
		ctx = context.Background()
	}
	timer := time.NewTimer(f.wait)
	defer timer.Stop()
	var err error
	select {
	case <-w.ready:
		return true, nil
	case <-timer.C:
	case <-ctx.Done():
		err = ctx.Err()
	}
	f.mu.Lock()
	select {
	case <-w.ready:
		// Granted while timing out: keep it.
		f.mu.Unlock()
		return true, nil
	default:
	}
	for i, x := range f.waiters {
		if x == w {
			f.waiters = append(f.waiters[:i], f.waiters[i+1:]...)
			break
		}
	}
	f.grant()
	f.mu.Unlock()
	if err != nil {
		return false, err
	}
	f.fallbacks.Add(1)
	return false, nil
}

// release gives back the room of a text of n bytes.
func (f *Inflight) release(n int) {
	if n < MinInflightText {
		return
	}
	f.mu.Lock()
	f.used -= min(n, f.max)
	f.grant()
	f.mu.Unlock()
}

// grant hands room to waiters in arrival order while the first one fits.
// f.mu is held.
func (f *Inflight) grant() {
	for len(f.waiters) > 0 && f.used+f.waiters[0].n <= f.max {
		w := f.waiters[0]
		f.waiters = f.waiters[1:]
		f.used += w.n
		close(w.ready)
	}
}

// InUse returns the bytes of text being counted now.
func (f *Inflight) InUse() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.used
}

// Fallbacks returns how many texts were estimated for want of room.
func (f *Inflight) Fallbacks() uint64 { return f.fallbacks.Load() }
