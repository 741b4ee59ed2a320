package routing

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyai/gateway/internal/wire"
)

// HostState is what the last probe of an upstream found.
type HostState uint32

// The states of a probed upstream.
const (
	// HostUnknown: not probed yet. It is offered to the proxy (its passive health checks still
	// apply), so a gateway that just started does not refuse requests before its first probe.
	HostUnknown HostState = iota
	// HostHealthy: the probe answered 2xx.
	HostHealthy
	// HostLoading: the server answers but is still loading its model (llama.cpp server's
	// /health 503 "Loading model", start-up 503s).
	HostLoading
	// HostDown: the probe failed (no connection, timeout, any other status).
	HostDown
)

// String returns the state's word, as the readiness endpoint and logs print it.
func (s HostState) String() string {
	switch s {
	case HostHealthy:
		return "healthy"
	case HostLoading:
		return "loading"
	case HostDown:
		return "down"
	}
	return "unknown"
}

// Available tells whether requests may be sent to a host in this state.
func (s HostState) Available() bool { return s == HostUnknown || s == HostHealthy }

// HostHealth is the probed state of one upstream. Reads are one atomic load: the request path
// never takes a lock.
type HostHealth struct {
	state atomic.Uint32
	fails atomic.Uint32 // failed probes in a row while not yet down
	table *Health       // told of changes; nil for a host outside a table
}

// State returns the host's current state.
func (h *HostHealth) State() HostState { return HostState(h.state.Load()) }

// Set records a new state and returns the previous one. A change is told to the table's
// watchers.
func (h *HostHealth) Set(s HostState) HostState {
	from := HostState(h.state.Swap(uint32(s)))
	if from != s && h.table != nil {
		h.table.watchers.Notify()
	}
	return from
}

// Health is the table of probed upstreams, keyed by what is probed (the probe URL). It holds no
// goroutine and no config: keep one in a store that survives config reloads, so a reload keeps
// what the probes found, and run a Prober per model over its hosts.
type Health struct {
	mu       sync.Mutex
	hosts    map[string]*HostHealth
	watchers Watchers
}

// NewHealth returns an empty table.
func NewHealth() *Health { return &Health{hosts: map[string]*HostHealth{}} }

// Host returns the state of the upstream probed at key, adding it (unknown) when new.
func (h *Health) Host(key string) *HostHealth {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s := h.hosts[key]; s != nil {
		return s
	}
	s := &HostHealth{table: h}
	h.hosts[key] = s
	return s
}

// Watch calls fn after any host of the table changes state, whoever probed it: models sharing
// an upstream run a prober each, and a change one of them sees is every sharer's. fn must be
// quick; it may run concurrently with itself. The returned func stops the calls.
func (h *Health) Watch(fn func()) (stop func()) { return h.watchers.Add(fn) }

// PoolStatus counts the hosts of a model's pool by state.
type PoolStatus struct {
	Healthy, Loading, Down, Unknown int
}

// Summarize counts hosts by state.
func Summarize(hosts []*HostHealth) PoolStatus {
	var p PoolStatus
	for _, h := range hosts {
		switch h.State() {
		case HostHealthy:
			p.Healthy++
		case HostLoading:
			p.Loading++
		case HostDown:
			p.Down++
		default:
			p.Unknown++
		}
	}
	return p
}

// Available is the number of hosts requests may go to (healthy or not yet probed).
func (p PoolStatus) Available() int { return p.Healthy + p.Unknown }

// Refusal says why a pool can take no request, as the error code the gateway answers with:
// "" while a host is available, "model_loading" when none is but one is loading (it will be
// back without anyone's help), else "model_unavailable".
func (p PoolStatus) Refusal() string {
	switch {
	case p.Available() > 0:
		return ""
	case p.Loading > 0:
		return "model_loading"
	}
	return "model_unavailable"
}

// ClassifyProbe turns the outcome of a health probe into a state: a transport error (refused,
// reset, timeout) is down; a 2xx answer is healthy; a 503 that says the model is loading (as
// llama.cpp server's /health does, or a start-up page) is loading; any other answer is down.
func ClassifyProbe(status int, contentType string, body []byte, err error) HostState {
	switch {
	case err != nil:
		return HostDown
	case status >= 200 && status < 300:
		return HostHealthy
	case status == http.StatusServiceUnavailable && wire.NormalizeUpstreamError(status, contentType, body).Code == "model_loading":
		return HostLoading
	}
	return HostDown
}

