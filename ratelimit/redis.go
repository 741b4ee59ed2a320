package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultLease is how long a Redis reservation lives unless renewed.
const DefaultLease = 30 * time.Second

// maxPending bounds the settlements and releases waiting for Redis; beyond it
// the oldest are dropped and their reservations expire with their lease.
const maxPending = 100_000

// maxPipeline bounds the commands of one pipelined call of Run.
const maxPipeline = 512

// RedisOptions configure a RedisStore.
type RedisOptions struct {
	// Prefix namespaces every key. Default: "aigw:rl:". With Redis Cluster,
	// put a hash tag in it (e.g. "{aigw:rl}:") so that all scopes of one
	// call live in one slot.
	Prefix string
	// Now, when set, replaces the Redis server time (for tests) and the
	// local clock of the leases. Default: nil, the server's TIME, so
	// instances with skewed clocks agree, and time.Now locally.
	Now func() time.Time
	// Lease is how long a reservation (its concurrency slots and the record
	// that makes its settlement apply once) lives in Redis unless Run renews
	// it: the longest a crashed instance's slots stay taken. Run renews every
	// lease/3. Default: 30s.
	Lease time.Duration
}

// RedisStore keeps buckets in Redis so that all gateway instances share the
// limits. Each Reserve and each Settle is one Lua script call that is atomic
// across all scopes. Idle keys expire by themselves.
//
// Every reservation is held on a lease, recorded under its id. Run, started
// once per store, renews the leases of the reservations in flight and
// retries what Redis did not answer: a failed Settle until it applies or its
// lease has run out, and the release of a Reserve whose reply was lost (a
// timeout while Redis hung: Redis may run it later) until Redis answers. The
// record makes both safe to repeat: a settlement applies once, and a reserve
// that Redis runs after its release, or a second time after a go-redis
// retry, takes nothing.
type RedisStore struct {
	client  redis.UniversalClient
	prefix  string
	now     func() time.Time
	lease   time.Duration
	leaseMS int64
	reserve *redis.Script
	settle  *redis.Script
	renew   *redis.Script

	batch   batcher     // the reserve, peek and settle calls, sent in pipelines in their order
	refused refusedMemo // refusals by request buckets, answered locally a second at a time (redis_refused.go)

	mu      sync.Mutex
	held    map[string]*heldLease // granted reservations not settled yet, by id
	pending []pendingSettle       // settlements and releases waiting for Redis, oldest first
	dropped uint64                // pending entries dropped over maxPending, not yet reported
}

// heldLease is a granted reservation that Run renews.
type heldLease struct {
	keys    []string // the record, then the slot sets of the scopes with MaxConcurrent
	renewAt int64    // local ns: when the next renewal is due
	expires int64    // local ns: by then the lease has run out in Redis unless renewed
}

// pendingSettle is a settlement (or the release of a lost reserve) that
// Redis did not answer.
type pendingSettle struct {
	req   Request // own copy of the scopes
	delta int64
	// expires is when the lease has run out in Redis anyway (local ns), or 0
	// to keep it until Redis answers: a lost reserve may run late and start
	// its lease then.
	expires int64
}

// NewRedisStore returns a store over client. It does no I/O.
func NewRedisStore(client redis.UniversalClient, opts RedisOptions) *RedisStore {
	s := &RedisStore{
		client:  client,
		prefix:  opts.Prefix,
		now:     opts.Now,
		lease:   opts.Lease,
		reserve: redis.NewScript(reserveScript),
		settle:  redis.NewScript(settleScript),
		renew:   redis.NewScript(renewScript),
		held:    make(map[string]*heldLease),
	}
	if s.prefix == "" {
		s.prefix = "aigw:rl:"
	}
	if s.lease < time.Millisecond {
		s.lease = DefaultLease
	}
	s.leaseMS = s.lease.Milliseconds()
	return s
}

// BucketKey returns the key of the string holding scope id's buckets (b2: the packed layout of
// redis_scripts.go; b: was a hash of the same numbers).
func (s *RedisStore) BucketKey(id string) string { return s.prefix + "b2:" + id }

// SlotsKey returns the key of the sorted set holding scope id's
// concurrency slots.
func (s *RedisStore) SlotsKey(id string) string { return s.prefix + "c:" + id }

// RecordKey returns the key of reservation id's record.
func (s *RedisStore) RecordKey(id string) string { return s.prefix + "r:" + id }

