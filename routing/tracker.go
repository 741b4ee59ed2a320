package routing

import (
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of TrackerOptions.
const (
	// DefaultStaleAfter is how long scraped metrics count: three scrapes at DefaultInterval.
	DefaultStaleAfter = 3 * DefaultInterval
	// DefaultTokensPerRequest converts a server's request counts into tokens.
	DefaultTokensPerRequest = 1000
	// DefaultWaitingWeight weighs requests waiting in a server's queue.
	DefaultWaitingWeight = 2
	// DefaultRunningWeight weighs requests a server is running.
	DefaultRunningWeight = 1
	// DefaultKVCacheWeight weighs a server's KV-cache usage (1 = full).
	DefaultKVCacheWeight = 4
)

// TrackerOptions configures a Tracker. Zero values take the defaults; a negative weight turns its
// term off.
type TrackerOptions struct {
	// Now returns the current time. Default: time.Now.
	Now func() time.Time
	// StaleAfter is the age after which scraped metrics are ignored. Default: 6s (three scrapes
	// at the default interval); set it to three times ScraperOptions.Interval when that changes.
	StaleAfter time.Duration
	// TokensPerRequest converts the request counts of scraped metrics into tokens (T in the
	// score formula). Default: 1000.
	TokensPerRequest float64
	// WaitingWeight multiplies the requests waiting in a server's queue (Ww). Default: 2.
	WaitingWeight float64
	// RunningWeight multiplies the requests a server is running (Wr). Default: 1.
	RunningWeight float64
	// KVCacheWeight multiplies the server's KV-cache usage fraction (Wkv). Default: 4.
	KVCacheWeight float64
}

// Metrics are the load signals read from one upstream's metrics endpoint.
type Metrics struct {
	// Waiting is the number of requests waiting to be scheduled (vLLM num_requests_waiting,
	// llama.cpp requests_deferred).
	Waiting float64
	// Running is the number of requests being processed (vLLM num_requests_running, TGI
	// batch_current_size, llama.cpp requests_processing).
	Running float64
	// KVCacheUsage is the fraction of the KV cache in use, 0 to 1.
	KVCacheUsage float64
	// QueueSize is the number of requests in TGI's queue.
	QueueSize float64
	// At is when the metrics were read. Observe sets it to now when zero.
	At time.Time
}

// UpstreamLoad is what a Tracker knows about one upstream, for logs and metrics.
type UpstreamLoad struct {
	// Outstanding is the sum of the tokens of the gateway's in-flight requests.
	Outstanding int64
	// InFlight is the number of the gateway's in-flight requests.
	InFlight int64
	// Metrics are the last scraped metrics (zero when none or after a failed scrape).
	Metrics Metrics
	// Fresh tells whether Metrics count in the score.
	Fresh bool
	// Score is the current score (lower is better).
	Score float64
}

// upstreamState is the load of one upstream. Its fields are atomics: the request path never
// takes a lock.
type upstreamState struct {
	outstanding atomic.Int64
	inFlight    atomic.Int64
	metrics     atomic.Pointer[Metrics]
}

// Tracker keeps, per upstream (dial address), the outstanding tokens of in-flight requests and
// the scraped load signals, and picks the least loaded upstream (see the package documentation
// for the score). It is safe for concurrent use: reads and counter updates are lock-free; only
// adding or forgetting an upstream takes a lock and copies the (small) upstream table.
type Tracker struct {
	now        func() time.Time
	staleAfter time.Duration
	perRequest float64
	wWaiting   float64
	wRunning   float64
	wKV        float64

	mu     sync.Mutex // serialises writers of states
	states atomic.Pointer[map[string]*upstreamState]
}

// NewTracker returns a Tracker with opts (zero values take the defaults).
func NewTracker(opts TrackerOptions) *Tracker {
	t := &Tracker{
		now:        opts.Now,
		staleAfter: opts.StaleAfter,
		perRequest: weight(opts.TokensPerRequest, DefaultTokensPerRequest),
		wWaiting:   weight(opts.WaitingWeight, DefaultWaitingWeight),
		wRunning:   weight(opts.RunningWeight, DefaultRunningWeight),
		wKV:        weight(opts.KVCacheWeight, DefaultKVCacheWeight),
	}
	if t.now == nil {
		t.now = time.Now
	}
	if t.staleAfter <= 0 {
		t.staleAfter = DefaultStaleAfter
	}
	empty := map[string]*upstreamState{}
	t.states.Store(&empty)
	return t
}

// weight returns w, def when w is zero (or not a number) and 0 when w is negative.
func weight(w, def float64) float64 {
	switch {
	case w == 0 || math.IsNaN(w) || math.IsInf(w, 0):
		return def
	case w < 0:
		return 0
	}
	return w
}

// lookup returns the state of upstream, or nil.
func (t *Tracker) lookup(upstream string) *upstreamState {
	return (*t.states.Load())[upstream]
}

// state returns the state of upstream, adding it when new.
func (t *Tracker) state(upstream string) *upstreamState {
	if s := t.lookup(upstream); s != nil {
		return s
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	old := *t.states.Load()
	if s := old[upstream]; s != nil {
		return s
	}
	next := make(map[string]*upstreamState, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	s := new(upstreamState)
	next[upstream] = s
	t.states.Store(&next)
	return s
}

// Acquire adds tokens to the upstream's outstanding count for a request about to be proxied
// there; tokens below 1 count as 1 so every in-flight request weighs something. The returned
// release subtracts them again once the response has ended; calling it more than once has no
// further effect.
func (t *Tracker) Acquire(upstream string, tokens int64) (release func()) {
	if tokens < 1 {
		tokens = 1
	}
	s := t.state(upstream)
	s.outstanding.Add(tokens)
	s.inFlight.Add(1)
	var done atomic.Bool
	return func() {
		if done.CompareAndSwap(false, true) {
			s.outstanding.Add(-tokens)
			s.inFlight.Add(-1)
		}
	}
}

// Observe records metrics scraped from upstream. Negative, infinite and NaN values count as 0,
// KV-cache usage is capped at 1, and a zero At is set to now.
func (t *Tracker) Observe(upstream string, m Metrics) {
	m.Waiting = sane(m.Waiting)
	m.Running = sane(m.Running)
	m.QueueSize = sane(m.QueueSize)
	m.KVCacheUsage = min(sane(m.KVCacheUsage), 1)
	if m.At.IsZero() {
		m.At = t.now()
	}
	t.state(upstream).metrics.Store(&m)
}

// sane returns v, or 0 when v is negative, infinite or NaN.
func sane(v float64) float64 {
	if v > 0 && !math.IsInf(v, 1) {
		return v
	}
	return 0
}

// MarkStale drops the upstream's metrics (its last scrape failed): until the next successful
// scrape it is scored by the gateway's own outstanding tokens only.
func (t *Tracker) MarkStale(upstream string) {
	if s := t.lookup(upstream); s != nil {
		s.metrics.Store(nil)
	}
}

// Forget removes an upstream that is no longer configured, unless requests are still in flight
// there. A request acquired concurrently with Forget may go uncounted; call it only for
// upstreams the gateway no longer routes to.
func (t *Tracker) Forget(upstream string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := *t.states.Load()
	s := old[upstream]
	if s == nil || s.inFlight.Load() != 0 {
		return
	}
	next := make(map[string]*upstreamState, len(old))
	for k, v := range old {
		if k != upstream {
			next[k] = v
		}
	}
	t.states.Store(&next)
}

// Score returns the upstream's current score; lower is better. An unknown upstream scores 0.
func (t *Tracker) Score(upstream string) float64 {
	s := t.lookup(upstream)
	if s == nil {
		return 0
	}
	return t.score(s, s.metrics.Load(), time.Time{})
}

// score computes the formula of the package documentation. now is read lazily (zero: not yet).
func (t *Tracker) score(s *upstreamState, m *Metrics, now time.Time) float64 {
	sc := float64(s.outstanding.Load())
	if m != nil {
		if now.IsZero() {
			now = t.now()
		}
		if t.fresh(m, now) {
			sc += t.perRequest * (t.wWaiting*(m.Waiting+m.QueueSize) + t.wRunning*m.Running + t.wKV*m.KVCacheUsage)
		}
	}
	return sc
}

// fresh tells whether m is recent enough to count at now.
func (t *Tracker) fresh(m *Metrics, now time.Time) bool {
	return now.Sub(m.At) <= t.staleAfter
}

// Pick returns the index of the candidate with the lowest score, -1 when there are none. Ties
// are broken uniformly at random with rnd (rnd(n) returns an integer in [0, n); nil uses
// math/rand/v2). The clock is read at most once per call.
func (t *Tracker) Pick(candidates []string, rnd func(n int) int) int {
	if len(candidates) == 0 {
		return -1
	}
	if rnd == nil {
		rnd = rand.IntN
	}
	states := *t.states.Load()
	var now time.Time
	best, ties := -1, 0
	var bestScore float64
	for i, c := range candidates {
		var sc float64
		if s := states[c]; s != nil {
			m := s.metrics.Load()
			if m != nil && now.IsZero() {
				now = t.now()
			}
			sc = t.score(s, m, now)
		}
		switch {
		case best < 0 || sc < bestScore:
			best, bestScore, ties = i, sc, 1
		case sc == bestScore:
			// Reservoir sampling: the k-th tied candidate replaces the choice with chance 1/k.
			ties++
			if rnd(ties) == 0 {
				best = i
			}
		}
	}
	return best
}

// Load reports what the tracker knows about upstream.
func (t *Tracker) Load(upstream string) UpstreamLoad {
	s := t.lookup(upstream)
	if s == nil {
		return UpstreamLoad{}
	}
	l := UpstreamLoad{Outstanding: s.outstanding.Load(), InFlight: s.inFlight.Load()}
	now := t.now()
	m := s.metrics.Load()
	if m != nil {
		l.Metrics = *m
		l.Fresh = t.fresh(m, now)
	}
	l.Score = t.score(s, m, now)
	return l
}
