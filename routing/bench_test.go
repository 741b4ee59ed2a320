package routing

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func BenchmarkAdmissionAcquireRelease(b *testing.B) {
	a := NewAdmission(64, 64, time.Second)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		release, err := a.Acquire(ctx, 0)
		if err != nil {
			b.Fatal(err)
		}
		release()
	}
}

func BenchmarkAdmissionAcquireReleaseParallel(b *testing.B) {
	a := NewAdmission(1<<20, 0, time.Second)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			release, err := a.Acquire(ctx, 0)
			if err != nil {
				b.Error(err)
				return
			}
			release()
		}
	})
}

// benchTracker has four upstreams with load and fresh metrics on two of them.
func benchTracker() (*Tracker, []string) {
	tr := NewTracker(TrackerOptions{})
	cands := []string{"10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000", "10.0.0.4:8000"}
	tr.Acquire(cands[0], 1200)
	tr.Acquire(cands[1], 800)
	tr.Acquire(cands[2], 800)
	tr.Observe(cands[0], Metrics{Running: 4, Waiting: 1, KVCacheUsage: 0.5})
	tr.Observe(cands[3], Metrics{Running: 2, KVCacheUsage: 0.2})
	return tr, cands
}

func BenchmarkTrackerPick4(b *testing.B) {
	tr, cands := benchTracker()
	r := rand.New(rand.NewPCG(1, 2))
	b.ReportAllocs()
	for b.Loop() {
		if tr.Pick(cands, r.IntN) < 0 {
			b.Fatal("no pick")
		}
	}
}

func BenchmarkTrackerPick4NoMetrics(b *testing.B) {
	tr := NewTracker(TrackerOptions{})
	cands := []string{"10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000", "10.0.0.4:8000"}
	for _, c := range cands {
		tr.Acquire(c, 100)
	}
	r := rand.New(rand.NewPCG(1, 2))
	b.ReportAllocs()
	for b.Loop() {
		if tr.Pick(cands, r.IntN) < 0 {
			b.Fatal("no pick")
		}
	}
}

func BenchmarkTrackerAcquireRelease(b *testing.B) {
	tr, cands := benchTracker()
	b.ReportAllocs()
	for b.Loop() {
		release := tr.Acquire(cands[1], 700)
		release()
	}
}

func BenchmarkTrackerPickAcquireParallel(b *testing.B) {
	tr, cands := benchTracker()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(rand.Uint64(), 2))
		for pb.Next() {
			release := tr.Acquire(cands[tr.Pick(cands, r.IntN)], 500)
			release()
		}
	})
}

func BenchmarkParsePrometheus(b *testing.B) {
	data, err := os.ReadFile(filepath.Join("testdata", "vllm_v1.txt"))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParsePrometheus(bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
}
