package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/caddyai/gateway/ledger"
	"github.com/caddyai/gateway/policy"
)

// AccountingConfig turns on the usage ledger: every settled request (live, batch line, cache
// hit) adds its tokens, request and cost to per-key, per-label, per-model, per-day totals in the
// store (see Storage), which the admin API (admin.api.ai_gateway) reads as JSON or CSV and each
// key reads for itself at GET /v1/usage. It also holds the budgets and makes keys created
// through the admin API usable on this gateway.
type AccountingConfig struct {
	// Currency names the unit of the models' prices, of costs and of spend budgets (a label,
	// such as an ISO 4217 code; nothing is converted). Default: USD.
	Currency string `json:"currency,omitempty"`
	// Budgets are daily and monthly budgets in tokens and in spend, per key or per label (all
	// keys with the label share one). A request that could take a budget past its limit gets
	// 429 insufficient_quota.
	Budgets []BudgetConfig `json:"budgets,omitempty"`
}

// BudgetConfig is the budgets of one key or one label. Zero means no budget in that dimension.
type BudgetConfig struct {
	// Key is the id of the key the budgets apply to. Exactly one of Key and Label is set.
	Key string `json:"key,omitempty"`
	// Label is name=value: the budgets are shared by every key with that label.
	Label string `json:"label,omitempty"`
	// DailyTokens is the most prompt plus completion tokens per UTC day.
	DailyTokens int64 `json:"daily_tokens,omitempty"`
	// DailySpend is the most spend per UTC day, in the currency (a decimal, e.g. 25.50).
	DailySpend ledger.Micros `json:"daily_spend,omitempty"`
	// MonthlyTokens is the most tokens per UTC calendar month.
	MonthlyTokens int64 `json:"monthly_tokens,omitempty"`
	// MonthlySpend is the most spend per UTC calendar month.
	MonthlySpend ledger.Micros `json:"monthly_spend,omitempty"`
	// WarnAt is the share of a budget whose crossing is logged once (a warning) and counted
	// in caddy_ai_gateway_budget_warnings_total, in (0, 1). Default: 0.8; -1 for none.
	WarnAt float64 `json:"warn_at,omitempty"`
}

const defaultWarnAt = 0.8

// scope returns the budget's ledger scope.
func (b BudgetConfig) scope() ledger.Scope {
	id := "key:" + b.Key
	if b.Label != "" {
		id = "label:" + b.Label
	}
	warn := b.WarnAt
	switch {
	case warn == 0:
		warn = defaultWarnAt
	case warn < 0:
		warn = 0
	}
	return ledger.Scope{ID: id, Daily: ledger.Limit{Tokens: b.DailyTokens, Spend: b.DailySpend},
		Monthly: ledger.Limit{Tokens: b.MonthlyTokens, Spend: b.MonthlySpend}, WarnAt: warn}
}

func (b BudgetConfig) validate() error {
	switch {
	case (b.Key == "") == (b.Label == ""):
		return errors.New("set exactly one of key and label")
	case b.Label != "" && !strings.Contains(b.Label, "="):
		return fmt.Errorf("label %q: want name=value", b.Label)
	case b.DailyTokens < 0 || b.MonthlyTokens < 0 || b.DailySpend < 0 || b.MonthlySpend < 0:
		return errors.New("budgets must not be negative")
	case b.DailyTokens == 0 && b.MonthlyTokens == 0 && b.DailySpend == 0 && b.MonthlySpend == 0:
		return errors.New("no budget set")
	case b.WarnAt >= 1 || b.WarnAt < 0 && b.WarnAt != -1:
		return fmt.Errorf("warn_at %v: want a share in (0, 1), or -1", b.WarnAt)
	}
	return nil
}

// accounting is the compiled accounting config of one Gateway.
type accounting struct {
	currency string
	prices   map[string]ledger.Price // by model name
	budgets  map[string]ledger.Scope // by scope id (key:<id>, label:<name=value>)
	ledger   *ledger.Writer
	budget   *ledger.Budgets
	// waitLedger: each request waits for its ledger write (Redis); else the embedded ledger
	// writes once a second, off the request path.
	waitLedger bool
}

// ledgerWait bounds how long a request waits for its ledger write to Redis.
const ledgerWait = 250 * time.Millisecond

