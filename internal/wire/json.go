package wire

import (
	"github.com/tidwall/gjson"
)

// IsIntegerLiteral reports whether a JSON number's raw text is written as an integer (no
// fraction, no exponent).
func IsIntegerLiteral(raw string) bool {
	if raw == "" {
		return false
	}
	for i := 0; i < len(raw); i++ {
		switch raw[i] {
		case '.', 'e', 'E':
			return false
		}
	}
	return true
}

// Describe names the JSON type of a value the way OpenAI's error messages do ("a string", "an
// integer", "a decimal number", "an array", ...).
func Describe(r gjson.Result) string {
	switch r.Type {
	case gjson.Null:
		return "null"
	case gjson.True, gjson.False:
		return "a boolean"
	case gjson.String:
		return "a string"
	case gjson.Number:
		if IsIntegerLiteral(r.Raw) {
			return "an integer"
		}
		return "a decimal number"
	}
	if r.IsArray() {
		return "an array"
	}
	return "an object"
}
