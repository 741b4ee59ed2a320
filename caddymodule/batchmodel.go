package caddymodule

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"golang.org/x/time/rate"

	"github.com/caddyai/gateway/internal/wire"
)

// BatchModelConfig is how a model takes batch lines, on top of the rule every batch line
// follows (it is sent only into a free slot of the model's max_concurrent that no interactive
// request is waiting for).
type BatchModelConfig struct {
	// MaxConcurrent caps the model's batch lines in flight at once, on each instance. Default: 0
	// (no cap beyond the spare capacity).
	MaxConcurrent int `json:"max_concurrent,omitempty"`
	// Rate is the most batch lines sent to the model per second, on each instance (the Caddyfile
	// takes 10/s, 600/m or 3600/h). Lines are paced evenly (burst 1). Default: 0 (no limit).
	Rate float64 `json:"rate,omitempty"`
	// Priority, when not 0, is set as the request body's priority field of every batch line
	// (replacing any the line had), for vLLM servers run with --scheduling-policy priority:
	// lower values are served first and interactive requests default to 0, so batch lines want a
	// positive value. Default: 0 (the body is sent as the line has it).
	Priority int `json:"priority,omitempty"`
	// Reserve is how many slots of the model's max_concurrent batch lines leave free: a line is
	// sent only while more than Reserve slots are free, so that an interactive request arriving
	// finds one instead of waiting behind a line that took the slot the previous request freed
	// (on a busy pool, each slot freed goes to whoever asks first). Default: max_concurrent/16
	// (1 slot of 16, 4 of 64; none below 16); 0 lets batch lines fill the pool.
	Reserve *int `json:"reserve,omitempty"`
}

// batchReserve is the number of slots of a model's max_concurrent that batch lines leave free.
func batchReserve(mc ModelConfig) int {
	if mc.Batch != nil && mc.Batch.Reserve != nil {
		return *mc.Batch.Reserve
	}
	return int(mc.MaxConcurrent / 16)
}

// batchModel is the runtime state of a model's batch settings: the count of its batch lines in
// flight and its dispatch pacer. It lives in batchModelPool, so a reload keeps both.
type batchModel struct {
	mu       sync.Mutex
	max      int
	inFlight int
	limiter  *rate.Limiter // nil: no dispatch rate
	priority int
}

// batchModelPool holds each model's batch state across reloads, keyed by model name.
var batchModelPool = caddy.NewUsagePool()

func (*batchModel) Destruct() error { return nil }

// batchRateMaxWait is the longest a batch line waits for its turn of the dispatch rate inside
// the pipeline; a longer wait gives the line back to the runner to try again then.
const batchRateMaxWait = time.Second

// provisionBatchModel loads the model's batch state and applies the config to it.
func (g *Gateway) provisionBatchModel(route *modelRoute, mc ModelConfig) error {
	route.batchReserve = batchReserve(mc)
	bc := mc.Batch
	if bc == nil {
		return nil
	}
	if bc.MaxConcurrent < 0 || bc.Rate < 0 || math.IsNaN(bc.Rate) || math.IsInf(bc.Rate, 0) {
		return fmt.Errorf("batch: max_concurrent and rate must not be negative")
	}
	if r := bc.Reserve; r != nil && (*r < 0 || mc.MaxConcurrent > 0 && int64(*r) >= mc.MaxConcurrent) {
		return fmt.Errorf("batch: reserve must be at least 0 and below the model's max_concurrent (%d), got %d", mc.MaxConcurrent, *r)
	}
	key := "model:" + mc.Name
	val, _, err := batchModelPool.LoadOrNew(key, func() (caddy.Destructor, error) { return new(batchModel), nil })
	if err != nil {
		return err
	}
	bm := val.(*batchModel)
	bm.mu.Lock()
	bm.max, bm.priority = bc.MaxConcurrent, bc.Priority
	switch {
	case bc.Rate == 0:
		bm.limiter = nil
	case bm.limiter == nil:
		bm.limiter = rate.NewLimiter(rate.Limit(bc.Rate), 1)
	default:
		bm.limiter.SetLimit(rate.Limit(bc.Rate))
	}
	bm.mu.Unlock()
	route.batch = bm
	g.batchModelKeys = append(g.batchModelKeys, key)
	return nil
}

