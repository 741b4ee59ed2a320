package caddymodule

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tidwall/gjson"
	"go.uber.org/zap"

	"github.com/caddyai/gateway/batch"
	"github.com/caddyai/gateway/internal/testredis"
	"github.com/caddyai/gateway/store"
)

// runnerFixture is a runner over a bolt store in a temporary directory, with a fake send (the
// runner's decisions are tested without HTTP) and a clock the test moves.
type runnerFixture struct {
	h     *backendHandle
	r     *batchRunner
	objs  store.Backend
	blobs *store.Dir

	mu    sync.Mutex
	clock time.Time
	sent  []string
}

func newRunnerFixture(t *testing.T, answer func(ln lineRequest) lineAnswer) *runnerFixture {
	t.Helper()
	f := &runnerFixture{clock: time.Unix(1_800_000_000, 0)}
	f.h = &backendHandle{dir: t.TempDir(), logger: zap.NewNop(), cancel: func() {}}
	objs, blobs, err := f.h.open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.h.Destruct() })
	f.objs, f.blobs = objs, blobs
	f.r = &batchRunner{h: f.h, logger: zap.NewNop(), now: f.now, consumer: "test", workers: 2, lease: time.Minute,
		every: time.Hour, wake: make(chan struct{}, 1), done: make(chan struct{}),
		send: func(_ context.Context, ln lineRequest) lineAnswer {
			f.mu.Lock()
			f.sent = append(f.sent, ln.CustomID)
			f.mu.Unlock()
			return answer(ln)
		}}
	return f
}

func (f *runnerFixture) now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.clock
}

func (f *runnerFixture) advanceClock(d time.Duration) {
	f.mu.Lock()
	f.clock = f.clock.Add(d)
	f.mu.Unlock()
}

func (f *runnerFixture) sentIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := append([]string(nil), f.sent...)
	sort.Strings(ids)
	return ids
}

// create stores an input file of n chat lines and a validating batch of owner k1 reading it.
func (f *runnerFixture) create(t *testing.T, n int) *batch.Batch {
	t.Helper()
	ctx := context.Background()
	var sb strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&sb, `{"custom_id":"req-%d","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[]}}`+"\n", i)
	}
	if _, err := f.blobs.Write(ctx, "file-in", strings.NewReader(sb.String()), store.Limits{}); err != nil {
		t.Fatal(err)
	}
	b := batch.NewBatch("batch_test", &batch.CreateRequest{Endpoint: "/v1/chat/completions", InputFileID: "file-in"}, f.now())
	if err := f.objs.Put(ctx, store.Record{Kind: kindBatchActive, Owner: blobOwner, ID: b.ID, Data: appendBlobRecord(nil, "k1", f.now())}); err != nil {
		t.Fatal(err)
	}
	if err := f.objs.Put(ctx, store.Record{Kind: kindBatch, Owner: "k1", ID: b.ID, Data: encodeBatch(b, batchRun{})}); err != nil {
		t.Fatal(err)
	}
	return b
}

