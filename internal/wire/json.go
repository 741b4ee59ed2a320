package wire

import "bytes"

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
