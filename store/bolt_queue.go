package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// boltQueue is a named queue in a Bolt file.
type boltQueue struct {
	b    *Bolt
	name string
}

// queueBuckets are the buckets of one queue.
type queueBuckets struct {
	items, ready, leased, batches *bolt.Bucket
}

// buckets returns the queue's buckets, creating them in a write
// transaction; in a read transaction it returns false if the queue was
// never used.
func (q *boltQueue) buckets(tx *bolt.Tx) (queueBuckets, bool, error) {
	if !validName(q.name) {
		return queueBuckets{}, false, fmt.Errorf("%w: queue %.40q", ErrInvalidName, q.name)
	}
	root := tx.Bucket(queuesBucket)
	if !tx.Writable() {
		qb := root.Bucket([]byte(q.name))
		if qb == nil {
			return queueBuckets{}, false, nil
		}
		return queueBuckets{qb.Bucket(itemsBucket), qb.Bucket(readyBucket),
			qb.Bucket(leasedBucket), qb.Bucket(batchesBucket)}, true, nil
	}
	qb, err := root.CreateBucketIfNotExists([]byte(q.name))
	if err != nil {
		return queueBuckets{}, false, err
	}
	var bs [4]*bolt.Bucket
	for i, name := range [][]byte{itemsBucket, readyBucket, leasedBucket, batchesBucket} {
		if bs[i], err = qb.CreateBucketIfNotExists(name); err != nil {
			return queueBuckets{}, false, err
		}
	}
	return queueBuckets{bs[0], bs[1], bs[2], bs[3]}, true, nil
}

// Enqueue adds the items of a batch in one transaction: all or none.
func (q *boltQueue) Enqueue(ctx context.Context, batchID string, items [][]byte) error {
	if !validName(batchID) {
		return fmt.Errorf("%w: batch %.40q", ErrInvalidName, batchID)
	}
	if len(items) == 0 {
		return nil
	}
	return q.b.update(func(tx *bolt.Tx) error {
		qb, _, err := q.buckets(tx)
		if err != nil {
			return err
		}
		bb, err := qb.batches.CreateBucketIfNotExists([]byte(batchID))
		if err != nil {
			return err
		}
		for _, data := range items {
			seq, err := qb.items.NextSequence()
			if err != nil {
				return err
			}
			k := seqKey(seq)
			v := encodeItem(boltItem{batch: batchID, data: data})
			if err := errors.Join(qb.items.Put(k, v), qb.ready.Put(k, empty), bb.Put(k, empty)); err != nil {
				return err
			}
		}
		return nil
	})
}

// Claim leases up to n items: those whose lease ran out, then ready ones.
func (q *boltQueue) Claim(ctx context.Context, consumer string, n int, lease time.Duration) ([]Item, error) {
	if err := checkLease(lease); err != nil {
		return nil, err
	}
	n = claimCount(n)
	if n == 0 {
		return nil, nil
	}
	var out []Item
	err := q.b.update(func(tx *bolt.Tx) error {
		qb, _, err := q.buckets(tx)
		if err != nil {
			return err
		}
		now := q.b.now()
		deadline := now.Add(lease).UnixMilli()
		take := func(k []byte) error {
			v := qb.items.Get(k)
			if v == nil {
				return nil // dropped
			}
			it := decodeItem(v)
			it.deadline, it.deliveries, it.consumer = deadline, it.deliveries+1, consumer
			if err := qb.items.Put(k, encodeItem(it)); err != nil {
				return err
			}
			if err := qb.leased.Put(leasedKey(deadline, k), empty); err != nil {
				return err
			}
			out = append(out, Item{ID: hex.EncodeToString(k), BatchID: it.batch, Data: it.data,
				Deliveries: int(it.deliveries), LeaseUntil: time.UnixMilli(deadline)})
			return nil
		}
		// Leases that ran out, soonest first. Keys are collected before the
		// bucket changes under the cursor.
		var due [][]byte
		c := qb.leased.Cursor()
		for k, _ := c.First(); k != nil && len(due) < n; k, _ = c.Next() {
			if int64(binary.BigEndian.Uint64(k)) > now.UnixMilli() {
				break
			}
			due = append(due, bytes.Clone(k))
		}
		for _, k := range due {
			if err := qb.leased.Delete(k); err != nil {
				return err
			}
			if err := take(k[8:]); err != nil {
				return err
			}
		}
		var ready [][]byte
		c = qb.ready.Cursor()
		for k, _ := c.First(); k != nil && len(out)+len(ready) < n; k, _ = c.Next() {
			ready = append(ready, bytes.Clone(k))
		}
		for _, k := range ready {
			if err := qb.ready.Delete(k); err != nil {
				return err
			}
			if err := take(k); err != nil {
				return err
			}
		}
		if len(out) == 0 && len(due) == 0 && len(ready) == 0 {
			return errNothing
		}
		return nil
	})
	if err != nil && !errors.Is(err, errNothing) {
		return nil, fmt.Errorf("claiming queue items: %w", err)
	}
	return out, nil
}

// Ack marks a claimed item done.
func (q *boltQueue) Ack(ctx context.Context, it Item) error {
	return q.leasedItem(it, ErrNotFound, func(qb queueBuckets, k []byte, cur boltItem) error {
		if cur.batch != it.BatchID {
			return ErrNotFound // not an item Claim returned
		}
		if err := errors.Join(qb.items.Delete(k), qb.leased.Delete(leasedKey(cur.deadline, k))); err != nil {
			return err
		}
		return dropFromBatch(qb.batches, cur.batch, k)
	})
}

