package caddymodule

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/caddyai/gateway/ledger"
)

// usageView is the answer of GET /v1/usage: the calling key's own usage per day and model (as
// the ledger has written it, so up to a second behind with the embedded store), its total, and
// the budgets it is held to in the current day and month.
type usageView struct {
	Object   string         `json:"object"`
	KeyID    string         `json:"key_id"`
	Currency string         `json:"currency"`
	From     string         `json:"from"`
	To       string         `json:"to"`
	Total    ledger.Usage   `json:"total"`
	Data     []usageDay     `json:"data"`
	Budgets  []budgetStatus `json:"budgets"`
}

type usageDay struct {
	Day   string       `json:"day"`
	Model string       `json:"model"`
	Usage ledger.Usage `json:"usage"`
}

// budgetStatus is one budget as /v1/usage and the admin API show it.
type budgetStatus struct {
	Scope           string         `json:"scope"`
	Period          string         `json:"period"`
	TokensLimit     int64          `json:"tokens_limit,omitempty"`
	TokensUsed      int64          `json:"tokens_used"`
	TokensRemaining *int64         `json:"tokens_remaining,omitempty"`
	SpendLimit      ledger.Micros  `json:"spend_limit,omitempty"`
	SpendUsed       ledger.Micros  `json:"spend_used"`
	SpendRemaining  *ledger.Micros `json:"spend_remaining,omitempty"`
	RenewsAt        int64          `json:"renews_at"`
}

func budgetStatusOf(s ledger.Status) budgetStatus {
	rem := s.Remaining()
	b := budgetStatus{Scope: s.Scope, Period: s.Period, TokensLimit: s.Limit.Tokens, TokensUsed: s.Used.Tokens,
		SpendLimit: s.Limit.Spend, SpendUsed: s.Used.Micros, RenewsAt: s.Renews.Unix()}
	if s.Limit.Tokens > 0 {
		b.TokensRemaining = &rem.Tokens
	}
	if s.Limit.Spend > 0 {
		b.SpendRemaining = &rem.Micros
	}
	return b
}

// usageRange reads the from and to query parameters (UTC days, inclusive). Default: the current
// month up to today.
func usageRange(q map[string][]string, now time.Time) (from, to string, werr *wire.Error) {
	from, to = ledger.Month(now)+"-01", ledger.Day(now)
	for _, p := range [...]struct {
		name string
		dst  *string
	}{{"from", &from}, {"to", &to}} {
		v := q[p.name]
		if len(v) == 0 {
			continue
		}
		if _, err := time.Parse(time.DateOnly, v[0]); err != nil || len(v) > 1 {
			return "", "", wire.InvalidRequest(p.name, "%s: expected one day as YYYY-MM-DD, got %q.", p.name, wire.Shorten(v[0], 40))
		}
		*p.dst = v[0]
	}
	if from > to {
		return "", "", wire.InvalidRequest("from", "from (%s) is after to (%s).", from, to)
	}
	return from, to, nil
}

// serveUsage answers GET /v1/usage with the calling key's own usage and budgets; nothing of any
// other key. Without accounting the path is not served.
func (g *Gateway) serveUsage(w http.ResponseWriter, r *http.Request, ex *exchange) error {
	if g.acct == nil {
		g.refuse(w, ex, wire.InvalidURL(r.Method, r.URL.Path))
		return nil
	}
	from, to, werr := usageRange(r.URL.Query(), g.now())
	if werr != nil {
		g.refuse(w, ex, werr)
		return nil
	}
	objs, _, err := g.backend.open()
	var rows []ledger.Row
	if err == nil {
		rows, err = ledger.Query(r.Context(), objs.Counters(), ledger.Filter{From: from, To: to, KeyID: ex.key.ID})
	}
	var statuses []ledger.Status
	if err == nil {
		var buf [4]ledger.Scope
		statuses, err = g.acct.budget.Status(r.Context(), g.budgetScopes(ex.key, buf[:]))
	}
	if err != nil {
		g.refuse(w, ex, g.storeError(ex, "reading the usage ledger", err))
		return nil
	}
	v := usageView{Object: "usage", KeyID: ex.key.ID, Currency: g.acct.currency, From: from, To: to,
		Total: ledger.Total(rows), Data: make([]usageDay, 0, len(rows)), Budgets: make([]budgetStatus, 0, len(statuses))}
	for _, row := range rows {
		v.Data = append(v.Data, usageDay{Day: row.Day, Model: row.Model, Usage: row.Usage})
	}
	for _, s := range statuses {
		v.Budgets = append(v.Budgets, budgetStatusOf(s))
	}
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return answerJSON(w, r, ex, body)
}
