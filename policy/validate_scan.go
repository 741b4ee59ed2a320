package policy

import (
	"bytes"
	"unsafe"
)

// MaxDepth is the deepest nesting of arrays and objects a request body may have.
const MaxDepth = 64

// view returns b as a string without copying. The string must not outlive b's contents.
func view(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// nestedTooDeep reports whether b nests arrays and objects deeper than max. It runs before the
// JSON is parsed, so that no recursive parser ever sees a pathologically deep document. It is
// linear and never fails on malformed input (the parser reports that afterwards).
func nestedTooDeep(b []byte, max int) bool {
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

// isIntegerLiteral reports whether a JSON number literal is written as an integer (no fraction,
// no exponent), which is what OpenAI and the model servers accept for integer parameters.
func isIntegerLiteral(raw string) bool {
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

// firstByte returns the first non-whitespace byte of b, or 0.
func firstByte(b []byte) byte {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		}
		return c
	}
	return 0
}
