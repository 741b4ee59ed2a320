package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Layout of the bbolt file:
//
//	objects/<kind>/<owner>/<id>      version(8) expires_ms(8) data
//	expiry/<expires_ms(8)><kind>\x00<owner>\x00<id>   (empty): what Sweep deletes, soonest first
//	queues/<name>/items/<seq(8)>     deadline_ms(8) deliveries(4) batch consumer data
//	queues/<name>/ready/<seq(8)>     (empty): items not claimed yet, in enqueue order
//	queues/<name>/leased/<deadline_ms(8)><seq(8)>   (empty): claimed items, soonest lease end first
//	queues/<name>/batches/<batch>/<seq(8)>          (empty): the batch's items not acked yet
//
// Integers are big-endian so that keys sort by them. An item's deadline is 0
// while it is ready.
var (
	objectsBucket = []byte("objects")
	expiryBucket  = []byte("expiry")
	queuesBucket  = []byte("queues")
	itemsBucket   = []byte("items")
	readyBucket   = []byte("ready")
	leasedBucket  = []byte("leased")
	batchesBucket = []byte("batches")
)

// sweepChunk is how many expired records one Sweep transaction deletes.
const sweepChunk = 1000

// empty is the value of index entries.
var empty = []byte{}

// errNothing rolls back a write transaction that found nothing to do, so
// that an idle Claim costs no disk sync.
var errNothing = errors.New("nothing to do")

// BoltOptions configure a Bolt backend.
type BoltOptions struct {
	// Now replaces the clock that expiry and leases are measured on (for
	// tests). Default: time.Now.
	Now func() time.Time
	// Timeout bounds the wait for the file's lock: one process at a time
	// holds a bbolt file, so keep one Bolt per file across config reloads.
	// Default: 5s.
	Timeout time.Duration
}

// Bolt is the embedded backend: owned objects and queues in one bbolt file,
// nothing to install. Every write is a transaction synced to disk before it
// returns, so what a call reported done survives a crash.
type Bolt struct {
	db  *bolt.DB
	now func() time.Time
}

// OpenBolt opens (or creates, 0600, with its directory) the bbolt file at
// path.
func OpenBolt(path string, opts BoltOptions) (*Bolt, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Second
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating store directory: %w", unavailable(err))
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.Timeout})
	if err != nil {
		return nil, fmt.Errorf("opening store file %s: %w", path, unavailable(err))
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{objectsBucket, expiryBucket, queuesBucket} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("initialising store file %s: %w", path, unavailable(err))
	}
	return &Bolt{db: db, now: opts.Now}, nil
}

// Close closes the file.
func (b *Bolt) Close() error { return b.db.Close() }

// update runs fn in a write transaction. fn's own errors come back as they
// are; those of bbolt (the commit's disk sync above all) are wrapped in
// ErrUnavailable.
func (b *Bolt) update(fn func(tx *bolt.Tx) error) error {
	var inner error
	err := b.db.Update(func(tx *bolt.Tx) error {
		inner = fn(tx)
		return inner
	})
	if err != nil && err != inner {
		return unavailable(err)
	}
	return err
}

// view runs fn in a read transaction, wrapping bbolt's errors as update does.
func (b *Bolt) view(fn func(tx *bolt.Tx) error) error {
	var inner error
	err := b.db.View(func(tx *bolt.Tx) error {
		inner = fn(tx)
		return inner
	})
	if err != nil && err != inner {
		return unavailable(err)
	}
	return err
}

// nowMS returns the clock in unix ms.
func (b *Bolt) nowMS() int64 { return b.now().UnixMilli() }

