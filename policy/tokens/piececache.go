package tokens

import "sync/atomic"

// pieceCache remembers how many tokens the recently merged pieces of 2 to 16 bytes came to, so
// that a word the vocabulary holds in two or three tokens (" lorem", " Kubernetes", "’s") is
// merged once, not once a request: text repeats its words. It is direct-mapped, shared by every
// count of one vocabulary, and lock-free: a slot is a sequence lock (meta) over the piece's
// bytes, so a reader sees a whole entry or none, and a writer that finds the slot being
// written skips it. Nothing is allocated, on a hit or a miss.
type pieceCache struct {
	slots [pieceCacheSlots]pieceSlot
}

// pieceCacheSlots is the size of the cache: 16,384 slots of 24 bytes (384 KiB a vocabulary).
const (
	pieceCacheBits  = 14
	pieceCacheSlots = 1 << pieceCacheBits
)

// maxCachedPiece is the longest piece the cache holds: two packed words.
const maxCachedPiece = 16

// pieceSlot is one entry. meta is version<<16 | tokens<<8 | length<<1 | writing; a length
// of 0 is an empty slot, which no piece the cache is asked about has.
type pieceSlot struct {
	meta   atomic.Uint64
	lo, hi atomic.Uint64
}

// pieceKey packs p (2 <= len(p) <= maxCachedPiece) into two little-endian words.
func pieceKey(p string) (lo, hi uint64) {
	if len(p) <= 8 {
		return pack(p), 0
	}
	return pack(p[:8]), pack(p[8:])
}

func (c *pieceCache) slot(lo, hi uint64, n int) *pieceSlot {
	h := (lo ^ hi*0xC2B2AE3D27D4EB4F ^ uint64(n)<<59) * 0x9E3779B97F4A7C15
	return &c.slots[h>>(64-pieceCacheBits)]
}

// get returns the number of tokens p was merged into, if the cache holds it.
func (c *pieceCache) get(p string) (int, bool) {
	lo, hi := pieceKey(p)
	s := c.slot(lo, hi, len(p))
	m := s.meta.Load()
	if m&1 != 0 || int(m>>1&0x7f) != len(p) {
		return 0, false
	}
	if s.lo.Load() != lo || s.hi.Load() != hi || s.meta.Load() != m {
		return 0, false
	}
	return int(m >> 8 & 0xff), true
}

// put remembers that p merges into n tokens (n <= len(p)), unless another writer holds p's
// slot at the moment.
func (c *pieceCache) put(p string, n int) {
	lo, hi := pieceKey(p)
	s := c.slot(lo, hi, len(p))
	m := s.meta.Load()
	if m&1 != 0 || !s.meta.CompareAndSwap(m, m|1) {
		return
	}
	s.lo.Store(lo)
	s.hi.Store(hi)
	s.meta.Store((m>>16+1)<<16 | uint64(n)<<8 | uint64(len(p))<<1)
}
