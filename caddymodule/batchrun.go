package caddymodule

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tidwall/gjson"
	"go.uber.org/zap"

	"github.com/caddyai/gateway/batch"
	"github.com/caddyai/gateway/internal/wire"
	"github.com/caddyai/gateway/routing"
	"github.com/caddyai/gateway/store"
)

// batchRunner runs the batches of one store, for as long as the store is in the pool (it is
// started with the store and stopped by its Destruct, so config reloads never interrupt it).
// Every tick it moves each active batch along its lifecycle (validating: check the input file
// and enqueue its lines; in_progress: finalize when no line is pending, expire when the window
// has ended; cancelling: drop what is queued and write the files) and works through the queue,
// sending each line through the gateway's own pipeline as a request of the key that owns the
// batch (send, batchline.go: the only HTTP the runner touches).
//
// A line's answer is stored (one record per line, keyed by batch and line) before its queue item
// is acked, and an item whose answer is already stored is acked without being sent: a line whose
// answer was received is never sent again, even after a crash. Several instances sharing a
// Redis store work through one queue together; leases give the lines of a dead instance to the
// others.
type batchRunner struct {
	h        *backendHandle
	logger   *zap.Logger
	now      func() time.Time
	send     func(ctx context.Context, ln lineRequest) lineAnswer
	consumer string
	workers  int
	lease    time.Duration
	every    time.Duration
	wake     chan struct{}
	freed    chan struct{}                  // a model's pool freed a slot (slotsFreed)
	done     chan struct{}                  // closed when run returns
	settings atomic.Pointer[runnerSettings] // set by the configs using the store; nil: defaults
	gauges   batchGauges                    // what the last pass over the active batches saw
	// storeLogged is when the runner last logged that its store is unavailable (unix ns).
	storeLogged atomic.Int64
}

// lineRequest is one line to run: the body as a request of the owning key to the batch's
// endpoint.
type lineRequest struct {
	Owner, BatchID, CustomID, Endpoint string
	Run                                batchRun
	Body                               []byte
}

// lineAnswer is what running a line gave: an HTTP answer, or Err when there was none.
type lineAnswer struct {
	Status     int
	Body       []byte
	RequestID  string
	RetryAfter time.Duration
	Err        error
	// Deferred: the line was put off for want of spare capacity, the model's batch cap or its
	// dispatch rate, and never sent.
	Deferred bool
}

// Runner defaults.
const (
	batchWorkers    = 4
	batchLease      = 30 * time.Second
	batchTick       = 250 * time.Millisecond
	batchMaxBackoff = time.Minute
	closeLease      = 5 * time.Minute
)

func newBatchRunner(h *backendHandle, logger *zap.Logger) *batchRunner {
	host, _ := os.Hostname()
	return &batchRunner{h: h, logger: logger, now: runnerNow, send: sendLine,
		consumer: host + "-" + strconv.Itoa(os.Getpid()), workers: batchWorkers, lease: batchLease, every: batchTick,
		wake: make(chan struct{}, 1), freed: make(chan struct{}, 1), done: make(chan struct{})}
}

// slotsFreed tells every batch runner that a model's pool freed a slot no waiter took, so that a
// line deferred for want of spare capacity tries again at once rather than at the next line's
// end or tick: the slots interactive requests free are spare capacity too.
var slotsFreed routing.Watchers

// run ticks until ctx ends. A panic in a tick is logged and the next tick goes on.
func (r *batchRunner) run(ctx context.Context) {
	defer close(r.done)
	defer slotsFreed.Add(routing.Signal(r.freed))()
	t := time.NewTicker(r.every)
	defer t.Stop()
	for {
		r.tick(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.wake:
		}
	}
}

// stop waits (at most wait) for the runner to return once its context is done, so that the
// store is not closed under a line being stored.
func (r *batchRunner) stop(wait time.Duration) {
	select {
	case <-r.done:
	case <-time.After(wait):
	}
}

// wakeRunner asks the runner for a tick now (a batch was created or cancelled).
func (h *backendHandle) wakeRunner() {
	if h.runner == nil {
		return
	}
	select {
	case h.runner.wake <- struct{}{}:
	default:
	}
}

func (r *batchRunner) tick(ctx context.Context) {
	defer logPanic(r.logger, "batch runner panicked")
	objs, blobs := r.h.opened()
	if objs == nil {
		if !r.h.hasData() {
			return // nothing was ever stored here: leave the directory alone
		}
		var err error
		if objs, blobs, err = r.h.open(); err != nil {
			return
		}
	}
	st := runState{r: r, objs: objs, blobs: blobs, q: objs.Queue(batchQueue)}
	st.advance(ctx)
	if st.storeDown {
		return // the store cannot answer: try again next tick
	}
	for ctx.Err() == nil && st.work(ctx) > 0 {
		st.advance(ctx)
		if st.deferring {
			return // lines were deferred: the pool is not asked again before the next tick
		}
	}
}