// Put creates the record or replaces it whole.
func (b *Bolt) Put(ctx context.Context, r Record) error {
	if err := checkRecordNames(r.Kind, r.Owner, r.ID); err != nil {
		return err
	}
	exp := expiresMS(r.ExpiresAt)
	return b.update(func(tx *bolt.Tx) error {
		kinds := tx.Bucket(objectsBucket)
		kb, err := kinds.CreateBucketIfNotExists([]byte(r.Kind))
		if err != nil {
			return err
		}
		ob, err := kb.CreateBucketIfNotExists([]byte(r.Owner))
		if err != nil {
			return err
		}
		expiry := tx.Bucket(expiryBucket)
		version := uint64(1)
		if old := ob.Get([]byte(r.ID)); old != nil {
			ov, oe, _ := decodeRecord(old)
			version = ov + 1
			if oe != 0 {
				if err := expiry.Delete(expiryKey(oe, r.Kind, r.Owner, r.ID)); err != nil {
					return err
				}
			}
		}
		if exp != 0 {
			if err := expiry.Put(expiryKey(exp, r.Kind, r.Owner, r.ID), empty); err != nil {
				return err
			}
		}
		return ob.Put([]byte(r.ID), encodeRecord(version, exp, r.Data))
	})
}

// ownerBucket returns the bucket of the owner's records of kind, or nil.
func ownerBucket(tx *bolt.Tx, kind, owner string) *bolt.Bucket {
	kb := tx.Bucket(objectsBucket).Bucket([]byte(kind))
	if kb == nil {
		return nil
	}
	return kb.Bucket([]byte(owner))
}

// Get returns the record, or ErrNotFound.
func (b *Bolt) Get(ctx context.Context, kind, owner, id string) (Record, error) {
	if checkRecordNames(kind, owner, id) != nil {
		return Record{}, ErrNotFound
	}
	var r Record
	err := b.view(func(tx *bolt.Tx) error {
		var ok bool
		r, ok = getRecord(ownerBucket(tx, kind, owner), kind, owner, id, b.nowMS())
		if !ok {
			return ErrNotFound
		}
		return nil
	})
	return r, err
}

// getRecord reads a live record from ob (which may be nil), copying its
// data out of the transaction's memory.
func getRecord(ob *bolt.Bucket, kind, owner, id string, now int64) (Record, bool) {
	if ob == nil {
		return Record{}, false
	}
	v := ob.Get([]byte(id))
	if v == nil {
		return Record{}, false
	}
	version, exp, data := decodeRecord(v)
	if expired(exp, now) {
		return Record{}, false
	}
	return Record{Kind: kind, Owner: owner, ID: id, Data: bytes.Clone(data),
		ExpiresAt: expiresTime(exp), Version: version}, true
}

// Update applies fn to the record's data. In bbolt, write transactions run
// one at a time, so fn runs once, inside the transaction.
func (b *Bolt) Update(ctx context.Context, kind, owner, id string, fn func(old []byte) ([]byte, error)) (Record, error) {
	if checkRecordNames(kind, owner, id) != nil {
		return Record{}, ErrNotFound
	}
	var r Record
	err := b.update(func(tx *bolt.Tx) error {
		ob := ownerBucket(tx, kind, owner)
		old, ok := getRecord(ob, kind, owner, id, b.nowMS())
		if !ok {
			return ErrNotFound
		}
		data, err := fn(old.Data)
		if err != nil {
			return err
		}
		r = old
		r.Data, r.Version = bytes.Clone(data), old.Version+1
		return ob.Put([]byte(id), encodeRecord(r.Version, expiresMS(r.ExpiresAt), r.Data))
	})
	if err != nil {
		return Record{}, err
	}
	return r, nil
}

// Delete removes the record, or returns ErrNotFound.
func (b *Bolt) Delete(ctx context.Context, kind, owner, id string) error {
	if checkRecordNames(kind, owner, id) != nil {
		return ErrNotFound
	}
	return b.update(func(tx *bolt.Tx) error {
		ob := ownerBucket(tx, kind, owner)
		if ob == nil {
			return ErrNotFound
		}
		v := ob.Get([]byte(id))
		if v == nil {
			return ErrNotFound
		}
		_, exp, _ := decodeRecord(v)
		if expired(exp, b.nowMS()) {
			// Gone already; leave it to Sweep so this transaction writes
			// nothing.
			return ErrNotFound
		}
		if exp != 0 {
			if err := tx.Bucket(expiryBucket).Delete(expiryKey(exp, kind, owner, id)); err != nil {
				return err
			}
		}
		return ob.Delete([]byte(id))
	})
}

