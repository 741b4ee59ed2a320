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
