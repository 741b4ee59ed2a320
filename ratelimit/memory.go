package ratelimit

import (
	"context"
	"sync"
	"time"
)

const numShards = 64

// maxStackScopes is how many scopes a call handles without a heap buffer.
const maxStackScopes = 8

// MemoryOptions configure a MemoryStore.
type MemoryOptions struct {
	// Now returns the current time. Default: time.Now.
	Now func() time.Time
	// IdleTTL is how long a full, unused bucket is kept before Sweep evicts
	// it. Default: 10m.
	IdleTTL time.Duration
}

// MemoryStore keeps buckets in process memory, sharded by scope id so that
// unrelated scopes do not contend. It is exact under concurrency. Run Sweep
// periodically to evict idle buckets.
type MemoryStore struct {
	now     func() time.Time
	idleTTL int64
	shards  [numShards]memShard
}

type memShard struct {
	mu sync.Mutex
	m  map[string]*memBucket
	_  [40]byte // keep shards on separate cache lines
}

type memBucket struct {
	st       scopeState
	lastUsed int64 // ns
	fullAt   int64 // ns
}

// NewMemoryStore returns an empty store.
func NewMemoryStore(opts MemoryOptions) *MemoryStore {
	s := &MemoryStore{now: opts.Now, idleTTL: int64(opts.IdleTTL)}
	if s.now == nil {
		s.now = time.Now
	}
	if s.idleTTL <= 0 {
		s.idleTTL = int64(10 * time.Minute)
	}
	for i := range s.shards {
		s.shards[i].m = make(map[string]*memBucket)
	}
	return s
}

// shardOf hashes id with FNV-1a.
func shardOf(id string) uint8 {
	h := uint32(2166136261)
	for i := 0; i < len(id); i++ {
		h ^= uint32(id[i])
		h *= 16777619
	}
	return uint8(h % numShards)
}

// lock locks the shards of scopes in ascending order, each once, and returns
// them for unlock.
func (s *MemoryStore) lock(scopes []Scope, buf []uint8) []uint8 {
	for i := range scopes {
		sh := shardOf(scopes[i].ID)
		j := len(buf)
		dup := false
		for j > 0 && buf[j-1] >= sh {
			if buf[j-1] == sh {
				dup = true
				break
			}
			j--
		}
		if dup {
			continue
		}
		buf = append(buf, 0)
		copy(buf[j+1:], buf[j:])
		buf[j] = sh
	}
	for _, sh := range buf {
		s.shards[sh].mu.Lock()
	}
	return buf
}

func (s *MemoryStore) unlock(locked []uint8) {
	for i := len(locked) - 1; i >= 0; i-- {
		s.shards[locked[i]].mu.Unlock()
	}
}

// Reserve implements Store.
func (s *MemoryStore) Reserve(_ context.Context, req Request) (Decision, error) {
	return s.do(req.Scopes, req.Cost, true), nil
}

// Peek implements Store.
func (s *MemoryStore) Peek(_ context.Context, scopes []Scope, cost Cost) (Decision, error) {
	return s.do(scopes, cost, false), nil
}

func (s *MemoryStore) do(scopes []Scope, cost Cost, take bool) Decision {
	var (
		stBuf   [maxStackScopes]scopeState
		bBuf    [maxStackScopes]*memBucket
		lockBuf [maxStackScopes]uint8
	)
	st, bs := stBuf[:0], bBuf[:0]
	if len(scopes) > maxStackScopes {
		st = make([]scopeState, 0, len(scopes))
		bs = make([]*memBucket, 0, len(scopes))
	}
	locked := s.lock(scopes, lockBuf[:0])
	defer s.unlock(locked)
	now := s.now().UnixNano()
	for i := range scopes {
		sh := &s.shards[shardOf(scopes[i].ID)]
		b := sh.m[scopes[i].ID]
		if b == nil && take {
			b = &memBucket{}
			sh.m[scopes[i].ID] = b
		}
		var ss scopeState
		if b != nil {
			ss = b.st
		}
		ss.refillAll(&scopes[i].Limits, now)
		st = append(st, ss)
		bs = append(bs, b)
	}
	d := decide(now, scopes, cost, st, take)
	// Like the Redis script, write only what was taken: refilling is not
	// idempotent across a limit change, so both stores refill at the same
	// moments.
	if take && d.Allowed {
		for i, b := range bs {
			b.st = st[i]
			b.lastUsed = now
			b.fullAt = st[i].fullAt(&scopes[i].Limits, now)
		}
	}
	return d
}

// Settle implements Store.
func (s *MemoryStore) Settle(_ context.Context, req Request, actualTokens int64) error {
	var lockBuf [maxStackScopes]uint8
	locked := s.lock(req.Scopes, lockBuf[:0])
	defer s.unlock(locked)
	now := s.now().UnixNano()
	delta := actualTokens - req.Cost.Tokens
	for i := range req.Scopes {
		sc := &req.Scopes[i]
		sh := &s.shards[shardOf(sc.ID)]
		b := sh.m[sc.ID]
		if b == nil {
			if delta <= 0 {
				continue // evicted: the bucket is full, nothing to refund or release
			}
			b = &memBucket{}
			sh.m[sc.ID] = b
		}
		b.st.refillAll(&sc.Limits, now)
		if delta != 0 {
			for _, k := range [...]int{dimTPM, dimTPD} {
				if c := limitOf(&sc.Limits, k); c > 0 {
					b.st.lv[k].adjust(c, k, delta, now)
				}
			}
		}
		if sc.Limits.MaxConcurrent > 0 && b.st.inflight > 0 {
			b.st.inflight--
		}
		b.lastUsed = now
		b.fullAt = b.st.fullAt(&sc.Limits, now)
	}
	return nil
}

// Sweep evicts buckets that are full again, hold no concurrency slot and were
// unused for IdleTTL, and returns how many it evicted. Run it periodically.
func (s *MemoryStore) Sweep(now time.Time) int {
	n := now.UnixNano()
	evicted := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for id, b := range sh.m {
			if b.st.inflight == 0 && n >= b.fullAt && n-b.lastUsed >= s.idleTTL {
				delete(sh.m, id)
				evicted++
			}
		}
		sh.mu.Unlock()
	}
	return evicted
}

// Len returns the number of buckets held.
func (s *MemoryStore) Len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

// Interface guards
var _ Store = (*MemoryStore)(nil)