// Defaults of ProberOptions.
const (
	// DefaultHealthInterval is the time between two probes of an upstream.
	DefaultHealthInterval = 5 * time.Second
	// DefaultHealthTimeout bounds one probe.
	DefaultHealthTimeout = 2 * time.Second
	// DefaultHealthPath is the health endpoint of vLLM, TGI and llama.cpp server (Ollama's is /).
	DefaultHealthPath = "/health"
	// DefaultHealthFails is how many failed probes in a row mark a host down.
	DefaultHealthFails = 2
	// maxRetryDelay bounds the wait before probing again a host whose probe just failed.
	maxRetryDelay = 500 * time.Millisecond
)

// ProbeTarget is one upstream to probe: the URL to GET and where its state goes.
type ProbeTarget struct {
	URL  string
	Host *HostHealth
}

// ProberOptions configures a Prober. Zero values take the defaults.
type ProberOptions struct {
	// Interval is the time between two rounds of probes. Default: 5s.
	Interval time.Duration
	// Timeout bounds one probe, from connecting to reading the (first 4 KiB of the) answer.
	// Default: 2s.
	Timeout time.Duration
	// Header is sent with every probe (an upstream credential, say). Optional.
	Header http.Header
	// Fails is how many failed probes in a row (no answer, or an answer that is neither 2xx
	// nor loading) mark a host down; after a first failure the host is probed again within
	// 0.5s (or Interval, if shorter). A loading answer counts at once: the server says so
	// itself. Default: 2, so one lost probe, or a first probe sent before the server (or the
	// Caddy that serves it) listens, removes no host.
	Fails int
	// OnChange, when set, is called when a host's state changes. It must be quick.
	OnChange func(url string, from, to HostState, err error)
}

// Prober probes a set of upstreams on an interval, in its own goroutine, never on the request
// path.
type Prober struct {
	client *http.Client
	opts   ProberOptions
}

// NewProber returns a Prober fetching with client (nil: a client of its own that keeps no idle
// connections, so a probe always sees whether the server accepts connections).
func NewProber(client *http.Client, opts ProberOptions) *Prober {
	if client == nil {
		client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultHealthInterval
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultHealthTimeout
	}
	if opts.Fails <= 0 {
		opts.Fails = DefaultHealthFails
	}
	return &Prober{client: client, opts: opts}
}

// Run probes every target at once and then every Interval until ctx is done. It blocks.
// A round in which a host failed for the first time is followed by another within 0.5s.
func (p *Prober) Run(ctx context.Context, targets []ProbeTarget) {
	retry := min(p.opts.Interval, maxRetryDelay)
	for ctx.Err() == nil {
		wait := p.opts.Interval
		if p.ProbeAll(ctx, targets) {
			wait = retry
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
}

// ProbeAll probes every target concurrently and returns when all are done. It reports whether
// a host failed without being marked down yet (it should be probed again soon).
func (p *Prober) ProbeAll(ctx context.Context, targets []ProbeTarget) (pending bool) {
	var wg sync.WaitGroup
	var anyPending atomic.Bool
	for _, t := range targets {
		wg.Go(func() {
			if p.Probe(ctx, t) != HostDown && t.Host.fails.Load() > 0 {
				anyPending.Store(true)
			}
		})
	}
	wg.Wait()
	return anyPending.Load()
}

// Probe probes one target and records its state, which it returns: down only after Fails
// failures in a row. When ctx itself ends (a reload, a shutdown) the state is left as it was:
// the upstream did nothing wrong.
func (p *Prober) Probe(ctx context.Context, t ProbeTarget) HostState {
	status, ct, body, err := p.fetch(ctx, t.URL)
	if ctx.Err() != nil {
		return t.Host.State()
	}
	s := ClassifyProbe(status, ct, body, err)
	if s != HostDown {
		t.Host.fails.Store(0)
	} else if cur := t.Host.State(); cur != HostDown && int(t.Host.fails.Add(1)) < p.opts.Fails {
		return cur // one failure more before it is down
	} else {
		t.Host.fails.Store(0)
	}
	if from := t.Host.Set(s); from != s && p.opts.OnChange != nil {
		if err == nil && s != HostHealthy {
			err = fmt.Errorf("status %d", status)
		}
		p.opts.OnChange(t.URL, from, s, err)
	}
	return s
}

func (p *Prober) fetch(ctx context.Context, url string) (status int, contentType string, body []byte, err error) {
	ctx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", nil, err
	}
	for k, v := range p.opts.Header {
		req.Header[k] = v
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if err != nil {
		return 0, "", nil, err
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), body, nil
}