// leasedItem runs fn in one update on the stored state of a claimed item, or returns missing
// when it is unknown or was never claimed.
func (q *boltQueue) leasedItem(it Item, missing error, fn func(qb queueBuckets, k []byte, cur boltItem) error) error {
	k, ok := parseSeqKey(it.ID)
	if !ok {
		return missing
	}
	return q.b.update(func(tx *bolt.Tx) error {
		qb, _, err := q.buckets(tx)
		if err != nil {
			return err
		}
		v := qb.items.Get(k)
		if v == nil {
			return missing
		}
		cur := decodeItem(v)
		if cur.deadline == 0 {
			return missing // never claimed
		}
		return fn(qb, k, cur)
	})
}

// dropFromBatch removes k from the batch's pending set, and the set once
// it is empty.
func dropFromBatch(batches *bolt.Bucket, batch string, k []byte) error {
	bb := batches.Bucket([]byte(batch))
	if bb == nil {
		return nil
	}
	if err := bb.Delete(k); err != nil {
		return err
	}
	if first, _ := bb.Cursor().First(); first == nil {
		return batches.DeleteBucket([]byte(batch))
	}
	return nil
}

// Extend moves the lease's end if it is still the item's lease.
func (q *boltQueue) Extend(ctx context.Context, it Item, lease time.Duration) error {
	if err := checkLease(lease); err != nil {
		return err
	}
	return q.leasedItem(it, ErrLeaseLost, func(qb queueBuckets, k []byte, cur boltItem) error {
		if int(cur.deliveries) != it.Deliveries {
			return ErrLeaseLost
		}
		if err := qb.leased.Delete(leasedKey(cur.deadline, k)); err != nil {
			return err
		}
		cur.deadline = q.b.now().Add(lease).UnixMilli()
		return errors.Join(qb.items.Put(k, encodeItem(cur)), qb.leased.Put(leasedKey(cur.deadline, k), empty))
	})
}

// Drop removes the batch's items that are not acked yet.
func (q *boltQueue) Drop(ctx context.Context, batchID string) (int, error) {
	if !validName(batchID) {
		return 0, nil
	}
	n := 0
	err := q.b.update(func(tx *bolt.Tx) error {
		qb, _, err := q.buckets(tx)
		if err != nil {
			return err
		}
		bb := qb.batches.Bucket([]byte(batchID))
		if bb == nil {
			return errNothing
		}
		c := bb.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			if v := qb.items.Get(k); v != nil {
				cur := decodeItem(v)
				idx := qb.ready
				ik := k
				if cur.deadline != 0 {
					idx, ik = qb.leased, leasedKey(cur.deadline, k)
				}
				if err := errors.Join(idx.Delete(ik), qb.items.Delete(k)); err != nil {
					return err
				}
			}
			n++
		}
		return qb.batches.DeleteBucket([]byte(batchID))
	})
	if err != nil && !errors.Is(err, errNothing) {
		return 0, fmt.Errorf("dropping batch items: %w", err)
	}
	return n, nil
}

// Pending counts the batch's items not acked yet.
func (q *boltQueue) Pending(ctx context.Context, batchID string) (int, error) {
	if !validName(batchID) {
		return 0, nil
	}
	n := 0
	err := q.b.view(func(tx *bolt.Tx) error {
		qb, ok, err := q.buckets(tx)
		if err != nil || !ok {
			return err
		}
		bb := qb.batches.Bucket([]byte(batchID))
		if bb == nil {
			return nil
		}
		c := bb.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			n++
		}
		return nil
	})
	return n, err
}

// boltItem is a queue item's value.
type boltItem struct {
	deadline   int64  // unix ms the lease ends; 0 while ready
	deliveries uint32 // claims so far
	batch      string
	consumer   string // the last claimer
	data       []byte
}

// encodeItem lays out an item's value: deadline(8) deliveries(4), then
// batch and consumer each preceded by their length as a uvarint, then data.
func encodeItem(it boltItem) []byte {
	v := make([]byte, 12, 12+2*binary.MaxVarintLen16+len(it.batch)+len(it.consumer)+len(it.data))
	binary.BigEndian.PutUint64(v, uint64(it.deadline))
	binary.BigEndian.PutUint32(v[8:], it.deliveries)
	v = binary.AppendUvarint(v, uint64(len(it.batch)))
	v = append(v, it.batch...)
	v = binary.AppendUvarint(v, uint64(len(it.consumer)))
	v = append(v, it.consumer...)
	return append(v, it.data...)
}

// decodeItem is the inverse of encodeItem. The result does not alias v.
func decodeItem(v []byte) boltItem {
	var it boltItem
	if len(v) < 12 {
		return it
	}
	it.deadline = int64(binary.BigEndian.Uint64(v))
	it.deliveries = binary.BigEndian.Uint32(v[8:])
	rest := v[12:]
	str := func() string {
		n, w := binary.Uvarint(rest)
		if w <= 0 || uint64(len(rest)-w) < n {
			rest = nil
			return ""
		}
		s := string(rest[w : w+int(n)])
		rest = rest[w+int(n):]
		return s
	}
	it.batch = str()
	it.consumer = str()
	it.data = bytes.Clone(rest)
	return it
}

// seqKey is the key of item seq.
func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// parseSeqKey turns an Item.ID back into its key.
func parseSeqKey(id string) ([]byte, bool) {
	k, err := hex.DecodeString(id)
	return k, err == nil && len(k) == 8
}

// leasedKey is an item's entry in the leased bucket.
func leasedKey(deadline int64, k []byte) []byte {
	return append(binary.BigEndian.AppendUint64(make([]byte, 0, 16), uint64(deadline)), k...)
}
