package ledger

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Period is the window a budget renews in: a UTC day or a UTC calendar month.
type Period uint8

// The periods.
const (
	Daily Period = iota
	Monthly
)

func (p Period) String() string {
	if p == Monthly {
		return "monthly"
	}
	return "daily"
}

// name is the period of t as budget rows name it: d2026-12-01, m2026-12.
func (p Period) name(t time.Time) string {
	if p == Monthly {
		return "m" + Month(t)
	}
	return "d" + Day(t)
}

// End is the instant the period holding t ends (the budget renews).
func (p Period) End(t time.Time) time.Time {
	t = t.UTC()
	if p == Monthly {
		return time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, time.UTC)
	}
	return time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, time.UTC)
}

// Amount is tokens and money.
type Amount struct {
	Tokens int64
	Micros Micros
}

// Add returns a + o.
func (a Amount) Add(o Amount) Amount { return Amount{a.Tokens + o.Tokens, a.Micros + o.Micros} }

// Sub returns a - o.
func (a Amount) Sub(o Amount) Amount { return Amount{a.Tokens - o.Tokens, a.Micros - o.Micros} }

// Limit is one period's budget: tokens (prompt plus completion) and spend. Zero means no
// budget in that dimension.
type Limit struct {
	Tokens int64  `json:"tokens,omitempty"`
	Spend  Micros `json:"spend,omitempty"`
}

// IsZero reports whether nothing is budgeted.
func (l Limit) IsZero() bool { return l.Tokens == 0 && l.Spend == 0 }

// exceeds reports which dimension of l amount exceeds: "tokens", "spend" or "".
func (l Limit) exceeds(a Amount) string {
	switch {
	case l.Tokens > 0 && a.Tokens > l.Tokens:
		return "tokens"
	case l.Spend > 0 && a.Micros > l.Spend:
		return "spend"
	}
	return ""
}

// Scope is one owner of budgets: key:<id> or label:<name=value> (all keys with that label).
type Scope struct {
	ID      string
	Daily   Limit
	Monthly Limit
	// WarnAt is the share of a budget (0 < WarnAt < 1) whose crossing is reported once per
	// period. Default: none.
	WarnAt float64
}

// Check is one budget of one scope in one period, as a store reserves against it.
type Check struct {
	// Row names the scope's period (its b| counter row).
	Row    string
	Scope  string
	Period Period
	Limit  Limit
	// Ends is when the period ends.
	Ends time.Time
}

// BudgetStore keeps what budgets have spent and hold reserved. Reserve must be atomic across
// all checks.
type BudgetStore interface {
	// Reserve adds cost to what every check holds reserved if each stays within its limit
	// (spent + reserved + cost), and returns -1; otherwise it takes nothing and returns the
	// index of the first check that refused and what that check had (spent plus reserved).
	Reserve(ctx context.Context, checks []Check, cost Amount) (refused int, had Amount, err error)
	// Settle takes reserved back from the checks' reservations and adds actual to their
	// spend, returning each check's spend after (for warnings).
	Settle(ctx context.Context, checks []Check, reserved, actual Amount) (after []Amount, err error)
	// Used returns each check's spend plus what it holds reserved.
	Used(ctx context.Context, checks []Check) ([]Amount, error)
}

// Exceeded describes a refused reservation.
type Exceeded struct {
	Scope     string
	Period    Period
	Dimension string // tokens or spend
	Limit     Limit
	Used      Amount // spent plus reserved, before this request
	Cost      Amount // what this request would have reserved
	Renews    time.Time
}

// Error words the refusal as OpenAI words its quota errors.
func (e *Exceeded) Error() string {
	if e.Dimension == "spend" {
		return fmt.Sprintf("You exceeded the %s spend budget of %s: %s of %s used; this request may cost up to %s. The budget renews at %s.",
			e.Period, e.Scope, e.Used.Micros, e.Limit.Spend, e.Cost.Micros, e.Renews.Format(time.RFC3339))
	}
	return fmt.Sprintf("You exceeded the %s token budget of %s: %d of %d tokens used; this request may use up to %d. The budget renews at %s.",
		e.Period, e.Scope, e.Used.Tokens, e.Limit.Tokens, e.Cost.Tokens, e.Renews.Format(time.RFC3339))
}

// Warning is a budget whose WarnAt share was crossed.
type Warning struct {
	Scope     string
	Period    Period
	Dimension string
	Spent     Amount
	Limit     Limit
}

// BudgetOptions configure Budgets.
type BudgetOptions struct {
	// Now is the clock. Default: time.Now.
	Now func() time.Time
	// OnWarning is told once per scope, period and dimension when the spend crosses WarnAt.
	OnWarning func(Warning)
}

// Budgets reserves requests against the budgets of their scopes and settles them.
type Budgets struct {
	store  BudgetStore
	now    func() time.Time
	onWarn func(Warning)
	warned sync.Map // row|dimension -> struct{}

	rowsMu sync.RWMutex
	rows   map[budgetRowKey]string // the b| row of a scope's period, built once (rowOf)
}

type budgetRowKey struct {
	scope  string
	period Period
	when   string // Day or Month of the period
}

// maxRowNames bounds the row names kept: past it they are forgotten and built again, so the
// names of ended periods do not pile up.
const maxRowNames = 4096

