package ledger

import (
	"context"
	"sync"
	"time"
)

// MemoryBudgets keeps budgets in this process, for one instance: what a period has spent
// starts from its b| counter row (load, read once per row), so a restart keeps the spend the
// ledger had written, and goes on in memory.
type MemoryBudgets struct {
	load func(ctx context.Context, row string) (Amount, error)

	mu     sync.Mutex
	rows   map[string]*memRow
	pruned time.Time
}

type memRow struct {
	spent, reserved Amount
	ends            time.Time
}

// NewMemoryBudgets returns budgets whose rows start from load (nil: from zero).
func NewMemoryBudgets(load func(ctx context.Context, row string) (Amount, error)) *MemoryBudgets {
	return &MemoryBudgets{load: load, rows: map[string]*memRow{}}
}

// rowsOf returns the checks' rows, loading the missing ones outside the lock. It is called
// with m.mu held and returns with it held.
func (m *MemoryBudgets) rowsOf(ctx context.Context, checks []Check, out []*memRow) ([]*memRow, error) {
	out = out[:0]
	for _, c := range checks {
		r := m.rows[c.Row]
		if r == nil {
			var spent Amount
			if m.load != nil {
				m.mu.Unlock()
				var err error
				spent, err = m.load(ctx, c.Row)
				m.mu.Lock()
				if err != nil {
					return nil, err
				}
			}
			if r = m.rows[c.Row]; r == nil { // another call may have loaded it meanwhile
				r = &memRow{spent: spent, ends: c.Ends}
				m.rows[c.Row] = r
			}
		}
		out = append(out, r)
	}
	// loading released the lock: a row loaded earlier in this loop stays valid (rows are only
	// removed by prune, under the lock, and only after their period ended)
	return out, nil
}

// Reserve implements BudgetStore.
func (m *MemoryBudgets) Reserve(ctx context.Context, checks []Check, cost Amount) (int, Amount, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.prune(time.Now())
	var buf [4]*memRow
	rows, err := m.rowsOf(ctx, checks, buf[:])
	if err != nil {
		return 0, Amount{}, err
	}
	for i, c := range checks {
		had := rows[i].spent.Add(rows[i].reserved)
		if c.Limit.exceeds(had.Add(cost)) != "" {
			return i, had, nil
		}
	}
	for _, r := range rows {
		r.reserved = r.reserved.Add(cost)
	}
	return -1, Amount{}, nil
}

// Settle implements BudgetStore.
func (m *MemoryBudgets) Settle(ctx context.Context, checks []Check, reserved, actual Amount) ([]Amount, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var buf [4]*memRow
	rows, err := m.rowsOf(ctx, checks, buf[:])
	if err != nil {
		return nil, err
	}
	after := make([]Amount, len(rows))
	for i, r := range rows {
		r.reserved = r.reserved.Sub(reserved)
		r.reserved.Tokens, r.reserved.Micros = max(0, r.reserved.Tokens), max(0, r.reserved.Micros)
		r.spent = r.spent.Add(actual)
		after[i] = r.spent
	}
	return after, nil
}

// Used implements BudgetStore.
func (m *MemoryBudgets) Used(ctx context.Context, checks []Check) ([]Amount, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var buf [4]*memRow
	rows, err := m.rowsOf(ctx, checks, buf[:])
	if err != nil {
		return nil, err
	}
	out := make([]Amount, len(rows))
	for i, r := range rows {
		out[i] = r.spent.Add(r.reserved)
	}
	return out, nil
}

// prune forgets, once a minute, rows whose period ended over an hour ago and hold nothing.
func (m *MemoryBudgets) prune(now time.Time) {
	if now.Sub(m.pruned) < time.Minute {
		return
	}
	m.pruned = now
	for k, r := range m.rows {
		if now.Sub(r.ends) > time.Hour && r.reserved == (Amount{}) {
			delete(m.rows, k)
		}
	}
}

var _ BudgetStore = (*MemoryBudgets)(nil)
