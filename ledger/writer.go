package ledger

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyai/gateway/store"
)

// WriterOptions configure a Writer.
type WriterOptions struct {
	// Interval is how often what was recorded is written. 0 writes as soon as something is
	// recorded (what one write does not take waits for the next, so writes batch themselves
	// under load): for Redis, where a killed instance then loses only what it had not yet
	// sent. The embedded store syncs every write to disk and wants 1s: a crash loses at most
	// the last interval.
	Interval time.Duration
	// OnError is told of every failed write (whose increments are kept for the next one).
	OnError func(error)
}

// Writer adds recorded entries to the store's counters off the request path: Record merges an
// entry into the pending totals under a mutex (no I/O), and Run writes them in one Add per
// interval. A failed write keeps its increments for the next one, so a store that is down for
// a while loses nothing the process outlives.
type Writer struct {
	open     func() (store.Counters, error)
	interval time.Duration
	onError  func(error)

	mu      sync.Mutex
	pending map[rowKey]*pendingRow
	dayNum  int64 // the UTC day (unix days) day and month are of
	day     string
	month   string
	seq     int64         // entries recorded
	flushed chan struct{} // closed (and replaced) by every successful write
	wake    chan struct{}
	done    chan struct{}

	recorded, written atomic.Int64
}

type pendingRow struct{ u Usage }

// rowKey names a pending row without building its name (that waits for the write): kind 'u'
// (a key's usage), 'l' (a label's usage), 'k' (a key's budget row), 'L' (a label's budget row).
type rowKey struct {
	kind    byte
	monthly bool   // budget rows: the month's, else the day's
	period  string // the day or the month
	who     string // the key id, or the label's name
	value   string // the label's value
	model   string
}

// name is the counter row's name.
func (k rowKey) name() string {
	switch k.kind {
	case 'u':
		return usageRow(k.period, k.who, k.model)
	case 'l':
		return labelRow(k.period, LabelOf(k.who, k.value), k.model)
	}
	scope := "key:" + k.who
	if k.kind == 'L' {
		scope = "label:" + LabelOf(k.who, k.value)
	}
	p := "d" + k.period
	if k.monthly {
		p = "m" + k.period
	}
	return budgetRow(scope, p)
}

func (k rowKey) budget() bool { return k.kind == 'k' || k.kind == 'L' }

// NewWriter returns a writer to the counters open returns (called at each write until it
// succeeds, so the store may open lazily).
func NewWriter(open func() (store.Counters, error), opts WriterOptions) *Writer {
	return &Writer{open: open, interval: opts.Interval, onError: opts.OnError, pending: map[rowKey]*pendingRow{},
		flushed: make(chan struct{}), wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// Record merges e into the pending totals: its key's and labels' rows of the day, and the budget
// rows of its key and labels for the day and the month. It never blocks on I/O.
func (w *Writer) Record(e Entry) { w.record(e) }

// RecordWait records e and waits until a write has taken it to the store, or ctx ends (the
// entry then stays pending for the next write). Writes batch the entries of every request
// waiting at once (group commit): one store round trip is shared by all of them. With Redis
// (Interval 0) it makes the ledger hold every answer before the gateway lets it go.
func (w *Writer) RecordWait(ctx context.Context, e Entry) error {
	seq := w.record(e)
	for {
		w.mu.Lock()
		if w.written.Load() >= seq {
			w.mu.Unlock()
			return nil
		}
		ch := w.flushed
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (w *Writer) record(e Entry) int64 {
	dayNum := e.Time.Unix() / 86400
	w.mu.Lock()
	if dayNum != w.dayNum || w.day == "" {
		w.dayNum, w.day, w.month = dayNum, Day(e.Time), Month(e.Time)
	}
	day, month := w.day, w.month
	w.add(rowKey{kind: 'u', period: day, who: e.KeyID, model: e.Model}, e.Usage)
	w.add(rowKey{kind: 'k', period: day, who: e.KeyID}, e.Usage)
	w.add(rowKey{kind: 'k', monthly: true, period: month, who: e.KeyID}, e.Usage)
	for name, v := range e.Labels {
		w.add(rowKey{kind: 'l', period: day, who: name, value: v, model: e.Model}, e.Usage)
		w.add(rowKey{kind: 'L', period: day, who: name, value: v}, e.Usage)
		w.add(rowKey{kind: 'L', monthly: true, period: month, who: name, value: v}, e.Usage)
	}
	w.seq++
	seq := w.seq
	w.mu.Unlock()
	w.recorded.Add(1)
	if w.interval == 0 {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
	return seq
}

func (w *Writer) add(k rowKey, u Usage) {
	p := w.pending[k]
	if p == nil {
		p = new(pendingRow)
		w.pending[k] = p
	}
	p.u.Add(u)
}

// Recorded and Written count the entries recorded and those whose totals reached the store.
func (w *Writer) Recorded() int64 { return w.recorded.Load() }

// Written counts the entries whose totals reached the store.
func (w *Writer) Written() int64 { return w.written.Load() }

// Run writes the pending totals every interval (or when woken) until ctx ends, then writes
// what is left once more (bounded by final) and returns.
func (w *Writer) Run(ctx context.Context, final time.Duration) {
	defer close(w.done)
	var tick <-chan time.Time
	if w.interval > 0 {
		t := time.NewTicker(w.interval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), final)
			_ = w.Flush(fctx)
			cancel()
			return
		case <-tick:
		case <-w.wake:
		}
		_ = w.Flush(ctx)
	}
}

// Done is closed once Run has returned.
func (w *Writer) Done() <-chan struct{} { return w.done }

// Flush writes the pending totals in one Add. On failure they stay pending (merged with what
// was recorded meanwhile) and the error is reported and returned.
func (w *Writer) Flush(ctx context.Context) error {
	w.mu.Lock()
	if len(w.pending) == 0 {
		w.mu.Unlock()
		return nil
	}
	batch, n := w.pending, w.seq
	w.pending = make(map[rowKey]*pendingRow, len(batch))
	w.mu.Unlock()

	incs := make([]store.Increment, 0, len(batch)*4)
	for k, p := range batch {
		row := k.name()
		if k.budget() {
			incs = appendNonZero(incs, row, "requests", p.u.Requests)
			incs = appendNonZero(incs, row, "tokens", p.u.TotalTokens())
			incs = appendNonZero(incs, row, "cost", int64(p.u.CostMicros))
			continue
		}
		vals := p.u.values()
		for i, f := range usageFields {
			incs = appendNonZero(incs, row, f, vals[i])
		}
	}
	c, err := w.open()
	if err == nil {
		err = c.Add(ctx, incs)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		for row, p := range batch {
			q := w.pending[row]
			if q == nil {
				w.pending[row] = p
				continue
			}
			q.u.Add(p.u)
		}
		if w.onError != nil {
			w.onError(err)
		}
		return err
	}
	w.written.Store(n)
	close(w.flushed)
	w.flushed = make(chan struct{})
	return nil
}

func appendNonZero(incs []store.Increment, row, field string, v int64) []store.Increment {
	if v == 0 {
		return incs
	}
	return append(incs, store.Increment{Row: row, Field: field, By: v})
}
