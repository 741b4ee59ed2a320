package jsonscan

import (
	"encoding/binary"
	"math"
	"unsafe"
)

// NestedTooDeep reports whether b nests arrays and objects deeper than max. It runs before the
// JSON is parsed, so that no recursive parser ever sees a pathologically deep document. It is
// linear and never fails on malformed input (the parser reports that afterwards).
func NestedTooDeep(b []byte, max int) bool {
	js := unsafe.String(unsafe.SliceData(b), len(b))
	depth := 0
	for i := 0; i < len(js); i++ {
		switch js[i] {
		case '"':
			end, ok := stringClose(js, i+1)
			if !ok {
				return false
			}
			i = end - 1
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

// Valid reports whether data is valid JSON: exactly what gjson.Valid reports, faster on long
// strings (eight bytes at a time), without recursion.
func Valid(data []byte) bool {
	ok, _ := Check(data, math.MaxInt)
	return ok
}

// Check reports whether data is valid JSON (as gjson.Valid), and whether, before anything
// invalid, it nests arrays and objects deeper than maxDepth; it stops there, with valid false.
// Past the first invalid byte nothing is looked at: a caller that must know whether an invalid
// document also nests too deep asks NestedTooDeep.
func Check(data []byte, maxDepth int) (valid, tooDeep bool) {
	var stackBuf [64]byte
	stack := stackBuf[:0] // the open '{' and '[', innermost last
	i := skipSpace(data, 0)
	var ok bool
value:
	if i >= len(data) {
		return false, false
	}
	switch c := data[i]; c {
	case '{', '[':
		stack = append(stack, c)
		if len(stack) > maxDepth {
			return false, true
		}
		i = skipSpace(data, i+1)
		if i < len(data) && data[i] == c+2 { // '}' is '{'+2, ']' is '['+2
			stack = stack[:len(stack)-1]
			i++
			goto after
		}
		if c == '{' {
			goto key
		}
		goto value
	case '"':
		if i, ok = validString(data, i+1); !ok {
			return false, false
		}
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		if i, ok = validNumber(data, i); !ok {
			return false, false
		}
	case 't':
		if !hasWord(data, i, "true") {
			return false, false
		}
		i += 4
	case 'f':
		if !hasWord(data, i, "false") {
			return false, false
		}
		i += 5
	case 'n':
		if !hasWord(data, i, "null") {
			return false, false
		}
		i += 4
	default:
		return false, false
	}
after:
	i = skipSpace(data, i)
	if len(stack) == 0 {
		return i == len(data), false
	}
	if i >= len(data) {
		return false, false
	}
	switch top := stack[len(stack)-1]; data[i] {
	case ',':
		i = skipSpace(data, i+1)
		if top == '{' {
			goto key
		}
		goto value
	case top + 2:
		stack = stack[:len(stack)-1]
		i++
		goto after
	}
	return false, false
key:
	if i >= len(data) || data[i] != '"' {
		return false, false
	}
	if i, ok = validString(data, i+1); !ok {
		return false, false
	}
	i = skipSpace(data, i)
	if i >= len(data) || data[i] != ':' {
		return false, false
	}
	i = skipSpace(data, i+1)
	goto value
}

// SkipSpace returns the index of the first byte from i that is not JSON whitespace (len(data)
// when there is none).
func SkipSpace(data []byte, i int) int { return skipSpace(data, i) }

// skipSpace returns the index of the first byte from i that is not JSON whitespace.
func skipSpace(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

func hasWord(data []byte, i int, w string) bool {
	return len(data)-i >= len(w) && string(data[i:i+len(w)]) == w
}

// SWAR masks: a byte of each word in every lane.
const (
	lanes01 = 0x0101010101010101
	lanes80 = 0x8080808080808080
	lanes20 = 0x2020202020202020 // ' '
	lanes22 = 0x2222222222222222 // '"'
	lanes5c = 0x5c5c5c5c5c5c5c5c // '\\'
)

// plain reports whether none of the eight bytes of w is a quote, a backslash or a control
// character (below ' '): the bytes a string's scan must stop at.
func plain(w uint64) bool {
	below := (w - lanes20) &^ w
	q, b := w^lanes22, w^lanes5c
	quote := (q - lanes01) &^ q
	slash := (b - lanes01) &^ b
	return (below|quote|slash)&lanes80 == 0
}

// validString checks the string whose content starts at i and returns the index past its
// closing quote.
func validString(data []byte, i int) (int, bool) {
	for {
		for i+8 <= len(data) && plain(binary.LittleEndian.Uint64(data[i:])) {
			i += 8
		}
		if i >= len(data) {
			return i, false
		}
		switch c := data[i]; {
		case c == '"':
			return i + 1, true
		case c < ' ':
			return i, false
		case c == '\\':
			i++
			if i >= len(data) {
				return i, false
			}
			switch data[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i++
			case 'u':
				if len(data)-i < 5 || !isHex(data[i+1]) || !isHex(data[i+2]) || !isHex(data[i+3]) || !isHex(data[i+4]) {
					return i, false
				}
				i += 5
			default:
				return i, false
			}
		default:
			i++
		}
	}
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

// validNumber checks the number that starts at i (its '-' or first digit) with JSON's grammar
// and returns the index past it.
func validNumber(data []byte, i int) (int, bool) {
	if data[i] == '-' {
		i++
		if i >= len(data) || !isDigit(data[i]) {
			return i, false
		}
	}
	if data[i] == '0' {
		i++
	} else {
		i = skipDigits(data, i)
	}
	if i < len(data) && data[i] == '.' {
		i++
		if i >= len(data) || !isDigit(data[i]) {
			return i, false
		}
		i = skipDigits(data, i)
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		if i >= len(data) || !isDigit(data[i]) {
			return i, false
		}
		i = skipDigits(data, i)
	}
	return i, true
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func skipDigits(data []byte, i int) int {
	for i < len(data) && isDigit(data[i]) {
		i++
	}
	return i
}