// admitBatchLine decides, before the expensive stages (counting, limits), whether a batch line
// may go to its model now: the model's pool has spare capacity (a free slot nobody waits for),
// the model's batch cap has room (the line takes one of its places until it ends) and the
// dispatch rate lets it through (waiting up to batchRateMaxWait for its turn). Otherwise the
// line is deferred: the runner gives it back to the queue and tries again later, and the
// request never reaches the upstream.
func (g *Gateway) admitBatchLine(ctx context.Context, ex *exchange) *wire.Error {
	route := ex.route
	if route.gate != nil && !route.gate.Spare(route.batchReserve) {
		return batchDeferred(route.model.Name, batchDeferRetry)
	}
	bm := route.batch
	if bm == nil {
		return nil
	}
	bm.mu.Lock()
	if bm.max > 0 && bm.inFlight >= bm.max {
		bm.mu.Unlock()
		return batchDeferred(route.model.Name, batchDeferRetry)
	}
	bm.inFlight++
	limiter := bm.limiter
	bm.mu.Unlock()
	var once sync.Once
	ex.releases = append(ex.releases, func() {
		once.Do(func() {
			bm.mu.Lock()
			bm.inFlight--
			bm.mu.Unlock()
		})
	})
	if limiter == nil {
		return nil
	}
	res := limiter.Reserve()
	wait := res.Delay()
	if wait > batchRateMaxWait {
		res.Cancel()
		return batchDeferred(route.model.Name, wait)
	}
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			res.Cancel()
			return wire.ClientClosed()
		}
	}
	return nil
}

// batchPriority is the priority to set on a batch line's body, or 0 for none.
func (ex *exchange) batchPriority() int {
	if ex.batchLine == nil || ex.route == nil || ex.route.batch == nil {
		return 0
	}
	bm := ex.route.batch
	bm.mu.Lock()
	defer bm.mu.Unlock()
	return bm.priority
}

// parseBatchModel parses a model's batch block:
//
//	batch {
//	    max_concurrent <n>
//	    rate <n>/s|m|h
//	    priority <n>
//	    reserve <n>
//	}
func parseBatchModel(d *caddyfile.Dispenser) (*BatchModelConfig, error) {
	if err := noArgs(d); err != nil {
		return nil, err
	}
	bc := new(BatchModelConfig)
	err := newSubdirectives("batch").each(d, func(name string) (err error) {
		switch name {
		case "max_concurrent":
			if bc.MaxConcurrent, err = intArg(d); err == nil && bc.MaxConcurrent <= 0 {
				err = d.Errf("max_concurrent: expected a positive integer, got %d", bc.MaxConcurrent)
			}
		case "rate":
			bc.Rate, err = valueArg(d, "a rate such as 10/s, 600/m or 3600/h", parseRate)
		case "reserve":
			var n int
			n, err = intArg(d)
			bc.Reserve = &n
		case "priority":
			bc.Priority, err = valueArg(d, "an integer", func(s string) (int, bool) {
				n, err := strconv.Atoi(s)
				return n, err == nil
			})
		default:
			return d.Errf("unrecognized batch subdirective %q", name)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return bc, nil
}

// parseRate reads <n>/s, <n>/m or <n>/h as a rate per second.
func parseRate(s string) (float64, bool) {
	num, unit, ok := strings.Cut(s, "/")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseFloat(num, 64)
	if err != nil || !(n > 0) || math.IsInf(n, 0) {
		return 0, false
	}
	switch unit {
	case "s":
		return n, true
	case "m":
		return n / 60, true
	case "h":
		return n / 3600, true
	}
	return 0, false
}

// lineRetryAfter is the precise wait a batch line's refusal asks for: retry-after-ms when
// present, else Retry-After in seconds.
func lineRetryAfter(h http.Header) time.Duration {
	if ms, err := strconv.ParseInt(h.Get("Retry-After-Ms"), 10, 64); err == nil && ms > 0 {
		return time.Duration(ms) * time.Millisecond
	}
	if s, err := strconv.Atoi(h.Get("Retry-After")); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	return 0
}
