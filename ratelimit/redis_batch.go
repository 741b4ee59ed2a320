package ratelimit

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// The store's script calls (reserve, peek, settle) leave in pipelines: what callers queue while
// one pipeline is in flight leaves together in the next, in the order it was queued, on one
// connection (one pipeline at a time measured better than two, four or eight on make bench (g):
// bigger batches cost the gateway and Redis less per call). Under load one round trip (one write and one read on each side) carries the calls
// of every request arriving meanwhile instead of one each, which is most of what a call costs the
// gateway and Redis; alone, a call leaves at once. Each caller waits for its own reply, except
// a settlement queued by SettleNoWait: it is in Redis before any call this store queues after it
// runs, and another instance sees it once its pipeline is answered.

// States of a redisOp that a caller waits for.
const (
	opQueued    int32 = iota // in the queue, not sent
	opSent                   // in a pipeline in flight
	opDone                   // replied: reply and err are set, done is closed
	opAbandoned              // the caller stopped waiting (its ctx ended)
)

// errNotSent marks a call whose caller stopped waiting before it was sent: Redis never saw it.
var errNotSent = errors.New("not sent to Redis")

// errAbandoned marks a call whose caller stopped waiting after it was sent: what it took is
// released by the sender when its reply comes.
var errAbandoned = errors.New("no reply from Redis in time; a reservation it took is released when Redis answers")

// redisOp is one script call in the queue.
type redisOp struct {
	script *redis.Script // nil: a marker that only waits for what was queued before it
	keys   []string
	args   []any

	done  chan struct{}
	state atomic.Int32
	reply []int64
	err   error

	release *Request       // a reserve: what to release when its caller gave up after it was sent
	settle  *pendingSettle // a settlement: retried by Run when it fails; always sent
}

// batcher is the queue of script calls and whether a goroutine is sending it.
type batcher struct {
	mu      sync.Mutex
	queue   []*redisOp
	spare   []*redisOp // the last sent batch's array, for the next queue
	sending bool       // a goroutine is sending the queue
}

// enqueue adds o to the queue and starts the sender when none runs.
func (s *RedisStore) enqueue(o *redisOp) {
	b := &s.batch
	b.mu.Lock()
	b.queue = append(b.queue, o)
	start := !b.sending
	b.sending = true
	b.mu.Unlock()
	if start {
		go s.sendQueue()
	}
}

// sendQueue sends the queue in pipelines of at most maxPipeline calls until it is empty.
func (s *RedisStore) sendQueue() {
	b := &s.batch
	for {
		b.mu.Lock()
		ops := b.queue
		if len(ops) == 0 {
			b.sending = false
			b.mu.Unlock()
			return
		}
		n := min(len(ops), maxPipeline)
		b.queue = append(b.spare[:0], ops[n:]...)
		b.spare = nil
		b.mu.Unlock()

		s.send(ops[:n])

		clear(ops)
		b.mu.Lock()
		if b.spare == nil {
			b.spare = ops[:0]
		}
		b.mu.Unlock()
	}
}

// send runs ops in one pipeline (and those Redis did not know the script of once more, after
// loading the scripts) and hands out the replies.
func (s *RedisStore) send(ops []*redisOp) {
	ctx := context.Background()
	cmds := make([]*redis.Cmd, len(ops))
	run := func(rerun bool) error {
		pipe := s.client.Pipeline()
		for i, o := range ops {
			switch {
			case o.script == nil:
			case rerun:
				if cmds[i] != nil && redis.HasErrorPrefix(cmds[i].Err(), "NOSCRIPT") {
					cmds[i] = o.script.EvalSha(ctx, pipe, o.keys, o.args...)
				}
			case o.settle != nil:
				o.state.CompareAndSwap(opQueued, opSent)
				cmds[i] = o.script.EvalSha(ctx, pipe, o.keys, o.args...)
			case !o.state.CompareAndSwap(opQueued, opSent):
				// its caller gave up before it left
			default:
				cmds[i] = o.script.EvalSha(ctx, pipe, o.keys, o.args...)
			}
		}
		if pipe.Len() == 0 {
			return nil
		}
		_, err := pipe.Exec(ctx)
		return err
	}
	if err := run(false); err != nil && slices.ContainsFunc(cmds, func(c *redis.Cmd) bool {
		return c != nil && redis.HasErrorPrefix(c.Err(), "NOSCRIPT")
	}) {
		// Redis restarted empty: load the scripts and run what it refused (it ran nothing of it)
		loaded := true
		for _, sc := range [...]*redis.Script{s.reserve, s.settle} {
			if lerr := sc.Load(ctx, s.client).Err(); lerr != nil {
				loaded = false
			}
		}
		if loaded {
			_ = run(true)
		}
	}
	for i, o := range ops {
		s.finish(o, cmds[i])
	}
}

// finish hands cmd's reply to o's caller; retries a failed settlement; releases what a reserve
// took for a caller that gave up.
func (s *RedisStore) finish(o *redisOp, cmd *redis.Cmd) {
	var (
		reply []int64
		err   error
	)
	if cmd != nil {
		if err = cmd.Err(); err == nil && o.settle == nil {
			reply, err = cmd.Int64Slice()
		}
	}
	from := opSent
	if o.script == nil {
		from = opQueued // a marker is never sent
	}
	o.reply, o.err = reply, err
	if o.state.CompareAndSwap(from, opDone) {
		if o.settle != nil && err != nil {
			s.queue(o.settle.req, o.settle.delta, o.settle.expires) // the caller still waits: its scopes are valid
		}
		close(o.done)
		return
	}
	// The caller gave up; what it left (release, settle) is its own copy now. Redis may have run
	// the call (an error may mean only that the reply was lost).
	switch {
	case o.settle != nil:
		if err != nil {
			s.requeue(*o.settle)
		}
	case o.release != nil && cmd != nil && (err != nil || len(reply) > 0 && reply[0] == 1):
		s.queue(*o.release, -o.release.Cost.Tokens, 0)
	}
}

// call queues a script call and waits for its reply or the end of ctx. A caller that gives up
// gets errNotSent (Redis never saw the call) or errAbandoned (the sender releases what a
// reserve took, o.release).
func (s *RedisStore) call(ctx context.Context, o *redisOp) ([]int64, error) {
	o.done = make(chan struct{})
	s.enqueue(o)
	select {
	case <-o.done:
		return o.reply, o.err
	case <-ctx.Done():
	}
	// The caller's scopes are its own again once it returns: the sender reads these copies only
	// after the state says the caller gave up.
	if o.release != nil {
		r := *o.release
		r.Scopes = slices.Clone(r.Scopes)
		o.release = &r
	}
	if o.settle != nil {
		p := *o.settle
		p.req.Scopes = slices.Clone(p.req.Scopes)
		o.settle = &p
	}
	if o.state.CompareAndSwap(opQueued, opAbandoned) {
		return nil, errors.Join(errNotSent, ctx.Err())
	}
	if o.state.CompareAndSwap(opSent, opAbandoned) {
		return nil, errors.Join(errAbandoned, ctx.Err())
	}
	<-o.done // replied meanwhile
	return o.reply, o.err
}

// Sync waits until every call queued before it (settlements included) has been answered by
// Redis or has failed, or until ctx ends.
func (s *RedisStore) Sync(ctx context.Context) error {
	_, err := s.call(ctx, &redisOp{})
	return err
}