// rowOf returns the b| row of scope's period p holding now.
func (b *Budgets) rowOf(scope string, p Period, now time.Time) string {
	when := Day(now)
	if p == Monthly {
		when = Month(now)
	}
	k := budgetRowKey{scope, p, when}
	b.rowsMu.RLock()
	r, ok := b.rows[k]
	b.rowsMu.RUnlock()
	if ok {
		return r
	}
	r = budgetRow(scope, p.name(now))
	b.rowsMu.Lock()
	if b.rows == nil || len(b.rows) >= maxRowNames {
		b.rows = make(map[budgetRowKey]string)
	}
	b.rows[k] = r
	b.rowsMu.Unlock()
	return r
}

// NewBudgets returns budgets kept in s.
func NewBudgets(s BudgetStore, opts BudgetOptions) *Budgets {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Budgets{store: s, now: opts.Now, onWarn: opts.OnWarning}
}

// checks appends to cs the budgets of scopes in the periods of now.
func (b *Budgets) checks(cs []Check, scopes []Scope, now time.Time) []Check {
	for _, s := range scopes {
		for _, p := range [...]Period{Daily, Monthly} {
			l := s.Daily
			if p == Monthly {
				l = s.Monthly
			}
			if l.IsZero() {
				continue
			}
			cs = append(cs, Check{Row: b.rowOf(s.ID, p, now), Scope: s.ID, Period: p, Limit: l, Ends: p.End(now)})
		}
	}
	return cs
}

// Hold is a granted reservation, settled once.
type Hold struct {
	b       *Budgets
	checks  []Check
	warnAt  []float64
	cost    Amount
	settled bool
	// the arrays behind checks and warnAt for up to two scopes (daily and monthly each): one
	// allocation for a request's hold
	checkBuf [4]Check
	warnBuf  [4]float64
}

// Reserve reserves cost against every budget of scopes, all or nothing. A refusal is an
// *Exceeded and no hold; no budget at all is a nil hold and nil refusal.
func (b *Budgets) Reserve(ctx context.Context, scopes []Scope, cost Amount) (*Hold, *Exceeded, error) {
	now := b.now()
	h := &Hold{b: b, cost: cost}
	cs := b.checks(h.checkBuf[:0], scopes, now)
	if len(cs) == 0 {
		return nil, nil, nil
	}
	i, had, err := b.store.Reserve(ctx, cs, cost)
	if err != nil {
		return nil, nil, fmt.Errorf("reserving budget: %w", err)
	}
	if i >= 0 {
		c := cs[i]
		dim := c.Limit.exceeds(had.Add(cost))
		return nil, &Exceeded{Scope: c.Scope, Period: c.Period, Dimension: dim, Limit: c.Limit, Used: had, Cost: cost, Renews: c.Ends}, nil
	}
	h.checks, h.warnAt = cs, h.warnBuf[:0]
	for _, s := range scopes {
		for _, c := range cs {
			if c.Scope == s.ID {
				h.warnAt = append(h.warnAt, s.WarnAt)
			}
		}
	}
	return h, nil, nil
}

// Settle gives the reservation back and charges actual, once; later calls do nothing.
func (h *Hold) Settle(ctx context.Context, actual Amount) error {
	if h == nil || h.settled {
		return nil
	}
	h.settled = true
	after, err := h.b.store.Settle(ctx, h.checks, h.cost, actual)
	if err != nil {
		return fmt.Errorf("settling budget: %w", err)
	}
	if h.b.onWarn == nil {
		return nil
	}
	for i, c := range h.checks {
		if i >= len(after) || i >= len(h.warnAt) || h.warnAt[i] <= 0 {
			continue
		}
		w := h.warnAt[i]
		before := after[i].Sub(actual)
		for _, dim := range [...]string{"tokens", "spend"} {
			var lim, a, bf float64
			if dim == "tokens" {
				lim, a, bf = float64(c.Limit.Tokens), float64(after[i].Tokens), float64(before.Tokens)
			} else {
				lim, a, bf = float64(c.Limit.Spend), float64(after[i].Micros), float64(before.Micros)
			}
			if lim <= 0 || a < w*lim || bf >= w*lim {
				continue
			}
			if _, dup := h.b.warned.LoadOrStore(c.Row+"|"+dim, struct{}{}); dup {
				continue
			}
			h.b.onWarn(Warning{Scope: c.Scope, Period: c.Period, Dimension: dim, Spent: after[i], Limit: c.Limit})
		}
	}
	return nil
}

// Status is one budget of a scope now.
type Status struct {
	Scope  string    `json:"scope"`
	Period string    `json:"period"`
	Limit  Limit     `json:"limit"`
	Used   Amount    `json:"-"`
	Renews time.Time `json:"renews_at"`
}

// Remaining is what is left of the limit (never negative); 0 in a dimension without limit.
func (s Status) Remaining() Amount {
	var r Amount
	if s.Limit.Tokens > 0 {
		r.Tokens = max(0, s.Limit.Tokens-s.Used.Tokens)
	}
	if s.Limit.Spend > 0 {
		r.Micros = max(0, s.Limit.Spend-s.Used.Micros)
	}
	return r
}

// Status reports the budgets of scopes in the current periods.
func (b *Budgets) Status(ctx context.Context, scopes []Scope) ([]Status, error) {
	cs := b.checks(nil, scopes, b.now())
	if len(cs) == 0 {
		return nil, nil
	}
	used, err := b.store.Used(ctx, cs)
	if err != nil {
		return nil, fmt.Errorf("reading budgets: %w", err)
	}
	out := make([]Status, len(cs))
	for i, c := range cs {
		out[i] = Status{Scope: c.Scope, Period: c.Period.String(), Limit: c.Limit, Used: used[i], Renews: c.Ends}
	}
	return out, nil
}
