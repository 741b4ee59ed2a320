package caddymodule

// holdEnqueue takes, in the compare and swap of a batch's record, the right to fill the queue
// with the batch's lines: due says the batch still needs it (validating, or a message batch not
// yet queued). With several instances only one runner enqueues: two would each Drop what the
// other had queued (lines another runner had already claimed among them) and queue their own,
// so a line could be sent twice. The hold lasts one batch lease, and at least the default one
// (filling the queue with 50,000 lines takes a while), after which another runner may redo
// the enqueueing from scratch (the holder died midway). It returns errUnchanged when the batch
// needs no enqueueing or another runner holds it.
func (st *runState) holdEnqueue(run *batchRun, due bool) error {
	now := st.r.now()
	if !due || run.Enqueuer != "" && run.Enqueuer != st.r.consumer && run.EnqueueUntil > now.UnixMilli() {
		return errUnchanged
	}
	run.Enqueuer, run.EnqueueUntil = st.r.consumer, now.Add(max(st.r.currentLease(), batchLease)).UnixMilli()
	return nil
}
