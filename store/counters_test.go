package store

import (
	"errors"
	"sync"
	"testing"
)

func init() {
	suite = append(suite, struct {
		name string
		run  func(t *testing.T, e *env)
	}{"counters add and scan", testCounters})
}

// testCounters: increments from two handles (two instances) add up, concurrently; Scan returns
// rows in name order within [from, to); bad names are refused.
func testCounters(t *testing.T, e *env) {
	a, b := e.b.Counters(), e.peer.Counters()
	var wg sync.WaitGroup
	for i := range 20 {
		c := a
		if i%2 == 1 {
			c = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.Add(ctx, []Increment{{"u|d2|k1|m", "requests", 1}, {"u|d2|k1|m", "tokens", 10}, {"u|d1|k1|m", "requests", 2}}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if err := a.Add(ctx, []Increment{{"v|x", "n", -3}}); err != nil {
		t.Fatal(err)
	}
	rows, err := b.Scan(ctx, "u|", "u|\xff", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].Name != "u|d1|k1|m" || rows[1].Name != "u|d2|k1|m" {
		t.Fatalf("rows = %+v", rows)
	}
	if rows[0].Fields["requests"] != 40 || rows[1].Fields["requests"] != 20 || rows[1].Fields["tokens"] != 200 {
		t.Fatalf("fields = %+v", rows)
	}
	if rows, _ := a.Scan(ctx, "u|d2", "u|d3", 1); len(rows) != 1 || rows[0].Name != "u|d2|k1|m" {
		t.Fatalf("range = %+v", rows)
	}
	if rows, _ := a.Scan(ctx, "v|", "", 0); len(rows) != 1 || rows[0].Fields["n"] != -3 {
		t.Fatalf("negative = %+v", rows)
	}
	if err := a.Add(ctx, []Increment{{"", "f", 1}}); !errors.Is(err, ErrInvalidName) {
		t.Fatalf("empty row: %v", err)
	}
}