// hasData reports whether the store holds anything: a bolt file exists, or the store is Redis.
func (h *backendHandle) hasData() bool {
	if h.redisOpts != nil {
		return true
	}
	_, err := os.Stat(filepath.Join(h.dir, "store.db"))
	return err == nil
}

// runState is one tick of the runner over an open store.
type runState struct {
	r     *batchRunner
	objs  store.Backend
	blobs *store.Dir
	q     store.Queue
	// deferring is set when the last work ended with lines deferred for want of spare capacity.
	deferring bool
	// running counts the lines in flight per batch id, so that this runner does not end a batch
	// (cancel, expiry) under its own lines: their answers are kept first.
	runningMu sync.Mutex
	running   map[string]int
	tally     batchTally // what the pass over the active batches sees, for the metrics
	// storeDown is set when the pass could not list the active batches for want of a store.
	storeDown bool
}

// errUnchanged tells an Update that nothing is to be written.
var errUnchanged = errors.New("unchanged")

// advance moves every active batch along its lifecycle; a complete pass sets the gauges.
func (st *runState) advance(ctx context.Context) {
	st.tally = batchTally{}
	for after := ""; ctx.Err() == nil; {
		page, err := st.objs.List(ctx, kindBatchActive, blobOwner, store.ListOptions{After: after, Limit: 1000, Order: store.OrderAsc})
		if err != nil {
			st.storeDown = errors.Is(err, store.ErrUnavailable)
			if ctx.Err() == nil {
				st.r.logError("listing active batches", err)
			}
			return
		}
		for _, rec := range page.Records {
			after = rec.ID
			owner, created := blobRecordOf(rec.Data)
			if err := st.step(ctx, owner, rec.ID, created); err != nil && ctx.Err() == nil {
				st.r.logError("running a batch", err, zap.String("batch_id", rec.ID))
			}
		}
		if !page.HasMore {
			if m := st.r.settingsOf().metrics; m != nil {
				st.r.gauges.publish(&m.batch, &st.tally)
			}
			return
		}
	}
}

// step takes one batch one step on.
func (st *runState) step(ctx context.Context, owner, id string, created int64) error {
	if isMsgBatch(id) {
		return st.stepMsg(ctx, owner, id, created)
	}
	rec, err := st.objs.Get(ctx, kindBatch, owner, id)
	if errors.Is(err, store.ErrNotFound) {
		if created < st.r.now().Add(-blobGrace).Unix() {
			return st.retire(ctx, id) // a create that never finished, or a deleted batch
		}
		return nil
	} else if err != nil {
		return err
	}
	b, run, err := decodeBatch(rec.Data)
	if err != nil {
		return err
	}
	now := st.r.now()
	if !b.Status.Terminal() {
		st.tally.batch(apiOpenAI, string(b.Status))
	}
	switch b.Status {
	case batch.StatusValidating:
		return st.validate(ctx, owner, b)
	case batch.StatusInProgress:
		if b.Due(now) {
			return st.close(ctx, owner, b, run, batch.StatusExpired)
		}
		n, err := st.q.Pending(ctx, b.ID)
		if err != nil || n > 0 {
			st.tally.wait(b.Model, int64(n))
			return err
		}
		return st.close(ctx, owner, b, run, batch.StatusCompleted)
	case batch.StatusFinalizing:
		return st.close(ctx, owner, b, run, batch.StatusCompleted) // a finalization cut short
	case batch.StatusCancelling:
		return st.close(ctx, owner, b, run, batch.StatusCancelled)
	}
	return st.retire(ctx, id)
}

