// Package ledger keeps who used what: per key, per model and per day totals of requests,
// tokens and cost, written off the request path in batches (Writer) to the store's counters;
// the cost of a request from the model's prices, in integer micro-units of the configured
// currency (no float drift); and budgets in tokens and money per key and per label, reserved
// before a request is admitted and settled on what it used (Budgets), so concurrent requests
// cannot overspend.
//
// Layout of the counter rows (store.Counters), names escaped so that '|' cannot run into the
// separators:
//
//	u|<day>|<key>|<model>       the key's usage of the model that day (Usage fields)
//	l|<day>|<label>|<model>     the same summed per label (name=value) of the key
//	b|<scope>|<period>          tokens and cost per budget scope (key:<id>, label:<name=value>)
//	                            and period (d<day>, m<month>), what embedded budgets start from
//
// Days and months are UTC: 2026-12-01, 2026-12.
//
// Nothing here knows about HTTP or Caddy.
package ledger

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Micros is an amount of money in millionths of the configured currency unit.
type Micros int64

// MaxPrice bounds a price (per million tokens or per request): 10,000 currency units, so that
// a request's cost stays exact in int64.
const MaxPrice Micros = 10_000_000_000

// ParseMicros reads a decimal amount ("0.15", "2", "1e-6" is refused) exactly, with at most six
// decimals.
func ParseMicros(s string) (Micros, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("parsing amount: empty")
	}
	neg := strings.HasPrefix(s, "-")
	if neg {
		return 0, fmt.Errorf("parsing amount %q: must not be negative", s)
	}
	whole, frac, _ := strings.Cut(s, ".")
	if whole == "" {
		whole = "0"
	}
	if len(frac) > 6 {
		if strings.Trim(frac[6:], "0") != "" {
			return 0, fmt.Errorf("parsing amount %q: at most 6 decimals", s)
		}
		frac = frac[:6]
	}
	for _, part := range []string{whole, frac} {
		for i := 0; i < len(part); i++ {
			if part[i] < '0' || part[i] > '9' {
				return 0, fmt.Errorf("parsing amount %q: not a decimal number", s)
			}
		}
	}
	if len(whole) > 12 {
		return 0, fmt.Errorf("parsing amount %q: too large", s)
	}
	w, _ := strconv.ParseInt(whole, 10, 64)
	f, _ := strconv.ParseInt((frac + "000000")[:6], 10, 64)
	return Micros(w*1_000_000 + f), nil
}

// String renders the amount with six decimals ("0.000150").
func (m Micros) String() string {
	var b [24]byte
	return string(m.append(b[:0]))
}

// append appends m as String writes it (on the request path: no fmt).
func (m Micros) append(b []byte) []byte {
	v := uint64(m)
	if m < 0 {
		b = append(b, '-')
		v = -v
	}
	b = strconv.AppendUint(b, v/1_000_000, 10)
	frac := v % 1_000_000
	b = append(b, '.')
	for d := uint64(100_000); d > 0; d /= 10 {
		b = append(b, byte('0'+frac/d%10))
	}
	return b
}

