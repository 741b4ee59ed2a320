package store

import (
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func openBolt(t testing.TB, path string, clock *fakeClock) *Bolt {
	t.Helper()
	b, err := OpenBolt(path, BoltOptions{Now: clock.Now, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func TestBoltConformance(t *testing.T) {
	runSuite(t, func(t *testing.T, clock *fakeClock) (Backend, func() Backend) {
		b := openBolt(t, filepath.Join(t.TempDir(), "store.db"), clock)
		return b, func() Backend { return b }
	})
}

// TestBoltReopen closes the file and opens it again, as a restart does:
// records, expiry, queue items and leases are all still there.
func TestBoltReopen(t *testing.T) {
	clock := newFakeClock()
	path := filepath.Join(t.TempDir(), "data", "store.db")
	b := openBolt(t, path, clock)
	e := &env{b: b, peer: b, clock: clock}
	ids := []string{NewID("file-"), NewID("file-"), NewID("file-")}
	e.put(t, "file", "k", ids[0], `{"n":0}`, time.Time{})
	e.put(t, "file", "k", ids[1], `{"n":1}`, clock.Now().Add(time.Hour))
	e.put(t, "file", "k", ids[2], `{"n":2}`, time.Time{})
	if _, err := b.Update(ctx, "file", "k", ids[2], func([]byte) ([]byte, error) { return []byte(`{"n":22}`), nil }); err != nil {
		t.Fatal(err)
	}
	q := b.Queue("lines")
	if err := q.Enqueue(ctx, "batch_1", lines("a", "b", "c")); err != nil {
		t.Fatal(err)
	}
	held := claim(t, q, "i1", 1, time.Minute)
	acked := claim(t, q, "i1", 1, time.Minute)
	if err := q.Ack(ctx, acked[0]); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	b = openBolt(t, path, clock)
	e.b, e.peer = b, b
	if got, _ := e.list(t, "file", "k", ListOptions{Order: OrderAsc}); !slices.Equal(got, ids) {
		t.Fatalf("after reopening: %v, want %v", got, ids)
	}
	if r := e.get(t, "file", "k", ids[2]); string(r.Data) != `{"n":22}` || r.Version != 2 {
		t.Fatalf("updated record after reopening: %s version %d", r.Data, r.Version)
	}
	q = b.Queue("lines")
	pending(t, q, "batch_1", 2)
	// The lease taken before the restart still holds...
	if got := itemData(claim(t, q, "i2", 10, time.Minute)); !slices.Equal(got, []string{"c"}) {
		t.Fatalf("claimed %v, want the ready item alone", got)
	}
	// ...until it runs out; the acked item never comes back.
	clock.Advance(time.Hour)
	got := claim(t, q, "i2", 10, time.Minute)
	if len(got) != 2 || got[0].ID != held[0].ID || got[0].Deliveries != 2 || string(got[1].Data) != "c" {
		t.Fatalf("after the leases ran out: %+v", got)
	}
	e.sweep(t, 1)
	if err := q.Enqueue(ctx, "batch_2", lines("d")); err != nil {
		t.Fatal(err)
	}
	// Item ids keep growing across the restart.
	if d := claim(t, q, "i2", 1, time.Minute); len(d) != 1 || d[0].ID <= got[1].ID {
		t.Fatalf("new item %+v after %s", d, got[1].ID)
	}
}

// TestBoltFileLocked opens a file a Bolt already holds: one process at a
// time owns a bbolt file, so the second open gives up after its timeout.
func TestBoltFileLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	openBolt(t, path, newFakeClock())
	_, err := OpenBolt(path, BoltOptions{Timeout: 50 * time.Millisecond})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("second OpenBolt = %v, want ErrUnavailable", err)
	}
}
