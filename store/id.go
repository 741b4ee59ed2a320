package store

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"sync/atomic"
	"time"
)

// lastIDTime is the timestamp of the last id made in this process, so that
// ids made in the same nanosecond (or while the clock steps back) still
// increase.
var lastIDTime atomic.Int64

// NewID returns prefix (with its separator, such as "file-" or "batch_")
// followed by 32 hex digits: 16 of the creation time in nanoseconds, so that
// ids sort by creation (strictly, within one process), and 16 random ones,
// so that ids cannot be guessed.
func NewID(prefix string) string {
	now := time.Now().UnixNano()
	for {
		last := lastIDTime.Load()
		if now <= last {
			now = last + 1
		}
		if lastIDTime.CompareAndSwap(last, now) {
			break
		}
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now))
	_, _ = rand.Read(b[8:]) // never fails (crypto/rand.Read)
	out := make([]byte, len(prefix)+32)
	copy(out, prefix)
	hex.Encode(out[len(prefix):], b[:])
	return string(out)
}
