package wire

import "math/rand/v2"

// MaxRequestIDLen is the longest client-supplied x-request-id the gateway keeps.
const MaxRequestIDLen = 128

// ValidRequestID reports whether a client-supplied request id can be reused as it is: 1 to 128
// characters of letters, digits and - _ . : (nothing that could inject into headers or logs).
func ValidRequestID(id string) bool {
	if id == "" || len(id) > MaxRequestIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.', c == ':':
		default:
			return false
		}
	}
	return true
}

// NewRequestID returns "req_" and 24 random hex digits. The runtime's per-thread ChaCha8 source
// makes it cheap and unpredictable enough for an identifier (it is not a secret).
func NewRequestID() string {
	var b [4 + 24]byte
	copy(b[:], "req_")
	a, c := rand.Uint64(), rand.Uint32()
	for i := 0; i < 16; i++ {
		b[4+i] = hexDigits[a&0xf]
		a >>= 4
	}
	for i := 0; i < 8; i++ {
		b[20+i] = hexDigits[c&0xf]
		c >>= 4
	}
	return string(b[:])
}
