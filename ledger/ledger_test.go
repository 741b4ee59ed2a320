package ledger

import (
	"context"
	"encoding/json"
	"math"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyai/gateway/store"
)

var ctx = context.Background()

func TestParseMicros(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Micros
		bad  bool
	}{
		{"0", 0, false}, {"0.15", 150_000, false}, {"2", 2_000_000, false}, {".5", 500_000, false},
		{"1.0000010", 1_000_001, false}, {"0.0000001", 0, true}, {"-1", 0, true}, {"1e-6", 0, true},
		{"", 0, true}, {"abc", 0, true}, {"1.2.3", 0, true}, {"9999999999999", 0, true},
	} {
		got, err := ParseMicros(tc.in)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("ParseMicros(%q) = %d, %v", tc.in, got, err)
		}
	}
	var p Price
	if err := json.Unmarshal([]byte(`{"input":0.15,"cached_input":"0.075","output":0.6,"request":0}`), &p); err != nil {
		t.Fatal(err)
	}
	if p.Input != 150_000 || *p.CachedInput != 75_000 || p.Output != 600_000 {
		t.Fatalf("price = %+v", p)
	}
	if b, _ := json.Marshal(Micros(1_500)); string(b) != `"0.001500"` {
		t.Fatalf("marshal = %s", b)
	}
}

func TestCost(t *testing.T) {
	cached := Micros(250_000)
	p := Price{Input: 500_000, CachedInput: &cached, Output: 1_500_000, Request: 10}
	// 1000 prompt (400 cached) + 200 completion: 600*0.5 + 400*0.25 = 400 micros; 200*1.5 = 300
	if got := p.Cost(1000, 400, 200); got != 710 {
		t.Fatalf("cost = %d", got)
	}
	// a cached count over the prompt is capped; negative counts count as 0
	if got := p.Cost(10, 50, -3); got != 3+10 {
		t.Fatalf("capped cost = %d", got)
	}
	// summing a million one-token requests drifts by at most the rounding of each
	one := Price{Input: 150_000}.Cost(1, 0, 0)
	if one != 0 {
		t.Fatalf("one token at 0.15/M = %d (rounded to whole micro-units)", one)
	}
	if (Price{Input: MaxPrice + 1}).Validate() == nil {
		t.Fatal("price over MaxPrice accepted")
	}
}

func openBolt(t testing.TB) *store.Bolt {
	t.Helper()
	b, err := store.OpenBolt(filepath.Join(t.TempDir(), "store.db"), store.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// TestWriterTotals: entries recorded concurrently end up in the day's key, label and budget
// rows; a failed write keeps them for the next one.
func TestWriterTotals(t *testing.T) {
	b := openBolt(t)
	fail := true
	var errs int
	w := NewWriter(func() (store.Counters, error) {
		if fail {
			return nil, store.ErrUnavailable
		}
		return b.Counters(), nil
	}, WriterOptions{OnError: func(error) { errs++ }})
	day := time.Date(2026, 12, 1, 23, 59, 0, 0, time.UTC)
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := []string{"a", "b|x"}[i%2]
			w.Record(Entry{Time: day, KeyID: key, Labels: map[string]string{"team": "ml"}, Model: "llama",
				Usage: Usage{Requests: 1, PromptTokens: 10, CompletionTokens: 5, CachedTokens: 2, CostMicros: 7}})
		}()
	}
	wg.Wait()
	if err := w.Flush(ctx); err == nil || errs != 1 {
		t.Fatalf("flush to a closed store: %v (%d errors)", err, errs)
	}
	fail = false
	w.Record(Entry{Time: day.Add(2 * time.Minute), KeyID: "a", Model: "llama", Usage: Usage{Requests: 1, PromptTokens: 1, CacheHits: 1}})
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if w.Written() != 101 {
		t.Fatalf("written = %d", w.Written())
	}
	rows, err := Query(ctx, b.Counters(), Filter{From: "2026-12-01", To: "2026-12-01"})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].KeyID != "a" || rows[1].KeyID != "b|x" || rows[0].Usage.Requests != 50 || rows[1].Usage.CostMicros != 350 {
		t.Fatalf("rows = %+v", rows)
	}
	all, _ := Query(ctx, b.Counters(), Filter{})
	if tot := Total(all); tot.Requests != 101 || tot.PromptTokens != 1001 || tot.CacheHits != 1 || tot.CachedTokens != 200 {
		t.Fatalf("total = %+v", tot)
	}
	lab, _ := Query(ctx, b.Counters(), Filter{Label: "team=ml"})
	if len(lab) != 1 || lab[0].Label != "team=ml" || lab[0].Usage.Requests != 100 {
		t.Fatalf("label rows = %+v", lab)
	}
	if rows, _ := Query(ctx, b.Counters(), Filter{KeyID: "a", Model: "other"}); len(rows) != 0 {
		t.Fatalf("model filter = %+v", rows)
	}
	spent, err := Spent(ctx, b.Counters(), "label:team=ml", Monthly, day)
	if err != nil || spent.Tokens != 1500 || spent.Micros != 700 {
		t.Fatalf("spent = %+v, %v", spent, err)
	}
}

