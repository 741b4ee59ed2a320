package caddymodule

import (
	"strconv"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddyai/gateway/ledger"
)

// parseAccounting parses the accounting block of ai_gateway:
//
//	accounting {
//	    currency <code>
//	    budget key <id>|label <name>=<value> {
//	        daily_tokens <n>
//	        daily_spend <amount>
//	        monthly_tokens <n>
//	        monthly_spend <amount>
//	        warn_at <share>|off
//	    }
//	}
//
// budget may be repeated (budget -> budgets).
func parseAccounting(d *caddyfile.Dispenser) (*AccountingConfig, error) {
	if err := noArgs(d); err != nil {
		return nil, err
	}
	ac := new(AccountingConfig)
	err := newSubdirectives("accounting", "budget").each(d, func(name string) (err error) {
		switch name {
		case "currency":
			ac.Currency, err = stringArg(d)
		case "budget":
			var b BudgetConfig
			if b, err = parseBudget(d); err == nil {
				ac.Budgets = append(ac.Budgets, b)
			}
		default:
			return d.Errf("unrecognized accounting subdirective %q", name)
		}
		return err
	})
	return ac, err
}

func parseBudget(d *caddyfile.Dispenser) (BudgetConfig, error) {
	var b BudgetConfig
	args := d.RemainingArgs()
	if len(args) != 2 || args[0] != "key" && args[0] != "label" {
		return b, d.Err("budget: expected key <id> or label <name>=<value>")
	}
	if args[0] == "key" {
		b.Key = args[1]
	} else {
		b.Label = args[1]
	}
	err := newSubdirectives("budget "+args[0]+" "+args[1]).each(d, func(name string) (err error) {
		switch name {
		case "daily_tokens":
			b.DailyTokens, err = tokensArg(d)
		case "monthly_tokens":
			b.MonthlyTokens, err = tokensArg(d)
		case "daily_spend":
			b.DailySpend, err = moneyArg(d)
		case "monthly_spend":
			b.MonthlySpend, err = moneyArg(d)
		case "warn_at":
			b.WarnAt, err = valueArg(d, "a share in (0, 1) or off", func(s string) (float64, bool) {
				if s == "off" {
					return -1, true
				}
				f, err := strconv.ParseFloat(s, 64)
				return f, err == nil && f > 0 && f < 1
			})
		default:
			return d.Errf("unrecognized budget subdirective %q", name)
		}
		return err
	})
	if err == nil {
		if verr := b.validate(); verr != nil {
			return b, d.Errf("budget %s %s: %v", args[0], args[1], verr)
		}
	}
	return b, err
}

// parsePrice parses a model's price block:
//
//	price {
//	    input <amount per million tokens>
//	    cached_input <amount per million tokens>
//	    output <amount per million tokens>
//	    request <amount per request>
//	}
func parsePrice(d *caddyfile.Dispenser) (*ledger.Price, error) {
	if err := noArgs(d); err != nil {
		return nil, err
	}
	p := new(ledger.Price)
	err := newSubdirectives("price").each(d, func(name string) (err error) {
		switch name {
		case "input":
			p.Input, err = moneyArg(d)
		case "cached_input":
			var m ledger.Micros
			if m, err = moneyArg(d); err == nil {
				p.CachedInput = &m
			}
		case "output":
			p.Output, err = moneyArg(d)
		case "request":
			p.Request, err = moneyArg(d)
		default:
			return d.Errf("unrecognized price subdirective %q", name)
		}
		return err
	})
	if err == nil {
		if verr := p.Validate(); verr != nil {
			return nil, d.Errf("price: %v", verr)
		}
	}
	return p, err
}

func moneyArg(d *caddyfile.Dispenser) (ledger.Micros, error) {
	return valueArg(d, "a decimal amount with at most 6 decimals, such as 0.15", func(s string) (ledger.Micros, bool) {
		m, err := ledger.ParseMicros(s)
		return m, err == nil
	})
}

func tokensArg(d *caddyfile.Dispenser) (int64, error) {
	return valueArg(d, "a positive number of tokens", func(s string) (int64, bool) {
		n, err := strconv.ParseInt(s, 10, 64)
		return n, err == nil && n > 0
	})
}