// wantsReservationIDs tells the Limiter to name every reservation.
func (s *RedisStore) wantsReservationIDs() {}

func (s *RedisStore) nowArg() string {
	if s.now == nil {
		return ""
	}
	return strconv.FormatInt(s.now().UnixMilli(), 10)
}

// localNow returns the local clock for lease bookkeeping, in ns.
func (s *RedisStore) localNow() int64 {
	if s.now != nil {
		return s.now().UnixNano()
	}
	return time.Now().UnixNano()
}

// keys returns the bucket and slot keys of every scope, then the record of
// id when id is not empty.
func (s *RedisStore) keys(scopes []Scope, id string) []string {
	keys := make([]string, 0, 2*len(scopes)+1)
	for i := range scopes {
		keys = append(keys, s.BucketKey(scopes[i].ID), s.SlotsKey(scopes[i].ID))
	}
	if id != "" {
		keys = append(keys, s.RecordKey(id))
	}
	return keys
}

func appendLimits(args []any, scopes []Scope) []any {
	for i := range scopes {
		l := &scopes[i].Limits
		args = append(args, l.RPM, l.TPM, l.RPD, l.TPD, l.MaxConcurrent)
	}
	return args
}

// Reserve implements Store. req.ID must be set. When Redis does not answer,
// Run releases the reservation once it does, in case Redis ran it.
func (s *RedisStore) Reserve(ctx context.Context, req Request) (Decision, error) {
	if len(req.Scopes) == 0 {
		return Decision{Allowed: true}, nil
	}
	if req.ID == "" {
		return Decision{}, fmt.Errorf("reserving: %w: empty reservation id", ErrInvalidRequest)
	}
	if d, ok := s.refused.refuse(req.Scopes, req.Cost, s.localNow()); ok {
		return d, nil
	}
	keys := s.keys(req.Scopes, req.ID)
	d, err := s.run(ctx, req, keys, true)
	if err != nil {
		if !notSent(err) && !errors.Is(err, errAbandoned) {
			s.queue(req, -req.Cost.Tokens, 0)
		}
		return Decision{}, err
	}
	if d.Allowed {
		s.hold(req, keys)
	}
	return d, nil
}

// Peek implements Store.
func (s *RedisStore) Peek(ctx context.Context, scopes []Scope, cost Cost) (Decision, error) {
	if len(scopes) == 0 {
		return Decision{Allowed: true}, nil
	}
	if d, ok := s.refused.refuse(scopes, cost, s.localNow()); ok {
		return d, nil
	}
	return s.run(ctx, Request{Scopes: scopes, Cost: cost}, s.keys(scopes, ""), false)
}

func (s *RedisStore) run(ctx context.Context, req Request, keys []string, take bool) (Decision, error) {
	takeArg := "0"
	if take {
		takeArg = "1"
	}
	args := make([]any, 0, 6+5*len(req.Scopes))
	args = append(args, s.nowArg(), takeArg, req.Cost.Requests, req.Cost.Tokens, s.leaseMS, req.ID)
	args = appendLimits(args, req.Scopes)
	o := &redisOp{script: s.reserve, keys: keys, args: args}
	if take {
		o.release = &req
	}
	sent := s.localNow()
	reply, err := s.call(ctx, o)
	if err != nil {
		return Decision{}, fmt.Errorf("running reserve script: %w", err)
	}
	const per = 2*numDims + 1
	if len(reply) != 2+per*len(req.Scopes) {
		return Decision{}, fmt.Errorf("parsing reserve script reply: %d values for %d scopes", len(reply), len(req.Scopes))
	}
	var stBuf [maxStackScopes]scopeState
	st := stBuf[:0]
	if len(req.Scopes) > maxStackScopes {
		st = make([]scopeState, 0, len(req.Scopes))
	}
	ms := int64(time.Millisecond)
	now := reply[1] * ms
	for i := range req.Scopes {
		v := reply[2+per*i:]
		var ss scopeState
		for k := range numDims {
			ss.lv[k] = level{w: v[2*k], t: v[2*k+1] * ms}
		}
		ss.inflight = v[2*numDims]
		st = append(st, ss)
	}
	d := decide(now, req.Scopes, req.Cost, st, take)
	if taken := reply[0] == 1; take && taken != d.Allowed {
		return Decision{}, fmt.Errorf("checking reserve script reply: script took=%t, decision allowed=%t", taken, d.Allowed)
	}
	if !d.Allowed && !d.Impossible {
		// Redis read its clock after the call was sent, and the reply has it in whole ms: this
		// offset is at or above the real one.
		s.refused.remember(req.Scopes, st, now, now+ms-sent)
	}
	return d, nil
}

