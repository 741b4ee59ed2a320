package caddymodule_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyai/gateway/simulator"
)

// Soak bounds: what the process may have grown by after the load, once idle.
const (
	soakMaxGoroutineGrowth = 10
	soakMaxHeapGrowth      = 20 << 20
)

// soakSnapshot is the process's goroutines and live heap after a full GC.
type soakSnapshot struct {
	goroutines int
	heap       uint64
}

func takeSnapshot() soakSnapshot {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return soakSnapshot{goroutines: runtime.NumGoroutine(), heap: ms.HeapAlloc}
}

// writeHeapProfile writes a heap profile to $SOAK_HEAPPROFILE-<name>.pprof when SOAK_HEAPPROFILE
// is set (compare with go tool pprof -base).
func writeHeapProfile(t *testing.T, name string) {
	t.Helper()
	prefix := os.Getenv("SOAK_HEAPPROFILE")
	if prefix == "" {
		return
	}
	f, err := os.Create(prefix + "-" + name + ".pprof")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		t.Fatal(err)
	}
}

// soakRetries is how often the soak retries a request that failed on its connection (a reload
// closes the keep-alive connections): the official SDKs' default max_retries.
const soakRetries = 2

// TestSoak runs a bounded, moderate mixed load through a real Caddy (JSON, streams on both
// surfaces, clients that hang up mid-stream, injected upstream faults, wrong keys, a
// rate-limited key, a config reload every 10 s) and checks that goroutines and heap come back
// to where they were. It runs only with SOAK=1 (make soak); SOAK_DURATION sets its length
// (default 60s).
func TestSoak(t *testing.T) {
	if os.Getenv("SOAK") != "1" {
		t.Skip("soak test: run with SOAK=1 (make soak); SOAK_DURATION sets its length, default 60s")
	}
	duration := time.Minute
	if v := os.Getenv("SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("SOAK_DURATION: %v", err)
		}
		duration = d
	}
	t.Setenv("SOAK_LIMITED_KEY", "sk-soak-limited")
	// a simulator that keeps no record of the requests (the recording one grows with the load)
	sim, err := simulator.New(simulator.Config{TTFT: 2 * time.Millisecond, TokensPerSecond: 2000})
	if err != nil {
		t.Fatal(err)
	}
	upstream := httptest.NewServer(sim)
	t.Cleanup(upstream.Close)
	opts := func(gen int) hardOpts {
		return hardOpts{
			upstream: upstream.Listener.Addr().String(),
			key:      fmt.Sprintf("rpm 1000000\n\t\t\t\tlabel generation g%d", gen),
			gateway: `key {env.SOAK_LIMITED_KEY} {
				id limited
				rpm 60
			}`,
			proxy: "transport http {\n\t\t\t\tresponse_header_timeout 2s\n\t\t\t}",
		}
	}
	s := startHard(t, opts(0))
	faults := []string{"kind=cut;after=2", "kind=close", "kind=error;status=500", "kind=midstream_error;after=1;shape=vllm",
		"kind=overloaded;shape=tgi", "kind=garbage", "kind=no_usage", "kind=stall;delay=20ms", "kind=context;shape=llamacpp"}

	var (
		statuses sync.Map // "kind status" -> *atomic.Int64
		failures atomic.Int64
		firstErr atomic.Value
	)
	count := func(kind string, status int) {
		v, _ := statuses.LoadOrStore(fmt.Sprintf("%s %d", kind, status), new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
	}
	fail := func(err error) {
		if failures.Add(1) == 1 {
			firstErr.Store(err)
		}
	}
	// one request of the mix; i picks the kind
	one := func(i int) {
		kind, path, body := "json", "/v1/chat/completions", chatBody
		headers := map[string]string{}
		hangUp := false
		switch i % 12 {
		case 3, 4:
			kind, body = "stream", streamBody(i%2 == 0)
		case 5:
			kind, path, body = "anthropic-stream", "/v1/messages", `{"model":"llama","max_tokens":10,"stream":true,"messages":[{"role":"user","content":"hi"}]}`
		case 6:
			kind, body, hangUp = "hang-up", streamBody(false), true
		case 7, 8:
			f := faults[(i/12)%len(faults)]
			kind, headers["X-Sim-Fault"] = "fault", f
			if i%12 == 8 {
				body = streamBody(false)
			}
			s.tally.faults.Add(1)
		case 9:
			kind, headers["Authorization"] = "wrong-key", "Bearer sk-soak-wrong"
			s.tally.badInputs.Add(1)
		case 10:
			kind, headers["Authorization"] = "limited", "Bearer sk-soak-limited"
		case 11:
			kind, body = "bad-json", `{"model":"llama","messages":[`
			s.tally.badInputs.Add(1)
		}
		if hangUp {
			s.tally.requests.Add(1)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var resp *http.Response
			var err error
			for range 1 + soakRetries { // a connection a reload closed is retried, as for the other kinds
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url(s.port, path), strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+secretAll)
				if resp, err = s.client.Do(req); err == nil {
					break
				}
			}
			if err != nil {
				fail(fmt.Errorf("%s: %w", kind, err))
				return
			}
			_, _ = bufio.NewReader(resp.Body).ReadString('\n')
			cancel()
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			count(kind, resp.StatusCode)
			return
		}
		// a connection-level error (a reload closing keep-alive connections) is retried as the
		// SDKs do, twice
		resp, b, err := s.trySend(path, headers, body)
		for retry := 0; err != nil && retry < soakRetries; retry++ {
			resp, b, err = s.trySend(path, headers, body)
		}
		if err != nil {
			fail(fmt.Errorf("%s: %w", kind, err))
			return
		}
		count(kind, resp.StatusCode)
		want := map[string][]int{
			"json": {200}, "stream": {200}, "anthropic-stream": {200}, "wrong-key": {401},
			"limited": {200, 429}, "bad-json": {400}, "fault": {200, 400, 413, 502, 503, 504}, // 413: the upstream's context error, as context_status
		}[kind]
		ok := false
		for _, w := range want {
			ok = ok || resp.StatusCode == w
		}
		if !ok {
			fail(fmt.Errorf("%s %v: status %d: %.200s", kind, headers, resp.StatusCode, b))
		}
		if kind == "stream" && !strings.HasSuffix(string(b), "data: [DONE]\n\n") {
			fail(fmt.Errorf("stream without [DONE]: %.200q", tail(b)))
		}
	}

	run := func(d time.Duration, reloads bool, gen *int) int64 {
		var n atomic.Int64
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		var wg sync.WaitGroup
		const workers = 8
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				tick := time.NewTicker(40 * time.Millisecond) // about 200 requests per second in all
				defer tick.Stop()
				for i := w; ; i += workers {
					select {
					case <-ctx.Done():
						return
					case <-tick.C:
					}
					one(i)
					n.Add(1)
				}
			}(w)
		}
		if reloads {
			reload := time.NewTicker(10 * time.Second)
			defer reload.Stop()
		loop:
			for {
				select {
				case <-ctx.Done():
					break loop
				case <-reload.C:
					*gen++
					s.reload(t, opts(*gen))
				}
			}
		}
		wg.Wait()
		return n.Load()
	}

	gen := 0
	// warm up: pools, caches, first reload, lazily started goroutines
	run(3*time.Second, false, &gen)
	gen++
	s.reload(t, opts(gen))
	run(2*time.Second, false, &gen)
	s.client.CloseIdleConnections()
	time.Sleep(500 * time.Millisecond)
	before := takeSnapshot()
	writeHeapProfile(t, "before")

	start := time.Now()
	sent := run(duration, true, &gen)
	elapsed := time.Since(start)

	s.client.CloseIdleConnections()
	http.DefaultClient.CloseIdleConnections()
	// idle connections and finished requests take a moment to wind down
	var after soakSnapshot
	deadline := time.Now().Add(15 * time.Second)
	for {
		after = takeSnapshot()
		if after.goroutines <= before.goroutines+soakMaxGoroutineGrowth || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}

	writeHeapProfile(t, "after")

	var mix []string
	statuses.Range(func(k, v any) bool {
		mix = append(mix, fmt.Sprintf("%s=%d", k, v.(*atomic.Int64).Load()))
		return true
	})
	t.Logf("soak: %d requests in %s (%.0f/s), %d reloads; mix: %s", sent, elapsed.Round(time.Second), float64(sent)/elapsed.Seconds(), gen, strings.Join(mix, " "))
	t.Logf("soak: goroutines %d -> %d (bound +%d), heap %.1f MiB -> %.1f MiB (bound +%d MiB)",
		before.goroutines, after.goroutines, soakMaxGoroutineGrowth, float64(before.heap)/(1<<20), float64(after.heap)/(1<<20), soakMaxHeapGrowth>>20)
	if n := failures.Load(); n > 0 {
		t.Errorf("%d requests failed; first: %v", n, firstErr.Load())
	}
	if after.goroutines > before.goroutines+soakMaxGoroutineGrowth {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines grew from %d to %d:\n%s", before.goroutines, after.goroutines, buf[:runtime.Stack(buf, true)])
	}
	if after.heap > before.heap+soakMaxHeapGrowth {
		t.Errorf("heap grew from %d to %d bytes", before.heap, after.heap)
	}
}
