package caddymodule

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"

	"github.com/tidwall/gjson"

	"github.com/caddyai/gateway/batch"
	"github.com/caddyai/gateway/internal/wire"
	"github.com/caddyai/gateway/store"
)

// The runner's part for Anthropic message batches: the same queue, claims, leases and
// store-before-ack as OpenAI batches (runLine), with a message batch's own lifecycle. Its
// requests are enqueued by the runner (the create only stores the body), each runs as a
// POST /v1/messages of the owning key, and its end writes one results blob (JSONL, one
// batch.Result per request) that GET .../results streams.

// msgEndpoint is where a message batch's requests go.
const msgEndpoint = "/v1/messages"

// stepMsg takes one message batch one step on.
func (st *runState) stepMsg(ctx context.Context, owner, id string, created int64) error {
	rec, err := st.objs.Get(ctx, kindMsgBatch, owner, id)
	if errors.Is(err, store.ErrNotFound) {
		if created < st.r.now().Add(-blobGrace).Unix() {
			return st.retire(ctx, id)
		}
		return nil
	} else if err != nil {
		return err
	}
	m, run, err := decodeMsgBatch(rec.Data)
	if err != nil {
		return err
	}
	if m.ProcessingStatus != batch.ProcessingEnded {
		st.tally.batch(apiAnthropic, string(m.ProcessingStatus))
	}
	switch m.ProcessingStatus {
	case batch.ProcessingInProgress:
		if m.Due(st.r.now()) {
			return st.closeMsg(ctx, owner, m, run)
		}
		if !run.Queued {
			return st.enqueueMsg(ctx, owner, m)
		}
		n, err := st.q.Pending(ctx, id)
		if err != nil || n > 0 {
			st.tally.wait(run.Model, int64(n))
			return err
		}
		return st.closeMsg(ctx, owner, m, run)
	case batch.ProcessingCanceling:
		return st.closeMsg(ctx, owner, m, run)
	}
	return st.retire(ctx, id)
}

// msgTasks reads the requests of a message batch back from its input blob.
func (st *runState) msgTasks(ctx context.Context, id string) ([]batch.Task, error) {
	blob, err := st.blobs.Open(ctx, msgInputBlob(id))
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	defer blob.Close()
	return batch.ReadMessageBatchRequest(io.NewSectionReader(blob, 0, blob.Size()), batch.RequestLimits{})
}

// enqueueMsg puts a message batch's requests in the queue (from scratch, should an earlier
// attempt have been cut short) and marks it queued.
func (st *runState) enqueueMsg(ctx context.Context, owner string, m *batch.MessageBatch) error {
	held, err := st.updateMsg(ctx, owner, m.ID, func(cur *batch.MessageBatch, run *batchRun) error {
		return st.holdEnqueue(run, cur.ProcessingStatus == batch.ProcessingInProgress && !run.Queued)
	})
	if err != nil || held == nil {
		return err // queued (or canceled) meanwhile, or another runner is enqueueing
	}
	tasks, err := st.msgTasks(ctx, m.ID)
	if err != nil {
		return err
	}
	if _, err := st.q.Drop(ctx, m.ID); err != nil {
		return err
	}
	items := make([][]byte, 0, min(len(tasks), store.MaxClaim))
	for i, t := range tasks {
		data, _ := json.Marshal(queuedLine{Index: t.Index, CustomID: t.CustomID, Offset: t.Offset, Size: t.Size})
		items = append(items, data)
		if len(items) == cap(items) || i == len(tasks)-1 {
			if err := st.q.Enqueue(ctx, m.ID, items); err != nil {
				return err
			}
			items = items[:0]
		}
	}
	model := st.msgModel(ctx, m.ID, tasks)
	_, err = st.updateMsg(ctx, owner, m.ID, func(m *batch.MessageBatch, run *batchRun) error {
		if run.Queued {
			return errUnchanged
		}
		run.Queued, run.Model = true, model
		return nil
	})
	return err
}

// updateMsg applies fn to the stored message batch with a compare and swap.
func (st *runState) updateMsg(ctx context.Context, owner, id string, fn func(m *batch.MessageBatch, run *batchRun) error) (*batch.MessageBatch, error) {
	var out *batch.MessageBatch
	_, err := st.objs.Update(ctx, kindMsgBatch, owner, id, func(old []byte) ([]byte, error) {
		m, run, err := decodeMsgBatch(old)
		if err != nil {
			return nil, err
		}
		if err := fn(m, &run); err != nil {
			return nil, err
		}
		out = m
		return encodeMsgBatch(m, run), nil
	})
	if errors.Is(err, errUnchanged) {
		return nil, nil
	}
	return out, err
}