// provisionAccounting compiles prices and budgets and takes the store's ledger writer. It does
// no I/O: the store opens on first use.
func (g *Gateway) provisionAccounting() error {
	prices := make(map[string]ledger.Price)
	for _, mc := range g.Models {
		if mc.Price == nil {
			continue
		}
		if err := mc.Price.Validate(); err != nil {
			return fmt.Errorf("model %q: %w", mc.Name, err)
		}
		if g.Accounting == nil {
			return fmt.Errorf("model %q: price needs accounting", mc.Name)
		}
		prices[mc.Name] = *mc.Price
	}
	ac := g.Accounting
	if ac == nil {
		return nil
	}
	if ac.Currency == "" {
		ac.Currency = "USD"
	}
	a := &accounting{currency: ac.Currency, prices: prices, budgets: map[string]ledger.Scope{}}
	for i, b := range ac.Budgets {
		if err := b.validate(); err != nil {
			return fmt.Errorf("accounting: budgets[%d]: %w", i, err)
		}
		s := b.scope()
		if _, dup := a.budgets[s.ID]; dup {
			return fmt.Errorf("accounting: budgets[%d]: %s has budgets already", i, s.ID)
		}
		a.budgets[s.ID] = s
	}
	h := g.backend
	a.ledger, a.waitLedger = h.ledgerWriter(), h.redisOpts != nil
	a.budget = ledger.NewBudgets(h.budgetStore(), ledger.BudgetOptions{Now: g.now, OnWarning: func(w ledger.Warning) {
		g.metrics.budgetWarnings.WithLabelValues(strings.SplitN(w.Scope, ":", 2)[0], w.Period.String(), w.Dimension).Inc()
		g.logger.Warn("budget warning threshold crossed", zap.String("scope", w.Scope), zap.String("period", w.Period.String()),
			zap.String("dimension", w.Dimension), zap.Int64("spent_tokens", w.Spent.Tokens), zap.Int64("limit_tokens", w.Limit.Tokens),
			zap.Stringer("spent", w.Spent.Micros), zap.Stringer("limit_spend", w.Limit.Spend), zap.String("currency", a.currency))
	}})
	g.acct = a
	h.register(g)
	return nil
}

// budgetScopes returns the budgets that apply to the request's key: its own and its labels',
// those set through the admin API replacing the config's of the same scope.
func (g *Gateway) budgetScopes(k *policy.Key, buf []ledger.Scope) []ledger.Scope {
	s := buf[:0]
	a := g.acct
	var admin map[string]ledger.Scope
	if p := g.backend.acct.adminBudgets.Load(); p != nil {
		admin = *p
	}
	if len(a.budgets) == 0 && len(admin) == 0 || k == nil {
		return s
	}
	// The ids are built in a buffer and looked up as string(id), which does not allocate.
	var idBuf [128]byte
	find := func(id []byte) {
		if b, ok := admin[string(id)]; ok {
			s = append(s, b)
		} else if b, ok := a.budgets[string(id)]; ok {
			s = append(s, b)
		}
	}
	find(append(append(idBuf[:0], "key:"...), k.ID...))
	for name, v := range k.Labels {
		find(append(append(append(append(idBuf[:0], "label:"...), name...), '='), v...))
	}
	return s
}

// admitBudgets reserves the request's most cost (its prompt and reserved output, at the input
// and output prices) against its key's and labels' budgets. A budget spent answers 429
// insufficient_quota, without retry (Retry-After only when the budget renews within a minute).
func (g *Gateway) admitBudgets(ctx context.Context, ex *exchange) *wire.Error {
	a := g.acct
	if a == nil || ex.route == nil {
		return nil
	}
	var buf [4]ledger.Scope
	scopes := g.budgetScopes(ex.key, buf[:])
	if len(scopes) == 0 {
		return nil
	}
	price := a.prices[ex.route.model.Name]
	out := int64(ex.reservedOutput)
	cost := ledger.Amount{Tokens: int64(ex.promptTokens) + out, Micros: price.Cost(int64(ex.promptTokens), 0, out)}
	hold, over, err := a.budget.Reserve(ctx, scopes, cost)
	if err != nil {
		g.logger.Error("budget reservation failed", zap.String("request_id", ex.requestID), zap.Error(err))
		return &wire.Error{Status: http.StatusServiceUnavailable, Type: wire.TypeServer, Code: "budget_unavailable",
			Message: "The gateway cannot check budgets right now. Please try again shortly.", RetryAfter: time.Second}
	}
	if over != nil {
		g.metrics.budgetRefused.WithLabelValues(strings.SplitN(over.Scope, ":", 2)[0], over.Period.String(), over.Dimension).Inc()
		werr := &wire.Error{Status: http.StatusTooManyRequests, Type: wire.TypeInsufficientQuota, Code: "insufficient_quota",
			Reason: "budget_exceeded", Message: over.Error(), NoRetry: true}
		if wait := over.Renews.Sub(g.now()); wait <= time.Minute {
			werr.RetryAfter = max(wait, time.Second)
		}
		return werr
	}
	ex.budget = hold
	return nil
}

