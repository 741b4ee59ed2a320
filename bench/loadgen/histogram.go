package loadgen

import (
	"math"
	"math/bits"
	"time"
)

// subBits is the number of bits of sub-bucket resolution per power of two: 64 sub-buckets
// give a relative error under 1.6%.
const subBits = 6

const (
	subCount   = 1 << subBits
	groupCount = 64 - subBits + 1
)

// Histogram is a log-linear latency histogram in the manner of HDR histograms: fixed memory
// (about 30 KB) whatever the number of samples, values in nanoseconds with a relative error
// under 1.6%. The zero value is ready to use. It is not safe for concurrent use; give each
// worker its own and Merge them.
type Histogram struct {
	counts [groupCount * subCount]uint64
	total  uint64
	sum    float64
	min    uint64
	max    uint64
}

// bucketOf returns the index of the bucket holding v.
func bucketOf(v uint64) int {
	if v < subCount {
		return int(v)
	}
	shift := bits.Len64(v) - subBits - 1
	// Groups after the first hold values in [2^(subBits+shift), 2^(subBits+shift+1)).
	return (shift+1)*subCount + int((v>>uint(shift))-subCount)
}

// lowerBound returns the smallest value held by bucket i.
func lowerBound(i int) uint64 {
	if i < subCount {
		return uint64(i)
	}
	g, s := i/subCount, i%subCount
	return uint64(subCount+s) << uint(g-1)
}

// upperBound returns the largest value held by bucket i.
func upperBound(i int) uint64 {
	if i < subCount {
		return uint64(i)
	}
	g := i / subCount
	return lowerBound(i) + (uint64(1) << uint(g-1)) - 1
}

// Record adds one sample. Negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	v := uint64(0)
	if d > 0 {
		v = uint64(d)
	}
	h.counts[bucketOf(v)]++
	if h.total == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.total++
	h.sum += float64(v)
}

// Merge adds every sample of o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o == nil || o.total == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.total == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.total += o.total
	h.sum += o.sum
}

// Count returns the number of samples.
func (h *Histogram) Count() uint64 { return h.total }

// Min returns the smallest sample, or 0 when empty.
func (h *Histogram) Min() time.Duration { return time.Duration(h.min) }

// Max returns the largest sample, or 0 when empty.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Mean returns the mean of the samples, or 0 when empty.
func (h *Histogram) Mean() time.Duration {
	if h.total == 0 {
		return 0
	}
	return time.Duration(math.Round(h.sum / float64(h.total)))
}

// Quantile returns the value at quantile q in [0, 1] (0.99 for p99): the midpoint of the
// bucket holding it, clamped to the observed min and max. It returns 0 when empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	switch {
	case q <= 0:
		return time.Duration(h.min)
	case q >= 1:
		return time.Duration(h.max)
	}
	rank := uint64(math.Ceil(q * float64(h.total)))
	if rank == 0 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, hi := lowerBound(i), upperBound(i)
			v := lo + (hi-lo)/2
			v = max(v, h.min)
			v = min(v, h.max)
			return time.Duration(v)
		}
	}
	return time.Duration(h.max)
}
