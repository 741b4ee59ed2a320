package ratelimit

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisOptions configure a RedisStore.
type RedisOptions struct {
	// Prefix namespaces every key. Default: "aigw:rl:". With Redis Cluster,
	// put a hash tag in it (e.g. "{aigw:rl}:") so that all scopes of one
	// call live in one slot.
	Prefix string
	// Now, when set, replaces the Redis server time (for tests). Default:
	// nil, the server's TIME, so instances with skewed clocks agree.
	Now func() time.Time
	// Lease is how long a concurrency slot lives when it is never released
	// (a crashed instance). Default: 10m.
	Lease time.Duration
}

// RedisStore keeps buckets in Redis so that all gateway instances share the
// limits. Each Reserve and each Settle is one Lua script call that is atomic
// across all scopes. Idle keys expire by themselves.
//
// go-redis retries a command after a network error; a Reserve whose reply
// was lost may then be taken twice (too strict, never too lenient). Set the
// client's MaxRetries to -1 to rule that out.
type RedisStore struct {
	client  redis.UniversalClient
	prefix  string
	now     func() time.Time
	leaseMS int64
	reserve *redis.Script
	settle  *redis.Script
}

// NewRedisStore returns a store over client. It does no I/O.
func NewRedisStore(client redis.UniversalClient, opts RedisOptions) *RedisStore {
	s := &RedisStore{
		client:  client,
		prefix:  opts.Prefix,
		now:     opts.Now,
		leaseMS: opts.Lease.Milliseconds(),
		reserve: redis.NewScript(reserveScript),
		settle:  redis.NewScript(settleScript),
	}
	if s.prefix == "" {
		s.prefix = "aigw:rl:"
	}
	if s.leaseMS <= 0 {
		s.leaseMS = (10 * time.Minute).Milliseconds()
	}
	return s
}

// BucketKey returns the key of the hash holding scope id's buckets.
func (s *RedisStore) BucketKey(id string) string { return s.prefix + "b:" + id }

// SlotsKey returns the key of the sorted set holding scope id's
// concurrency slots.
func (s *RedisStore) SlotsKey(id string) string { return s.prefix + "c:" + id }

func (s *RedisStore) nowArg() string {
	if s.now == nil {
		return ""
	}
	return strconv.FormatInt(s.now().UnixMilli(), 10)
}

func (s *RedisStore) keys(scopes []Scope) []string {
	keys := make([]string, 0, 2*len(scopes))
	for i := range scopes {
		keys = append(keys, s.BucketKey(scopes[i].ID), s.SlotsKey(scopes[i].ID))
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

// Reserve implements Store.
func (s *RedisStore) Reserve(ctx context.Context, req Request) (Decision, error) {
	return s.run(ctx, req, true)
}

// Peek implements Store.
func (s *RedisStore) Peek(ctx context.Context, scopes []Scope) (Decision, error) {
	return s.run(ctx, Request{Scopes: scopes}, false)
}

func (s *RedisStore) run(ctx context.Context, req Request, take bool) (Decision, error) {
	if len(req.Scopes) == 0 {
		return Decision{Allowed: take}, nil
	}
	takeArg := "0"
	if take {
		takeArg = "1"
	}
	args := make([]any, 0, 6+5*len(req.Scopes))
	args = append(args, s.nowArg(), takeArg, req.Cost.Requests, req.Cost.Tokens, s.leaseMS, req.ID)
	args = appendLimits(args, req.Scopes)
	reply, err := s.reserve.Run(ctx, s.client, s.keys(req.Scopes), args...).Int64Slice()
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
	return d, nil
}

// Settle implements Store.
func (s *RedisStore) Settle(ctx context.Context, req Request, actualTokens int64) error {
	if len(req.Scopes) == 0 {
		return nil
	}
	delta := min(max(actualTokens-req.Cost.Tokens, -2*MaxLimit), 2*MaxLimit)
	args := make([]any, 0, 3+5*len(req.Scopes))
	args = append(args, s.nowArg(), delta, req.ID)
	args = appendLimits(args, req.Scopes)
	if err := s.settle.Run(ctx, s.client, s.keys(req.Scopes), args...).Err(); err != nil {
		return fmt.Errorf("running settle script: %w", err)
	}
	return nil
}

// Interface guards
var _ Store = (*RedisStore)(nil)