// notSent reports errors after which the command surely did not reach Redis:
// no connection could be had.
func notSent(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial" ||
		errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, redis.ErrClosed) || errors.Is(err, errNotSent)
}

// hold starts renewing a granted reservation. keys are those of the reserve
// call: per scope the bucket and the slot set, then the record.
func (s *RedisStore) hold(req Request, keys []string) {
	lk := make([]string, 1, 1+len(req.Scopes))
	lk[0] = keys[len(keys)-1]
	for i := range req.Scopes {
		if req.Scopes[i].Limits.MaxConcurrent > 0 {
			lk = append(lk, keys[2*i+1])
		}
	}
	now := s.localNow()
	h := &heldLease{keys: lk, renewAt: now + int64(s.lease/3), expires: now + int64(s.lease)}
	s.mu.Lock()
	s.held[req.ID] = h
	s.mu.Unlock()
}

// queue keeps a settlement for Run to retry, with its own copy of the scopes.
func (s *RedisStore) queue(req Request, delta, expires int64) {
	req.Scopes = append([]Scope(nil), req.Scopes...)
	s.requeue(pendingSettle{req: req, delta: delta, expires: expires})
}

// requeue keeps p, which owns its scopes, for Run to retry.
func (s *RedisStore) requeue(p pendingSettle) {
	s.mu.Lock()
	s.pending = append(s.pending, p)
	if over := len(s.pending) - maxPending; over > 0 {
		s.pending = append(s.pending[:0], s.pending[over:]...)
		s.dropped += uint64(over)
	}
	s.mu.Unlock()
}

// Settle implements Store. When Redis does not answer, Run retries the
// settlement until it applies or the reservation's lease has run out.
func (s *RedisStore) Settle(ctx context.Context, req Request, actualTokens int64) error {
	if len(req.Scopes) == 0 {
		return nil
	}
	if _, err := s.call(ctx, s.settleOp(req, actualTokens)); err != nil {
		return fmt.Errorf("running settle script (retrying in the background): %w", err)
	}
	return nil
}

// SettleNoWait settles as Settle does without waiting for Redis: the settlement leaves in the
// next pipeline, behind every call this store queued before it and ahead of every call queued
// after it (one connection, in order), so this instance's next reserve or peek sees it applied;
// other instances see it once that pipeline is answered, about a round trip after the return. A
// failure is retried by Run, as Settle's are. req's scopes must not change afterwards (a
// Reservation's never do).
func (s *RedisStore) SettleNoWait(req Request, actualTokens int64) {
	if len(req.Scopes) == 0 {
		return
	}
	o := s.settleOp(req, actualTokens)
	o.state.Store(opAbandoned) // nobody waits: the sender hands a failure to Run
	s.enqueue(o)
}

// settleOp returns the script call settling req with actualTokens, and forgets the lease Run
// renewed for it.
func (s *RedisStore) settleOp(req Request, actualTokens int64) *redisOp {
	expires := s.localNow() + int64(s.lease)
	s.mu.Lock()
	if h := s.held[req.ID]; h != nil {
		expires = h.expires
		delete(s.held, req.ID)
	}
	s.mu.Unlock()
	delta := min(max(actualTokens-req.Cost.Tokens, -2*MaxLimit), 2*MaxLimit)
	return &redisOp{script: s.settle, keys: s.keys(req.Scopes, req.ID), args: s.settleArgs(req, delta),
		settle: &pendingSettle{req: req, delta: delta, expires: expires}}
}

func (s *RedisStore) settleArgs(req Request, delta int64) []any {
	args := make([]any, 0, 4+5*len(req.Scopes))
	args = append(args, s.nowArg(), delta, req.ID, s.leaseMS)
	return appendLimits(args, req.Scopes)
}

// tick is Run's period: a third of the lease, at most a second so that
// slots are released soon after Redis answers again.
func (s *RedisStore) tick() time.Duration {
	return max(min(s.lease/3, time.Second), time.Millisecond)
}

