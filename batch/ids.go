package batch

import (
	"math/rand/v2"
	"time"
)

// The prefixes of the identifiers the two APIs use.
const (
	// PrefixBatch starts an OpenAI batch id ("batch_...").
	PrefixBatch = "batch_"
	// PrefixFile starts an OpenAI file id ("file-...").
	PrefixFile = "file-"
	// PrefixBatchRequest starts the id of one line of an output or error file ("batch_req_...").
	PrefixBatchRequest = "batch_req_"
	// PrefixMessageBatch starts an Anthropic message batch id ("msgbatch_...").
	PrefixMessageBatch = "msgbatch_"
)

const hexDigits = "0123456789abcdef"

// NewID returns prefix followed by 32 lowercase hex digits: the creation time in milliseconds
// (12 digits) and 80 random bits (20 digits). Ids of one prefix therefore sort by creation time
// as plain strings (ties in the same millisecond in random order), which lets a store page
// "newest first, after <id>" over an ordered key space. The random part comes from the
// runtime's ChaCha8 source: unguessable enough for an identifier, which is not a secret (every
// lookup is by owner and id together).
func NewID(prefix string, now time.Time) string {
	b := make([]byte, len(prefix)+32)
	n := copy(b, prefix)
	ms := uint64(now.UnixMilli())
	for i := 11; i >= 0; i-- {
		b[n+i] = hexDigits[ms&0xf]
		ms >>= 4
	}
	a, c := rand.Uint64(), rand.Uint32()
	for i := 12; i < 28; i++ {
		b[n+i] = hexDigits[a&0xf]
		a >>= 4
	}
	for i := 28; i < 32; i++ {
		b[n+i] = hexDigits[c&0xf]
		c >>= 4
	}
	return string(b)
}
