package policy

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/tidwall/gjson"
)

// Error codes of validation failures. They follow the codes the OpenAI API returns for the same
// faults, so that clients that branch on them keep working behind the gateway.
const (
	CodeInvalidJSON       = "invalid_json"
	CodeInvalidType       = "invalid_type"
	CodeMissingParam      = "missing_required_parameter"
	CodeInvalidValue      = "invalid_value"
	CodeEmptyArray        = "empty_array"
	CodeArrayTooLong      = "array_above_max_length"
	CodeEmptyString       = "empty_string"
	CodeDuplicateKey      = "duplicate_key"
	CodeNestingTooDeep    = "nesting_too_deep"
	CodeParamNotAllowed   = "parameter_not_allowed"
	CodeValueAboveMaximum = "value_above_max_value"
	CodeValueBelowMinimum = "value_below_min_value"
)

// maxEcho bounds how much of a client-sent value (a number, an enum word) an error message
// repeats. Prompt text is never repeated.
const maxEcho = 40

// dotted turns an OpenAI-style path (messages[2].content[0].type) into the dotted form
// Anthropic uses in its messages (messages.2.content.0.type).
func dotted(param string) string {
	if strings.IndexByte(param, '[') < 0 {
		return param
	}
	var b strings.Builder
	b.Grow(len(param))
	for i := 0; i < len(param); i++ {
		switch c := param[i]; c {
		case '[':
			b.WriteByte('.')
		case ']':
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// echo returns a client-sent token shortened for an error message.
func echo(s string) string { return wire.Shorten(s, maxEcho) }

// errs builds validation errors in the wording of one API surface: OpenAI's sentences, or the
// "field: Input should be ..." form of Anthropic's API (where the param is not part of the
// envelope, so the message has to name the field itself).
type errs struct{ anthropic bool }

func (x errs) missing(param string) *wire.Error {
	if x.anthropic {
		return wire.InvalidCode(CodeMissingParam, param, "%s: Field required", dotted(param))
	}
	return wire.MissingParam(param)
}

func (x errs) badType(param, want string, got gjson.Result) *wire.Error {
	if x.anthropic {
		return wire.InvalidCode(CodeInvalidType, param, "%s: Input should be %s, but got %s", dotted(param), want, wire.Describe(got))
	}
	return wire.BadType(param, want, got)
}

// outOfRange reports a number above max (above) or below min, got being the sent literal.
func (x errs) outOfRange(param string, above, integer bool, bound float64, got string) *wire.Error {
	b := strconv.FormatFloat(bound, 'f', -1, 64)
	if x.anthropic {
		if above {
			return wire.InvalidCode(CodeValueAboveMaximum, param, "%s: Input should be less than or equal to %s, but got %s", dotted(param), b, echo(got))
		}
		return wire.InvalidCode(CodeValueBelowMinimum, param, "%s: Input should be greater than or equal to %s, but got %s", dotted(param), b, echo(got))
	}
	kind := "decimal"
	if integer {
		kind = "integer"
	}
	if above {
		e := wire.InvalidCode(kind+"_above_max_value", param, "Invalid '%s': %s above maximum value. Expected a value <= %s, but got %s instead.", param, kind, b, echo(got))
		return e
	}
	return wire.InvalidCode(kind+"_below_min_value", param, "Invalid '%s': %s below minimum value. Expected a value >= %s, but got %s instead.", param, kind, b, echo(got))
}

func (x errs) badEnum(param, got string, allowed []string) *wire.Error {
	if x.anthropic {
		return wire.InvalidCode(CodeInvalidValue, param, "%s: Input should be %s, but got '%s'", dotted(param), quoteList(allowed, "or"), echo(got))
	}
	return wire.InvalidCode(CodeInvalidValue, param, "Invalid value: '%s'. Supported values are: %s.", echo(got), quoteList(allowed, "and"))
}

func (x errs) emptyArray(param string) *wire.Error {
	if x.anthropic {
		return wire.InvalidCode(CodeEmptyArray, param, "%s: List should have at least 1 item, but got an empty list", dotted(param))
	}
	return wire.InvalidCode(CodeEmptyArray, param, "Invalid '%s': empty array. Expected an array with minimum length 1, but got an empty array instead.", param)
}

func (x errs) arrayTooLong(param string, max, got int) *wire.Error {
	if x.anthropic {
		return wire.InvalidCode(CodeArrayTooLong, param, "%s: List should have at most %d items, but got %d", dotted(param), max, got)
	}
	return wire.InvalidCode(CodeArrayTooLong, param, "Invalid '%s': array too long. Expected an array with maximum length %d, but got an array with length %d instead.", param, max, got)
}

func (x errs) emptyString(param string) *wire.Error {
	if x.anthropic {
		return wire.InvalidCode(CodeEmptyString, param, "%s: String should have at least 1 character", dotted(param))
	}
	return wire.InvalidCode(CodeEmptyString, param, "Invalid '%s': empty string. Expected a string with minimum length 1, but got an empty string instead.", param)
}

func (x errs) duplicate(param string) *wire.Error {
	if x.anthropic {
		return wire.InvalidCode(CodeDuplicateKey, param, "%s: duplicate key in the JSON body; send each field once", dotted(param))
	}
	return wire.InvalidCode(CodeDuplicateKey, param, "Invalid body: duplicate key '%s'. Send each field once; parsers disagree on which copy counts.", param)
}

// custom reports a fault in a sentence of its own; for Anthropic the field is put in front.
func (x errs) custom(code, param, format string, args ...any) *wire.Error {
	msg := fmt.Sprintf(format, args...)
	if x.anthropic && param != "" {
		msg = dotted(param) + ": " + msg
	}
	return wire.InvalidCode(code, param, "%s", msg)
}

// quoteList renders 'a', 'b', and 'c' (conj "and") or 'a', 'b' or 'c' (conj "or").
func quoteList(items []string, conj string) string {
	var b strings.Builder
	for i, s := range items {
		if i > 0 {
			switch {
			case i == len(items)-1 && conj == "and" && len(items) > 2:
				b.WriteString(", and ")
			case i == len(items)-1:
				b.WriteString(" " + conj + " ")
			default:
				b.WriteString(", ")
			}
		}
		b.WriteByte('\'')
		b.WriteString(s)
		b.WriteByte('\'')
	}
	return b.String()
}

// at builds "base[i]rest", used only when an error is reported.
func at(base string, i int, rest string) string {
	return base + "[" + strconv.Itoa(i) + "]" + rest
}
