package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Layout in Redis (<p> is RedisOptions.Prefix; names are escaped so that
// ':', '%', '{' and '}' in them cannot run into the separators or a hash
// tag):
//
//	<p>obj:<kind>:<owner>:<id>   hash  d (data), v (version), e (expires, unix ms, 0 for never)
//	<p>idx:<kind>:<owner>        zset  the owner's ids of kind, all at score 0, listed by lex range
//	<p>exp                       zset  <kind>:<owner>:<id> at its expiry (unix ms): what Sweep deletes
//
// and for each queue, under <p>q:<name>: (see redis_queue.go)
//
//	ready                        list  ids of items not claimed yet, in enqueue order
//	leased                       zset  ids of claimed items at the end of their lease (unix ms)
//	i:<id>                       hash  b (batch), d (data), n (deliveries), c (last consumer)
//	b:<batch>                    set   the batch's ids not acked yet
//	seq                          string  the last item id given
//
// The owner is part of every object key, so a lookup under another owner
// reads another key and finds nothing.

// DefaultRedisPrefix is the key prefix when RedisOptions.Prefix is empty.
const DefaultRedisPrefix = "aigw:store:"

// RedisOptions configure a Redis backend.
type RedisOptions struct {
	// Prefix namespaces every key. Default: DefaultRedisPrefix. With Redis
	// Cluster, put a hash tag in it ("{aigw:store}:") so that every key the
	// scripts touch is in one slot.
	Prefix string
	// Now replaces the clock that expiry and leases are measured on (for
	// tests). Default: time.Now. Instances compare their own clocks, which
	// should agree to well within a lease (NTP does).
	Now func() time.Time
}

// Redis is the backend for several instances: owned objects and queues in
// one Redis (6.2 or later), which every instance uses. Each write of a
// record or a lease is one MULTI or one Lua script, so it applies whole or
// not at all. It connects lazily: NewRedis does no I/O, and a Redis that
// cannot be reached makes each call return ErrUnavailable until it can.
type Redis struct {
	client redis.UniversalClient
	prefix string
	now    func() time.Time
}

// NewRedis returns the backend on client, which the caller owns and
// closes.
func NewRedis(client redis.UniversalClient, opts RedisOptions) *Redis {
	if opts.Prefix == "" {
		opts.Prefix = DefaultRedisPrefix
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Redis{client: client, prefix: opts.Prefix, now: opts.Now}
}

// Close does nothing: the client is the caller's.
func (s *Redis) Close() error { return nil }

var (
	escaper   = strings.NewReplacer("%", "%25", ":", "%3A", "{", "%7B", "}", "%7D")
	unescaper = strings.NewReplacer("%25", "%", "%3A", ":", "%7B", "{", "%7D", "}")
)

// esc escapes a name for use in a key.
func esc(s string) string { return escaper.Replace(s) }

// recordKey is the hash of a record.
func (s *Redis) recordKey(kind, owner, id string) string {
	return s.prefix + "obj:" + expiryMember(kind, owner, id)
}

// indexKey is the sorted set of the owner's ids of kind.
func (s *Redis) indexKey(kind, owner string) string {
	return s.prefix + "idx:" + esc(kind) + ":" + esc(owner)
}

// expiryKey is the sorted set of records by expiry.
func (s *Redis) expiryKey() string { return s.prefix + "exp" }

// expiryMember names a record in the expiry set.
func expiryMember(kind, owner, id string) string {
	return esc(kind) + ":" + esc(owner) + ":" + esc(id)
}

// fail wraps an error of the client: ErrUnavailable, unless the caller's
// context ended.
func fail(op string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", op, err)
	}
	return fmt.Errorf("%s: %w", op, unavailable(err))
}

// nowMS returns the clock in unix ms.
func (s *Redis) nowMS() int64 { return s.now().UnixMilli() }

// Put creates the record or replaces it whole, in one MULTI.
func (s *Redis) Put(ctx context.Context, r Record) error {
	if err := checkRecordNames(r.Kind, r.Owner, r.ID); err != nil {
		return err
	}
	k := s.recordKey(r.Kind, r.Owner, r.ID)
	exp := expiresMS(r.ExpiresAt)
	member := expiryMember(r.Kind, r.Owner, r.ID)
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		// HINCRBY rather than a fresh version: a replaced record must never
		// get back a version an Update in flight has read.
		p.HSet(ctx, k, "d", r.Data, "e", exp)
		p.HIncrBy(ctx, k, "v", 1)
		p.ZAdd(ctx, s.indexKey(r.Kind, r.Owner), redis.Z{Member: r.ID})
		if exp != 0 {
			p.ZAdd(ctx, s.expiryKey(), redis.Z{Score: float64(exp), Member: member})
		} else {
			p.ZRem(ctx, s.expiryKey(), member)
		}
		return nil
	})
	if err != nil {
		return fail("putting record", err)
	}
	return nil
}

