package store

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// The queue is a list of ready ids and a sorted set of leases rather than
// a Redis Stream: a lease here ends at a time the claimer chose (the
// stream's XAUTOCLAIM only knows idle times, the same for everyone), Extend
// can check that the lease is still the caller's, and leases follow the
// instances' clock, which tests move by hand.

// enqueueChunk is how many items one MULTI of Enqueue adds.
const enqueueChunk = 1000

// dropChunk is how many items one script call of Drop removes.
const dropChunk = 1000

// redisQueue is a named queue in Redis.
type redisQueue struct {
	s    *Redis
	name string
	base string // key prefix of the queue's keys
}

func (q *redisQueue) readyKey() string          { return q.base + "ready" }
func (q *redisQueue) leasedKey() string         { return q.base + "leased" }
func (q *redisQueue) seqKey() string            { return q.base + "seq" }
func (q *redisQueue) itemPrefix() string        { return q.base + "i:" }
func (q *redisQueue) batchKey(id string) string { return q.base + "b:" + esc(id) }

// check reports whether the queue's name can be stored.
func (q *redisQueue) check() error {
	if !validName(q.name) {
		return fmt.Errorf("%w: queue %.40q", ErrInvalidName, q.name)
	}
	return nil
}

// Enqueue adds the items of a batch: item ids from one INCRBY, then a
// MULTI per chunk of items (hashes, the batch's set, the ready list).
func (q *redisQueue) Enqueue(ctx context.Context, batchID string, items [][]byte) error {
	if err := q.check(); err != nil {
		return err
	}
	if !validName(batchID) {
		return fmt.Errorf("%w: batch %.40q", ErrInvalidName, batchID)
	}
	if len(items) == 0 {
		return nil
	}
	last, err := q.s.client.IncrBy(ctx, q.seqKey(), int64(len(items))).Result()
	if err != nil {
		return fail("enqueuing items", err)
	}
	next := last - int64(len(items)) + 1
	for len(items) > 0 {
		chunk := items[:min(len(items), enqueueChunk)]
		items = items[len(chunk):]
		ids := make([]any, len(chunk))
		_, err := q.s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
			for i, data := range chunk {
				id := strconv.FormatInt(next, 10)
				next++
				ids[i] = id
				p.HSet(ctx, q.itemPrefix()+id, "b", batchID, "d", data, "n", 0)
			}
			p.SAdd(ctx, q.batchKey(batchID), ids...)
			p.RPush(ctx, q.readyKey(), ids...)
			return nil
		})
		if err != nil {
			return fail("enqueuing items", err)
		}
	}
	return nil
}

// claimScript leases up to n items: first those whose lease has ended,
// soonest first, then ready ones from the head of the list. Ids whose hash
// is gone were dropped and are skipped. It returns id, batch, data and
// deliveries of each item, flat.
//
// KEYS[1] the ready list, KEYS[2] the leased set. ARGV[1] the item key
// prefix, ARGV[2] now, ARGV[3] the new lease's end (unix ms), ARGV[4] n,
// ARGV[5] the consumer.
var claimScript = redis.NewScript(`
local out, n = {}, tonumber(ARGV[4])
local function take(id)
  local k = ARGV[1] .. id
  local v = redis.call('HMGET', k, 'b', 'd')
  if not v[1] then return false end
  local deliveries = redis.call('HINCRBY', k, 'n', 1)
  redis.call('HSET', k, 'c', ARGV[5])
  redis.call('ZADD', KEYS[2], ARGV[3], id)
  out[#out+1] = id
  out[#out+1] = v[1]
  out[#out+1] = v[2]
  out[#out+1] = deliveries
  return true
end
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], '-inf', ARGV[2], 'BYSCORE', 'LIMIT', 0, n)) do
  if not take(id) then redis.call('ZREM', KEYS[2], id) end
end
while #out < 4 * n do
  local id = redis.call('LPOP', KEYS[1])
  if not id then break end
  take(id)
end
return out
`)

