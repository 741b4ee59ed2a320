package ledger

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddyai/gateway/internal/testredis"
	"github.com/caddyai/gateway/store"
)

func fixedClock(t time.Time) func() time.Time { return func() time.Time { return t } }

var budgetNow = time.Date(2026, 12, 31, 23, 59, 30, 0, time.UTC)

// overspendCheck reserves from many goroutines against one label budget and settles each on a
// random share of its reservation (never more): the spend never passes the limit.
func overspendCheck(t *testing.T, stores []BudgetStore) {
	t.Helper()
	scope := Scope{ID: "label:team=a", Daily: Limit{Tokens: 10_000, Spend: 1_000_000}, Monthly: Limit{Tokens: 50_000}}
	var granted, refused atomic.Int64
	var spentTokens atomic.Int64
	var wg sync.WaitGroup
	for i := range 200 {
		b := NewBudgets(stores[i%len(stores)], BudgetOptions{Now: fixedClock(budgetNow)})
		wg.Add(1)
		go func() {
			defer wg.Done()
			cost := Amount{Tokens: 300, Micros: 20_000}
			h, ex, err := b.Reserve(ctx, []Scope{scope, {ID: "key:k" + string(rune('0'+i%5))}}, cost)
			if err != nil {
				t.Error(err)
				return
			}
			if ex != nil {
				refused.Add(1)
				if ex.Scope != "label:team=a" || ex.Dimension != "tokens" || !ex.Renews.Equal(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)) {
					t.Errorf("refusal = %+v", ex)
				}
				return
			}
			granted.Add(1)
			actual := Amount{Tokens: 100 + int64(i%3)*100, Micros: 10_000}
			spentTokens.Add(actual.Tokens)
			if err := h.Settle(ctx, actual); err != nil {
				t.Error(err)
			}
			_ = h.Settle(ctx, actual) // a second settle does nothing
		}()
	}
	wg.Wait()
	st, err := NewBudgets(stores[0], BudgetOptions{Now: fixedClock(budgetNow)}).Status(ctx, []Scope{scope})
	if err != nil {
		t.Fatal(err)
	}
	if st[0].Used.Tokens != spentTokens.Load() || st[0].Used.Tokens > scope.Daily.Tokens {
		t.Fatalf("used %d, settled %d, limit %d", st[0].Used.Tokens, spentTokens.Load(), scope.Daily.Tokens)
	}
	if granted.Load() < 10_000/300 || refused.Load() == 0 {
		t.Fatalf("granted %d refused %d", granted.Load(), refused.Load())
	}
}

func TestMemoryBudgetsNoOverspend(t *testing.T) {
	overspendCheck(t, []BudgetStore{NewMemoryBudgets(nil)})
}