// Get returns the record, or ErrNotFound.
func (s *Redis) Get(ctx context.Context, kind, owner, id string) (Record, error) {
	if checkRecordNames(kind, owner, id) != nil {
		return Record{}, ErrNotFound
	}
	vals, err := s.client.HMGet(ctx, s.recordKey(kind, owner, id), "d", "v", "e").Result()
	if err != nil {
		return Record{}, fail("getting record", err)
	}
	r, ok := parseRecord(vals, kind, owner, id, s.nowMS())
	if !ok {
		return Record{}, ErrNotFound
	}
	return r, nil
}

// parseRecord reads the reply of HMGET d v e; false if the record is
// missing or expired.
func parseRecord(vals []any, kind, owner, id string, now int64) (Record, bool) {
	if len(vals) != 3 {
		return Record{}, false
	}
	data, ok := vals[0].(string)
	if !ok {
		return Record{}, false
	}
	v, _ := vals[1].(string)
	e, _ := vals[2].(string)
	version, _ := strconv.ParseUint(v, 10, 64)
	exp, _ := strconv.ParseInt(e, 10, 64)
	if expired(exp, now) {
		return Record{}, false
	}
	return Record{Kind: kind, Owner: owner, ID: id, Data: []byte(data),
		ExpiresAt: expiresTime(exp), Version: version}, true
}

// casScript writes a record's data if its version is still ARGV[1] and
// returns the new version, or 0 if another write came first.
//
// KEYS[1] the record. ARGV[1] the version read, ARGV[2] the new data.
var casScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'd', ARGV[2])
return redis.call('HINCRBY', KEYS[1], 'v', 1)
`)

// Update reads the record, applies fn and writes the result if the
// version has not moved meanwhile; otherwise it reads again. (A record
// deleted and put again under the same id in between would start its
// versions anew; ids from NewID are never put again after a delete.)
func (s *Redis) Update(ctx context.Context, kind, owner, id string, fn func(old []byte) ([]byte, error)) (Record, error) {
	if checkRecordNames(kind, owner, id) != nil {
		return Record{}, ErrNotFound
	}
	k := s.recordKey(kind, owner, id)
	for {
		vals, err := s.client.HMGet(ctx, k, "d", "v", "e").Result()
		if err != nil {
			return Record{}, fail("reading record to update", err)
		}
		r, ok := parseRecord(vals, kind, owner, id, s.nowMS())
		if !ok {
			return Record{}, ErrNotFound
		}
		data, err := fn(r.Data)
		if err != nil {
			return Record{}, err
		}
		version, err := casScript.Run(ctx, s.client, []string{k}, r.Version, data).Int64()
		if err != nil {
			return Record{}, fail("updating record", err)
		}
		if version > 0 {
			r.Data, r.Version = data, uint64(version)
			return r, nil
		}
		if err := ctx.Err(); err != nil {
			return Record{}, err
		}
	}
}

// deleteScript deletes a record with its index and expiry entries. Delete
// (ARGV[4] "0") deletes only a live record, Sweep (ARGV[4] "1") only an
// expired one. It returns 1 if it deleted the record, 0 if there was none
// (it removes stray entries then), -1 if it left the record alone.
//
// KEYS[1] the record, KEYS[2] the owner's index, KEYS[3] the expiry set.
// ARGV[1] the id, ARGV[2] the expiry member, ARGV[3] now (unix ms).
var deleteScript = redis.NewScript(`
local e = redis.call('HGET', KEYS[1], 'e')
if not e then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[2])
  return 0
