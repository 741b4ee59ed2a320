// Package store keeps what the gateway's asynchronous features share: owned
// objects (the metadata of files, batches, fine-tuning jobs and stored
// responses), blobs (file bytes) and work queues (the lines of a batch).
//
// Three small interfaces, two backends:
//
//   - Objects: JSON records keyed by kind, owner and id. Every lookup names the
//     owner: another owner's record does not exist (ErrNotFound, exactly as a
//     missing one). Ids from NewID sort by creation, so List pages in creation
//     order. Update is a compare-and-swap on the record's version, so two
//     instances cannot lose each other's status transition.
//   - Blobs: bytes written streaming and atomically (a half-written blob is
//     never visible) under a byte and a line limit. Dir keeps them in a
//     directory, which the instances of a Redis setup share.
//   - Queue: items claimed on a lease; an item acked is never handed out
//     again, an item whose lease ran out is handed to the next Claim.
//
// Bolt (one bbolt file, nothing to install) and Redis (shared by several
// instances) both provide Objects and named queues; see Backend.
//
// Errors: ErrNotFound, ErrLeaseLost and ErrInvalidName are about the call;
// ErrTooLarge and ErrTooManyLines about a blob's content; ErrUnavailable
// wraps what kept the store from answering (a full disk, Redis down), which
// the API maps to 503 with Retry-After.
//
// Nothing here knows about HTTP or Caddy.
package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// Errors returned by the store. Test for them with errors.Is: most are
// wrapped with detail.
var (
	// ErrNotFound is returned for a record, blob or queue item that does not
	// exist, has expired, or belongs to another owner.
	ErrNotFound = errors.New("not found")
	// ErrInvalidName is returned when a kind, owner, id, queue, batch or blob
	// name cannot be stored (empty, too long, or holding a forbidden byte).
	// Lookups of such a name return ErrNotFound instead.
	ErrInvalidName = errors.New("invalid name")
	// ErrTooLarge is returned when a blob is longer than Limits.MaxBytes.
	ErrTooLarge = errors.New("too large")
	// ErrTooManyLines is returned when a blob has more lines than
	// Limits.MaxLines.
	ErrTooManyLines = errors.New("too many lines")
	// ErrUnavailable wraps an error that kept the store from answering: a full
	// disk (syscall.ENOSPC), an unwritable directory, Redis unreachable. The
	// operation may succeed later; the API answers 503.
	ErrUnavailable = errors.New("store unavailable")
	// ErrLeaseLost is returned by Queue.Extend when the item is no longer
	// held on that lease: its lease ran out and another Claim took it, or it
	// was acked or dropped.
	ErrLeaseLost = errors.New("lease lost")
)

// MaxNameLen is the longest kind, owner, id, queue or batch name accepted.
const MaxNameLen = 512

// Record is one owned object.
type Record struct {
	// Kind says what the record is ("file", "batch").
	Kind string
	// Owner is who may see the record: the id of the API key that created it.
	Owner string
	// ID identifies the record within its kind and owner; see NewID.
	ID string
	// Data is the record's JSON.
	Data []byte
	// ExpiresAt, when not zero, is the instant the record stops existing.
	// It is kept to the millisecond.
	ExpiresAt time.Time
	// Version counts the writes of the record. The store sets it; Put
	// ignores it.
	Version uint64
}

// Order is the direction of a listing. Its values are the ones of the
// APIs' order parameter.
type Order string

// The orders of a listing.
const (
	// OrderDesc lists the newest record first. It is the default.
	OrderDesc Order = "desc"
	// OrderAsc lists the oldest record first.
	OrderAsc Order = "asc"
)

// Listing limits.
const (
	// DefaultListLimit is the page size when ListOptions.Limit is 0.
	DefaultListLimit = 20
	// MaxListLimit is the largest page; a larger Limit is lowered to it.
	MaxListLimit = 10_000
)

// ListOptions select one page of a listing. After and Before are ids used
// as cursors; neither needs to exist any more.
type ListOptions struct {
	// After keeps only the records after this id in the listing's order.
	After string
	// Before keeps only the records before this id in the listing's order.
	// Without After, the page holds the Limit records nearest to Before
	// (still in the listing's order) and HasMore says whether more lie
	// beyond them, as the Anthropic before_id cursor wants.
	Before string
	// Limit is the page size. Default: DefaultListLimit; at most MaxListLimit.
	Limit int
	// Order is the listing's direction. Default: OrderDesc.
	Order Order
	// Match, when set, keeps only the records it returns true for (such as a
	// file's purpose). Records it rejects do not count toward Limit.
	Match func(Record) bool
}

