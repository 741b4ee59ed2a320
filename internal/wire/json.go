package wire

import (
	"bytes"

	"github.com/tidwall/gjson"
)

// NestedTooDeep reports whether b nests arrays and objects deeper than max. It runs before the
// JSON is parsed, so that no recursive parser ever sees a pathologically deep document. It is
// linear and never fails on malformed input (the parser reports that afterwards).
func NestedTooDeep(b []byte, max int) bool {
	depth := 0
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '"':
			i = stringEnd(b, i+1)
		case '{', '[':
			depth++
			if depth > max {
				return true
			}
		case '}', ']':
			depth--
		}
	}
	return false
}

// stringEnd returns the index of the quote closing the string whose contents start at i, or
// len(b) when the string is unterminated.
func stringEnd(b []byte, i int) int {
	for i < len(b) {
		q := bytes.IndexByte(b[i:], '"')
		if q < 0 {
			return len(b)
		}
		q += i
		// The quote is escaped when an odd number of backslashes precede it.
		n := 0
		for j := q - 1; j >= i && b[j] == '\\'; j-- {
			n++
		}
		if n%2 == 0 {
			return q
		}
		i = q + 1
	}
	return len(b)
}

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
