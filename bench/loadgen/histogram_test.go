package loadgen

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestHistogramBuckets(t *testing.T) {
	for _, v := range []uint64{0, 1, 63, 64, 65, 127, 128, 1000, 123456789, 1 << 40, 1<<64 - 1} {
		i := bucketOf(v)
		if i < 0 || i >= groupCount*subCount {
			t.Fatalf("bucketOf(%d) = %d out of range", v, i)
		}
		if lo, hi := lowerBound(i), upperBound(i); v < lo || v > hi {
			t.Errorf("value %d in bucket %d [%d, %d]", v, i, lo, hi)
		}
	}
}

func TestHistogramQuantiles(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var h, a, b Histogram
	vals := make([]time.Duration, 10000)
	for i := range vals {
		vals[i] = time.Duration(rng.ExpFloat64() * float64(time.Millisecond))
		h.Record(vals[i])
		if i%2 == 0 {
			a.Record(vals[i])
		} else {
			b.Record(vals[i])
		}
	}
	a.Merge(&b)
	slices.Sort(vals)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		exact := vals[int(q*float64(len(vals)))-1]
		for name, hist := range map[string]*Histogram{"direct": &h, "merged": &a} {
			got := hist.Quantile(q)
			if diff := float64(got-exact) / float64(exact); diff > 0.02 || diff < -0.02 {
				t.Errorf("%s q%.3f = %v, exact %v", name, q, got, exact)
			}
		}
	}
	if h.Count() != 10000 || a.Count() != 10000 {
		t.Errorf("counts %d %d", h.Count(), a.Count())
	}
	if h.Min() != vals[0] || h.Max() != vals[len(vals)-1] || a.Max() != h.Max() {
		t.Errorf("min %v max %v, want %v %v", h.Min(), h.Max(), vals[0], vals[len(vals)-1])
	}
	if h.Quantile(0) != h.Min() || h.Quantile(1) != h.Max() {
		t.Error("q0/q1 are not min/max")
	}
	var empty Histogram
	if empty.Quantile(0.5) != 0 || empty.Mean() != 0 {
		t.Error("empty histogram is not zero")
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	var h Histogram
	b.ReportAllocs()
	d := time.Duration(0)
	for b.Loop() {
		d += 997
		h.Record(d)
	}
}