// Page is one page of a listing.
type Page struct {
	// Records are the page's records in the listing's order.
	Records []Record
	// HasMore says whether more records follow in the direction of paging:
	// past the last record, or before the first when paging with Before
	// alone.
	HasMore bool
}

// Objects keeps owned records. Every method takes the owner: a record is
// found only under the kind, owner and id it was put with.
type Objects interface {
	// Put creates the record or replaces it whole, expiry included.
	Put(ctx context.Context, r Record) error
	// Get returns the record, or ErrNotFound.
	Get(ctx context.Context, kind, owner, id string) (Record, error)
	// Update replaces the record's data by fn(old data) if no other write
	// came in between, retrying with the new data until it applies; the
	// expiry is kept. fn must only compute: it may run more than once, and
	// must not call the store. An error from fn is returned as is and
	// nothing is written. A missing record is ErrNotFound.
	Update(ctx context.Context, kind, owner, id string, fn func(old []byte) ([]byte, error)) (Record, error)
	// Delete removes the record, or returns ErrNotFound.
	Delete(ctx context.Context, kind, owner, id string) error
	// List returns one page of the owner's records of the kind, ordered by
	// id. Expired records are left out.
	List(ctx context.Context, kind, owner string, opts ListOptions) (Page, error)
	// Sweep deletes the records that have expired and says how many. Expired
	// records are invisible anyway; sweeping frees their space. Call it
	// periodically from one goroutine per instance.
	Sweep(ctx context.Context) (int, error)
}

// Limits bound a blob being written. Zero means no limit.
type Limits struct {
	// MaxBytes is the largest size accepted.
	MaxBytes int64
	// MaxLines is the most lines accepted. Lines are counted as '\n' bytes,
	// plus one for a last line without a newline.
	MaxLines int64
}

// BlobInfo describes a blob that was written.
type BlobInfo struct {
	// Size is the blob's length in bytes.
	Size int64
	// Lines is the blob's line count, counted as for Limits.MaxLines.
	Lines int64
}

// Blob is a stored blob open for reading. It serves HTTP Range requests
// through io.ReadSeeker (http.ServeContent) or io.ReaderAt.
type Blob interface {
	io.ReadSeekCloser
	io.ReaderAt
	// Size returns the blob's length in bytes.
	Size() int64
}

// Blobs keeps file bytes by name.
type Blobs interface {
	// Write stores what r yields under name, replacing a blob of that name.
	// Until it returns nil nothing of the new content is visible; on error
	// nothing is left behind. Reading stops at the first limit crossed
	// (ErrTooLarge, ErrTooManyLines); an error from r is returned wrapped.
	Write(ctx context.Context, name string, r io.Reader, lim Limits) (BlobInfo, error)
	// Open returns the blob for reading, or ErrNotFound. The caller closes it.
	Open(ctx context.Context, name string) (Blob, error)
	// Delete removes the blob, or returns ErrNotFound. A blob already open
	// stays readable until closed.
	Delete(ctx context.Context, name string) error
}

// Item is a queue item handed out by Claim.
type Item struct {
	// ID identifies the item in its queue.
	ID string
	// BatchID is the batch the item was enqueued for.
	BatchID string
	// Data is what was enqueued: keep it small (a line's number and offset),
	// the line itself stays in its blob.
	Data []byte
	// Deliveries counts the claims of the item, this one included: more than
	// 1 means an earlier holder's lease ran out. It also names this lease
	// for Extend.
	Deliveries int
	// LeaseUntil is when the lease ends unless extended; from then on the
	// next Claim may take the item.
	LeaseUntil time.Time
}

// MaxClaim is the most items one Claim returns.
const MaxClaim = 1000