end
e = tonumber(e)
local gone = e ~= 0 and e <= tonumber(ARGV[3])
if gone ~= (ARGV[4] == '1') then return -1 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[2])
return 1
`)

// deleteRecord runs deleteScript and returns its result; sweeping selects
// Sweep's behaviour.
func (s *Redis) deleteRecord(ctx context.Context, kind, owner, id string, sweeping bool) (int, error) {
	keys := []string{s.recordKey(kind, owner, id), s.indexKey(kind, owner), s.expiryKey()}
	mode := "0"
	if sweeping {
		mode = "1"
	}
	return deleteScript.Run(ctx, s.client, keys, id, expiryMember(kind, owner, id), s.nowMS(), mode).Int()
}

// Delete removes the record, or returns ErrNotFound.
func (s *Redis) Delete(ctx context.Context, kind, owner, id string) error {
	if checkRecordNames(kind, owner, id) != nil {
		return ErrNotFound
	}
	res, err := s.deleteRecord(ctx, kind, owner, id, false)
	if err != nil {
		return fail("deleting record", err)
	}
	if res != 1 {
		return ErrNotFound // missing, or expired and left to Sweep
	}
	return nil
}

// matchChunk is how many ids List reads at a time when Match may reject
// some.
const matchChunk = 100

// List walks the owner's index by lex range and reads the records a chunk
// at a time in one pipeline, skipping expired ones.
func (s *Redis) List(ctx context.Context, kind, owner string, opts ListOptions) (Page, error) {
	sc, err := planScan(opts)
	if err != nil {
		return Page{}, err
	}
	if !validName(kind) || !validName(owner) {
		return Page{}, nil
	}
	first, last := "-", "+" // the walk's ends
	if !sc.asc {
		first, last = "+", "-"
	}
	stop := last
	if sc.to != "" {
		stop = "(" + sc.to
	}
	now := s.nowMS()
	var recs []Record
	for from := sc.from; len(recs) <= sc.limit; {
		start := first
		if from != "" {
			start = "(" + from
		}
		chunk := sc.limit + 1 - len(recs)
		if opts.Match != nil {
			chunk = max(chunk, matchChunk)
		}
		ids, err := s.client.ZRangeArgs(ctx, redis.ZRangeArgs{Key: s.indexKey(kind, owner),
			Start: start, Stop: stop, ByLex: true, Rev: !sc.asc, Count: int64(chunk)}).Result()
		if err != nil {
			return Page{}, fail("listing records", err)
		}
		if len(ids) == 0 {
			break
		}
		cmds, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, id := range ids {
				p.HMGet(ctx, s.recordKey(kind, owner, id), "d", "v", "e")
			}
			return nil
		})
		if err != nil {
			return Page{}, fail("listing records", err)
		}
		for i, id := range ids {
			r, ok := parseRecord(cmds[i].(*redis.SliceCmd).Val(), kind, owner, id, now)
			if ok && opts.keep(r) {
				recs = append(recs, r)
				if len(recs) > sc.limit {
					break
				}
			}
		}
		if len(ids) < chunk {
			break
		}
		from = ids[len(ids)-1]
	}
	return sc.page(recs), nil
}

// Sweep deletes the records whose expiry has passed, a chunk at a time.
func (s *Redis) Sweep(ctx context.Context) (int, error) {
	total := 0
	for {
		now := s.nowMS()
		members, err := s.client.ZRangeArgs(ctx, redis.ZRangeArgs{Key: s.expiryKey(),
			Start: "-inf", Stop: now, ByScore: true, Count: sweepChunk}).Result()
		if err != nil {
			return total, fail("sweeping records", err)
		}
		progress := false // whether this round changed the expiry set
		for _, m := range members {
			parts := strings.Split(m, ":")
			if len(parts) != 3 {
				if err := s.client.ZRem(ctx, s.expiryKey(), m).Err(); err != nil {
					return total, fail("sweeping records", err)
				}
				progress = true
				continue
			}
			kind, owner, id := unescaper.Replace(parts[0]), unescaper.Replace(parts[1]), unescaper.Replace(parts[2])
			res, err := s.deleteRecord(ctx, kind, owner, id, true)
			if err != nil {
				return total, fail("sweeping records", err)
			}
			if res == 1 {
				total++
			}
			progress = progress || res >= 0
		}
		if len(members) < sweepChunk || !progress {
			return total, nil
		}
	}
}

// Queue returns the queue of that name.
func (s *Redis) Queue(name string) Queue {
	return &redisQueue{s: s, name: name, base: s.prefix + "q:" + esc(name) + ":"}
}

// Interface guards
var _ Backend = (*Redis)(nil)