// retire forgets a batch that has no more work: its active record and its lines' results.
func (st *runState) retire(ctx context.Context, id string) error {
	for {
		page, err := st.objs.List(ctx, kindBatchResult, id, store.ListOptions{Limit: 1000, Order: store.OrderAsc})
		if err != nil {
			return err
		}
		for _, rec := range page.Records {
			if err := st.objs.Delete(ctx, kindBatchResult, id, rec.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
		}
		if !page.HasMore {
			break
		}
	}
	if err := st.objs.Delete(ctx, kindBatchActive, blobOwner, id); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return nil
}

// queuedLine is a queue item's data: where the line's body lies in the input file.
type queuedLine struct {
	Index    int    `json:"i"`
	Line     int    `json:"l"`
	CustomID string `json:"c"`
	Offset   int64  `json:"o"`
	Size     int64  `json:"s"`
}

func (q queuedLine) task() batch.Task {
	return batch.Task{Index: q.Index, Line: q.Line, CustomID: q.CustomID, Offset: q.Offset, Size: q.Size}
}

// readInput reads and checks a batch's input file.
func (st *runState) readInput(ctx context.Context, b *batch.Batch) (*batch.Input, error) {
	blob, err := st.blobs.Open(ctx, b.InputFileID)
	if errors.Is(err, store.ErrNotFound) {
		return &batch.Input{ErrorCount: 1, Errors: []batch.LineError{{Code: batch.CodeInvalidValue, Param: "input_file_id",
			Message: fmt.Sprintf("The input file '%s' no longer exists.", b.InputFileID)}}}, nil
	} else if err != nil {
		return nil, err
	}
	defer blob.Close()
	return batch.ReadInput(io.NewSectionReader(blob, 0, blob.Size()), b.Endpoint, batch.InputLimits{})
}

// validate checks a validating batch's input file: a bad file fails the batch with its
// line-numbered errors; a good one has its lines enqueued and the batch moves to in_progress.
// Enqueueing is redone from scratch (Drop first) if an earlier attempt was cut short.
func (st *runState) validate(ctx context.Context, owner string, b *batch.Batch) error {
	in, err := st.readInput(ctx, b)
	if err != nil {
		return err
	}
	if in.OK() {
		held, err := st.updateRun(ctx, owner, b.ID, func(cur *batch.Batch, run *batchRun) error {
			return st.holdEnqueue(run, cur.Status == batch.StatusValidating)
		})
		if err != nil || held == nil {
			return err // started (or cancelled) meanwhile, or another runner is enqueueing
		}
		if _, err := st.q.Drop(ctx, b.ID); err != nil {
			return err
		}
		items := make([][]byte, 0, min(len(in.Tasks), store.MaxClaim))
		for i, t := range in.Tasks {
			data, _ := json.Marshal(queuedLine{Index: t.Index, Line: t.Line, CustomID: t.CustomID, Offset: t.Offset, Size: t.Size})
			items = append(items, data)
			if len(items) == cap(items) || i == len(in.Tasks)-1 {
				if err := st.q.Enqueue(ctx, b.ID, items); err != nil {
					return err
				}
				items = items[:0]
			}
		}
	}
	now := st.r.now()
	got, err := st.update(ctx, owner, b.ID, func(b *batch.Batch) error {
		if b.Status != batch.StatusValidating {
			return errUnchanged // cancelled meanwhile: the next step finishes that
		}
		if !in.OK() {
			return b.Fail(now, in.Errors)
		}
		return b.Start(now, in.Model, int64(len(in.Tasks)))
	})
	if got != nil && got.Status == batch.StatusFailed {
		st.r.countEnded(apiOpenAI, string(got.Status))
	}
	return err
}

// update applies fn to the stored batch with a compare and swap.
func (st *runState) update(ctx context.Context, owner, id string, fn func(b *batch.Batch) error) (*batch.Batch, error) {
	return st.updateRun(ctx, owner, id, func(b *batch.Batch, _ *batchRun) error { return fn(b) })
}

// updateRun is update with the runner's part of the record.
func (st *runState) updateRun(ctx context.Context, owner, id string, fn func(b *batch.Batch, run *batchRun) error) (*batch.Batch, error) {
	var out *batch.Batch
	_, err := st.objs.Update(ctx, kindBatch, owner, id, func(old []byte) ([]byte, error) {
		b, run, err := decodeBatch(old)
		if err != nil {
			return nil, err
		}
		if err := fn(b, &run); err != nil {
			return nil, err
		}
		out = b
		return encodeBatch(b, run), nil
	})
	if errors.Is(err, errUnchanged) {
		return nil, nil
	}
	return out, err
}

// work keeps up to concurrency() lines in flight, each in its own goroutine: as soon as lines
// end, as many are claimed as slots are free (in one store round trip), so one slow line never
// idles the other slots. It returns, once its lines in flight are done, when the queue has
// nothing ready for it, or when every line in flight was deferred, or when ctx ends; it returns
// how many lines it ran and did not defer (and sets deferring when lines were deferred).
//
// A line deferred for want of spare capacity, the model's batch cap or its dispatch rate leaves
// its slot empty until the next tick interval (or a wake), until a line that was sent ends, or
// until a model's pool frees a slot nobody waited for (slotsFreed): a pool without spare
// capacity is not asked again line after line (at most one deferral per slot freed, and workers
// per interval), and once every line in flight was deferred work returns and the tick ends.
// While lines run, the active batches are moved along every tick interval as a tick does
// (advance), so cancels, expiries, new batches and the gauges do not wait for the queue to
// drain.
func (st *runState) work(ctx context.Context) int {
	done := make(chan bool, 64) // one per line that ended: whether it was deferred
	stopping := ctx.Done()
	t := time.NewTicker(st.r.every)
	defer t.Stop()
	inFlight, parked, ran := 0, 0, 0
	drained := false // the last claim got fewer lines than asked: wait for the next interval
	for {
		if ctx.Err() == nil && !drained {
			if free := st.r.concurrency() - inFlight - parked; free > 0 {
				items, err := st.q.Claim(ctx, st.r.consumer, free, st.r.currentLease())
				if err != nil && ctx.Err() == nil {
					st.r.logError("claiming batch lines", err)
				}
				drained = len(items) < free
				for _, it := range items {
					inFlight++
					st.countRunning(it.BatchID, 1)
					go st.runClaimed(ctx, it, done)
				}
			}
		}
		if inFlight == 0 && (drained || parked > 0 || ctx.Err() != nil) {
			st.deferring = parked > 0
			return ran
		}
		select {
		case deferred := <-done:
			// take every line that ended meanwhile, so their slots are filled by one claim
			for more := true; more; {
				inFlight--
				if deferred {
					parked++
				} else if ran++; parked > 0 {
					parked-- // the pool just freed a slot: one empty slot may try again
				}
				select {
				case deferred = <-done:
				default:
					more = false
				}
			}
		case <-st.r.freed:
			if parked > 0 {
				parked-- // a pool freed a slot: one empty slot may try again
			}
		case <-t.C:
			parked, drained = 0, false
			st.advance(ctx)
		case <-st.r.wake:
			parked, drained = 0, false
			st.advance(ctx)
		case <-stopping:
			stopping = nil // the lines in flight are still waited for
		}
	}
}

// countRunning adds d to the batch's lines in flight.
func (st *runState) countRunning(batchID string, d int) {
	st.runningMu.Lock()
	defer st.runningMu.Unlock()
	if st.running == nil {
		st.running = map[string]int{}
	}
	if st.running[batchID] += d; st.running[batchID] <= 0 {
		delete(st.running, batchID)
	}
}

// linesRunning reports whether lines of the batch are in flight on this runner.
func (st *runState) linesRunning(batchID string) bool {
	st.runningMu.Lock()
	defer st.runningMu.Unlock()
	return st.running[batchID] > 0
}

// errLineDeferred is runLine's word that the line was deferred and given back to the queue.
var errLineDeferred = errors.New("batch line deferred")

// runClaimed runs a claimed line and reports on done whether it was deferred.
func (st *runState) runClaimed(ctx context.Context, it store.Item, done chan<- bool) {
	deferred := false
	defer func() {
		st.countRunning(it.BatchID, -1)
		done <- deferred
	}()
	defer logPanic(st.r.logger, "batch line panicked")
	err := st.runLine(ctx, it)
	if deferred = errors.Is(err, errLineDeferred); !deferred && err != nil && ctx.Err() == nil {
		st.r.logger.Error("running a batch line", zap.String("batch_id", it.BatchID), zap.Error(err))
	}
}

// resultID is the id of a line's result record: the line's index, zero-padded so results list
// in line order.
func resultID(index int) string { return fmt.Sprintf("%08d", index) }

// release gives a claimed item back to the queue after delay.
func (st *runState) release(ctx context.Context, it store.Item, delay time.Duration) {
	if err := st.q.Extend(ctx, it, max(delay, time.Millisecond)); err != nil && !errors.Is(err, store.ErrLeaseLost) {
		st.r.logger.Warn("releasing a batch line", zap.String("batch_id", it.BatchID), zap.Error(err))
	}
}

// runLine runs one claimed line: unless its answer is already stored, it is sent through the
// gateway; its answer is stored, the batch's counts and usage updated, and the item acked. A
// transient failure (429, 502, 503, 504, 529, no answer) gives the item back to the queue with
// backoff: it is retried until the window ends, when the batch expires.
func (st *runState) runLine(ctx context.Context, it store.Item) error {
	var ql queuedLine
	if err := json.Unmarshal(it.Data, &ql); err != nil {
		return errors.Join(fmt.Errorf("reading a queue item: %w", err), st.q.Ack(ctx, it))
	}
	act, err := st.objs.Get(ctx, kindBatchActive, blobOwner, it.BatchID)
	if errors.Is(err, store.ErrNotFound) {
		return st.q.Ack(ctx, it) // the batch is gone
	} else if err != nil {
		return err
	}
	owner, _ := blobRecordOf(act.Data)
	var job lineJob
	if isMsgBatch(it.BatchID) {
		job, err = st.msgJob(ctx, owner, it.BatchID, ql)
	} else {
		job, err = st.openAIJob(ctx, owner, it.BatchID, ql)
	}
	switch {
	case err != nil:
		return err
	case job.wait:
		st.release(ctx, it, 0) // enqueued an instant before the batch started
		return nil
	case !job.run:
		return nil // cancelling or expiring: the batch's close drops it
	}
	rid := resultID(ql.Index)
	if _, err := st.objs.Get(ctx, kindBatchResult, it.BatchID, rid); err == nil {
		return st.q.Ack(ctx, it) // answered before a crash: never sent again
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	blob, err := st.blobs.Open(ctx, job.input)
	if errors.Is(err, store.ErrNotFound) {
		// the input was deleted while the batch ran: the line cannot be read, ever
		ok, u, line := job.missing()
		return st.keepResult(ctx, it, rid, ok, u, line, job.count)
	} else if err != nil {
		return err
	}
	body, err := ql.task().ReadBody(blob, nil)
	blob.Close()
	if err != nil {
		return err
	}
	if job.check != nil {
		if werr := job.check(body); werr != nil {
			ok, u, line := job.refused(werr)
			return st.keepResult(ctx, it, rid, ok, u, line, job.count)
		}
	}
	ans := st.sendHeld(ctx, it, lineRequest{Owner: owner, BatchID: it.BatchID, CustomID: ql.CustomID, Endpoint: job.endpoint, Run: job.batchRun, Body: body})
	stopping := ctx.Err() != nil
	// Whatever came back is kept (or the line given back) even if the runner stops meanwhile: a
	// stop between the answer and its result record would leave the line claimed, unanswered in
	// the store, and sent again once its lease ran out.
	ctx = context.WithoutCancel(ctx)
	if stopping && (ans.Err != nil || ans.Status == statusClientClosed) {
		// shutting down before the answer came: the line goes back to the queue for whoever
		// claims it next (after a crash, its lease runs out instead)
		st.release(ctx, it, 0)
		return nil
	}
	if transient(ans) {
		delay := min(time.Second<<min(it.Deliveries-1, 6), batchMaxBackoff)
		switch {
		case ans.Deferred:
			// waiting for spare capacity or the dispatch rate is not a failure: no backoff
			st.release(ctx, it, cmp.Or(min(ans.RetryAfter, batchMaxBackoff), batchDeferRetry))
			return errLineDeferred
		case ans.RetryAfter > delay:
			delay = min(ans.RetryAfter, batchMaxBackoff)
		}
		st.release(ctx, it, delay)
		return nil
	}
	ok, u, line := job.answered(ans)
	return st.keepResult(ctx, it, rid, ok, u, line, job.count)
}

// lineJob is what runLine needs of a line's batch, whichever API it belongs to.
type lineJob struct {
	// run: the line may be sent now; wait: the batch has not started yet (give the line back);
	// neither: the batch is ending, and its close takes care of the line.
	run, wait bool
	// input is the blob the line's body is read from; endpoint and batchRun say where it goes.
	input    string
	endpoint string
	batchRun batchRun
	// check, when set, refuses a body before it is sent.
	check func(body []byte) *wire.Error
	// missing, refused and answered make the line's result: the input is gone, check refused
	// it, or it was answered.
	missing  func() (ok bool, u lineUsage, line []byte)
	refused  func(werr *wire.Error) (ok bool, u lineUsage, line []byte)
	answered func(ans lineAnswer) (ok bool, u lineUsage, line []byte)
	// count counts a stored result in the batch's record.
	count func(ctx context.Context, ok bool, u lineUsage) error
}

// openAIJob is the job of a line of an OpenAI batch.
func (st *runState) openAIJob(ctx context.Context, owner, id string, ql queuedLine) (lineJob, error) {
	rec, err := st.objs.Get(ctx, kindBatch, owner, id)
	if err != nil {
		return lineJob{}, err
	}
	b, run, err := decodeBatch(rec.Data)
	if err != nil {
		return lineJob{}, err
	}
	outLine := func(l batch.OutputLine) []byte {
		l.ID, l.CustomID = batch.NewID(batch.PrefixBatchRequest, st.r.now()), ql.CustomID
		return l.AppendLine(nil)
	}
	return lineJob{
		run: b.Status == batch.StatusInProgress && !b.Due(st.r.now()), wait: b.Status == batch.StatusValidating,
		input: b.InputFileID, endpoint: b.Endpoint, batchRun: run,
		missing: func() (bool, lineUsage, []byte) {
			return false, lineUsage{}, outLine(batch.OutputLine{ErrorCode: codeInputFileDeleted,
				ErrorMessage: "The batch's input file was deleted before this request was run."})
		},
		answered: func(ans lineAnswer) (bool, lineUsage, []byte) {
			ok := ans.Status >= 200 && ans.Status < 300
			return ok, answerUsage(ans.Body), outLine(batch.OutputLine{StatusCode: ans.Status, RequestID: ans.RequestID, Body: ans.Body})
		},
		count: func(ctx context.Context, ok bool, u lineUsage) error {
			_, err := st.update(ctx, owner, id, func(b *batch.Batch) error {
				if b.Status != batch.StatusInProgress {
					return errUnchanged // the close recounts from the results
				}
				if ok {
					b.RequestCounts.Completed++
					addUsage(&b.Usage, u)
				} else {
					b.RequestCounts.Failed++
				}
				return nil
			})
			return err
		},
	}, nil
}

// statusClientClosed is the status the pipeline gives a request whose client went away: for a
// line, the runner stopping before the answer came.
const statusClientClosed = 499

// codeInputFileDeleted is the error code of a line whose input file was deleted before it ran.
const codeInputFileDeleted = "input_file_deleted"

// keepResult keeps a line's result, counts it in the batch and acks its item, in that order: once
// the result is stored, the line is never sent again.
func (st *runState) keepResult(ctx context.Context, it store.Item, rid string, ok bool, u lineUsage, line []byte,
	count func(ctx context.Context, ok bool, u lineUsage) error) error {
	if err := st.objs.Put(ctx, store.Record{Kind: kindBatchResult, Owner: it.BatchID, ID: rid, Data: appendResult(nil, ok, u, line)}); err != nil {
		return err
	}
	if err := count(ctx, ok, u); err != nil {
		return err
	}
	if err := st.q.Ack(ctx, it); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return nil
}

// sendHeld sends the line while keeping its lease.
func (st *runState) sendHeld(ctx context.Context, it store.Item, ln lineRequest) lineAnswer {
	done := make(chan struct{})
	defer close(done)
	go func() {
		defer logPanic(st.r.logger, "batch lease keeper panicked")
		lease := st.r.currentLease()
		t := time.NewTicker(lease / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				if err := st.q.Extend(ctx, it, lease); err != nil {
					return
				}
			}
		}
	}()
	return st.r.send(ctx, ln)
}

// transient reports whether a line's answer is a failure worth retrying: no answer at all, the
// gateway's or the upstream's rate limits and overload (a batch waits for budget instead of
// failing its lines), an unreachable upstream.
func transient(a lineAnswer) bool {
	if a.Err != nil {
		return true
	}
	switch a.Status {
	case 429, 502, 503, 504, 529:
		return true
	}
	return false
}

// lineUsage is the usage of one answered line.
type lineUsage struct {
	wire.Usage
	Reasoning int64
}

// answerUsage reads the usage of an OpenAI answer body.
func answerUsage(body []byte) lineUsage {
	u := gjson.GetBytes(body, "usage")
	if u.Get("input_tokens").Exists() && !u.Get("prompt_tokens").Exists() {
		// a Response: input_tokens, output_tokens and their details
		r, _ := wire.ExtractUsage(wire.OpenAI, body)
		return lineUsage{Usage: r, Reasoning: r.ReasoningTokens}
	}
	return lineUsage{Usage: wire.Usage{PromptTokens: u.Get("prompt_tokens").Int(), CompletionTokens: u.Get("completion_tokens").Int(),
		TotalTokens: u.Get("total_tokens").Int(), CachedTokens: u.Get("prompt_tokens_details.cached_tokens").Int()},
		Reasoning: u.Get("completion_tokens_details.reasoning_tokens").Int()}
}

func addUsage(dst *batch.Usage, u lineUsage) {
	dst.Add(u.Usage)
	dst.ReasoningTokens += u.Reasoning
}

// appendResult is a line's result record: {"ok","usage":{...},"line":<output line>}.
func appendResult(dst []byte, ok bool, u lineUsage, line []byte) []byte {
	dst = append(dst, `{"ok":`...)
	dst = strconv.AppendBool(dst, ok)
	dst = append(dst, `,"usage":{"p":`...)
	dst = strconv.AppendInt(dst, u.PromptTokens, 10)
	dst = append(dst, `,"c":`...)
	dst = strconv.AppendInt(dst, u.CompletionTokens, 10)
	dst = append(dst, `,"t":`...)
	dst = strconv.AppendInt(dst, u.TotalTokens, 10)
	dst = append(dst, `,"k":`...)
	dst = strconv.AppendInt(dst, u.CachedTokens, 10)
	dst = append(dst, `,"r":`...)
	dst = strconv.AppendInt(dst, u.Reasoning, 10)
	dst = append(dst, `},"line":`...)
	n := len(dst)
	dst = append(dst, line...)
	if len(dst) > n && dst[len(dst)-1] == '\n' {
		dst = dst[:len(dst)-1]
	}
	return append(dst, '}')
}

// result is a stored line result read back.
type result struct {
	index int
	ok    bool
	usage lineUsage
	line  []byte // the output line, without its newline
}

// eachResult calls fn for every stored result of the batch, in line order.
func (st *runState) eachResult(ctx context.Context, batchID string, fn func(res result) error) error {
	for after := ""; ; {
		page, err := st.objs.List(ctx, kindBatchResult, batchID, store.ListOptions{After: after, Limit: 1000, Order: store.OrderAsc})
		if err != nil {
			return err
		}
		for _, rec := range page.Records {
			after = rec.ID
			r := gjson.ParseBytes(rec.Data)
			idx, _ := strconv.Atoi(rec.ID)
			u := r.Get("usage")
			res := result{index: idx, ok: r.Get("ok").Bool(), line: []byte(r.Get("line").Raw),
				usage: lineUsage{Usage: wire.Usage{PromptTokens: u.Get("p").Int(), CompletionTokens: u.Get("c").Int(),
					TotalTokens: u.Get("t").Int(), CachedTokens: u.Get("k").Int()}, Reasoning: u.Get("r").Int()}}
			if err := fn(res); err != nil {
				return err
			}
		}
		if !page.HasMore {
			return nil
		}
	}
}

// close ends a batch: to is completed (every line answered), expired (the window ended) or
// cancelled. Whatever is still queued is dropped; the output file gets the 2xx answers, the
// error file the other answers and, for expired and cancelled batches, a line per request that
// never ran (batch_expired, batch_cancelled). The counts and usage are recounted from the
// stored results, and the batch moves to its end status with a compare and swap.
func (st *runState) close(ctx context.Context, owner string, b *batch.Batch, run batchRun, to batch.Status) error {
	if st.linesRunning(b.ID) {
		return nil // ended once this runner's lines of it are done (a later pass)
	}
	now := st.r.now()
	// one runner ends a batch: the first to claim it, for closeLease (then another may take over)
	claimed, err := st.updateRun(ctx, owner, b.ID, func(cur *batch.Batch, cr *batchRun) error {
		if cur.Status != b.Status || cr.Closer != st.r.consumer && cr.CloseUntil > now.UnixMilli() {
			return errUnchanged
		}
		cr.Closer, cr.CloseUntil = st.r.consumer, now.Add(closeLease).UnixMilli()
		if cr.OutputFile == "" {
			cr.OutputFile, cr.ErrorFile = store.NewID(batch.PrefixFile), store.NewID(batch.PrefixFile)
		}
		run = *cr
		return nil
	})
	if err != nil || claimed == nil {
		return err
	}
	if to != batch.StatusCompleted {
		if _, err := st.q.Drop(ctx, b.ID); err != nil {
			return err
		}
	}
	var counts batch.RequestCounts
	var usage batch.Usage
	answered := map[int]bool{}
	if err := st.eachResult(ctx, b.ID, func(res result) error {
		answered[res.index] = true
		if res.ok {
			counts.Completed++
			addUsage(&usage, res.usage)
		} else {
			counts.Failed++
		}
		return nil
	}); err != nil {
		return err
	}
	var unrun []batch.Task
	if to != batch.StatusCompleted && b.Status != batch.StatusValidating && !b.InProgressAt.IsZero() {
		in, err := st.readInput(ctx, b)
		if err != nil {
			return err
		}
		for _, t := range in.Tasks {
			if !answered[t.Index] {
				unrun = append(unrun, t)
			}
		}
	}
	counts.Total = max(b.RequestCounts.Total, counts.Completed+counts.Failed+int64(len(unrun)))
	counts.Failed += int64(len(unrun))
	if to == batch.StatusCompleted && b.Status == batch.StatusInProgress {
		if _, err := st.update(ctx, owner, b.ID, func(b *batch.Batch) error {
			if b.Status != batch.StatusInProgress {
				return errUnchanged
			}
			b.RequestCounts, b.Usage = counts, usage
			return b.Finalize(now)
		}); err != nil {
			return err
		}
	}
	outID, err := st.writeFile(ctx, owner, b, run, "output", func(w io.Writer) (int, error) {
		n := 0
		return n, st.eachResult(ctx, b.ID, func(res result) error {
			if !res.ok {
				return nil
			}
			n++
			_, err := w.Write(append(res.line, '\n'))
			return err
		})
	})
	if err != nil {
		return err
	}
	code, msg := batch.CodeBatchExpired, "This request could not be executed before the completion window expired."
	if to == batch.StatusCancelled {
		code, msg = batch.CodeBatchCancelled, "This request was not executed because the batch was cancelled."
	}
	errID, err := st.writeFile(ctx, owner, b, run, "error", func(w io.Writer) (int, error) {
		n := 0
		err := st.eachResult(ctx, b.ID, func(res result) error {
			if res.ok {
				return nil
			}
			n++
			_, err := w.Write(append(res.line, '\n'))
			return err
		})
		var buf []byte
		for _, t := range unrun {
			if err != nil {
				break
			}
			n++
			line := batch.OutputLine{ID: batch.NewID(batch.PrefixBatchRequest, now), CustomID: t.CustomID, ErrorCode: code, ErrorMessage: msg}
			buf = line.AppendLine(buf[:0])
			_, err = w.Write(buf)
		}
		return n, err
	})
	if err != nil {
		return err
	}
	ended, err := st.update(ctx, owner, b.ID, func(b *batch.Batch) error {
		b.RequestCounts, b.Usage = counts, usage
		switch {
		case b.Status == batch.StatusCancelling:
			return b.FinishCancel(now, outID, errID)
		case to == batch.StatusExpired:
			return b.Expire(now, outID, errID)
		case to == batch.StatusCompleted:
			return b.Complete(now, outID, errID)
		}
		return errUnchanged
	})
	if err != nil {
		return err
	}
	if ended != nil {
		st.r.countEnded(apiOpenAI, string(ended.Status))
	}
	return st.retire(ctx, b.ID)
}

// writeFile writes one of a batch's files (purpose batch_output) from what fill writes,
// streamed into the blob directory (atomic: nothing is visible until it is complete) and
// recorded as a file of the batch's owner, under the id the close chose for it (a close redone
// after a crash rewrites the same file). A file with no lines is not kept: "" is returned.
func (st *runState) writeFile(ctx context.Context, owner string, b *batch.Batch, run batchRun, which string,
	fill func(w io.Writer) (int, error)) (string, error) {
	now := st.r.now()
	id := run.OutputFile
	if which == "error" {
		id = run.ErrorFile
	}
	if err := st.objs.Put(ctx, store.Record{Kind: kindFileBlob, Owner: blobOwner, ID: id, Data: appendBlobRecord(nil, owner, now)}); err != nil {
		return "", err
	}
	pr, pw := io.Pipe()
	var lines int
	done := make(chan struct{})
	go func() {
		defer close(done)
		bw := bufio.NewWriterSize(pw, 64<<10)
		n, err := fill(bw)
		if err == nil {
			err = bw.Flush()
		}
		lines = n
		pw.CloseWithError(err)
	}()
	info, err := st.blobs.Write(ctx, id, pr, store.Limits{})
	pr.CloseWithError(errors.New("the write stopped"))
	<-done
	if err != nil || lines == 0 {
		if err == nil {
			_ = st.blobs.Delete(ctx, id)
		}
		_ = st.objs.Delete(ctx, kindFileBlob, blobOwner, id)
		return "", err
	}
	expiry := b.OutputExpiresAfter
	if expiry == 0 {
		expiry = st.r.settingsOf().outputExpiry
	}
	f := &batch.File{ID: id, Bytes: info.Size, CreatedAt: now, ExpiresAt: now.Add(expiry),
		Filename: b.ID + "_" + which + ".jsonl", Purpose: batch.PurposeBatchOutput}
	if err := st.objs.Put(ctx, store.Record{Kind: kindFile, Owner: owner, ID: id, Data: f.AppendJSON(nil), ExpiresAt: f.ExpiresAt}); err != nil {
		return "", err
	}
	return id, nil
}
