package caddymodule

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/caddyai/gateway/batch"
	"github.com/caddyai/gateway/store"
)

// otherRunner is a second runner on the fixture's store, as another instance sharing it.
func (f *runnerFixture) otherRunner() *runState {
	r := &batchRunner{h: f.h, logger: zap.NewNop(), now: f.now, consumer: "other", workers: 2, lease: time.Minute,
		every: time.Hour, wake: make(chan struct{}, 1), done: make(chan struct{}), send: f.r.send}
	return f.state(r)
}

// state is runner r's view of the fixture's store.
func (f *runnerFixture) state(r *batchRunner) *runState {
	return &runState{r: r, objs: f.objs, blobs: f.blobs, q: f.objs.Queue(batchQueue)}
}

// restarted is the fixture's runner started again on its store, as after a crash.
func (f *runnerFixture) restarted() *runState {
	r := f.h.newRunner(zap.NewNop())
	r.now, r.send = f.now, f.r.send
	return f.state(r)
}

// drainRun advances st and works its queue until nothing is left.
func drainRun(ctx context.Context, st *runState) {
	st.advance(ctx)
	for st.work(ctx) > 0 {
	}
}

// checkEnqueuedOnce claims every queued line for the first runner, lets other enqueue the batch
// again (as an instance that read it before the first one enqueued would), and checks that
// nothing new was queued and the first runner's claims still hold.
func checkEnqueuedOnce(t *testing.T, st, other *runState, id string, n int, enqueueAgain func() error) {
	t.Helper()
	ctx := context.Background()
	held, err := st.q.Claim(ctx, st.r.consumer, 100, time.Minute)
	if err != nil || len(held) != n {
		t.Fatalf("claimed %d lines (%v), want %d", len(held), err, n)
	}
	if err := enqueueAgain(); err != nil {
		t.Fatal(err)
	}
	if again, err := other.q.Claim(ctx, other.r.consumer, 100, time.Minute); err != nil || len(again) != 0 {
		t.Fatalf("the lines were queued a second time: %d claimed by the other runner (%v)", len(again), err)
	}
	for _, it := range held {
		if err := st.q.Ack(ctx, it); err != nil {
			t.Errorf("acking a line held before the second enqueue: %v", err)
		}
	}
}

// With several instances, one runner fills the queue with a batch's lines: another that read
// the batch while it was still validating does not drop and queue them again (which would
// have sent the lines in flight a second time).
func TestRunnerEnqueuesBatchOnce(t *testing.T) {
	f := newRunnerFixture(t, okAnswer)
	b := f.create(t, 3)
	ctx := context.Background()
	st := f.state(f.r)
	stale := f.batch(t, b.ID)
	st.advance(ctx)
	if got := f.batch(t, b.ID); got.Status != batch.StatusInProgress {
		t.Fatalf("after validation: %s", got.Status)
	}
	other := f.otherRunner()
	checkEnqueuedOnce(t, st, other, b.ID, 3, func() error { return other.validate(ctx, "k1", stale) })
}