// msgJob is the job of a request of a message batch: params refused by
// batch.CheckMessageParams and answers other than 2xx are errored results carrying the
// Anthropic error envelope a live request would have got.
func (st *runState) msgJob(ctx context.Context, owner, id string, ql queuedLine) (lineJob, error) {
	rec, err := st.objs.Get(ctx, kindMsgBatch, owner, id)
	if err != nil {
		return lineJob{}, err
	}
	m, run, err := decodeMsgBatch(rec.Data)
	if err != nil {
		return lineJob{}, err
	}
	line := func(r batch.Result) (bool, lineUsage, []byte) {
		r.CustomID = ql.CustomID
		return r.Type == batch.ResultSucceeded, lineUsage{}, r.AppendLine(nil)
	}
	errored := func(werr *wire.Error, requestID string) (bool, lineUsage, []byte) {
		return line(batch.ErroredResult(ql.CustomID, werr, requestID))
	}
	return lineJob{
		run:   m.ProcessingStatus == batch.ProcessingInProgress && !m.Due(st.r.now()),
		input: msgInputBlob(id), endpoint: msgEndpoint, batchRun: run,
		check: batch.CheckMessageParams,
		missing: func() (bool, lineUsage, []byte) {
			return errored(&wire.Error{Status: 500, Type: wire.TypeServer, Message: "The batch's requests were lost before this request was run."}, "")
		},
		refused: func(werr *wire.Error) (bool, lineUsage, []byte) { return errored(werr, "") },
		answered: func(ans lineAnswer) (bool, lineUsage, []byte) {
			if ans.Status >= 200 && ans.Status < 300 {
				u := gjson.GetBytes(ans.Body, "usage")
				in, out := u.Get("input_tokens").Int(), u.Get("output_tokens").Int()
				_, lu, l := line(batch.Result{Type: batch.ResultSucceeded, Message: ans.Body})
				lu.PromptTokens, lu.CompletionTokens, lu.TotalTokens = in, out, in+out
				return true, lu, l
			}
			return line(batch.Result{Type: batch.ResultErrored, Error: ans.Body})
		},
		count: func(ctx context.Context, ok bool, _ lineUsage) error {
			ended := false
			_, err := st.updateMsg(ctx, owner, id, func(m *batch.MessageBatch, _ *batchRun) error {
				if m.ProcessingStatus != batch.ProcessingInProgress {
					// the close recounts from the results; one that already ran has the request
					// in its results as canceled or expired, and this result is not kept
					ended = m.ProcessingStatus == batch.ProcessingEnded
					return errUnchanged
				}
				t := batch.ResultErrored
				if ok {
					t = batch.ResultSucceeded
				}
				if m.Record(t) != nil {
					return errUnchanged
				}
				return nil
			})
			if err == nil && ended {
				if err := st.objs.Delete(ctx, kindBatchResult, id, resultID(ql.Index)); err != nil && !errors.Is(err, store.ErrNotFound) {
					return err
				}
			}
			return err
		},
	}, nil
}

// closeMsg ends a message batch: whatever is queued is dropped, the results blob gets every
// stored result and, for the requests never run, a canceled (canceling) or expired (the
// window ended) one; the counts are recounted from them and the batch moves to ended with its
// results_url. One runner ends a batch, as for OpenAI batches.
func (st *runState) closeMsg(ctx context.Context, owner string, m *batch.MessageBatch, run batchRun) error {
	if st.linesRunning(m.ID) {
		return nil // ended once this runner's lines of it are done (a later pass)
	}
	now := st.r.now()
	claimed, err := st.updateMsg(ctx, owner, m.ID, func(cur *batch.MessageBatch, run *batchRun) error {
		if cur.ProcessingStatus != m.ProcessingStatus || run.Closer != st.r.consumer && run.CloseUntil > now.UnixMilli() {
			return errUnchanged
		}
		run.Closer, run.CloseUntil = st.r.consumer, now.Add(closeLease).UnixMilli()
		return nil
	})
	if err != nil || claimed == nil {
		return err
	}
	if _, err := st.q.Drop(ctx, m.ID); err != nil {
		return err
	}
	tasks, err := st.msgTasks(ctx, m.ID)
	if err != nil {
		return err
	}
	unrunType := batch.ResultExpired
	if m.ProcessingStatus == batch.ProcessingCanceling {
		unrunType = batch.ResultCanceled
	}
	var counts batch.MessageRequestCounts
	name := msgResultsBlob(m.ID)
	if err := st.objs.Put(ctx, store.Record{Kind: kindFileBlob, Owner: blobOwner, ID: name, Data: appendBlobRecord(nil, owner, now)}); err != nil {
		return err
	}
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		bw := bufio.NewWriterSize(pw, 64<<10)
		answered := map[int]bool{}
		err := st.eachResult(ctx, m.ID, func(res result) error {
			answered[res.index] = true
			switch gjson.GetBytes(res.line, "result.type").Str {
			case string(batch.ResultSucceeded):
				counts.Succeeded++
			default:
				counts.Errored++
			}
			_, err := bw.Write(append(res.line, '\n'))
			return err
		})
		var buf []byte
		for _, t := range tasks {
			if err != nil {
				break
			}
			if answered[t.Index] {
				continue
			}
			if unrunType == batch.ResultCanceled {
				counts.Canceled++
			} else {
				counts.Expired++
			}
			r := batch.Result{CustomID: t.CustomID, Type: unrunType}
			buf = r.AppendLine(buf[:0])
			_, err = bw.Write(buf)
		}
		if err == nil {
			err = bw.Flush()
		}
		pw.CloseWithError(err)
	}()
	_, err = st.blobs.Write(ctx, name, pr, store.Limits{})
	pr.CloseWithError(errors.New("the write stopped"))
	<-done
	if err != nil {
		return err
	}
	ended, err := st.updateMsg(ctx, owner, m.ID, func(m *batch.MessageBatch, run *batchRun) error {
		if m.ProcessingStatus == batch.ProcessingEnded {
			return errUnchanged
		}
		m.RequestCounts = counts
		return m.End(now, run.Base+batch.ResultsPath(m.ID))
	})
	if err != nil {
		return err
	}
	if ended != nil {
		st.r.countEnded(apiAnthropic, string(ended.ProcessingStatus))
	}
	return st.retire(ctx, m.ID)
}