// account settles the request's budgets on what it used and records it in the ledger (off the
// request path: Record only merges it into the pending totals). It runs in the one exit, once.
// Counted are the requests that went upstream and the cache hits; refusals and the gateway's own
// answers are not. A cache hit is recorded with the tokens its client was told and no cost.
func (g *Gateway) account(ex *exchange) {
	a := g.acct
	if a == nil {
		return
	}
	hit := ex.cacheState == cacheHit
	counted := (ex.tap != nil || hit) && ex.key != nil && ex.route != nil
	var u ledger.Usage
	if counted {
		u = ledger.Usage{Requests: 1, PromptTokens: ex.usage.PromptTokens, CompletionTokens: ex.usage.CompletionTokens,
			CachedTokens: ex.usage.CachedTokens, ReasoningTokens: ex.usage.ReasoningTokens}
		if hit {
			u.CacheHits = 1
		} else if p, ok := a.prices[ex.route.model.Name]; ok {
			if ex.status < 200 || ex.status > 299 {
				p.Request = 0 // a failed request costs its tokens only
			}
			u.CostMicros = p.Cost(u.PromptTokens, u.CachedTokens, u.CompletionTokens)
		}
	}
	if ex.budget != nil {
		var actual ledger.Amount
		if !hit {
			actual = ledger.Amount{Tokens: u.TotalTokens(), Micros: u.CostMicros}
		}
		if err := ex.budget.Settle(context.Background(), actual); err != nil {
			g.logger.Error("settling budget", zap.String("request_id", ex.requestID), zap.Error(err))
		}
	}
	if !counted {
		return
	}
	e := ledger.Entry{Time: g.now(), KeyID: ex.key.ID, Labels: ex.key.Labels, Model: ex.route.model.Name, Usage: u}
	if a.waitLedger {
		// Redis: the increments are in Redis before the handler lets the answer go (one round
		// trip shared by every request finishing at once), so a killed instance loses nothing
		// its clients received; a slow Redis holds no request past ledgerWait
		ctx, cancel := context.WithTimeout(context.Background(), ledgerWait)
		if err := a.ledger.RecordWait(ctx, e); err != nil {
			g.logger.Warn("usage ledger write slower than "+ledgerWait.String()+"; it stays pending", zap.String("request_id", ex.requestID))
		}
		cancel()
	} else {
		a.ledger.Record(e)
	}
	cost := u.CostMicros.String()
	ex.cost = cost // {http.ai_gateway.cost}, answered by ex.placeholder
	if u.CostMicros > 0 {
		ex.route.series.costCounter(a.currency).Add(float64(u.CostMicros) / 1e6)
	}
	if extra := accessLogFields(ex.r); extra != nil {
		extra.Set(zap.String("ai_cost", cost))
	}
}

// phCost is the request's cost in the currency, as a decimal with six places.
const phCost = "http.ai_gateway.cost"

// validateAccounting checks that budgets name keys or labels sensibly (keys created through
// the admin API may appear later, so an unknown key id is not an error).
func (g *Gateway) validateAccounting() error {
	if g.Accounting == nil {
		return nil
	}
	for i, b := range g.Accounting.Budgets {
		if err := b.validate(); err != nil {
			return fmt.Errorf("accounting: budgets[%d]: %w", i, err)
		}
	}
	return nil
}