// UnmarshalJSON reads a JSON number or string as written, never through a float.
func (m *Micros) UnmarshalJSON(b []byte) error {
	s := string(b)
	if len(s) >= 2 && s[0] == '"' {
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
	}
	v, err := ParseMicros(s)
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// MarshalJSON writes the amount as a string with six decimals ("0.000150"), so that no client
// reads money through a float.
func (m Micros) MarshalJSON() ([]byte, error) { return []byte(`"` + m.String() + `"`), nil }

// Price is what a model costs, in the configured currency.
type Price struct {
	// Input is the price of one million prompt tokens (not served from the upstream's prompt
	// cache).
	Input Micros `json:"input,omitempty"`
	// CachedInput is the price of one million prompt tokens served from the upstream's prompt
	// cache. Default: the input price.
	CachedInput *Micros `json:"cached_input,omitempty"`
	// Output is the price of one million completion tokens.
	Output Micros `json:"output,omitempty"`
	// Request is the price of each request, whatever its tokens (predict models).
	Request Micros `json:"request,omitempty"`
}

// Validate reports prices above MaxPrice.
func (p Price) Validate() error {
	for _, v := range []Micros{p.Input, p.Output, p.Request, p.cachedInput()} {
		if v < 0 || v > MaxPrice {
			return fmt.Errorf("price %s out of range [0, %s]", v, MaxPrice)
		}
	}
	return nil
}

func (p Price) cachedInput() Micros {
	if p.CachedInput == nil {
		return p.Input
	}
	return *p.CachedInput
}

// IsZero reports whether the model costs nothing.
func (p Price) IsZero() bool {
	return p.Input == 0 && p.Output == 0 && p.Request == 0 && p.cachedInput() == 0
}

// maxTokensPriced bounds the tokens a cost is computed for, keeping tokens x price in int64.
const maxTokensPriced = 500_000_000

// Cost is what prompt tokens (of which cached were served from the upstream's prompt cache)
// and completion tokens cost: the per-million prices summed and rounded half up to a whole
// micro-unit, plus the per-request price.
func (p Price) Cost(prompt, cached, completion int64) Micros {
	prompt, cached, completion = clampTokens(prompt), clampTokens(cached), clampTokens(completion)
	cached = min(cached, prompt)
	perM := (prompt-cached)*int64(p.Input) + cached*int64(p.cachedInput())
	out := completion * int64(p.Output)
	return Micros((perM+500_000)/1_000_000+(out+500_000)/1_000_000) + p.Request
}

func clampTokens(n int64) int64 { return max(0, min(n, maxTokensPriced)) }

// Usage is what one request, or a total of requests, used.
type Usage struct {
	// Requests counts settled requests (answered, failed upstream or cut off; refusals of the
	// gateway are not counted).
	Requests int64 `json:"requests"`
	// CacheHits counts the requests answered from the gateway's response cache (also in
	// Requests).
	CacheHits int64 `json:"cache_hits"`
	// PromptTokens, CompletionTokens, CachedTokens and ReasoningTokens are as the clients were
	// told (cached and reasoning tokens are parts of prompt and completion tokens).
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	CachedTokens     int64 `json:"cached_tokens"`
	ReasoningTokens  int64 `json:"reasoning_tokens"`
	// CostMicros is the cost in micro-units of the currency. JSON has it twice: as the
	// integer cost_micros and, for people, as the decimal string cost.
	CostMicros Micros `json:"-"`
}

// usageJSON is Usage as JSON.
type usageJSON struct {
	Requests         int64  `json:"requests"`
	CacheHits        int64  `json:"cache_hits"`
	PromptTokens     int64  `json:"prompt_tokens"`
	CompletionTokens int64  `json:"completion_tokens"`
	CachedTokens     int64  `json:"cached_tokens"`
	ReasoningTokens  int64  `json:"reasoning_tokens"`
	CostMicros       int64  `json:"cost_micros"`
	Cost             string `json:"cost"`
}

// MarshalJSON writes the usage with its cost as integer micro-units and as a decimal string.
func (u Usage) MarshalJSON() ([]byte, error) {
	return json.Marshal(usageJSON{u.Requests, u.CacheHits, u.PromptTokens, u.CompletionTokens, u.CachedTokens, u.ReasoningTokens,
		int64(u.CostMicros), u.CostMicros.String()})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (u *Usage) UnmarshalJSON(b []byte) error {
	var j usageJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*u = Usage{j.Requests, j.CacheHits, j.PromptTokens, j.CompletionTokens, j.CachedTokens, j.ReasoningTokens, Micros(j.CostMicros)}
	return nil
}

// TotalTokens is prompt plus completion tokens.
func (u Usage) TotalTokens() int64 { return u.PromptTokens + u.CompletionTokens }

// Add adds o to u.
func (u *Usage) Add(o Usage) {
	u.Requests += o.Requests
	u.CacheHits += o.CacheHits
	u.PromptTokens += o.PromptTokens
	u.CompletionTokens += o.CompletionTokens
	u.CachedTokens += o.CachedTokens
	u.ReasoningTokens += o.ReasoningTokens
	u.CostMicros += o.CostMicros
}

// The field names of a usage row.
var usageFields = [...]string{"requests", "cache_hits", "prompt", "completion", "cached", "reasoning", "cost"}

func (u *Usage) values() [len(usageFields)]int64 {
	return [...]int64{u.Requests, u.CacheHits, u.PromptTokens, u.CompletionTokens, u.CachedTokens, u.ReasoningTokens, int64(u.CostMicros)}
}

func usageOf(fields map[string]int64) Usage {
	return Usage{Requests: fields["requests"], CacheHits: fields["cache_hits"], PromptTokens: fields["prompt"],
		CompletionTokens: fields["completion"], CachedTokens: fields["cached"], ReasoningTokens: fields["reasoning"],
		CostMicros: Micros(fields["cost"])}
}

// Entry is one settled request as the ledger records it.
type Entry struct {
	// Time is when the request ended; it picks the day.
	Time time.Time
	// KeyID is the key that made the request.
	KeyID string
	// Labels are the key's labels, each (as name=value) also totalled.
	Labels map[string]string
	// Model is the model that answered (its configured name).
	Model string
	// Usage is what it used (Requests 1).
	Usage Usage
}

// Day returns t's UTC day as the ledger names it: 2026-12-01.
func Day(t time.Time) string { return periodNamesOf(t).day }

// Month returns t's UTC month: 2026-12.
func Month(t time.Time) string { return periodNamesOf(t).month }

// periodNames are the names of one UTC day and of its month, formatted once a day rather than
// for every request.
type periodNames struct {
	unixDay    int64
	day, month string
}

var lastPeriodNames atomic.Pointer[periodNames]

func periodNamesOf(t time.Time) *periodNames {
	u := t.Unix()
	d := u / 86400
	if u < 0 && u%86400 != 0 {
		d-- // floor, for instants before 1970
	}
	if p := lastPeriodNames.Load(); p != nil && p.unixDay == d {
		return p
	}
	t = t.UTC()
	p := &periodNames{unixDay: d, day: t.Format(time.DateOnly), month: t.Format("2006-01")}
	lastPeriodNames.Store(p)
	return p
}

var nameEscaper = strings.NewReplacer("%", "%25", "|", "%7C")
var nameUnescaper = strings.NewReplacer("%7C", "|", "%25", "%")

func esc(s string) string {
	if !strings.ContainsAny(s, "%|") {
		return s
	}
	return nameEscaper.Replace(s)
}
func unesc(s string) string { return nameUnescaper.Replace(s) }

func usageRow(day, key, model string) string { return "u|" + day + "|" + esc(key) + "|" + esc(model) }
func labelRow(day, label, model string) string {
	return "l|" + day + "|" + esc(label) + "|" + esc(model)
}
func budgetRow(scope, period string) string { return "b|" + esc(scope) + "|" + period }

// LabelOf renders a label as it is totalled and named in budgets: name=value.
func LabelOf(name, value string) string { return name + "=" + value }
