package policy

import (
	"unsafe"
)

// MaxDepth is the deepest nesting of arrays and objects a request body may have.
const MaxDepth = 64

// view returns b as a string without copying. The string must not outlive b's contents.
func view(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
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
