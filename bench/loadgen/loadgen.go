// Package loadgen is a closed-loop HTTP/1.1 load generator for the gateway's benchmarks. Each of
// N connections sends a request, reads the whole response, verifies it and sends the next one,
// for a duration or a request count. Requests are serialised by hand and responses parsed
// without allocating, so the client costs little CPU next to the servers it measures on a
// shared machine. Latencies go to fixed-size log-linear histograms (bounded memory).
package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Body appends the JSON body of request seq (0, 1, 2 ... across all connections) to dst and
// returns it. It is called concurrently from every connection and must not keep dst.
type Body func(dst []byte, seq int64) []byte

// Config describes one run.
type Config struct {
	// Addr is the server's host:port (loopback in the benchmarks).
	Addr string
	// Path is the request path. Default: /v1/chat/completions.
	Path string
	// Conns is the number of concurrent connections, each one request at a time. Default: 1.
	Conns int
	// Duration stops the run when it has elapsed (requests in flight finish). Either Duration
	// or Requests must be set; when both are, the first reached ends the run.
	Duration time.Duration
	// Requests stops the run after this many requests in total.
	Requests int64
	// Body builds each request's body. Required.
	Body Body
	// Keys are bearer tokens; request seq uses Keys[seq % len(Keys)]. Empty sends none.
	Keys []string
	// Stream expects SSE responses: a 200 body must end with "data: [DONE]\n\n", and the time
	// to the first body byte is recorded.
	Stream bool
	// StreamDone, when set, is what a 200 stream must contain to count as complete (a typed
	// stream's terminal event, such as "event: response.completed\n"), in place of ending with
	// "data: [DONE]\n\n". The body must fit MaxBody.
	StreamDone []byte
	// Timeout bounds each request (dial, write and read). Default: 30s.
	Timeout time.Duration
	// MaxBody is how much of each response body is kept for verification; the end of a longer
	// body is still checked. Default: 1 MiB.
	MaxBody int
}

// Result is what a run measured.
type Result struct {
	// OK counts 200 responses that passed verification.
	OK int64 `json:"ok"`
	// Limited counts 429 responses (expected under rate limits, not errors).
	Limited int64 `json:"limited"`
	// Errors counts everything else: other statuses, bodies that failed verification,
	// connection and parse errors.
	Errors int64 `json:"errors"`
	// Elapsed is the wall time from the first request to the end of the last one.
	Elapsed time.Duration `json:"elapsed_ns"`
	// Latency holds the latency of OK responses (request written to body fully read).
	Latency Histogram `json:"-"`
	// TTFB holds the time to the first body byte of OK responses (streams only).
	TTFB Histogram `json:"-"`
	// ErrorSamples are the first few distinct error messages.
	ErrorSamples []string `json:"error_samples,omitempty"`
}

// RPS returns OK responses per second.
func (r *Result) RPS() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.OK) / r.Elapsed.Seconds()
}

// maxErrorSamples bounds Result.ErrorSamples.
const maxErrorSamples = 5

var (
	errNotDone    = errors.New(`stream did not end with "data: [DONE]"`)
	errNotChoices = errors.New(`JSON body without "choices"`)
	doneSuffix    = []byte("data: [DONE]\n\n")
	choicesField  = []byte(`"choices"`)
)