// A runner that took the enqueueing and died holds it off for one lease; then another runner
// redoes it.
func TestRunnerEnqueueHoldRunsOut(t *testing.T) {
	f := newRunnerFixture(t, okAnswer)
	b := f.create(t, 2)
	ctx := context.Background()
	st := f.state(f.r)
	if _, err := st.updateRun(ctx, "k1", b.ID, func(_ *batch.Batch, run *batchRun) error {
		run.Enqueuer, run.EnqueueUntil = "a-dead-instance", f.now().Add(batchLease).UnixMilli()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	st.advance(ctx)
	if n, _ := st.q.Pending(ctx, b.ID); n != 0 || f.batch(t, b.ID).Status != batch.StatusValidating {
		t.Fatalf("enqueued under another runner's hold: %d pending", n)
	}
	f.advanceClock(batchLease + time.Second)
	st.advance(ctx)
	if n, _ := st.q.Pending(ctx, b.ID); n != 2 || f.batch(t, b.ID).Status != batch.StatusInProgress {
		t.Fatalf("after the hold ran out: %d pending, %s", n, f.batch(t, b.ID).Status)
	}
}

// The same for a message batch: its requests are queued once.
func TestRunnerEnqueuesMessageBatchOnce(t *testing.T) {
	f := newRunnerFixture(t, okAnswer)
	ctx := context.Background()
	id := batch.NewID(batch.PrefixMessageBatch, f.now())
	var reqs []string
	for i := 1; i <= 3; i++ {
		reqs = append(reqs, fmt.Sprintf(`{"custom_id":"r%d","params":{"model":"m","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}}`, i))
	}
	body := `{"requests":[` + strings.Join(reqs, ",") + `]}`
	if _, err := f.blobs.Write(ctx, msgInputBlob(id), strings.NewReader(body), store.Limits{}); err != nil {
		t.Fatal(err)
	}
	m := batch.NewMessageBatch(id, 3, f.now())
	for _, rec := range []store.Record{
		{Kind: kindBatchActive, Owner: blobOwner, ID: id, Data: appendBlobRecord(nil, "k1", f.now())},
		{Kind: kindMsgBatch, Owner: "k1", ID: id, Data: encodeMsgBatch(m, batchRun{})},
	} {
		if err := f.objs.Put(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	st := f.state(f.r)
	st.advance(ctx)
	if n, err := st.q.Pending(ctx, id); n != 3 || err != nil {
		t.Fatalf("%d requests queued (%v), want 3", n, err)
	}
	other := f.otherRunner()
	checkEnqueuedOnce(t, st, other, id, 3, func() error {
		return other.enqueueMsg(ctx, "k1", m) // m as read before the first runner queued it
	})
}

// A bolt store's runner carries one name across restarts: a start after a crash in the middle
// of ending a batch ends it at once, instead of waiting for the dead process's claim to run out.
// A Redis store's runner has a name of its own process.
func TestRunnerRestartTakesUpCloseCutShort(t *testing.T) {
	f := newRunnerFixture(t, okAnswer)
	b := f.create(t, 2)
	ctx := context.Background()
	st := f.state(f.r)
	drainRun(ctx, st)
	// the process before the crash had claimed the close and moved the batch to finalizing
	if _, err := st.updateRun(ctx, "k1", b.ID, func(b *batch.Batch, run *batchRun) error {
		run.Closer, run.CloseUntil = boltRunner, f.now().Add(closeLease).UnixMilli()
		return b.Finalize(f.now())
	}); err != nil {
		t.Fatal(err)
	}
	restarted := f.restarted()
	restarted.advance(ctx)
	if got := f.batch(t, b.ID); got.Status != batch.StatusCompleted || got.RequestCounts.Completed != 2 {
		t.Fatalf("after the restart: %s", got.AppendJSON(nil))
	}
	shared := &backendHandle{redisOpts: &redis.Options{}}
	if name := shared.newRunner(zap.NewNop()).consumer; name == boltRunner || name == "" {
		t.Errorf("a Redis store's runner is named %q", name)
	}
}

// A close cut short after it wrote the output file is redone into the same file: the owner has
// one output file, the batch's, not a first unreferenced copy beside it.
func TestRunnerCloseRedoneRewritesSameFiles(t *testing.T) {
	f := newRunnerFixture(t, okAnswer)
	b := f.create(t, 2)
	ctx := context.Background()
	st := f.state(f.r)
	drainRun(ctx, st)
	// the first close claimed the batch, chose its files' ids and wrote the output file; then
	// the process died
	var run batchRun
	claimed, err := st.updateRun(ctx, "k1", b.ID, func(b *batch.Batch, cr *batchRun) error {
		cr.Closer, cr.CloseUntil = boltRunner, f.now().Add(closeLease).UnixMilli()
		cr.OutputFile, cr.ErrorFile = store.NewID(batch.PrefixFile), store.NewID(batch.PrefixFile)
		run = *cr
		return b.Finalize(f.now())
	})
	if err != nil {
		t.Fatal(err)
	}
	first, err := st.writeFile(ctx, "k1", claimed, run, "output", func(w io.Writer) (int, error) {
		_, err := io.WriteString(w, "{}\n")
		return 1, err
	})
	if err != nil || first != run.OutputFile {
		t.Fatalf("first output file %q (%v), want %q", first, err, run.OutputFile)
	}
	restarted := f.restarted()
	restarted.advance(ctx)
	got := f.batch(t, b.ID)
	if got.Status != batch.StatusCompleted || got.OutputFileID != first {
		t.Fatalf("after the restart: %s, want output file %s", got.AppendJSON(nil), first)
	}
	if lines := f.file(t, first); len(lines) != 2 {
		t.Errorf("the output file has %d lines, want the batch's 2", len(lines))
	}
	files, err := f.objs.List(ctx, kindFile, "k1", store.ListOptions{Limit: 10})
	if err != nil || len(files.Records) != 1 {
		t.Errorf("the owner has %d files (%v), want the one output file", len(files.Records), err)
	}
}

// The same for an enqueueing cut short: a bolt store's runner, started again, takes up its own
// earlier hold at once.
func TestRunnerRestartTakesUpEnqueueCutShort(t *testing.T) {
	f := newRunnerFixture(t, okAnswer)
	b := f.create(t, 2)
	ctx := context.Background()
	st := f.state(f.r)
	if _, err := st.updateRun(ctx, "k1", b.ID, func(_ *batch.Batch, run *batchRun) error {
		run.Enqueuer, run.EnqueueUntil = boltRunner, f.now().Add(batchLease).UnixMilli()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	restarted := f.restarted()
	restarted.advance(ctx)
	if n, _ := st.q.Pending(ctx, b.ID); n != 2 || f.batch(t, b.ID).Status != batch.StatusInProgress {
		t.Fatalf("after the restart: %d pending, %s", n, f.batch(t, b.ID).Status)
	}
}
