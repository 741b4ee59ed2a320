package routing

import (
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// noTies fails the test if a tie-break is asked for.
func noTies(t *testing.T) func(int) int {
	t.Helper()
	return func(n int) int {
		t.Errorf("rnd(%d) called without a tie", n)
		return 0
	}
}

func TestPickByOutstandingTokens(t *testing.T) {
	tests := []struct {
		name       string
		acquire    map[string][]int64
		candidates []string
		want       int
	}{
		{"no candidates", nil, nil, -1},
		{"single", nil, []string{"a:8000"}, 0},
		{"fewest tokens", map[string][]int64{"a:8000": {500}, "b:8000": {100, 100}, "c:8000": {1000}}, []string{"a:8000", "b:8000", "c:8000"}, 1},
		{"unknown upstream is idle", map[string][]int64{"a:8000": {1}, "b:8000": {2}}, []string{"a:8000", "b:8000", "new:8000"}, 2},
		{"tokens not requests", map[string][]int64{"a:8000": {4000}, "b:8000": {10, 10, 10, 10}}, []string{"a:8000", "b:8000"}, 1},
		{"zero tokens count as one", map[string][]int64{"a:8000": {0, 0}, "b:8000": {1}}, []string{"a:8000", "b:8000"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := NewTracker(TrackerOptions{})
			for up, toks := range tt.acquire {
				for _, n := range toks {
					tr.Acquire(up, n)
				}
			}
			if got := tr.Pick(tt.candidates, noTies(t)); got != tt.want {
				t.Errorf("Pick = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestReleaseSubtractsOnce(t *testing.T) {
	tr := NewTracker(TrackerOptions{})
	r1 := tr.Acquire("a:1", 300)
	r2 := tr.Acquire("a:1", 200)
	if got := tr.Score("a:1"); got != 500 {
		t.Fatalf("Score = %v, want 500", got)
	}
	r1()
	r1()
	if l := tr.Load("a:1"); l.Outstanding != 200 || l.InFlight != 1 {
		t.Fatalf("after double release: %+v, want 200 tokens and 1 request", l)
	}
	r2()
	if l := tr.Load("a:1"); l.Outstanding != 0 || l.InFlight != 0 {
		t.Fatalf("after all released: %+v", l)
	}
	// A released upstream wins again.
	tr.Acquire("b:1", 1)
	if got := tr.Pick([]string{"b:1", "a:1"}, noTies(t)); got != 1 {
		t.Errorf("Pick = %d, want 1", got)
	}
}

func TestPickTieBreak(t *testing.T) {
	t.Run("rnd asked only among ties", func(t *testing.T) {
		tr := NewTracker(TrackerOptions{})
		tr.Acquire("busy", 50)
		var asked []int
		rnd := func(n int) int { asked = append(asked, n); return 0 }
		// Ties: idle1 (first), idle2 (second, replaces with rnd(2)==0), idle3 (rnd(3)==0).
		got := tr.Pick([]string{"idle1", "busy", "idle2", "idle3"}, rnd)
		if got != 3 {
			t.Errorf("Pick = %d, want 3 (rnd always 0 keeps the last tie)", got)
		}
		if len(asked) != 2 || asked[0] != 2 || asked[1] != 3 {
			t.Errorf("rnd asked %v, want [2 3]", asked)
		}
	})
	t.Run("rnd never zero keeps the first", func(t *testing.T) {
		tr := NewTracker(TrackerOptions{})
		got := tr.Pick([]string{"x", "y", "z"}, func(n int) int { return n - 1 })
		if got != 0 {
			t.Errorf("Pick = %d, want 0", got)
		}
	})
	t.Run("uniform", func(t *testing.T) {
		tr := NewTracker(TrackerOptions{})
		tr.Acquire("busy", 10)
		r := rand.New(rand.NewPCG(1, 2))
		cands := []string{"a", "busy", "b", "c"}
		counts := make([]int, len(cands))
		const n = 30000
		for range n {
			counts[tr.Pick(cands, r.IntN)]++
		}
		if counts[1] != 0 {
			t.Errorf("busy upstream picked %d times", counts[1])
		}
		for _, i := range []int{0, 2, 3} {
			if math.Abs(float64(counts[i])-n/3.0) > n/30.0 {
				t.Errorf("candidate %s picked %d of %d times, want about a third", cands[i], counts[i], n)
			}
		}
	})
	t.Run("nil rnd", func(t *testing.T) {
		tr := NewTracker(TrackerOptions{})
		if got := tr.Pick([]string{"a", "b"}, nil); got != 0 && got != 1 {
			t.Errorf("Pick = %d", got)
		}
	})
}

func TestScoreFormula(t *testing.T) {
	clock := newClock()
	m := Metrics{Waiting: 2, QueueSize: 1, Running: 3, KVCacheUsage: 0.5}
	tests := []struct {
		name string
		opts TrackerOptions
		want float64
	}{
		// 100 + 1000*(2*(2+1) + 1*3 + 4*0.5)
		{"defaults", TrackerOptions{}, 100 + 1000*(6+3+2)},
		{"custom", TrackerOptions{TokensPerRequest: 10, WaitingWeight: 3, RunningWeight: 0.5, KVCacheWeight: 100}, 100 + 10*(9+1.5+50)},
		{"negative weights turn terms off", TrackerOptions{WaitingWeight: -1, RunningWeight: -1}, 100 + 1000*2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Now = clock.Now
			tr := NewTracker(tt.opts)
			tr.Acquire("u", 100)
			tr.Observe("u", m)
			if got := tr.Score("u"); math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("Score = %v, want %v", got, tt.want)
			}
			if got := tr.Load("u").Score; math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("Load().Score = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestFreshAndStaleMetrics(t *testing.T) {
	clock := newClock()
	tr := NewTracker(TrackerOptions{Now: clock.Now, StaleAfter: 6 * time.Second})
	cands := []string{"a", "b"}
	// The gateway has more on b, but a's server is swamped by other clients.
	tr.Acquire("b", 2000)
	tr.Observe("a", Metrics{Waiting: 10, Running: 8, KVCacheUsage: 0.95})

	if got := tr.Pick(cands, noTies(t)); got != 1 {
		t.Fatalf("with fresh metrics Pick = %d, want 1 (b)", got)
	}
	if l := tr.Load("a"); !l.Fresh || l.Metrics.Waiting != 10 || !l.Metrics.At.Equal(clock.Now()) {
		t.Fatalf("Load(a) = %+v", l)
	}

	clock.Advance(6 * time.Second) // exactly StaleAfter: still fresh
	if got := tr.Pick(cands, noTies(t)); got != 1 {
		t.Fatalf("at StaleAfter Pick = %d, want 1", got)
	}

	clock.Advance(time.Millisecond) // now stale: a is judged by its (zero) outstanding tokens
	if got := tr.Pick(cands, noTies(t)); got != 0 {
		t.Fatalf("with stale metrics Pick = %d, want 0 (a)", got)
	}
	if l := tr.Load("a"); l.Fresh || l.Score != 0 {
		t.Fatalf("stale Load(a) = %+v", l)
	}

	// A new scrape makes them count again; a failed scrape drops them at once.
	tr.Observe("a", Metrics{Waiting: 10})
	if got := tr.Pick(cands, noTies(t)); got != 1 {
		t.Fatalf("after new scrape Pick = %d, want 1", got)
	}
	tr.MarkStale("a")
	if got := tr.Pick(cands, noTies(t)); got != 0 {
		t.Fatalf("after MarkStale Pick = %d, want 0", got)
	}
	if l := tr.Load("a"); l.Fresh || l.Metrics != (Metrics{}) {
		t.Fatalf("after MarkStale Load(a) = %+v", l)
	}
	tr.MarkStale("never-seen") // no effect, no panic
}

func TestObserveSanitises(t *testing.T) {
	clock := newClock()
	tr := NewTracker(TrackerOptions{Now: clock.Now})
	at := clock.Now().Add(-time.Second)
	tr.Observe("u", Metrics{Waiting: math.NaN(), Running: math.Inf(1), QueueSize: -4, KVCacheUsage: 7, At: at})
	l := tr.Load("u")
	want := Metrics{KVCacheUsage: 1, At: at}
	if l.Metrics != want {
		t.Errorf("Metrics = %+v, want %+v", l.Metrics, want)
	}
	if l.Score != 4000 {
		t.Errorf("Score = %v, want 4000 (a full KV cache)", l.Score)
	}
}

func TestForget(t *testing.T) {
	tr := NewTracker(TrackerOptions{})
	release := tr.Acquire("a", 10)
	tr.Forget("a") // in flight: kept
	if l := tr.Load("a"); l.InFlight != 1 {
		t.Fatalf("Forget dropped a busy upstream: %+v", l)
	}
	release()
	tr.Forget("a")
	if n := len(*tr.states.Load()); n != 0 {
		t.Fatalf("%d upstreams left after Forget", n)
	}
	tr.Forget("a") // absent: no effect
	if got := tr.Score("a"); got != 0 {
		t.Errorf("Score of forgotten upstream = %v", got)
	}
}

func TestTrackerConcurrent(t *testing.T) {
	clock := newClock()
	tr := NewTracker(TrackerOptions{Now: clock.Now})
	ups := []string{"a", "b", "c", "d"}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 7))
			for i := range 2000 {
				idx := tr.Pick(ups, r.IntN)
				release := tr.Acquire(ups[idx], int64(1+i%300))
				if i%50 == 0 {
					tr.Observe(ups[r.IntN(len(ups))], Metrics{Running: float64(i % 7)})
				}
				release()
				release()
			}
		})
	}
	wg.Wait()
	for _, u := range ups {
		if l := tr.Load(u); l.Outstanding != 0 || l.InFlight != 0 {
			t.Errorf("%s: %+v after every release", u, l)
		}
	}
}

func TestWeightDefaults(t *testing.T) {
	tests := []struct {
		in, def, want float64
	}{
		{0, 2, 2}, {math.NaN(), 2, 2}, {math.Inf(1), 2, 2}, {-1, 2, 0}, {0.5, 2, 0.5},
	}
	for _, tt := range tests {
		if got := weight(tt.in, tt.def); got != tt.want {
			t.Errorf("weight(%v, %v) = %v, want %v", tt.in, tt.def, got, tt.want)
		}
	}
}