// Queue hands out work to the instances that share it.
//
// An item is ready once enqueued, held while claimed, and gone once acked
// or dropped. Claim takes items whose lease has run out first (oldest lease
// first), then ready items in the order they were enqueued. An item acked is
// never handed out again; an item claimed and not acked before its lease
// ends is handed out again by a later Claim, with Deliveries one higher.
type Queue interface {
	// Enqueue adds the items of a batch, in order. On error some of them may
	// be queued: Drop the batch before enqueuing it again.
	Enqueue(ctx context.Context, batchID string, items [][]byte) error
	// Claim hands consumer (the instance's name, kept with the item for
	// inspection) up to n items (at most MaxClaim) on a lease. It returns no
	// items and no error when there is nothing to do.
	Claim(ctx context.Context, consumer string, n int, lease time.Duration) ([]Item, error)
	// Ack marks the item done. The first Ack of a claimed item wins, even
	// from a holder whose lease ran out: the item is never handed out again.
	// A later Ack, or one of a dropped item, returns ErrNotFound.
	Ack(ctx context.Context, it Item) error
	// Extend makes the lease of it end lease from now, if it is still the
	// item's lease: otherwise ErrLeaseLost. A holder extends well before
	// LeaseUntil while it works on the item.
	Extend(ctx context.Context, it Item, lease time.Duration) error
	// Drop removes the batch's items that are not acked yet (ready or
	// held) and says how many, as when a batch is cancelled or expires.
	Drop(ctx context.Context, batchID string) (int, error)
	// Pending says how many of the batch's items are not acked yet.
	Pending(ctx context.Context, batchID string) (int, error)
}

// Backend is what both metadata backends (Bolt and Redis) provide: owned
// objects and named work queues. Blobs are apart (Dir) so that a Redis
// setup can keep them in a directory every instance mounts.
type Backend interface {
	Objects
	// Queue returns the work queue of that name; queues of different names
	// are independent. It does no I/O.
	Queue(name string) Queue
	// Counters returns the backend's counters (the usage ledger's totals). It does no I/O.
	Counters() Counters
	// Close releases the backend.
	Close() error
}

// checkRecordNames reports whether kind, owner and id can be stored.
func checkRecordNames(kind, owner, id string) error {
	for _, s := range [...]string{kind, owner, id} {
		if !validName(s) {
			return fmt.Errorf("%w: %.40q", ErrInvalidName, s)
		}
	}
	return nil
}

// validName reports whether s is a name the backends can store: not empty,
// at most MaxNameLen bytes, without NUL.
func validName(s string) bool {
	if s == "" || len(s) > MaxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return false
		}
	}
	return true
}

// checkLease reports whether lease can be granted.
func checkLease(lease time.Duration) error {
	if lease < time.Millisecond {
		return fmt.Errorf("lease %s: must be at least 1ms", lease)
	}
	return nil
}

// claimCount returns n bounded to 0..MaxClaim.
func claimCount(n int) int {
	return max(0, min(n, MaxClaim))
}

// expired reports whether a record expiring at e (unix ms, 0 for never) is
// gone at now (unix ms).
func expired(e, now int64) bool { return e != 0 && e <= now }

// expiresMS returns t as unix ms, 0 for the zero time.
func expiresMS(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// expiresTime is the inverse of expiresMS.
func expiresTime(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// scan is how a backend walks the ids of a listing.
type scan struct {
	asc   bool   // walk ids upwards
	from  string // start strictly past this id ("" for the first/last)
	to    string // stop before reaching this id ("" for none)
	limit int    // records wanted (the walk collects limit+1 to know HasMore)
	flip  bool   // reverse the collected records at the end
}

// planScan turns ListOptions into a walk.
func planScan(o ListOptions) (scan, error) {
	limit := o.Limit
	switch {
	case limit == 0:
		limit = DefaultListLimit
	case limit < 0:
		return scan{}, fmt.Errorf("list limit %d: must not be negative", limit)
	case limit > MaxListLimit:
		limit = MaxListLimit
	}
	var asc bool
	switch o.Order {
	case OrderAsc:
		asc = true
	case OrderDesc, "":
	default:
		return scan{}, fmt.Errorf("list order %q: must be asc or desc", o.Order)
	}
	if o.Before != "" && o.After == "" {
		// The records nearest to Before: walk away from it, then turn the
		// page around.
		return scan{asc: !asc, from: o.Before, limit: limit, flip: true}, nil
	}
	return scan{asc: asc, from: o.After, to: o.Before, limit: limit}, nil
}

// past reports whether id is at or beyond the walk's end.
func (s scan) past(id string) bool {
	if s.to == "" {
		return false
	}
	if s.asc {
		return id >= s.to
	}
	return id <= s.to
}

// page turns the collected records (up to limit+1) into a Page.
func (s scan) page(recs []Record) Page {
	p := Page{Records: recs}
	if len(recs) > s.limit {
		p.Records, p.HasMore = recs[:s.limit], true
	}
	if s.flip {
		for i, j := 0, len(p.Records)-1; i < j; i, j = i+1, j-1 {
			p.Records[i], p.Records[j] = p.Records[j], p.Records[i]
		}
	}
	return p
}

// keep reports whether a listed record goes on the page.
func (o ListOptions) keep(r Record) bool { return o.Match == nil || o.Match(r) }
