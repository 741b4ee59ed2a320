package caddymodule

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// TestCaddyfileAccountingErrors: the accounting and price blocks reject unknown and repeated
// subdirectives and bad values, quoting them.
func TestCaddyfileAccountingErrors(t *testing.T) {
	for name, tc := range map[string]struct{ input, want string }{
		"unknown accounting opt": {"ai_gateway {\naccounting {\nledger off\n}\n}", `"ledger"`},
		"repeated currency":      {"ai_gateway {\naccounting {\ncurrency USD\ncurrency EUR\n}\n}", "more than once"},
		"budget without scope":   {"ai_gateway {\naccounting {\nbudget {\ndaily_tokens 1\n}\n}\n}", "expected key <id> or label"},
		"budget bad scope":       {"ai_gateway {\naccounting {\nbudget team a {\ndaily_tokens 1\n}\n}\n}", "expected key <id> or label"},
		"label not name=value":   {"ai_gateway {\naccounting {\nbudget label team {\ndaily_tokens 1\n}\n}\n}", "name=value"},
		"empty budget":           {"ai_gateway {\naccounting {\nbudget key a {\n}\n}\n}", "no budget set"},
		"bad tokens":             {"ai_gateway {\naccounting {\nbudget key a {\ndaily_tokens lots\n}\n}\n}", `"lots"`},
		"zero tokens":            {"ai_gateway {\naccounting {\nbudget key a {\ndaily_tokens 0\n}\n}\n}", `"0"`},
		"float spend":            {"ai_gateway {\naccounting {\nbudget key a {\nmonthly_spend 1e3\n}\n}\n}", `"1e3"`},
		"spend too fine":         {"ai_gateway {\naccounting {\nbudget key a {\ndaily_spend 0.0000001\n}\n}\n}", `"0.0000001"`},
		"bad warn_at":            {"ai_gateway {\naccounting {\nbudget key a {\ndaily_tokens 1\nwarn_at 80\n}\n}\n}", `"80"`},
		"repeated budget opt":    {"ai_gateway {\naccounting {\nbudget key a {\ndaily_tokens 1\ndaily_tokens 2\n}\n}\n}", "more than once"},
		"unknown budget opt":     {"ai_gateway {\naccounting {\nbudget key a {\nweekly_tokens 1\n}\n}\n}", `"weekly_tokens"`},
		"unknown price opt":      {"ai_gateway {\nmodel m {\nprice {\nimage 1\n}\n}\n}", `"image"`},
		"negative price":         {"ai_gateway {\nmodel m {\nprice {\ninput -1\n}\n}\n}", `"-1"`},
		"repeated price opt":     {"ai_gateway {\nmodel m {\nprice {\ninput 1\ninput 2\n}\n}\n}", "more than once"},
		"price too high":         {"ai_gateway {\nmodel m {\nprice {\noutput 20000\n}\n}\n}", "out of range"},
	} {
		t.Run(name, func(t *testing.T) {
			err := new(Gateway).UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("want an error with %s, got %v", tc.want, err)
			}
		})
	}
}