// Run renews the leases of the reservations in flight and retries the
// settlements and releases Redis did not answer, in one pipelined call per
// tick (a third of the lease, at most 1s), until ctx is done. Start it once
// per store in its own goroutine: without it, reservations expire after one
// lease and nothing is retried. report, when not nil, gets the first error
// of each outage, dropped retries and recovered panics.
func (s *RedisStore) Run(ctx context.Context, report func(error)) {
	if report == nil {
		report = func(error) {}
	}
	t := time.NewTicker(s.tick())
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := s.maintain(ctx)
		if ctx.Err() != nil {
			return // the store is being closed: its errors say nothing
		}
		if err != nil && !failing {
			report(err)
		}
		failing = err != nil
		s.mu.Lock()
		dropped := s.dropped
		s.dropped = 0
		s.mu.Unlock()
		if dropped > 0 {
			report(fmt.Errorf("retrying settlements: dropped the %d oldest of more than %d waiting; their reservations expire with their lease", dropped, maxPending))
		}
	}
}

// maintain runs one tick of Run and returns the first error.
func (s *RedisStore) maintain(ctx context.Context) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("maintaining rate limit leases: panic: %v", v)
		}
	}()
	now := s.localNow()
	type renewal struct {
		id string
		h  *heldLease
	}
	var due []renewal
	s.mu.Lock()
	for id, h := range s.held {
		if h.renewAt <= now {
			due = append(due, renewal{id, h})
		}
	}
	pend := s.pending
	s.pending = nil
	s.mu.Unlock()

	var (
		failed []pendingSettle
		errs   error
		nowArg = s.nowArg()
	)
	for len(due) > 0 || len(pend) > 0 {
		nr := min(len(due), maxPipeline)
		np := min(len(pend), maxPipeline-nr)
		cmds, perr := s.pipeline(ctx, func(pipe redis.Pipeliner) {
			for _, r := range due[:nr] {
				s.renew.EvalSha(ctx, pipe, r.h.keys, nowArg, s.leaseMS, r.id)
			}
			for i := range pend[:np] {
				p := &pend[i]
				s.settle.EvalSha(ctx, pipe, s.keys(p.req.Scopes, p.req.ID), s.settleArgs(p.req, p.delta)...)
			}
		})
		errs = errors.Join(errs, perr)
		s.mu.Lock()
		for i, r := range due[:nr] {
			n, err := cmds[i].(*redis.Cmd).Int64()
			switch {
			case err != nil:
				// Keep trying: the request still runs.
			case n == 0:
				// Settled meanwhile, expired, or lost with a Redis restart.
				if s.held[r.id] == r.h {
					delete(s.held, r.id)
				}
			default:
				r.h.renewAt = now + int64(s.lease/3)
				r.h.expires = now + int64(s.lease)
			}
		}
		s.mu.Unlock()
		for i := range pend[:np] {
			if cmds[nr+i].Err() != nil && (pend[i].expires == 0 || pend[i].expires > now) {
				failed = append(failed, pend[i])
			}
		}
		due, pend = due[nr:], pend[np:]
	}
	if len(failed) > 0 {
		s.mu.Lock()
		s.pending = append(failed, s.pending...)
		if over := len(s.pending) - maxPending; over > 0 {
			s.pending = append(s.pending[:0], s.pending[over:]...)
			s.dropped += uint64(over)
		}
		s.mu.Unlock()
	}
	if errs != nil {
		return fmt.Errorf("renewing leases and retrying settlements: %w", errs)
	}
	return nil
}

// pipeline runs the commands fill queues in one round trip. When Redis lost
// the scripts (a restart) it loads them and runs the commands once more.
func (s *RedisStore) pipeline(ctx context.Context, fill func(redis.Pipeliner)) ([]redis.Cmder, error) {
	cmds, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error { fill(p); return nil })
	if err == nil || !slices.ContainsFunc(cmds, func(c redis.Cmder) bool { return redis.HasErrorPrefix(c.Err(), "NOSCRIPT") }) {
		return cmds, err
	}
	for _, sc := range [...]*redis.Script{s.renew, s.settle} {
		if lerr := sc.Load(ctx, s.client).Err(); lerr != nil {
			return cmds, lerr
		}
	}
	return s.client.Pipelined(ctx, func(p redis.Pipeliner) error { fill(p); return nil })
}

// Interface guards
var _ Store = (*RedisStore)(nil)
