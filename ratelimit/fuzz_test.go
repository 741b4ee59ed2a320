package ratelimit

import (
	"context"
	"testing"
	"time"
)

// FuzzMemoryBuckets runs op sequences and checks that quotas, admission and
// waits agree: a cost within the reported room is admitted, one token more is
// refused, and a refused cost is admitted exactly after Wait and not 1ns
// earlier.
func FuzzMemoryBuckets(f *testing.F) {
	f.Add([]byte{0, 60, 0, 0, 5, 1, 1, 3, 7, 2, 9, 0, 3, 40, 1, 0, 80, 1})
	f.Add([]byte{0, 255, 1, 2, 255, 0, 4, 2, 0, 0, 10, 0, 1, 255, 255})
	f.Fuzz(func(t *testing.T, ops []byte) {
		clock := newClock()
		l := NewLimiter(NewMemoryStore(MemoryOptions{Now: clock.Now}), Options{})
		scopes := []Scope{
			scope("a", Limits{TPM: 60}),
			scope("b", Limits{TPM: 100, TPD: 1000}),
		}
		ctx := context.Background()
		var open []*Reservation
		for ; len(ops) >= 3; ops = ops[3:] {
			x, y := int64(ops[1]), int64(ops[2])
			switch ops[0] % 5 {
			case 0:
				sc := scopes[:1+y%2]
				room, err := l.Available(ctx, sc)
				if err != nil {
					t.Fatal(err)
				}
				capacity := Unlimited
				for _, s := range sc {
					capacity = min(capacity, s.Limits.TPM)
					if s.Limits.TPD > 0 {
						capacity = min(capacity, s.Limits.TPD)
					}
				}
				cost := Cost{Tokens: x}
				r, d, err := l.Reserve(ctx, sc, cost)
				if err != nil {
					t.Fatal(err)
				}
				checkQuota(t, d.Tokens)
				switch {
				case x <= room:
					if !d.Allowed {
						t.Fatalf("cost %d within room %d refused: %+v", x, room, d)
					}
					if d.Tokens.Remaining != room-x {
						t.Fatalf("remaining %d after %d from %d", d.Tokens.Remaining, x, room)
					}
					open = append(open, r)
				case x > capacity:
					if !d.Impossible {
						t.Fatalf("cost %d over capacity %d not impossible: %+v", x, capacity, d)
					}
				default:
					if d.Allowed || d.Wait <= 0 {
						t.Fatalf("cost %d over room %d: %+v", x, room, d)
					}
					clock.Advance(d.Wait - 1)
					if _, d2, _ := l.Reserve(ctx, sc, cost); d2.Allowed {
						t.Fatalf("allowed 1ns before wait %s", d.Wait)
					}
					clock.Advance(1)
					r, d2, _ := l.Reserve(ctx, sc, cost)
					if !d2.Allowed {
						t.Fatalf("refused after wait %s: %+v", d.Wait, d2)
					}
					open = append(open, r)
				}
			case 1:
				clock.Advance(time.Duration(x*y) * time.Millisecond)
			case 2:
				if len(open) > 0 {
					i := int(y) % len(open)
					if err := open[i].Settle(ctx, x*2); err != nil {
						t.Fatal(err)
					}
					open = append(open[:i], open[i+1:]...)
				}
			case 3:
				scopes[y%2].Limits.TPM = 1 + x
			case 4:
				clock.Advance(time.Duration(x) * time.Second)
			}
		}
	})
}

func checkQuota(t *testing.T, q Quota) {
	t.Helper()
	if q.Remaining < 0 || q.Remaining > q.Limit || q.Reset < 0 || q.Reset > 48*time.Hour {
		t.Fatalf("quota out of range: %+v", q)
	}
}
