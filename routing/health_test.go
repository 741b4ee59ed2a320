package routing

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

func TestClassifyProbe(t *testing.T) {
	tests := []struct {
		name   string
		status int
		ct     string
		body   string
		err    error
		want   HostState
	}{
		{"vllm ready", 200, "", "", nil, HostHealthy},
		{"ollama root", 200, "text/plain", "Ollama is running", nil, HostHealthy},
		{"tgi 204", 204, "", "", nil, HostHealthy},
		{"llama.cpp loading", 503, "application/json", `{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}`, nil, HostLoading},
		{"start-up page", 503, "text/plain", "Server is starting up", nil, HostLoading},
		{"tgi unhealthy", 503, "application/json", `{"error":"unhealthy","error_type":"healthcheck"}`, nil, HostDown},
		{"plain 503", 503, "", "", nil, HostDown},
		{"no /health", 404, "application/json", `{"detail":"Not Found"}`, nil, HostDown},
		{"500", 500, "", "boom", nil, HostDown},
		{"refused", 0, "", "", errors.New("connection refused"), HostDown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ClassifyProbe(tt.status, tt.ct, []byte(tt.body), tt.err); got != tt.want {
				t.Errorf("ClassifyProbe = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestPoolStatusRefusal(t *testing.T) {
	mk := func(states ...HostState) []*HostHealth {
		var hs []*HostHealth
		for _, s := range states {
			h := new(HostHealth)
			h.Set(s)
			hs = append(hs, h)
		}
		return hs
	}
	tests := []struct {
		name      string
		hosts     []*HostHealth
		available int
		refusal   string
	}{
		{"all unknown", mk(HostUnknown, HostUnknown), 2, ""},
		{"one healthy among loading and down", mk(HostLoading, HostDown, HostHealthy), 1, ""},
		{"loading and down", mk(HostLoading, HostDown), 0, "model_loading"},
		{"all down", mk(HostDown, HostDown), 0, "model_unavailable"},
		{"no hosts", nil, 0, "model_unavailable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Summarize(tt.hosts)
			if p.Available() != tt.available || p.Refusal() != tt.refusal {
				t.Errorf("%+v: available %d refusal %q, want %d %q", p, p.Available(), p.Refusal(), tt.available, tt.refusal)
			}
		})
	}
}

func TestHealthTableSharesHosts(t *testing.T) {
	h := NewHealth()
	a := h.Host("http://a/health")
	a.Set(HostLoading)
	if b := h.Host("http://a/health"); b != a || b.State() != HostLoading {
		t.Fatal("the same key must give the same host state")
	}
	if c := h.Host("http://b/health"); c == a || c.State() != HostUnknown {
		t.Fatal("a new key starts unknown")
	}
}

// TestProberFlipsBothWays probes a real server that loads, serves, then goes away.
func TestProberFlipsBothWays(t *testing.T) {
	var mode atomic.Int32 // 0 loading, 1 ready
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" || r.Header.Get("Authorization") != "Bearer up" {
			w.WriteHeader(404)
			return
		}
		if mode.Load() == 0 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(503)
			_, _ = w.Write([]byte(`{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}`))
			return
		}
		_, _ = w.Write([]byte("{}"))
	}))
	var changes []string
	p := NewProber(nil, ProberOptions{Timeout: time.Second, Header: http.Header{"Authorization": {"Bearer up"}},
		OnChange: func(url string, from, to HostState, err error) {
			changes = append(changes, from.String()+">"+to.String())
		}})
	h := NewHealth()
	target := ProbeTarget{URL: srv.URL + "/health", Host: h.Host(srv.URL)}
	ctx := context.Background()
	if s := p.Probe(ctx, target); s != HostLoading {
		t.Fatalf("loading server: %s", s)
	}
	mode.Store(1)
	if s := p.Probe(ctx, target); s != HostHealthy {
		t.Fatalf("ready server: %s", s)
	}
	srv.Close()
	if s := p.Probe(ctx, target); s != HostHealthy {
		t.Fatalf("closed server, first failure: %s; one failure removes no host", s)
	}
	if s := p.Probe(ctx, target); s != HostDown {
		t.Fatalf("closed server, second failure: %s", s)
	}
	want := []string{"unknown>loading", "loading>healthy", "healthy>down"}
	if len(changes) != len(want) {
		t.Fatalf("changes %v, want %v", changes, want)
	}
	for i := range want {
		if changes[i] != want[i] {
			t.Errorf("changes %v, want %v", changes, want)
		}
	}
}