func (f *runnerFixture) batch(t *testing.T, id string) *batch.Batch {
	t.Helper()
	rec, err := f.objs.Get(context.Background(), kindBatch, "k1", id)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := decodeBatch(rec.Data)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (f *runnerFixture) file(t *testing.T, id string) []gjson.Result {
	t.Helper()
	if _, err := f.objs.Get(context.Background(), kindFile, "k1", id); err != nil {
		t.Fatalf("file %s of the owner: %v", id, err)
	}
	blob, err := f.blobs.Open(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	defer blob.Close()
	raw, _ := io.ReadAll(blob)
	var lines []gjson.Result
	for _, l := range strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n") {
		lines = append(lines, gjson.Parse(l))
	}
	return lines
}

func okAnswer(lineRequest) lineAnswer {
	return lineAnswer{Status: 200, RequestID: "req_1",
		Body: []byte(`{"object":"chat.completion","usage":{"prompt_tokens":2,"completion_tokens":3,"total_tokens":5}}`)}
}

// A line whose answer was stored before a crash (before its ack) is acked without being sent
// again; the batch completes with every custom_id once.
func TestRunnerNeverResendsAnsweredLine(t *testing.T) {
	f := newRunnerFixture(t, okAnswer)
	b := f.create(t, 3)
	ctx := context.Background()
	st := f.state(f.r)
	st.advance(ctx) // validates and enqueues
	if got := f.batch(t, b.ID); got.Status != batch.StatusInProgress || got.RequestCounts.Total != 3 || got.Model != "m" {
		t.Fatalf("after validation: %s", got.AppendJSON(nil))
	}
	line := batch.OutputLine{ID: "batch_req_before", CustomID: "req-2", StatusCode: 200, Body: []byte(`{"object":"chat.completion"}`)}
	if err := f.objs.Put(ctx, store.Record{Kind: kindBatchResult, Owner: b.ID, ID: resultID(1),
		Data: appendResult(nil, true, lineUsage{}, line.AppendLine(nil))}); err != nil {
		t.Fatal(err)
	}
	f.r.tick(ctx)
	if got := f.sentIDs(); strings.Join(got, ",") != "req-1,req-3" {
		t.Errorf("sent %v, want req-1 and req-3 only", got)
	}
	got := f.batch(t, b.ID)
	if got.Status != batch.StatusCompleted || got.RequestCounts != (batch.RequestCounts{Total: 3, Completed: 3}) ||
		got.Usage.TotalTokens != 10 || got.ErrorFileID != "" {
		t.Fatalf("after the run: %s", got.AppendJSON(nil))
	}
	seen := map[string]int{}
	for _, l := range f.file(t, got.OutputFileID) {
		seen[l.Get("custom_id").String()]++
	}
	if len(seen) != 3 || seen["req-1"] != 1 || seen["req-2"] != 1 || seen["req-3"] != 1 {
		t.Errorf("output lines %v", seen)
	}
	if _, err := f.objs.Get(ctx, kindBatchActive, blobOwner, b.ID); err == nil {
		t.Error("a completed batch is still active")
	}
}

// Transient failures are retried with backoff while the window lasts; when it ends, the lines
// left go to the error file as batch_expired.
func TestRunnerRetriesThenExpires(t *testing.T) {
	f := newRunnerFixture(t, func(lineRequest) lineAnswer {
		return lineAnswer{Status: http.StatusServiceUnavailable, Body: []byte(`{"error":{"message":"overloaded"}}`)}
	})
	b := f.create(t, 2)
	ctx := context.Background()
	f.r.tick(ctx)
	if n := len(f.sentIDs()); n != 2 {
		t.Fatalf("sent %d lines, want 2", n)
	}
	f.r.tick(ctx) // the backoff has not passed: nothing is sent
	if n := len(f.sentIDs()); n != 2 {
		t.Errorf("sent %d lines during the backoff", n)
	}
	time.Sleep(1100 * time.Millisecond) // the queue's leases run on real time
	f.r.tick(ctx)
	if n := len(f.sentIDs()); n != 4 {
		t.Errorf("sent %d lines after the backoff, want 4 (each retried)", n)
	}
	if got := f.batch(t, b.ID); got.Status != batch.StatusInProgress || got.RequestCounts.Failed != 0 {
		t.Fatalf("a transient failure counted: %s", got.AppendJSON(nil))
	}
	f.advanceClock(batch.Window)
	f.r.tick(ctx)
	got := f.batch(t, b.ID)
	if got.Status != batch.StatusExpired || got.OutputFileID != "" || got.ErrorFileID == "" ||
		got.RequestCounts != (batch.RequestCounts{Total: 2, Failed: 2}) {
		t.Fatalf("after the window: %s", got.AppendJSON(nil))
	}
	for _, l := range f.file(t, got.ErrorFileID) {
		if l.Get("error.code").String() != batch.CodeBatchExpired || l.Get("response").Type != gjson.Null {
			t.Errorf("error line %s", l.Raw)
		}
	}
}

// A file deleted while its batch runs: the lines not yet run go to the error file, and the
// batch completes.
func TestRunnerInputDeletedWhileRunning(t *testing.T) {
	f := newRunnerFixture(t, okAnswer)
	b := f.create(t, 2)
	ctx := context.Background()
	st := f.state(f.r)
	st.advance(ctx)
	if err := f.blobs.Delete(ctx, "file-in"); err != nil {
		t.Fatal(err)
	}
	f.r.tick(ctx)
	got := f.batch(t, b.ID)
	if got.Status != batch.StatusCompleted || got.RequestCounts != (batch.RequestCounts{Total: 2, Failed: 2}) || len(f.sentIDs()) != 0 {
		t.Fatalf("batch: %s (sent %v)", got.AppendJSON(nil), f.sentIDs())
	}
	for _, l := range f.file(t, got.ErrorFileID) {
		if l.Get("error.code").String() != codeInputFileDeleted {
			t.Errorf("error line %s", l.Raw)
		}
	}
}

// With several instances one runner ends a batch: another's claim holds off this one until
// the claim's lease runs out.
func TestRunnerCloseClaimedOnce(t *testing.T) {
	f := newRunnerFixture(t, okAnswer)
	b := f.create(t, 2)
	ctx := context.Background()
	st := f.state(f.r)
	drainRun(ctx, st)
	if _, err := st.updateRun(ctx, "k1", b.ID, func(_ *batch.Batch, run *batchRun) error {
		run.Closer, run.CloseUntil = "another-instance", f.now().Add(closeLease).UnixMilli()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	st.advance(ctx)
	if got := f.batch(t, b.ID); got.Status != batch.StatusInProgress {
		t.Fatalf("closed under another runner's claim: %s", got.Status)
	}
	f.advanceClock(closeLease + time.Second)
	st.advance(ctx)
	if got := f.batch(t, b.ID); got.Status != batch.StatusCompleted || got.RequestCounts.Completed != 2 {
		t.Fatalf("after the claim ran out: %s", got.AppendJSON(nil))
	}
}

// Two instances sharing one real Redis store (and one blob directory) work through one batch
// together; one of them stops midway. Every line is sent once and answered once, and the batch
// completes with one output file.
func TestRunnerTwoInstancesOnRedis(t *testing.T) {
	srv := testredis.StartServer(t)
	dir := t.TempDir()
	var mu sync.Mutex
	sent := map[string]int{}
	send := func(_ context.Context, ln lineRequest) lineAnswer {
		mu.Lock()
		sent[ln.CustomID]++
		mu.Unlock()
		time.Sleep(10 * time.Millisecond)
		return okAnswer(ln)
	}
	instance := func(name string) (*runState, *backendHandle) {
		h := &backendHandle{dir: dir, redisOpts: &redis.Options{Addr: srv.Addr()}, prefix: "two:", logger: zap.NewNop(), cancel: func() {}}
		objs, blobs, err := h.open()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Destruct() })
		r := &batchRunner{h: h, logger: zap.NewNop(), now: time.Now, send: send, consumer: name, workers: 2, lease: time.Second,
			every: 5 * time.Millisecond, wake: make(chan struct{}, 1), done: make(chan struct{})}
		h.runner = r
		return &runState{r: r, objs: objs, blobs: blobs, q: objs.Queue(batchQueue)}, h
	}
	a, ha := instance("a")
	b, hb := instance("b")
	f := &runnerFixture{h: ha, r: a.r, objs: a.objs, blobs: a.blobs, clock: time.Now()}
	created := f.create(t, 40)

	ctxA, stopA := context.WithCancel(context.Background())
	ctxB, stopB := context.WithCancel(context.Background())
	defer stopB()
	go a.r.run(ctxA)
	go b.r.run(ctxB)
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	waitFor("some lines sent", func() bool { mu.Lock(); defer mu.Unlock(); return len(sent) >= 10 })
	stopA() // instance a goes away; b takes over what it held
	a.r.stop(5 * time.Second)
	_ = hb
	waitFor("the batch completed", func() bool { return f.batch(t, created.ID).Status == batch.StatusCompleted })
	got := f.batch(t, created.ID)
	if got.RequestCounts != (batch.RequestCounts{Total: 40, Completed: 40}) {
		t.Errorf("counts %+v", got.RequestCounts)
	}
	mu.Lock()
	for cid, n := range sent {
		if n != 1 {
			t.Errorf("%s sent %d times", cid, n)
		}
	}
	if len(sent) != 40 {
		t.Errorf("%d lines sent, want 40", len(sent))
	}
	mu.Unlock()
	seen := map[string]int{}
	for _, l := range f.file(t, got.OutputFileID) {
		seen[l.Get("custom_id").String()]++
	}
	if len(seen) != 40 {
		t.Errorf("%d custom_ids in the output, want 40", len(seen))
	}
	for cid, n := range seen {
		if n != 1 {
			t.Errorf("%s %d times in the output", cid, n)
		}
	}
}

// A slow line does not hold up the other slots: while it runs, the other worker works through
// the rest of the queue, and never more lines are in flight than there are workers.
func TestRunnerSlowLineDoesNotIdleOtherSlots(t *testing.T) {
	const n = 6
	var mu sync.Mutex
	inFlight, most, others := 0, 0, 0
	othersDone := make(chan struct{})
	slowWaited := false
	f := newRunnerFixture(t, func(ln lineRequest) lineAnswer {
		mu.Lock()
		inFlight++
		most = max(most, inFlight)
		mu.Unlock()
		defer func() { mu.Lock(); inFlight--; mu.Unlock() }()
		if ln.CustomID == "req-1" {
			select {
			case <-othersDone:
				slowWaited = true
			case <-time.After(10 * time.Second):
			}
			return okAnswer(ln)
		}
		mu.Lock()
		if others++; others == n-1 {
			close(othersDone)
		}
		mu.Unlock()
		return okAnswer(ln)
	})
	b := f.create(t, n)
	f.r.tick(context.Background())
	mu.Lock()
	defer mu.Unlock()
	if !slowWaited {
		t.Error("the other lines waited for the slow one")
	}
	if most > f.r.workers {
		t.Errorf("%d lines in flight at once, workers %d", most, f.r.workers)
	}
	if got := f.batch(t, b.ID); got.Status != batch.StatusCompleted || got.RequestCounts.Completed != n {
		t.Fatalf("after the tick: %s", got.AppendJSON(nil))
	}
}

// A line deferred for want of spare capacity leaves its slot empty for the rest of the tick
// interval: the runner does not claim line after line only to defer them all, and the tick
// ends once every line in flight was deferred.
func TestRunnerDeferredLineDoesNotChurn(t *testing.T) {
	f := newRunnerFixture(t, func(ln lineRequest) lineAnswer {
		if ln.CustomID == "req-1" {
			time.Sleep(200 * time.Millisecond)
			return okAnswer(ln)
		}
		return lineAnswer{Status: http.StatusServiceUnavailable, Deferred: true, RetryAfter: time.Second}
	})
	b := f.create(t, 10)
	f.r.tick(context.Background())
	// req-2 is deferred and its slot stays empty while req-1 runs; req-1's answer frees both
	// slots, for req-3 and req-4, both deferred: the tick ends
	if got := f.sentIDs(); strings.Join(got, ",") != "req-1,req-2,req-3,req-4" {
		t.Errorf("sent %v, want req-1, then req-2, req-3 and req-4 deferred only", got)
	}
	if got := f.batch(t, b.ID); got.RequestCounts.Completed != 1 || got.RequestCounts.Failed != 0 {
		t.Errorf("counts %+v", got.RequestCounts)
	}
}

// Stopping the runner waits for the line in flight, whose answer is kept.
func TestRunnerStopWaitsForLinesInFlight(t *testing.T) {
	release := make(chan struct{})
	f := newRunnerFixture(t, func(ln lineRequest) lineAnswer {
		<-release
		return okAnswer(ln)
	})
	b := f.create(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go f.r.run(ctx)
	for deadline := time.Now().Add(10 * time.Second); len(f.sentIDs()) == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the line was never sent")
		}
	}
	cancel()
	select {
	case <-f.r.done:
		t.Fatal("the runner returned with a line in flight")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	f.r.stop(10 * time.Second)
	select {
	case <-f.r.done:
	default:
		t.Fatal("the runner did not return")
	}
	if got := f.batch(t, b.ID); got.RequestCounts.Completed != 1 {
		t.Errorf("the answer was not kept: %+v", got.RequestCounts)
	}
}

// A batch cancelled while one of its lines is in flight on this runner is ended once that line
// is done: its answer is in the output file, not replaced by a batch_cancelled line.
func TestRunnerCancelWaitsForOwnLineInFlight(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	f := newRunnerFixture(t, func(ln lineRequest) lineAnswer {
		close(started)
		<-release
		return okAnswer(ln)
	})
	f.r.workers, f.r.every = 1, 10*time.Millisecond
	b := f.create(t, 3)
	ctx := context.Background()
	st := runState{r: f.r, objs: f.objs, blobs: f.blobs, q: f.objs.Queue(batchQueue)}
	st.advance(ctx)
	go func() {
		<-started
		if _, err := st.update(ctx, "k1", b.ID, func(b *batch.Batch) error {
			if werr := b.Cancel(f.now()); werr != nil {
				return werr
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
		time.Sleep(50 * time.Millisecond) // several passes of advance while the line runs
		close(release)
	}()
	f.r.tick(ctx)
	got := f.batch(t, b.ID)
	if got.Status != batch.StatusCancelled || got.RequestCounts != (batch.RequestCounts{Total: 3, Completed: 1, Failed: 2}) {
		t.Fatalf("after the cancel: %s", got.AppendJSON(nil))
	}
	if out := f.file(t, got.OutputFileID); len(out) != 1 || out[0].Get("custom_id").String() != "req-1" {
		t.Errorf("output %v", out)
	}
	if n, _ := f.objs.List(ctx, kindBatchResult, b.ID, store.ListOptions{Limit: 10}); len(n.Records) != 0 {
		t.Errorf("%d results left behind the ended batch", len(n.Records))
	}
}

// stopOnResultPut is a store whose runner is stopped just as a line's result is being stored:
// its Put of a result cancels the runner's context first, then answers as a store that heeds
// its context does (a Redis call on a cancelled context fails).
type stopOnResultPut struct {
	store.Backend
	stop func()
}

func (s stopOnResultPut) Put(ctx context.Context, r store.Record) error {
	if r.Kind == kindBatchResult {
		s.stop()
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return s.Backend.Put(ctx, r)
}

// A runner stopped after a line's answer came, while its result is stored, still keeps the
// result and acks the line: left unstored, the line would be claimed again once its lease ran
// out and sent a second time.
func TestRunnerStoppedAfterAnswerKeepsIt(t *testing.T) {
	f := newRunnerFixture(t, okAnswer)
	f.r.workers = 1
	b := f.create(t, 1)
	f.state(f.r).advance(context.Background())
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	st := &runState{r: f.r, objs: stopOnResultPut{Backend: f.objs, stop: stop}, blobs: f.blobs, q: f.objs.Queue(batchQueue)}
	st.work(ctx)
	if ctx.Err() == nil {
		t.Fatal("the runner was not stopped while storing the result")
	}
	if _, err := f.objs.Get(context.Background(), kindBatchResult, b.ID, resultID(0)); err != nil {
		t.Fatalf("the answer received before the stop was not kept: %v", err)
	}
	if n, err := f.objs.Queue(batchQueue).Pending(context.Background(), b.ID); err != nil || n != 0 {
		t.Errorf("%d lines still pending (%v): the answered line would be sent again", n, err)
	}
	if got := f.batch(t, b.ID); got.RequestCounts.Completed != 1 {
		t.Errorf("counts %+v", got.RequestCounts)
	}
	if got := f.sentIDs(); len(got) != 1 {
		t.Errorf("sent %v", got)
	}
}