// TestWriterRunFlushesOnStop: what was recorded before the context ends is written by Run's
// last flush.
func TestWriterRunFlushesOnStop(t *testing.T) {
	b := openBolt(t)
	w := NewWriter(func() (store.Counters, error) { return b.Counters(), nil }, WriterOptions{Interval: time.Hour})
	c, cancel := context.WithCancel(ctx)
	go w.Run(c, time.Second)
	w.Record(Entry{Time: time.Now(), KeyID: "k", Model: "m", Usage: Usage{Requests: 1}})
	cancel()
	<-w.Done()
	rows, _ := Query(ctx, b.Counters(), Filter{})
	if len(rows) != 1 || rows[0].Usage.Requests != 1 {
		t.Fatalf("rows = %+v", rows)
	}
}

// BenchmarkWriterRecord is the ledger's cost on the request path: merging one entry (key, two
// labels) into the pending totals.
func BenchmarkWriterRecord(b *testing.B) {
	w := NewWriter(func() (store.Counters, error) { return nil, store.ErrUnavailable }, WriterOptions{Interval: time.Hour})
	e := Entry{Time: time.Now(), KeyID: "team-a-key", Labels: map[string]string{"team": "a", "env": "prod"}, Model: "llama-3.1-70b",
		Usage: Usage{Requests: 1, PromptTokens: 900, CompletionTokens: 120, CostMicros: 450}}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			w.Record(e)
		}
	})
}

// BenchmarkWriterFlushBolt is one second's write of the embedded ledger: 1000 keys' rows in one
// synced transaction.
func BenchmarkWriterFlushBolt(b *testing.B) {
	bo := openBolt(b)
	w := NewWriter(func() (store.Counters, error) { return bo.Counters(), nil }, WriterOptions{Interval: time.Hour})
	now := time.Now()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		for k := range 1000 {
			w.Record(Entry{Time: now, KeyID: "key-" + string(rune('a'+k%26)) + string(rune('a'+k/26%26)), Model: "m",
				Usage: Usage{Requests: 1, PromptTokens: 100, CompletionTokens: 10}})
		}
		if err := w.Flush(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// TestWriterRecordWait: RecordWait returns once the entry is in the store (group commit of
// concurrent waiters); with the store down it gives up at the deadline and the entry stays
// pending for the next write.
func TestWriterRecordWait(t *testing.T) {
	b := openBolt(t)
	var down atomic.Bool
	w := NewWriter(func() (store.Counters, error) {
		if down.Load() {
			return nil, store.ErrUnavailable
		}
		return b.Counters(), nil
	}, WriterOptions{})
	c, cancel := context.WithCancel(ctx)
	defer cancel()
	go w.Run(c, time.Second)
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.RecordWait(ctx, Entry{Time: time.Now(), KeyID: "k", Model: "m", Usage: Usage{Requests: 1}}); err != nil {
				t.Error(err)
				return
			}
		}()
	}
	wg.Wait()
	if rows, _ := Query(ctx, b.Counters(), Filter{}); len(rows) != 1 || rows[0].Usage.Requests != 50 {
		t.Fatalf("after the waits: %+v", rows)
	}
	down.Store(true)
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort()
	if err := w.RecordWait(short, Entry{Time: time.Now(), KeyID: "k", Model: "m", Usage: Usage{Requests: 1}}); err == nil {
		t.Fatal("RecordWait returned nil with the store down")
	}
	down.Store(false)
	w.Record(Entry{Time: time.Now(), KeyID: "k", Model: "m", Usage: Usage{Requests: 1}})
	waitRows := time.Now().Add(2 * time.Second)
	for {
		rows, _ := Query(ctx, b.Counters(), Filter{})
		if len(rows) == 1 && rows[0].Usage.Requests == 52 {
			break
		}
		if time.Now().After(waitRows) {
			t.Fatalf("the pending entry was not written: %+v", rows)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestMicrosString(t *testing.T) {
	for m, want := range map[Micros]string{0: "0.000000", 1: "0.000001", 1_500: "0.001500", 12_345_678: "12.345678",
		-1: "-0.000001", -2_000_000: "-2.000000", math.MaxInt64: "9223372036854.775807", math.MinInt64: "-9223372036854.775808"} {
		if got := m.String(); got != want {
			t.Errorf("Micros(%d).String() = %q, want %q", int64(m), got, want)
		}
	}
}

func TestPeriodNamesAcrossDays(t *testing.T) {
	for _, ts := range []string{"2026-12-01T23:59:59Z", "2026-12-02T00:00:00Z", "2026-11-30T12:00:00+09:00", "1969-12-31T23:00:00Z", "2027-01-01T00:00:00Z"} {
		at, err := time.Parse(time.RFC3339, ts)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := Day(at), at.UTC().Format(time.DateOnly); got != want {
			t.Errorf("Day(%s) = %s, want %s", ts, got, want)
		}
		if got, want := Month(at), at.UTC().Format("2006-01"); got != want {
			t.Errorf("Month(%s) = %s, want %s", ts, got, want)
		}
	}
}
