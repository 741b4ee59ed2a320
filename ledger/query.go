package ledger

import (
	"context"
	"strings"
	"time"

	"github.com/caddyai/gateway/store"
)

// Filter selects ledger rows. Days are inclusive UTC days (2026-12-01); empty bounds are open.
type Filter struct {
	From, To string
	// KeyID keeps one key's rows; Label (name=value) reads the label totals instead of the
	// keys'; Model keeps one model's rows.
	KeyID, Label, Model string
}

// Row is the usage of one key (or label) of one model on one day.
type Row struct {
	Day   string `json:"day"`
	KeyID string `json:"key_id,omitempty"`
	Label string `json:"label,omitempty"`
	Model string `json:"model"`
	Usage Usage  `json:"usage"`
}

// Query returns the rows f selects, ordered by day, key (or label), model.
func Query(ctx context.Context, c store.Counters, f Filter) ([]Row, error) {
	kind := "u|"
	if f.Label != "" {
		kind = "l|"
	}
	from, to := kind+f.From, kind+"\xff"
	if f.To != "" {
		to = kind + f.To + "|\xff"
	}
	raw, err := c.Scan(ctx, from, to, 0)
	if err != nil {
		return nil, err
	}
	rows := make([]Row, 0, len(raw))
	for _, r := range raw {
		parts := strings.Split(r.Name, "|")
		if len(parts) != 4 {
			continue
		}
		row := Row{Day: parts[1], Model: unesc(parts[3]), Usage: usageOf(r.Fields)}
		who := unesc(parts[2])
		switch {
		case f.Label != "" && who != f.Label, f.KeyID != "" && who != f.KeyID, f.Model != "" && row.Model != f.Model:
			continue
		case f.Label != "":
			row.Label = who
		default:
			row.KeyID = who
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// Total sums rows.
func Total(rows []Row) Usage {
	var u Usage
	for _, r := range rows {
		u.Add(r.Usage)
	}
	return u
}

// Spent is what a budget scope (key:<id>, label:<name=value>) has used in the period of t
// (daily or monthly), as written to the counters.
func Spent(ctx context.Context, c store.Counters, scope string, period Period, t time.Time) (Amount, error) {
	row := budgetRow(scope, period.name(t))
	rows, err := c.Scan(ctx, row, row+"\x00", 1)
	if err != nil || len(rows) == 0 || rows[0].Name != row {
		return Amount{}, err
	}
	return Amount{Tokens: rows[0].Fields["tokens"], Micros: Micros(rows[0].Fields["cost"])}, nil
}