func newRedis(t *testing.T) *redis.Client {
	addr, _ := testredis.Start(t)
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestRedisBudgetsNoOverspend: two instances on one Redis share the budget.
func TestRedisBudgetsNoOverspend(t *testing.T) {
	c := newRedis(t)
	overspendCheck(t, []BudgetStore{NewRedisBudgets(c, "t:"), NewRedisBudgets(c, "t:")})
}

// TestRedisBudgetsDeadInstance: the reservations of an instance whose live key expired no
// longer count; a live instance's do.
func TestRedisBudgetsDeadInstance(t *testing.T) {
	c := newRedis(t)
	a, b := NewRedisBudgets(c, "t:"), NewRedisBudgets(c, "t:")
	scope := []Scope{{ID: "key:k", Daily: Limit{Tokens: 1000}}}
	ba, bb := NewBudgets(a, BudgetOptions{Now: fixedClock(budgetNow)}), NewBudgets(b, BudgetOptions{Now: fixedClock(budgetNow)})
	if _, ex, err := ba.Reserve(ctx, scope, Amount{Tokens: 800}); ex != nil || err != nil {
		t.Fatal(ex, err)
	}
	if _, ex, _ := bb.Reserve(ctx, scope, Amount{Tokens: 300}); ex == nil || ex.Used.Tokens != 800 {
		t.Fatalf("live reservation not counted: %+v", ex)
	}
	c.Del(ctx, "t:live:"+a.inst) // a was killed and its live key ran out
	if _, ex, err := bb.Reserve(ctx, scope, Amount{Tokens: 300}); ex != nil || err != nil {
		t.Fatalf("dead instance's reservation still counted: %+v %v", ex, err)
	}
}

// TestMemoryBudgetsStartFromLedger: after a restart the spend of the period is what the ledger
// wrote, and a warning is given once when the share is crossed.
func TestMemoryBudgetsStartFromLedger(t *testing.T) {
	bo := openBolt(t)
	w := NewWriter(func() (store.Counters, error) { return bo.Counters(), nil }, WriterOptions{})
	w.Record(Entry{Time: budgetNow, KeyID: "k", Model: "m", Usage: Usage{Requests: 1, PromptTokens: 700, CostMicros: 5}})
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	load := func(ctx context.Context, row string) (Amount, error) {
		rows, err := bo.Counters().Scan(ctx, row, row+"\x00", 1)
		if err != nil || len(rows) == 0 {
			return Amount{}, err
		}
		return Amount{Tokens: rows[0].Fields["tokens"], Micros: Micros(rows[0].Fields["cost"])}, nil
	}
	var warnings []Warning
	b := NewBudgets(NewMemoryBudgets(load), BudgetOptions{Now: fixedClock(budgetNow), OnWarning: func(w Warning) { warnings = append(warnings, w) }})
	scope := []Scope{{ID: "key:k", Monthly: Limit{Tokens: 1000}, WarnAt: 0.8}}
	if _, ex, _ := b.Reserve(ctx, scope, Amount{Tokens: 400}); ex == nil || ex.Used.Tokens != 700 || ex.Period != Monthly {
		t.Fatalf("restart forgot the spend: %+v", ex)
	}
	for range 2 {
		h, ex, err := b.Reserve(ctx, scope, Amount{Tokens: 100})
		if ex != nil || err != nil {
			t.Fatal(ex, err)
		}
		_ = h.Settle(ctx, Amount{Tokens: 100})
	}
	if len(warnings) != 1 || warnings[0].Spent.Tokens != 800 || warnings[0].Dimension != "tokens" {
		t.Fatalf("warnings = %+v", warnings)
	}
	if h, ex, err := b.Reserve(ctx, nil, Amount{Tokens: 1}); h != nil || ex != nil || err != nil {
		t.Fatal("no budget must be no hold")
	}
}

// A granted reservation and its settlement on the memory store allocate the hold and the
// settlement's spend list only: the checks, warn levels and rows of up to two scopes live in
// the hold and on the stack, and a period's row name is built once.
func TestBudgetHoldAllocations(t *testing.T) {
	b := NewBudgets(NewMemoryBudgets(nil), BudgetOptions{Now: fixedClock(budgetNow)})
	scopes := []Scope{
		{ID: "key:k1", Daily: Limit{Tokens: 1 << 60}, Monthly: Limit{Tokens: 1 << 60}, WarnAt: 0.9},
		{ID: "label:team=a", Monthly: Limit{Spend: 1 << 60}},
	}
	ctx := context.Background()
	cost := Amount{Tokens: 10, Micros: 20}
	run := func() {
		h, over, err := b.Reserve(ctx, scopes, cost)
		if err != nil || over != nil || h == nil {
			t.Fatalf("reserve: %v %v", over, err)
		}
		if err := h.Settle(ctx, cost); err != nil {
			t.Fatal(err)
		}
	}
	run()
	if n := testing.AllocsPerRun(200, run); n > 2 {
		t.Errorf("a reservation and its settlement allocate %.0f times, want at most 2", n)
	}
	st, err := b.Status(ctx, scopes)
	if err != nil || len(st) != 3 || st[0].Used.Tokens != 202*10 {
		t.Fatalf("status %+v %v", st, err)
	}
}

// Row names are kept up to a bound, then forgotten and built again.
func TestBudgetRowNamesBounded(t *testing.T) {
	var b Budgets
	for i := range maxRowNames + 10 {
		scope := "key:" + strconv.Itoa(i)
		if got := b.rowOf(scope, Daily, budgetNow); got != budgetRow(scope, Daily.name(budgetNow)) {
			t.Fatalf("rowOf = %q", got)
		}
	}
	if n := len(b.rows); n == 0 || n > maxRowNames {
		t.Errorf("%d row names kept, want 1..%d", n, maxRowNames)
	}
	next := budgetNow.Add(24 * time.Hour)
	if got, want := b.rowOf("key:0", Daily, next), budgetRow("key:0", Daily.name(next)); got != want || got == b.rowOf("key:0", Daily, budgetNow) {
		t.Errorf("the next day's row %q, want %q (not the day before's)", got, want)
	}
	if got := b.rowOf("a|b%c", Monthly, budgetNow); got != budgetRow("a|b%c", Monthly.name(budgetNow)) {
		t.Errorf("escaped row %q", got)
	}
}
