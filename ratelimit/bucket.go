package ratelimit

import "time"

// Bucket dimensions, in the order the Redis script stores them.
const (
	dimRPM = iota
	dimTPM
	dimRPD
	dimTPD
	numDims
)

// tick returns the refill tick of dimension k in nanoseconds.
func tick(k int) int64 {
	if k >= dimRPD {
		return int64(time.Second)
	}
	return int64(time.Millisecond)
}

// periodTicks returns the window of dimension k in ticks.
func periodTicks(k int) int64 {
	if k >= dimRPD {
		return 86_400
	}
	return 60_000
}

// limitOf returns the limit of dimension k.
func limitOf(l *Limits, k int) int64 {
	switch k {
	case dimRPM:
		return l.RPM
	case dimTPM:
		return l.TPM
	case dimRPD:
		return l.RPD
	default:
		return l.TPD
	}
}

// costOf returns the cost in dimension k.
func costOf(c Cost, k int) int64 {
	if k == dimRPM || k == dimRPD {
		return c.Requests
	}
	return c.Tokens
}

func dimensionOf(k int) Dimension {
	if k == dimRPM || k == dimRPD {
		return DimensionRequests
	}
	return DimensionTokens
}

// level is the state of one bucket: w token-ticks used, measured at t
// (nanoseconds, aligned on the ticks since the bucket was last empty).
type level struct {
	w int64
	t int64
}

// ceilDiv divides positive a by positive b, rounding up.
func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

// refill drains the bucket by c per whole tick elapsed since l.t. An
// unlimited dimension (c <= 0) keeps no usage.
func (l *level) refill(c int64, k int, now int64) {
	if c <= 0 {
		l.w = 0
	}
	if l.w > 0 {
		u := tick(k)
		if e := (now - l.t) / u; e > 0 {
			if e >= ceilDiv(l.w, c) {
				l.w = 0
			} else {
				l.w -= e * c
				l.t += e * u
			}
		}
	}
	if l.w <= 0 {
		l.w = 0
		l.t = now
	}
}

// adjust adds delta tokens (negative: a refund) to a refilled bucket, keeping
// the level between empty and one window of debt beyond capacity.
func (l *level) adjust(c int64, k int, delta int64, now int64) {
	p := periodTicks(k)
	if m := 2 * MaxLimit; delta > m {
		delta = m
	} else if delta < -m {
		delta = -m
	}
	l.w += delta * p
	if hi := 2 * c * p; l.w > hi {
		l.w = hi
	}
	if l.w <= 0 {
		l.w = 0
		l.t = now
	}
}

// untilFull returns the nanoseconds until the bucket is empty of usage.
func (l *level) untilFull(c int64, k int, now int64) int64 {
	if l.w <= 0 || c <= 0 {
		return 0
	}
	return l.t + ceilDiv(l.w, c)*tick(k) - now
}

// remaining returns the whole units left in the bucket.
func (l *level) remaining(c int64, k int) int64 {
	free := c*periodTicks(k) - l.w
	if free <= 0 {
		return 0
	}
	return free / periodTicks(k)
}

// scopeState is the refilled state of one scope's buckets.
type scopeState struct {
	lv       [numDims]level
	inflight int64
}

// refillAll refills every limited dimension of s at now.
func (s *scopeState) refillAll(lim *Limits, now int64) {
	for k := range numDims {
		s.lv[k].refill(limitOf(lim, k), k, now)
	}
}

// fullAt returns the time (ns) at which every bucket of s is full again.
func (s *scopeState) fullAt(lim *Limits, now int64) int64 {
	var m int64
	for k := range numDims {
		if d := s.lv[k].untilFull(limitOf(lim, k), k, now); d > m {
			m = d
		}
	}
	return now + m
}

// decide checks cost against the refilled states st (one per scope) at now.
// When every bucket has room and take is true it takes the cost from st. It
// fills the quotas from the resulting states.
func decide(now int64, scopes []Scope, cost Cost, st []scopeState, take bool) Decision {
	var d Decision
	var refused, concurrency bool
	var worst int64
	var concScope string
	for i := range scopes {
		lim := &scopes[i].Limits
		for k := range numDims {
			c := limitOf(lim, k)
			n := costOf(cost, k)
			if c <= 0 || n <= 0 {
				continue
			}
			if n > c {
				if !d.Impossible {
					d.Impossible = true
					d.Scope, d.Dimension, d.Daily = scopes[i].ID, dimensionOf(k), k >= dimRPD
				}
				continue
			}
			l := &st[i].lv[k]
			p := periodTicks(k)
			over := l.w + n*p - c*p
			if over <= 0 {
				continue
			}
			wait := l.t + ceilDiv(over, c)*tick(k) - now
			if !refused || wait > worst {
				worst = wait
				if !d.Impossible {
					d.Scope, d.Dimension, d.Daily = scopes[i].ID, dimensionOf(k), k >= dimRPD
				}
			}
			refused = true
		}
		if mc := lim.MaxConcurrent; mc > 0 && st[i].inflight >= mc && !concurrency {
			concurrency = true
			concScope = scopes[i].ID
		}
	}
	switch {
	case d.Impossible:
	case refused:
		d.Wait = time.Duration(max(worst, 0))
	case concurrency:
		d.Scope, d.Dimension = concScope, DimensionConcurrency
	default:
		d.Allowed = true
		if take {
			for i := range scopes {
				lim := &scopes[i].Limits
				for k := range numDims {
					if c, n := limitOf(lim, k), costOf(cost, k); c > 0 && n > 0 {
						st[i].lv[k].w += n * periodTicks(k)
					}
				}
				if lim.MaxConcurrent > 0 {
					st[i].inflight++
				}
			}
		}
	}
	fillQuotas(&d, now, scopes, st)
	return d
}

// fillQuotas sets d.Requests and d.Tokens to the most constraining bucket of
// each dimension: the least remaining, then the longest reset.
func fillQuotas(d *Decision, now int64, scopes []Scope, st []scopeState) {
	for i := range scopes {
		lim := &scopes[i].Limits
		for k := range numDims {
			c := limitOf(lim, k)
			if c <= 0 {
				continue
			}
			l := &st[i].lv[k]
			r := l.remaining(c, k)
			reset := time.Duration(max(l.untilFull(c, k, now), 0))
			q := &d.Tokens
			if dimensionOf(k) == DimensionRequests {
				q = &d.Requests
			}
			if q.Limit == 0 || r < q.Remaining || (r == q.Remaining && reset > q.Reset) {
				*q = Quota{Limit: c, Remaining: r, Reset: reset}
			}
		}
	}
}