// Claim leases up to n items in one script call.
func (q *redisQueue) Claim(ctx context.Context, consumer string, n int, lease time.Duration) ([]Item, error) {
	if err := q.check(); err != nil {
		return nil, err
	}
	if err := checkLease(lease); err != nil {
		return nil, err
	}
	n = claimCount(n)
	if n == 0 {
		return nil, nil
	}
	now := q.s.now()
	deadline := now.Add(lease).UnixMilli()
	res, err := claimScript.Run(ctx, q.s.client, []string{q.readyKey(), q.leasedKey()},
		q.itemPrefix(), now.UnixMilli(), deadline, n, consumer).Slice()
	if err != nil {
		return nil, fail("claiming queue items", err)
	}
	items := make([]Item, 0, len(res)/4)
	for i := 0; i+3 < len(res); i += 4 {
		id, _ := res[i].(string)
		batch, _ := res[i+1].(string)
		data, _ := res[i+2].(string)
		deliveries, _ := res[i+3].(int64)
		items = append(items, Item{ID: id, BatchID: batch, Data: []byte(data),
			Deliveries: int(deliveries), LeaseUntil: time.UnixMilli(deadline)})
	}
	return items, nil
}

// ackScript completes a held item: it leaves the leased set, its hash and
// its batch's set. It returns 0 if the item was not held.
//
// KEYS[1] the leased set, KEYS[2] the item, KEYS[3] the batch's set.
// ARGV[1] the id, ARGV[2] the batch id.
var ackScript = redis.NewScript(`
if redis.call('HGET', KEYS[2], 'b') ~= ARGV[2] then return 0 end
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[3], ARGV[1])
return 1
`)

// Ack marks a claimed item done.
func (q *redisQueue) Ack(ctx context.Context, it Item) error {
	if err := q.check(); err != nil {
		return err
	}
	keys := []string{q.leasedKey(), q.itemPrefix() + it.ID, q.batchKey(it.BatchID)}
	n, err := ackScript.Run(ctx, q.s.client, keys, it.ID, it.BatchID).Int()
	if err != nil {
		return fail("acking queue item", err)
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// extendScript moves the end of a lease if the item is still held and
// claimed no more times than the caller knows of. It returns 0 otherwise.
//
// KEYS[1] the leased set, KEYS[2] the item. ARGV[1] the id, ARGV[2] the
// caller's deliveries, ARGV[3] the lease's new end (unix ms).
var extendScript = redis.NewScript(`
if redis.call('HGET', KEYS[2], 'n') ~= ARGV[2] then return 0 end
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
`)

// Extend moves the lease's end if it is still the item's lease.
func (q *redisQueue) Extend(ctx context.Context, it Item, lease time.Duration) error {
	if err := q.check(); err != nil {
		return err
	}
	if err := checkLease(lease); err != nil {
		return err
	}
	deadline := q.s.now().Add(lease).UnixMilli()
	n, err := extendScript.Run(ctx, q.s.client, []string{q.leasedKey(), q.itemPrefix() + it.ID},
		it.ID, it.Deliveries, deadline).Int()
	if err != nil {
		return fail("extending lease", err)
	}
	if n == 0 {
		return ErrLeaseLost
	}
	return nil
}

// dropScript removes up to ARGV[2] of a batch's items: their hashes and
// leases. Their ids left in the ready list are skipped by Claim. It
// returns how many it removed.
//
// KEYS[1] the batch's set, KEYS[2] the leased set. ARGV[1] the item key
// prefix, ARGV[2] the count.
var dropScript = redis.NewScript(`
local ids = redis.call('SPOP', KEYS[1], ARGV[2])
for _, id in ipairs(ids) do
  redis.call('DEL', ARGV[1] .. id)
  redis.call('ZREM', KEYS[2], id)
end
return #ids
`)

// Drop removes the batch's items that are not acked yet, a chunk per
// script call.
func (q *redisQueue) Drop(ctx context.Context, batchID string) (int, error) {
	if err := q.check(); err != nil {
		return 0, err
	}
	if !validName(batchID) {
		return 0, nil
	}
	total := 0
	for {
		n, err := dropScript.Run(ctx, q.s.client, []string{q.batchKey(batchID), q.leasedKey()},
			q.itemPrefix(), dropChunk).Int()
		if err != nil {
			return total, fail("dropping batch items", err)
		}
		total += n
		if n < dropChunk {
			return total, nil
		}
	}
}

// Pending counts the batch's items not acked yet.
func (q *redisQueue) Pending(ctx context.Context, batchID string) (int, error) {
	if err := q.check(); err != nil {
		return 0, err
	}
	if !validName(batchID) {
		return 0, nil
	}
	n, err := q.s.client.SCard(ctx, q.batchKey(batchID)).Result()
	if err != nil {
		return 0, fail("counting batch items", err)
	}
	return int(n), nil
}
