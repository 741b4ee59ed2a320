package caddymodule

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tidwall/gjson"
	"go.uber.org/zap"

	"github.com/caddyai/gateway/batch"
	"github.com/caddyai/gateway/store"
)

// The runner's metrics: the batches it sees by status and the lines waiting per model, counted
// on every pass over the active batches (gauges: with several instances on one store, each
// reports the same totals, so take max, not sum), and the batches that ended, counted by the
// instance that ended them.

// batchCollectors are the runner's collectors, part of gatewayMetrics.
type batchCollectors struct {
	batches      *prometheus.GaugeVec   // api, status
	batchesEnded *prometheus.CounterVec // api, status
	linesWaiting *prometheus.GaugeVec   // model
}

func newBatchCollectors() batchCollectors {
	opts := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: name, Help: help}
	}
	return batchCollectors{
		batches: prometheus.NewGaugeVec(prometheus.GaugeOpts(opts("batches",
			"Batches not yet ended, by API (openai, anthropic) and status (validating, in_progress, finalizing, cancelling; "+
				"in_progress, canceling).")), []string{"api", "status"}),
		batchesEnded: prometheus.NewCounterVec(prometheus.CounterOpts(opts("batches_ended_total",
			"Batches ended by this instance, by API and end status (completed, failed, expired, cancelled; ended).")), []string{"api", "status"}),
		linesWaiting: prometheus.NewGaugeVec(prometheus.GaugeOpts(opts("batch_lines_waiting",
			"Lines of running batches not answered yet, by the model they name (mixed for a message batch naming several).")),
			[]string{"model"}),
	}
}

// register registers the collectors, reusing those of an earlier config.
func (c *batchCollectors) register(reg prometheus.Registerer) (err error) {
	if c.batches, err = registerOrReuse(reg, c.batches); err != nil {
		return err
	}
	if c.batchesEnded, err = registerOrReuse(reg, c.batchesEnded); err != nil {
		return err
	}
	c.linesWaiting, err = registerOrReuse(reg, c.linesWaiting)
	return err
}

// APIs of the batch metrics.
const (
	apiOpenAI    = "openai"
	apiAnthropic = "anthropic"
)

// batchTally counts what one pass over the active batches saw.
type batchTally struct {
	mu      sync.Mutex
	status  map[[2]string]int
	waiting map[string]int64
}

func (t *batchTally) batch(api, status string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.status == nil {
		t.status = map[[2]string]int{}
	}
	t.status[[2]string{api, status}]++
}

func (t *batchTally) wait(model string, n int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.waiting == nil {
		t.waiting = map[string]int64{}
	}
	t.waiting[model] += n
}

// batchGauges remembers the label values the runner set, to zero those a pass no longer sees.
type batchGauges struct {
	mu      sync.Mutex
	status  map[[2]string]bool
	waiting map[string]bool
}

// publish sets the gauges to what a complete pass saw.
func (g *batchGauges) publish(c *batchCollectors, t *batchTally) {
	if c == nil || c.batches == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	if g.status == nil {
		g.status, g.waiting = map[[2]string]bool{}, map[string]bool{}
	}
	for k := range g.status {
		if _, ok := t.status[k]; !ok {
			c.batches.WithLabelValues(k[0], k[1]).Set(0)
		}
	}
	for k, n := range t.status {
		c.batches.WithLabelValues(k[0], k[1]).Set(float64(n))
		g.status[k] = true
	}
	for m := range g.waiting {
		if _, ok := t.waiting[m]; !ok {
			c.linesWaiting.WithLabelValues(m).Set(0)
		}
	}
	for m, n := range t.waiting {
		c.linesWaiting.WithLabelValues(m).Set(float64(n))
		g.waiting[m] = true
	}
}

// countEnded counts a batch that this runner ended.
func (r *batchRunner) countEnded(api, status string) {
	if m := r.settingsOf().metrics; m != nil && m.batch.batchesEnded != nil {
		m.batch.batchesEnded.WithLabelValues(api, status).Inc()
	}
}

// modelMixed is the model label of the lines of a message batch whose requests name several
// models.
const modelMixed = "mixed"

// msgModel is the model the requests of a message batch name, or modelMixed. A request that
// cannot be read counts as naming no model.
func (st *runState) msgModel(ctx context.Context, id string, tasks []batch.Task) string {
	blob, err := st.blobs.Open(ctx, msgInputBlob(id))
	if err != nil {
		return ""
	}
	defer blob.Close()
	model := ""
	var buf []byte
	for i, t := range tasks {
		body, err := t.ReadBody(blob, buf)
		if err != nil {
			return model
		}
		buf = body
		switch m := gjson.GetBytes(body, "model").Str; {
		case i == 0:
			model = m
		case m != model:
			return modelMixed
		}
	}
	return model
}

// storeErrorLogEvery bounds how often the runner logs that its store is unavailable: it tries
// again every tick, and an outage must not flood the log.
const storeErrorLogEvery = time.Minute

// logError logs an error of the runner; store.ErrUnavailable at most once per
// storeErrorLogEvery.
func (r *batchRunner) logError(msg string, err error, fields ...zap.Field) {
	if errors.Is(err, store.ErrUnavailable) {
		now := time.Now().UnixNano()
		last := r.storeLogged.Load()
		if now-last < int64(storeErrorLogEvery) || !r.storeLogged.CompareAndSwap(last, now) {
			return
		}
		msg += " (the store is unavailable; logged once a minute while it lasts)"
	}
	r.logger.Error(msg, append(fields, zap.Error(err))...)
}
