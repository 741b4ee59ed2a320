package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock that only moves when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_900_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// backendFactory makes a fresh, empty backend on clock. peer returns
// another handle on the same data, as a second instance has (for Bolt,
// which one process holds at a time, the same handle).
type backendFactory func(t *testing.T, clock *fakeClock) (b Backend, peer func() Backend)

// runSuite runs every case of the conformance suite on fresh backends.
func runSuite(t *testing.T, newBackend backendFactory) {
	for _, tc := range suite {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			b, peer := newBackend(t, clock)
			tc.run(t, &env{b: b, peer: peer(), clock: clock})
		})
	}
}

// env is what a suite case works with.
type env struct {
	b, peer Backend
	clock   *fakeClock
}

var ctx = context.Background()

func (e *env) put(t *testing.T, kind, owner, id, data string, exp time.Time) {
	t.Helper()
	if err := e.b.Put(ctx, Record{Kind: kind, Owner: owner, ID: id, Data: []byte(data), ExpiresAt: exp}); err != nil {
		t.Fatalf("Put(%s, %s, %s): %v", kind, owner, id, err)
	}
}

func (e *env) get(t *testing.T, kind, owner, id string) Record {
	t.Helper()
	r, err := e.b.Get(ctx, kind, owner, id)
	if err != nil {
		t.Fatalf("Get(%s, %s, %s): %v", kind, owner, id, err)
	}
	return r
}

func (e *env) notFound(t *testing.T, kind, owner, id string) {
	t.Helper()
	if _, err := e.b.Get(ctx, kind, owner, id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(%s, %s, %s) = %v, want ErrNotFound", kind, owner, id, err)
	}
}

// list returns the ids of a page.
func (e *env) list(t *testing.T, kind, owner string, o ListOptions) ([]string, bool) {
	t.Helper()
	p, err := e.b.List(ctx, kind, owner, o)
	if err != nil {
		t.Fatalf("List(%s, %s, %+v): %v", kind, owner, o, err)
	}
	ids := []string{}
	for _, r := range p.Records {
		if r.Kind != kind || r.Owner != owner {
			t.Fatalf("List(%s, %s) returned %s/%s/%s", kind, owner, r.Kind, r.Owner, r.ID)
		}
		ids = append(ids, r.ID)
	}
	return ids, p.HasMore
}

func (e *env) sweep(t *testing.T, want int) {
	t.Helper()
	if n, err := e.b.Sweep(ctx); err != nil || n != want {
		t.Fatalf("Sweep = %d, %v; want %d", n, err, want)
	}
}

func claim(t *testing.T, q Queue, consumer string, n int, lease time.Duration) []Item {
	t.Helper()
	items, err := q.Claim(ctx, consumer, n, lease)
	if err != nil {
		t.Fatalf("Claim(%s, %d): %v", consumer, n, err)
	}
	return items
}

func itemData(items []Item) []string {
	out := []string{}
	for _, it := range items {
		out = append(out, string(it.Data))
	}
	return out
}

func lines(s ...string) [][]byte {
	out := make([][]byte, len(s))
	for i, v := range s {
		out[i] = []byte(v)
	}
	return out
}

func pending(t *testing.T, q Queue, batch string, want int) {
	t.Helper()
	if n, err := q.Pending(ctx, batch); err != nil || n != want {
		t.Fatalf("Pending(%s) = %d, %v; want %d", batch, n, err, want)
	}
}