// List returns one page of the owner's records of kind.
func (b *Bolt) List(ctx context.Context, kind, owner string, opts ListOptions) (Page, error) {
	s, err := planScan(opts)
	if err != nil {
		return Page{}, err
	}
	if !validName(kind) || !validName(owner) {
		return Page{}, nil
	}
	var recs []Record
	err = b.view(func(tx *bolt.Tx) error {
		ob := ownerBucket(tx, kind, owner)
		if ob == nil {
			return nil
		}
		now := b.nowMS()
		c := ob.Cursor()
		for k, v := seekPast(c, s.from, s.asc); k != nil && len(recs) <= s.limit; k, v = step(c, s.asc) {
			id := string(k)
			if s.past(id) {
				break
			}
			version, exp, data := decodeRecord(v)
			if expired(exp, now) {
				continue
			}
			r := Record{Kind: kind, Owner: owner, ID: id, Data: bytes.Clone(data),
				ExpiresAt: expiresTime(exp), Version: version}
			if opts.keep(r) {
				recs = append(recs, r)
			}
		}
		return nil
	})
	if err != nil {
		return Page{}, err
	}
	return s.page(recs), nil
}

// seekPast positions c on the first key strictly past from in the walk's
// direction (the first or last key when from is empty).
func seekPast(c *bolt.Cursor, from string, asc bool) ([]byte, []byte) {
	if from == "" {
		if asc {
			return c.First()
		}
		return c.Last()
	}
	k, v := c.Seek([]byte(from))
	if asc {
		if k != nil && string(k) == from {
			return c.Next()
		}
		return k, v
	}
	if k == nil {
		return c.Last() // every key is before from
	}
	return c.Prev() // the key found is at or after from
}

// step moves c one key in the walk's direction.
func step(c *bolt.Cursor, asc bool) ([]byte, []byte) {
	if asc {
		return c.Next()
	}
	return c.Prev()
}

// Sweep deletes the records that have expired.
func (b *Bolt) Sweep(ctx context.Context) (int, error) {
	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		n := 0
		err := b.update(func(tx *bolt.Tx) error {
			expiry := tx.Bucket(expiryBucket)
			now := b.nowMS()
			var due [][]byte
			c := expiry.Cursor()
			for k, _ := c.First(); k != nil && len(due) < sweepChunk; k, _ = c.Next() {
				if int64(binary.BigEndian.Uint64(k)) > now {
					break
				}
				due = append(due, bytes.Clone(k))
			}
			if len(due) == 0 {
				return errNothing
			}
			for _, k := range due {
				if err := expiry.Delete(k); err != nil {
					return err
				}
				parts := bytes.SplitN(k[8:], []byte{0}, 3)
				if len(parts) != 3 {
					continue
				}
				if ob := ownerBucket(tx, string(parts[0]), string(parts[1])); ob != nil {
					if err := ob.Delete(parts[2]); err != nil {
						return err
					}
				}
				n++
			}
			return nil
		})
		if errors.Is(err, errNothing) {
			return total, nil
		}
		if err != nil {
			return total, fmt.Errorf("sweeping records: %w", err)
		}
		total += n
		if n < sweepChunk {
			return total, nil
		}
	}
}

// Queue returns the queue of that name.
func (b *Bolt) Queue(name string) Queue { return &boltQueue{b: b, name: name} }

// encodeRecord lays out a record's value.
func encodeRecord(version uint64, exp int64, data []byte) []byte {
	v := make([]byte, 16+len(data))
	binary.BigEndian.PutUint64(v, version)
	binary.BigEndian.PutUint64(v[8:], uint64(exp))
	copy(v[16:], data)
	return v
}

// decodeRecord splits a record's value. The data aliases v.
func decodeRecord(v []byte) (version uint64, exp int64, data []byte) {
	if len(v) < 16 {
		return 0, 0, nil
	}
	return binary.BigEndian.Uint64(v), int64(binary.BigEndian.Uint64(v[8:])), v[16:]
}

// expiryKey is a record's entry in the expiry bucket.
func expiryKey(exp int64, kind, owner, id string) []byte {
	k := make([]byte, 8, 8+len(kind)+len(owner)+len(id)+2)
	binary.BigEndian.PutUint64(k, uint64(exp))
	k = append(k, kind...)
	k = append(k, 0)
	k = append(k, owner...)
	k = append(k, 0)
	return append(k, id...)
}

// Interface guards
var _ Backend = (*Bolt)(nil)