// Run runs the load described by cfg until it is done or ctx ends, and returns the merged
// result. It fails only on a bad Config; request failures are counted in Result.Errors.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.Addr == "" {
		return nil, errors.New("running load: no address")
	}
	if cfg.Body == nil {
		return nil, errors.New("running load: no body function")
	}
	if cfg.Duration <= 0 && cfg.Requests <= 0 {
		return nil, errors.New("running load: neither a duration nor a request count")
	}
	if cfg.Path == "" {
		cfg.Path = "/v1/chat/completions"
	}
	cfg.Conns = max(cfg.Conns, 1)
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 1 << 20
	}
	r := &runner{cfg: cfg, prefixes: requestPrefixes(cfg)}
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	res := &Result{}
	workers := make([]*worker, cfg.Conns)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range workers {
		w := &worker{r: r, c: newClient(cfg.Addr, cfg.Timeout, cfg.MaxBody)}
		workers[i] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.loop(ctx)
		}()
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	for _, w := range workers {
		res.OK += w.ok
		res.Limited += w.limited
		res.Errors += w.errors
		res.Latency.Merge(&w.latency)
		res.TTFB.Merge(&w.ttfb)
		for _, s := range w.samples {
			if len(res.ErrorSamples) < maxErrorSamples && !contains(res.ErrorSamples, s) {
				res.ErrorSamples = append(res.ErrorSamples, s)
			}
		}
	}
	return res, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// requestPrefixes serialises the request line and headers up to "Content-Length: ", one per
// key.
func requestPrefixes(cfg Config) [][]byte {
	base := "POST " + cfg.Path + " HTTP/1.1\r\nHost: " + cfg.Addr +
		"\r\nUser-Agent: caddyai-loadgen\r\nContent-Type: application/json\r\nAccept: */*\r\n"
	if len(cfg.Keys) == 0 {
		return [][]byte{[]byte(base + "Content-Length: ")}
	}
	out := make([][]byte, len(cfg.Keys))
	for i, k := range cfg.Keys {
		out[i] = []byte(base + "Authorization: Bearer " + k + "\r\nContent-Length: ")
	}
	return out
}

type runner struct {
	cfg      Config
	prefixes [][]byte
	seq      atomic.Int64
}

type worker struct {
	r       *runner
	c       *client
	req     []byte
	body    []byte
	resp    response
	latency Histogram
	ttfb    Histogram
	ok      int64
	limited int64
	errors  int64
	samples []string
}

func (w *worker) loop(ctx context.Context) {
	defer w.c.Close()
	cfg := &w.r.cfg
	for ctx.Err() == nil {
		seq := w.r.seq.Add(1) - 1
		if cfg.Requests > 0 && seq >= cfg.Requests {
			return
		}
		w.body = cfg.Body(w.body[:0], seq)
		w.req = append(w.req[:0], w.r.prefixes[seq%int64(len(w.r.prefixes))]...)
		w.req = strconv.AppendInt(w.req, int64(len(w.body)), 10)
		w.req = append(w.req, "\r\n\r\n"...)
		w.req = append(w.req, w.body...)
		start := time.Now()
		err := w.c.do(w.req, &w.resp)
		end := time.Now()
		if err == nil {
			err = w.verify()
		}
		switch {
		case err != nil:
			w.fail(err)
			if w.c.conn == nil && ctx.Err() == nil {
				// Do not spin on a server that refuses connections.
				pause(ctx, 5*time.Millisecond)
			}
		case w.resp.status == 429:
			w.limited++
		default:
			w.ok++
			w.latency.Record(end.Sub(start))
			if cfg.Stream && !w.resp.firstByte.IsZero() {
				w.ttfb.Record(w.resp.firstByte.Sub(start))
			}
		}
	}
}

func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// verify checks a response that was read completely.
func (w *worker) verify() error {
	r := &w.resp
	switch r.status {
	case 200:
	case 429:
		return nil
	default:
		return fmt.Errorf("status %d: %.200s", r.status, r.body)
	}
	if w.r.cfg.Stream && w.r.cfg.StreamDone != nil {
		if !bytes.Contains(r.body, w.r.cfg.StreamDone) {
			return fmt.Errorf("stream without %q", w.r.cfg.StreamDone)
		}
		return nil
	}
	if w.r.cfg.Stream {
		if !bytes.HasSuffix(r.tail[:r.tailLen], doneSuffix) {
			return errNotDone
		}
		return nil
	}
	if !bytes.Contains(r.body, choicesField) {
		return errNotChoices
	}
	return nil
}

func (w *worker) fail(err error) {
	w.errors++
	if len(w.samples) < maxErrorSamples {
		s := err.Error()
		if !contains(w.samples, s) {
			w.samples = append(w.samples, s)
		}
	}
}