var suite = []struct {
	name string
	run  func(t *testing.T, e *env)
}{
	{"put get replace delete", func(t *testing.T, e *env) {
		e.put(t, "file", "key-a", "file-1", `{"v":1}`, time.Time{})
		r := e.get(t, "file", "key-a", "file-1")
		want := Record{Kind: "file", Owner: "key-a", ID: "file-1", Data: []byte(`{"v":1}`), Version: 1}
		if fmt.Sprint(r) != fmt.Sprint(want) {
			t.Fatalf("Get = %+v, want %+v", r, want)
		}
		r.Data[0] = 'X' // the caller owns what Get returned
		e.put(t, "file", "key-a", "file-1", `{"v":2}`, time.Time{})
		if r = e.get(t, "file", "key-a", "file-1"); string(r.Data) != `{"v":2}` || r.Version != 2 {
			t.Fatalf("after replace: %s version %d", r.Data, r.Version)
		}
		if err := e.b.Delete(ctx, "file", "key-a", "file-1"); err != nil {
			t.Fatal(err)
		}
		e.notFound(t, "file", "key-a", "file-1")
		if err := e.b.Delete(ctx, "file", "key-a", "file-1"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("second Delete = %v", err)
		}
		if ids, _ := e.list(t, "file", "key-a", ListOptions{}); len(ids) != 0 {
			t.Fatalf("listed after delete: %v", ids)
		}
	}},
	{"another owner's record does not exist", func(t *testing.T, e *env) {
		e.put(t, "file", "key-a", "file-1", `"a's"`, time.Time{})
		_, errOther := e.b.Get(ctx, "file", "key-b", "file-1")
		_, errMissing := e.b.Get(ctx, "file", "key-b", "file-never")
		if !errors.Is(errOther, ErrNotFound) || errOther.Error() != errMissing.Error() {
			t.Fatalf("another owner's Get = %v, a missing one's = %v: want the same ErrNotFound", errOther, errMissing)
		}
		if ids, more := e.list(t, "file", "key-b", ListOptions{}); len(ids) != 0 || more {
			t.Fatalf("key-b lists %v (has_more %v)", ids, more)
		}
		called := false
		_, err := e.b.Update(ctx, "file", "key-b", "file-1", func(old []byte) ([]byte, error) {
			called = true
			return []byte(`"b's"`), nil
		})
		if !errors.Is(err, ErrNotFound) || called {
			t.Fatalf("key-b Update = %v (fn called: %v)", err, called)
		}
		if err := e.b.Delete(ctx, "file", "key-b", "file-1"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("key-b Delete = %v", err)
		}
		// The same id under another owner is another record.
		e.put(t, "file", "key-b", "file-1", `"b's"`, time.Time{})
		if err := e.b.Delete(ctx, "file", "key-b", "file-1"); err != nil {
			t.Fatal(err)
		}
		if r := e.get(t, "file", "key-a", "file-1"); string(r.Data) != `"a's"` || r.Version != 1 {
			t.Fatalf("key-a's record became %s version %d", r.Data, r.Version)
		}
		if ids, _ := e.list(t, "file", "key-a", ListOptions{}); !slices.Equal(ids, []string{"file-1"}) {
			t.Fatalf("key-a lists %v", ids)
		}
		// Nor does another kind see it.
		e.notFound(t, "batch", "key-a", "file-1")
	}},
	{"names with separators stay apart", func(t *testing.T, e *env) {
		// Owners are API key ids: anything but NUL, so a backend that joins
		// names into one key must keep these three apart.
		e.put(t, "file", "a:b", "c", "1", time.Time{})
		e.put(t, "file", "a", "b:c", "2", time.Time{})
		e.put(t, "file", "{a}", "%3A", "3", time.Time{})
		for _, c := range []struct{ owner, id, data string }{{"a:b", "c", "1"}, {"a", "b:c", "2"}, {"{a}", "%3A", "3"}} {
			if r := e.get(t, "file", c.owner, c.id); string(r.Data) != c.data {
				t.Fatalf("%s/%s = %s, want %s", c.owner, c.id, r.Data, c.data)
			}
			if ids, _ := e.list(t, "file", c.owner, ListOptions{}); !slices.Equal(ids, []string{c.id}) {
				t.Fatalf("%s lists %v", c.owner, ids)
			}
		}
		e.notFound(t, "file", "a", "c")
		e.notFound(t, "file", "{a}", ":")
	}},
	{"invalid names", func(t *testing.T, e *env) {
		long := strings.Repeat("x", MaxNameLen+1)
		for _, n := range [][3]string{{"", "o", "i"}, {"k", "", "i"}, {"k", "o", ""}, {"k", "o\x00", "i"}, {"k", "o", long}} {
			err := e.b.Put(ctx, Record{Kind: n[0], Owner: n[1], ID: n[2], Data: []byte("1")})
			if !errors.Is(err, ErrInvalidName) {
				t.Errorf("Put(%q) = %v, want ErrInvalidName", n, err)
			}
			if _, err := e.b.Get(ctx, n[0], n[1], n[2]); !errors.Is(err, ErrNotFound) {
				t.Errorf("Get(%q) = %v, want ErrNotFound", n, err)
			}
			if err := e.b.Delete(ctx, n[0], n[1], n[2]); !errors.Is(err, ErrNotFound) {
				t.Errorf("Delete(%q) = %v, want ErrNotFound", n, err)
			}
		}
		if _, err := e.b.List(ctx, "file", "o", ListOptions{Limit: -1}); err == nil {
			t.Error("List with a negative limit succeeded")
		}
		if _, err := e.b.List(ctx, "file", "o", ListOptions{Order: "sideways"}); err == nil {
			t.Error("List with an unknown order succeeded")
		}
		q := e.b.Queue("lines")
		if err := q.Enqueue(ctx, "", lines("x")); !errors.Is(err, ErrInvalidName) {
			t.Errorf("Enqueue to an empty batch id = %v", err)
		}
		if _, err := e.b.Queue("").Claim(ctx, "i1", 1, time.Minute); !errors.Is(err, ErrInvalidName) {
			t.Errorf("Claim on an unnamed queue = %v", err)
		}
		if _, err := q.Claim(ctx, "i1", 1, 0); err == nil {
			t.Error("Claim with no lease succeeded")
		}
	}},
	{"paging", func(t *testing.T, e *env) {
		id := make([]string, 7)
		for i := range id {
			id[i] = NewID("file-")
			e.put(t, "file", "key-a", id[i], strconv.Itoa(i), time.Time{})
		}
		e.put(t, "file", "key-b", NewID("file-"), "other owner", time.Time{})
		e.put(t, "batch", "key-a", NewID("batch_"), "other kind", time.Time{})
		at := func(is ...int) []string {
			out := []string{}
			for _, i := range is {
				out = append(out, id[i])
			}
			return out
		}
		for _, tc := range []struct {
			name string
			opts ListOptions
			want []string
			more bool
		}{
			{"default: newest first", ListOptions{}, at(6, 5, 4, 3, 2, 1, 0), false},
			{"asc first page", ListOptions{Order: OrderAsc, Limit: 3}, at(0, 1, 2), true},
			{"asc after", ListOptions{Order: OrderAsc, After: id[2], Limit: 3}, at(3, 4, 5), true},
			{"asc last page", ListOptions{Order: OrderAsc, After: id[5], Limit: 3}, at(6), false},
			{"asc exact fit", ListOptions{Order: OrderAsc, Limit: 7}, at(0, 1, 2, 3, 4, 5, 6), false},
			{"asc after the last", ListOptions{Order: OrderAsc, After: id[6]}, at(), false},
			{"desc first page", ListOptions{Order: OrderDesc, Limit: 3}, at(6, 5, 4), true},
			{"desc after", ListOptions{Order: OrderDesc, After: id[4], Limit: 3}, at(3, 2, 1), true},
			{"desc last page", ListOptions{Order: OrderDesc, After: id[1], Limit: 3}, at(0), false},
			{"desc before: the nearest", ListOptions{Order: OrderDesc, Before: id[2], Limit: 3}, at(5, 4, 3), true},
			{"desc before: the first page", ListOptions{Order: OrderDesc, Before: id[5], Limit: 3}, at(6), false},
			{"asc before: the nearest", ListOptions{Order: OrderAsc, Before: id[4], Limit: 2}, at(2, 3), true},
			{"asc before the first", ListOptions{Order: OrderAsc, Before: id[0]}, at(), false},
			{"asc between", ListOptions{Order: OrderAsc, After: id[1], Before: id[5], Limit: 10}, at(2, 3, 4), false},
			{"asc between, limited", ListOptions{Order: OrderAsc, After: id[1], Before: id[5], Limit: 2}, at(2, 3), true},
			{"desc between", ListOptions{Order: OrderDesc, After: id[5], Before: id[1]}, at(4, 3, 2), false},
			{"a cursor that is no id", ListOptions{Order: OrderAsc, After: "file-", Limit: 2}, at(0, 1), true},
			{"a cursor past every id", ListOptions{Order: OrderDesc, After: "file-z", Limit: 2}, at(6, 5), true},
			{"a limit over the maximum", ListOptions{Order: OrderAsc, Limit: MaxListLimit + 1}, at(0, 1, 2, 3, 4, 5, 6), false},
			{"match: even only", ListOptions{Order: OrderAsc, Limit: 2, Match: func(r Record) bool {
				n, _ := strconv.Atoi(string(r.Data))
				return n%2 == 0
			}}, at(0, 2), true},
			{"match: after, the rest", ListOptions{Order: OrderAsc, After: id[2], Limit: 2, Match: func(r Record) bool {
				n, _ := strconv.Atoi(string(r.Data))
				return n%2 == 0
			}}, at(4, 6), false},
		} {
			got, more := e.list(t, "file", "key-a", tc.opts)
			if !slices.Equal(got, tc.want) || more != tc.more {
				t.Errorf("%s: got %v has_more %v, want %v has_more %v", tc.name, got, more, tc.want, tc.more)
			}
		}
		// Paging with after=<last id> visits every record once, as the SDKs do.
		var all []string
		for after := ""; ; {
			ids, more := e.list(t, "file", "key-a", ListOptions{After: after, Limit: 2})
			all = append(all, ids...)
			if !more {
				break
			}
			after = ids[len(ids)-1]
		}
		if !slices.Equal(all, at(6, 5, 4, 3, 2, 1, 0)) {
			t.Fatalf("paging through: %v", all)
		}
	}},
	{"expiry", func(t *testing.T, e *env) {
		start := e.clock.Now()
		a, b, c := NewID("file-"), NewID("file-"), NewID("file-")
		e.put(t, "file", "k", a, "a", start.Add(time.Hour))
		e.put(t, "file", "k", b, "b", start.Add(2*time.Hour))
		e.put(t, "file", "k", c, "c", time.Time{})
		if r := e.get(t, "file", "k", a); !r.ExpiresAt.Equal(start.Add(time.Hour)) {
			t.Fatalf("ExpiresAt = %v, want %v", r.ExpiresAt, start.Add(time.Hour))
		}
		e.sweep(t, 0)

		e.clock.Advance(time.Hour) // a's ExpiresAt: from now on a is gone
		e.notFound(t, "file", "k", a)
		if _, err := e.b.Update(ctx, "file", "k", a, func(old []byte) ([]byte, error) { return old, nil }); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Update of an expired record = %v", err)
		}
		if err := e.b.Delete(ctx, "file", "k", a); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Delete of an expired record = %v", err)
		}
		if ids, _ := e.list(t, "file", "k", ListOptions{Order: OrderAsc}); !slices.Equal(ids, []string{b, c}) {
			t.Fatalf("listed %v, want b and c", ids)
		}
		if ids, more := e.list(t, "file", "k", ListOptions{Order: OrderDesc, After: c, Limit: 1}); !slices.Equal(ids, []string{b}) || more {
			t.Fatalf("page after c: %v has_more %v; want b alone, no more", ids, more)
		}
		e.sweep(t, 1)
		e.sweep(t, 0)

		// A record put again after it expired lives on without expiry:
		// its old expiry must not sweep it.
		e.clock.Advance(time.Hour)
		e.notFound(t, "file", "k", b)
		e.put(t, "file", "k", b, "b again", time.Time{})
		e.sweep(t, 0)
		if r := e.get(t, "file", "k", b); string(r.Data) != "b again" {
			t.Fatalf("b = %s", r.Data)
		}
		// So does a record whose expiry a Put removed before it came.
		e.put(t, "file", "k", c, "c", e.clock.Now().Add(time.Minute))
		e.put(t, "file", "k", c, "c for good", time.Time{})
		e.clock.Advance(time.Hour)
		e.sweep(t, 0)
		if ids, _ := e.list(t, "file", "k", ListOptions{Order: OrderAsc}); !slices.Equal(ids, []string{b, c}) {
			t.Fatalf("listed %v, want b and c", ids)
		}
		// Sweep takes many at once.
		for range 25 {
			e.put(t, "batch", "k2", NewID("batch_"), "x", e.clock.Now().Add(time.Second))
		}
		e.clock.Advance(time.Second)
		e.sweep(t, 25)
	}},
	{"update", func(t *testing.T, e *env) {
		exp := e.clock.Now().Add(24 * time.Hour)
		e.put(t, "batch", "k", "batch_1", `{"status":"validating"}`, exp)
		r, err := e.b.Update(ctx, "batch", "k", "batch_1", func(old []byte) ([]byte, error) {
			if string(old) != `{"status":"validating"}` {
				return nil, fmt.Errorf("old = %s", old)
			}
			return []byte(`{"status":"in_progress"}`), nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if string(r.Data) != `{"status":"in_progress"}` || r.Version != 2 || !r.ExpiresAt.Equal(exp) {
			t.Fatalf("Update returned %s version %d expiring %v", r.Data, r.Version, r.ExpiresAt)
		}
		if got := e.get(t, "batch", "k", "batch_1"); fmt.Sprint(got) != fmt.Sprint(r) {
			t.Fatalf("Get after Update = %+v, want %+v", got, r)
		}
		errTerminal := errors.New("already terminal")
		_, err = e.b.Update(ctx, "batch", "k", "batch_1", func(old []byte) ([]byte, error) { return nil, errTerminal })
		if !errors.Is(err, errTerminal) {
			t.Fatalf("Update with a failing fn = %v", err)
		}
		if got := e.get(t, "batch", "k", "batch_1"); got.Version != 2 {
			t.Fatalf("a failed Update wrote: version %d", got.Version)
		}
		if _, err := e.b.Update(ctx, "batch", "k", "batch_2", func(old []byte) ([]byte, error) { return old, nil }); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Update of a missing record = %v", err)
		}
	}},
	{"concurrent updates lose nothing", func(t *testing.T, e *env) {
		e.put(t, "batch", "k", "batch_1", "0", time.Time{})
		const workers, each = 8, 25
		var wg sync.WaitGroup
		for w := range workers {
			o := Objects(e.b)
			if w%2 == 1 {
				o = e.peer // half of them on another instance
			}
			wg.Go(func() {
				for range each {
					_, err := o.Update(ctx, "batch", "k", "batch_1", func(old []byte) ([]byte, error) {
						n, err := strconv.Atoi(string(old))
						return []byte(strconv.Itoa(n + 1)), err
					})
					if err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		r := e.get(t, "batch", "k", "batch_1")
		if string(r.Data) != strconv.Itoa(workers*each) || r.Version != workers*each+1 {
			t.Fatalf("after %d updates: %s version %d", workers*each, r.Data, r.Version)
		}
	}},
	{"queue claims in order and acks once", func(t *testing.T, e *env) {
		q := e.b.Queue("lines")
		if err := q.Enqueue(ctx, "batch_1", lines("1a", "1b")); err != nil {
			t.Fatal(err)
		}
		if err := q.Enqueue(ctx, "batch_2", lines("2a")); err != nil {
			t.Fatal(err)
		}
		first := claim(t, q, "i1", 2, time.Minute)
		if got := itemData(first); !slices.Equal(got, []string{"1a", "1b"}) {
			t.Fatalf("first claim: %v", got)
		}
		for _, it := range first {
			if it.BatchID != "batch_1" || it.Deliveries != 1 || !it.LeaseUntil.Equal(e.clock.Now().Add(time.Minute)) {
				t.Fatalf("item %+v", it)
			}
		}
		second := claim(t, q, "i1", 10, time.Minute)
		if got := itemData(second); !slices.Equal(got, []string{"2a"}) || second[0].BatchID != "batch_2" {
			t.Fatalf("second claim: %+v", second)
		}
		if got := claim(t, q, "i1", 10, time.Minute); len(got) != 0 {
			t.Fatalf("claimed from an empty queue: %v", itemData(got))
		}
		if got := claim(t, q, "i1", 0, time.Minute); len(got) != 0 {
			t.Fatalf("Claim(0) = %v", itemData(got))
		}
		pending(t, q, "batch_1", 2)
		if err := q.Ack(ctx, first[0]); err != nil {
			t.Fatal(err)
		}
		if err := q.Ack(ctx, first[0]); !errors.Is(err, ErrNotFound) {
			t.Fatalf("second Ack = %v, want ErrNotFound", err)
		}
		pending(t, q, "batch_1", 1)
		for _, it := range []Item{first[1], second[0]} {
			if err := q.Ack(ctx, it); err != nil {
				t.Fatal(err)
			}
		}
		pending(t, q, "batch_1", 0)
		pending(t, q, "batch_2", 0)
		e.clock.Advance(time.Hour)
		if got := claim(t, q, "i2", 10, time.Minute); len(got) != 0 {
			t.Fatalf("acked items came back: %v", itemData(got))
		}
	}},
	{"queue hands a lease that ran out to another consumer", func(t *testing.T, e *env) {
		q, other := e.b.Queue("lines"), e.peer.Queue("lines")
		if err := q.Enqueue(ctx, "batch_1", lines("a", "b", "c")); err != nil {
			t.Fatal(err)
		}
		mine := claim(t, q, "i1", 2, time.Minute)
		e.clock.Advance(time.Minute - time.Millisecond)
		if got := claim(t, other, "i2", 1, time.Minute); !slices.Equal(itemData(got), []string{"c"}) {
			t.Fatalf("while the lease holds, i2 got %v", itemData(got))
		}
		e.clock.Advance(time.Millisecond) // the lease has ended: i1 is taken for dead
		theirs := claim(t, other, "i2", 10, time.Minute)
		if got := itemData(theirs); !slices.Equal(got, []string{"a", "b"}) {
			t.Fatalf("i2 reclaimed %v", got)
		}
		for i, it := range theirs {
			if it.ID != mine[i].ID || it.Deliveries != 2 {
				t.Fatalf("reclaimed %+v, was %+v", it, mine[i])
			}
		}
		if err := q.Extend(ctx, mine[0], time.Minute); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("the old holder's Extend = %v, want ErrLeaseLost", err)
		}
		// The first Ack wins, even from the old holder (its answer came).
		if err := q.Ack(ctx, mine[0]); err != nil {
			t.Fatalf("the old holder's Ack = %v", err)
		}
		if err := other.Ack(ctx, theirs[0]); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Ack after the old holder's = %v, want ErrNotFound", err)
		}
		if err := other.Extend(ctx, theirs[1], time.Minute); err != nil {
			t.Fatalf("the new holder's Extend = %v", err)
		}
		if err := other.Ack(ctx, theirs[1]); err != nil {
			t.Fatal(err)
		}
		if err := q.Ack(ctx, mine[1]); !errors.Is(err, ErrNotFound) {
			t.Fatalf("late Ack = %v", err)
		}
		e.clock.Advance(time.Hour)
		// c's lease ran out too: it comes back before anything else.
		if got := claim(t, q, "i1", 10, time.Minute); !slices.Equal(itemData(got), []string{"c"}) || got[0].Deliveries != 2 {
			t.Fatalf("after an hour: %+v", got)
		}
	}},
	{"queue extend keeps the item", func(t *testing.T, e *env) {
		q, other := e.b.Queue("lines"), e.peer.Queue("lines")
		if err := q.Enqueue(ctx, "batch_1", lines("a")); err != nil {
			t.Fatal(err)
		}
		it := claim(t, q, "i1", 1, time.Minute)[0]
		e.clock.Advance(50 * time.Second)
		if err := q.Extend(ctx, it, time.Minute); err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(30 * time.Second) // past the first lease, within the second
		if got := claim(t, other, "i2", 1, time.Minute); len(got) != 0 {
			t.Fatalf("an extended item was reclaimed: %v", itemData(got))
		}
		if err := q.Extend(ctx, it, 2*time.Second); err != nil { // a shorter lease is fine too
			t.Fatal(err)
		}
		e.clock.Advance(2 * time.Second)
		got := claim(t, other, "i2", 1, time.Minute)
		if len(got) != 1 || got[0].Deliveries != 2 {
			t.Fatalf("after the extension ran out: %+v", got)
		}
		if err := other.Ack(ctx, got[0]); err != nil {
			t.Fatal(err)
		}
		if err := other.Extend(ctx, got[0], time.Minute); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("Extend after Ack = %v", err)
		}
	}},
	{"queue drop and pending", func(t *testing.T, e *env) {
		q := e.b.Queue("lines")
		if err := q.Enqueue(ctx, "batch_1", lines("1a", "1b", "1c")); err != nil {
			t.Fatal(err)
		}
		if err := q.Enqueue(ctx, "batch_2", lines("2a", "2b")); err != nil {
			t.Fatal(err)
		}
		pending(t, q, "batch_1", 3)
		pending(t, q, "batch_2", 2)
		pending(t, q, "batch_3", 0)
		held := claim(t, q, "i1", 2, time.Minute)
		if n, err := q.Drop(ctx, "batch_1"); err != nil || n != 3 {
			t.Fatalf("Drop = %d, %v; want 3", n, err)
		}
		if n, err := q.Drop(ctx, "batch_1"); err != nil || n != 0 {
			t.Fatalf("second Drop = %d, %v", n, err)
		}
		pending(t, q, "batch_1", 0)
		if got := itemData(claim(t, q, "i1", 10, time.Minute)); !slices.Equal(got, []string{"2a", "2b"}) {
			t.Fatalf("after the drop: %v", got)
		}
		if err := q.Ack(ctx, held[0]); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Ack of a dropped item = %v", err)
		}
		if err := q.Extend(ctx, held[1], time.Minute); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("Extend of a dropped item = %v", err)
		}
		e.clock.Advance(time.Hour)
		got := itemData(claim(t, q, "i1", 10, time.Minute))
		if !slices.Equal(got, []string{"2a", "2b"}) {
			t.Fatalf("dropped items came back: %v", got)
		}
		pending(t, q, "batch_2", 2)
	}},
	{"queues of different names are apart", func(t *testing.T, e *env) {
		if err := e.b.Queue("model-a").Enqueue(ctx, "batch_1", lines("a")); err != nil {
			t.Fatal(err)
		}
		if got := claim(t, e.b.Queue("model-b"), "i1", 10, time.Minute); len(got) != 0 {
			t.Fatalf("model-b got %v", itemData(got))
		}
		pending(t, e.b.Queue("model-b"), "batch_1", 0)
		pending(t, e.b.Queue("model-a"), "batch_1", 1)
	}},
	{"concurrent consumers ack every item exactly once", func(t *testing.T, e *env) {
		const total, dead = 300, 100
		items := make([][]byte, total)
		for i := range items {
			items[i] = []byte(strconv.Itoa(i))
		}
		if err := e.b.Queue("lines").Enqueue(ctx, "batch_1", items); err != nil {
			t.Fatal(err)
		}
		// An instance claims a third of the work and dies.
		abandoned := claim(t, e.b.Queue("lines"), "dead", dead, time.Minute)
		e.clock.Advance(time.Minute)

		var mu sync.Mutex
		acked := map[string]int{}
		redelivered := 0
		var wg sync.WaitGroup
		for w := range 4 {
			b := e.b
			if w%2 == 1 {
				b = e.peer
			}
			consumer := "i" + strconv.Itoa(w)
			wg.Go(func() {
				q := b.Queue("lines")
				for {
					got, err := q.Claim(ctx, consumer, 7, time.Minute)
					if err != nil {
						t.Error(err)
						return
					}
					if len(got) == 0 {
						return
					}
					for _, it := range got {
						if err := q.Ack(ctx, it); err != nil {
							t.Errorf("Ack of %s by %s: %v", it.Data, consumer, err)
						}
						mu.Lock()
						acked[string(it.Data)]++
						if it.Deliveries == 2 {
							redelivered++
						}
						mu.Unlock()
					}
				}
			})
		}
		wg.Wait()
		if len(acked) != total || redelivered != dead {
			t.Fatalf("%d items acked, %d redelivered; want %d and %d", len(acked), redelivered, total, dead)
		}
		for data, n := range acked {
			if n != 1 {
				t.Fatalf("item %s acked %d times", data, n)
			}
		}
		for _, it := range abandoned {
			if err := e.b.Queue("lines").Ack(ctx, it); !errors.Is(err, ErrNotFound) {
				t.Fatalf("the dead instance's late Ack = %v", err)
			}
		}
		pending(t, e.b.Queue("lines"), "batch_1", 0)
	}},
}
