package routing

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// metricsServer serves a fixture at /metrics, or whatever handler is set.
type metricsServer struct {
	*httptest.Server
	mu      sync.Mutex
	handler http.HandlerFunc
	hits    atomic.Int64
}

func newMetricsServer(t *testing.T, h http.HandlerFunc) *metricsServer {
	t.Helper()
	s := &metricsServer{handler: h}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		h := s.handler
		s.mu.Unlock()
		h(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *metricsServer) set(h http.HandlerFunc) {
	s.mu.Lock()
	s.handler = h
	s.mu.Unlock()
}

// addr is the dial address of the server.
func (s *metricsServer) addr() string { return strings.TrimPrefix(s.URL, "http://") }

func serveFile(t *testing.T, name string) http.HandlerFunc {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = w.Write(data)
	}
}

func TestScrape(t *testing.T) {
	clock := newClock()
	tr := NewTracker(TrackerOptions{Now: clock.Now})
	vllm := newMetricsServer(t, serveFile(t, "vllm_v1.txt"))
	tgi := newMetricsServer(t, serveFile(t, "tgi.txt"))
	sc := NewScraper(nil, tr, ScraperOptions{})

	if err := sc.Scrape(context.Background(), vllm.addr()); err != nil {
		t.Fatalf("Scrape(vllm): %v", err)
	}
	if err := sc.Scrape(context.Background(), tgi.addr()); err != nil {
		t.Fatalf("Scrape(tgi): %v", err)
	}
	want := Metrics{Waiting: 5, Running: 3, KVCacheUsage: 0.4213, At: clock.Now()}
	if l := tr.Load(vllm.addr()); !l.Fresh || l.Metrics != want {
		t.Errorf("vllm load = %+v, want fresh %+v", l, want)
	}
	want = Metrics{QueueSize: 7, Running: 12, At: clock.Now()}
	if l := tr.Load(tgi.addr()); !l.Fresh || l.Metrics != want {
		t.Errorf("tgi load = %+v, want fresh %+v", l, want)
	}
	// vLLM: 1000*(2*5 + 3 + 4*0.4213) = 14685.2; TGI: 1000*(2*7 + 12) = 26000.
	if got := tr.Pick([]string{tgi.addr(), vllm.addr()}, noTies(t)); got != 1 {
		t.Errorf("Pick = %d, want the vLLM server", got)
	}
}

func TestScrapeFailuresMarkStale(t *testing.T) {
	tests := []struct {
		name    string
		handler func(release <-chan struct{}) http.HandlerFunc
		check   func(t *testing.T, err error)
	}{
		{
			name: "500",
			handler: func(<-chan struct{}) http.HandlerFunc {
				return func(w http.ResponseWriter, r *http.Request) {
					http.Error(w, "engine dead", http.StatusInternalServerError)
				}
			},
			check: func(t *testing.T, err error) {
				t.Helper()
				if err == nil || !strings.Contains(err.Error(), "status 500") {
					t.Errorf("err = %v, want status 500", err)
				}
			},
		},
		{
			name: "hangs",
			handler: func(release <-chan struct{}) http.HandlerFunc {
				return func(w http.ResponseWriter, r *http.Request) {
					select {
					case <-r.Context().Done():
					case <-release:
					}
				}
			},
			check: func(t *testing.T, err error) {
				t.Helper()
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("err = %v, want a deadline exceeded", err)
				}
			},
		},
		{
			name: "headers then hangs",
			handler: func(release <-chan struct{}) http.HandlerFunc {
				return func(w http.ResponseWriter, r *http.Request) {
					_, _ = w.Write([]byte("tgi_queue_size 1\n"))
					w.(http.Flusher).Flush()
					select {
					case <-r.Context().Done():
					case <-release:
					}
				}
			},
			check: func(t *testing.T, err error) {
				t.Helper()
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("err = %v, want a deadline exceeded", err)
				}
			},
		},
		{
			name: "garbage",
			handler: func(<-chan struct{}) http.HandlerFunc {
				return func(w http.ResponseWriter, r *http.Request) {
					_, _ = w.Write([]byte("<html>metrics moved</html>"))
				}
			},
			check: func(t *testing.T, err error) {
				t.Helper()
				if !errors.Is(err, ErrNoLoadMetrics) {
					t.Errorf("err = %v, want ErrNoLoadMetrics", err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newClock()
			tr := NewTracker(TrackerOptions{Now: clock.Now})
			srv := newMetricsServer(t, serveFile(t, "vllm_v1.txt"))
			var reported []error
			var mu sync.Mutex
			sc := NewScraper(srv.Client(), tr, ScraperOptions{
				Timeout: 100 * time.Millisecond,
				OnError: func(up string, err error) {
					mu.Lock()
					defer mu.Unlock()
					if up != srv.addr() {
						t.Errorf("OnError upstream %q", up)
					}
					reported = append(reported, err)
				},
			})
			sc.ScrapeAll(context.Background(), []string{srv.addr()})
			if l := tr.Load(srv.addr()); !l.Fresh {
				t.Fatalf("first scrape not recorded: %+v", l)
			}

			release := make(chan struct{})
			defer close(release)
			srv.set(tt.handler(release))
			err := sc.Scrape(context.Background(), srv.addr())
			tt.check(t, err)
			if l := tr.Load(srv.addr()); l.Fresh || l.Metrics != (Metrics{}) {
				t.Errorf("after failed scrape load = %+v, want stale", l)
			}

			sc.ScrapeAll(context.Background(), []string{srv.addr()})
			mu.Lock()
			defer mu.Unlock()
			if len(reported) != 1 {
				t.Fatalf("OnError called %d times, want 1", len(reported))
			}
			tt.check(t, reported[0])
		})
	}
}