// TestProberTimeoutAndCancel: a server that never answers is down after Timeout; a probe whose
// context ends (a reload) leaves the state alone.
func TestProberTimeoutAndCancel(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // accepted, never answered
		}
	}()
	p := NewProber(nil, ProberOptions{Timeout: 50 * time.Millisecond})
	host := new(HostHealth)
	host.Set(HostHealthy)
	target := ProbeTarget{URL: "http://" + l.Addr().String() + "/health", Host: host}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if s := p.Probe(ctx, target); s != HostHealthy {
		t.Fatalf("a cancelled probe changed the state to %s", s)
	}
	p.Probe(context.Background(), target)
	if s := p.Probe(context.Background(), target); s != HostDown {
		t.Fatalf("a server that never answers, twice: %s", s)
	}
}

// TestHealthWatch: a change of a shared host is told to every watcher, whichever prober saw it
// (two models probing one upstream: the second prober finds no change of its own); a probe that
// changes nothing tells no one, and a stopped watcher hears nothing more.
func TestHealthWatch(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}`)
	}))
	defer srv.Close()
	table := NewHealth()
	url := srv.URL + "/health"
	var first, second atomic.Int64
	stopFirst := table.Watch(func() { first.Add(1) })
	defer table.Watch(func() { second.Add(1) })()
	a, b := NewProber(nil, ProberOptions{}), NewProber(nil, ProberOptions{})
	var seenByB int
	b.opts.OnChange = func(string, HostState, HostState, error) { seenByB++ }
	if s := a.Probe(context.Background(), ProbeTarget{URL: url, Host: table.Host(url)}); s != HostLoading {
		t.Fatalf("probe: %s", s)
	}
	if s := b.Probe(context.Background(), ProbeTarget{URL: url, Host: table.Host(url)}); s != HostLoading || seenByB != 0 {
		t.Fatalf("the second prober: %s, %d changes of its own", s, seenByB)
	}
	if first.Load() != 1 || second.Load() != 1 {
		t.Fatalf("watchers called %d and %d times, want 1 each", first.Load(), second.Load())
	}
	stopFirst()
	table.Host(url).Set(HostHealthy)
	if first.Load() != 1 || second.Load() != 2 {
		t.Fatalf("after stopping the first: %d and %d", first.Load(), second.Load())
	}
}

// TestProberRunStopsWithContext: Run probes at once, again each interval, and returns when its
// context ends.
func TestProberRunStopsWithContext(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer srv.Close()
	p := NewProber(nil, ProberOptions{Interval: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		p.Run(ctx, []ProbeTarget{{URL: srv.URL + "/health", Host: new(HostHealth)}})
		close(done)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for hits.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop with its context")
	}
	if hits.Load() < 3 {
		t.Fatalf("only %d probes", hits.Load())
	}
}

// BenchmarkPoolRefusal is the request path's cost of pool health: a summary of the pool's
// states and the refusal it implies (no lock, no allocation).
func BenchmarkPoolRefusal(b *testing.B) {
	hosts := make([]*HostHealth, 8)
	for i := range hosts {
		hosts[i] = new(HostHealth)
		hosts[i].Set(HostState(1 + i%3))
	}
	b.ReportAllocs()
	for b.Loop() {
		if Summarize(hosts).Refusal() != "" {
			b.Fatal("refused")
		}
	}
}

// TestProberRetriesAFirstFailureSoon: a host whose probe failed once is probed again within
// 0.5s, not a whole interval later, and is down after the second failure.
func TestProberRetriesAFirstFailureSoon(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	changed := make(chan HostState, 4)
	p := NewProber(nil, ProberOptions{Interval: time.Hour, Timeout: time.Second,
		OnChange: func(_ string, _, to HostState, _ error) { changed <- to }})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	host := new(HostHealth)
	go p.Run(ctx, []ProbeTarget{{URL: "http://" + addr + "/health", Host: host}})
	select {
	case s := <-changed:
		if s != HostDown {
			t.Fatalf("changed to %s", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no second probe within the retry delay (the interval is an hour)")
	}
}
