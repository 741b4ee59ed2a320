package store

import (
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/caddyai/gateway/internal/testredis"
)

// benchBackends runs bench on a fresh Bolt file (every write synced to
// disk) and on a real redis-server.
func benchBackends(b *testing.B, bench func(b *testing.B, be Backend)) {
	b.Run("bolt", func(b *testing.B) {
		be, err := OpenBolt(filepath.Join(b.TempDir(), "store.db"), BoltOptions{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = be.Close() })
		bench(b, be)
	})
	b.Run("redis", func(b *testing.B) {
		srv := testredis.StartServer(b)
		bench(b, NewRedis(newRedisClient(b, srv.Addr()), RedisOptions{}))
	})
}

// batchRecord is about the size of a batch object.
var batchRecord = []byte(`{"id":"batch_0123456789abcdef0123456789abcdef","object":"batch","endpoint":"/v1/chat/completions",` +
	`"errors":null,"input_file_id":"file-0123456789abcdef0123456789abcdef","completion_window":"24h","status":"in_progress",` +
	`"output_file_id":null,"error_file_id":null,"created_at":1900000000,"in_progress_at":1900000001,"expires_at":1900086400,` +
	`"request_counts":{"total":50000,"completed":1234,"failed":5},"metadata":{"job":"nightly"}}`)

func BenchmarkPut(b *testing.B) {
	benchBackends(b, func(b *testing.B, be Backend) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			r := Record{Kind: "batch", Owner: "key-a", ID: "batch_" + strconv.Itoa(i%1000), Data: batchRecord}
			if err := be.Put(ctx, r); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkGet(b *testing.B) {
	benchBackends(b, func(b *testing.B, be Backend) {
		for i := range 1000 {
			r := Record{Kind: "batch", Owner: "key-a", ID: "batch_" + strconv.Itoa(i), Data: batchRecord}
			if err := be.Put(ctx, r); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if _, err := be.Get(ctx, "batch", "key-a", "batch_"+strconv.Itoa(i%1000)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkClaim claims one item and acks it per operation, as a runner
// does for each line.
func BenchmarkClaim(b *testing.B) {
	benchBackends(b, func(b *testing.B, be Backend) {
		q := be.Queue("lines")
		// Enough items for any iteration count: refilled outside the timer.
		fill := func() {
			items := make([][]byte, 10_000)
			for i := range items {
				items[i] = []byte(`{"line":` + strconv.Itoa(i) + `,"offset":123456}`)
			}
			if err := q.Enqueue(ctx, "batch_1", items); err != nil {
				b.Fatal(err)
			}
		}
		fill()
		b.ReportAllocs()
		for b.Loop() {
			got, err := q.Claim(ctx, "i1", 1, time.Minute)
			if err == nil && len(got) == 0 {
				b.StopTimer()
				fill()
				b.StartTimer()
				got, err = q.Claim(ctx, "i1", 1, time.Minute)
			}
			if err != nil || len(got) != 1 {
				b.Fatalf("Claim = %d items, %v", len(got), err)
			}
			if err := q.Ack(ctx, got[0]); err != nil {
				b.Fatal(err)
			}
		}
	})
}