func TestScrapeURLs(t *testing.T) {
	srv := newMetricsServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/custom/metrics" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte("tgi_queue_size 4\n"))
	})
	t.Run("path", func(t *testing.T) {
		tr := NewTracker(TrackerOptions{})
		sc := NewScraper(nil, tr, ScraperOptions{Path: "custom/metrics"})
		if err := sc.Scrape(context.Background(), srv.addr()); err != nil {
			t.Fatal(err)
		}
		if l := tr.Load(srv.addr()); l.Metrics.QueueSize != 4 {
			t.Errorf("load = %+v", l)
		}
	})
	t.Run("URL func", func(t *testing.T) {
		tr := NewTracker(TrackerOptions{})
		sc := NewScraper(nil, tr, ScraperOptions{URL: func(up string) string {
			if up == "skip:1" {
				return ""
			}
			return srv.URL + "/custom/metrics"
		}})
		if err := sc.Scrape(context.Background(), "gpu-box:8000"); err != nil {
			t.Fatal(err)
		}
		if l := tr.Load("gpu-box:8000"); l.Metrics.QueueSize != 4 {
			t.Errorf("load = %+v", l)
		}
		if err := sc.Scrape(context.Background(), "skip:1"); err != nil {
			t.Errorf("skipped upstream: %v", err)
		}
	})
	t.Run("unix socket", func(t *testing.T) {
		sc := NewScraper(nil, NewTracker(TrackerOptions{}), ScraperOptions{})
		if err := sc.Scrape(context.Background(), "unix//run/vllm.sock"); !errors.Is(err, ErrUnixUpstream) {
			t.Errorf("err = %v, want ErrUnixUpstream", err)
		}
	})
	t.Run("panicking URL func", func(t *testing.T) {
		tr := NewTracker(TrackerOptions{})
		tr.Observe("boom:1", Metrics{Running: 1})
		got := make(chan error, 1)
		sc := NewScraper(nil, tr, ScraperOptions{
			URL:     func(string) string { panic("bad config") },
			OnError: func(_ string, err error) { got <- err },
		})
		sc.ScrapeAll(context.Background(), []string{"boom:1"})
		if err := recv(t, got); !strings.Contains(err.Error(), "panic: bad config") {
			t.Errorf("err = %v", err)
		}
		if tr.Load("boom:1").Fresh {
			t.Error("metrics still fresh after a panicking scrape")
		}
	})
}

func TestScraperRun(t *testing.T) {
	tr := NewTracker(TrackerOptions{})
	hits := make(chan string, 16)
	var srvs []*metricsServer
	for _, f := range []string{"vllm_v1.txt", "tgi.txt"} {
		h := serveFile(t, f)
		srvs = append(srvs, newMetricsServer(t, func(w http.ResponseWriter, r *http.Request) {
			h(w, r)
			select {
			case hits <- f:
			default:
			}
		}))
	}
	var calls atomic.Int64
	upstreams := func() []string {
		calls.Add(1)
		return []string{srvs[0].addr(), srvs[1].addr()}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	sc := NewScraper(nil, tr, ScraperOptions{Interval: 5 * time.Millisecond})
	go func() {
		sc.Run(ctx, upstreams)
		close(done)
	}()
	seen := map[string]int{}
	for seen["vllm_v1.txt"] < 2 || seen["tgi.txt"] < 2 {
		seen[recv(t, hits)]++
	}
	for _, s := range srvs {
		waitFor(t, "metrics of "+s.addr(), func() bool { return tr.Load(s.addr()).Fresh })
	}
	cancel()
	recv(t, done)
	if calls.Load() < 2 {
		t.Errorf("upstreams asked %d times, want one per round", calls.Load())
	}
	// Stopping is not a failure of the upstreams: their metrics stay.
	for _, s := range srvs {
		if !tr.Load(s.addr()).Fresh {
			t.Errorf("%s marked stale by cancellation", s.addr())
		}
	}

	// A cancelled context stops Run before any scrape; nil upstreams returns at once.
	before := srvs[0].hits.Load()
	sc.Run(ctx, upstreams)
	sc.Run(context.Background(), nil)
	if srvs[0].hits.Load() != before {
		t.Error("Run scraped with a cancelled context")
	}
}

func TestScraperDefaults(t *testing.T) {
	sc := NewScraper(nil, NewTracker(TrackerOptions{}), ScraperOptions{})
	if sc.client != http.DefaultClient || sc.opts.Interval != DefaultInterval || sc.opts.Timeout != DefaultScrapeTimeout ||
		sc.opts.Path != "/metrics" || sc.opts.Scheme != "http" {
		t.Errorf("defaults: %+v", sc.opts)
	}
	if u, err := sc.url("10.0.0.7:8000"); err != nil || u != "http://10.0.0.7:8000/metrics" {
		t.Errorf("url = %q, %v", u, err)
	}
}

func TestScrapeCancelledKeepsMetrics(t *testing.T) {
	tr := NewTracker(TrackerOptions{})
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	defer close(release)
	srv := newMetricsServer(t, func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	tr.Observe(srv.addr(), Metrics{Running: 3})
	reported := make(chan error, 1)
	sc := NewScraper(nil, tr, ScraperOptions{Timeout: time.Hour, OnError: func(_ string, err error) { reported <- err }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		sc.ScrapeAll(ctx, []string{srv.addr()})
		close(done)
	}()
	recv(t, entered)
	cancel()
	recv(t, done)
	if l := tr.Load(srv.addr()); !l.Fresh || l.Metrics.Running != 3 {
		t.Errorf("cancelled scrape changed the metrics: %+v", l)
	}
	select {
	case err := <-reported:
		t.Errorf("cancellation reported as a failure: %v", err)
	default:
	}
}
