package tokens

import (
	"context"
	"math"
	"sync"
)

// Bounds on the work of one pre-token piece (see countPiece).
const (
	// pieceCut is the length from which a piece is cut, at positions no
	// token of the vocabulary can span, into parts counted one by one.
	pieceCut = 256
	// maxExactPiece is the longest part without such a position that is
	// merged exactly; a longer one counts its BPE start symbols instead.
	maxExactPiece = 64 << 10
)

// tally is the running count of one body or text. Counting stops as soon as
// n passes limit or the context is done.
type tally struct {
	ctx   context.Context
	n     int
	limit int
	err   error
	// estimated counts the texts counted by Estimate in place of the counter (too much text in
	// flight, a remote counter that failed): a count that includes one is not memoised whole.
	estimated int
}

// unlimited is the limit of a count that never stops early.
const unlimited = math.MaxInt

// add adds k and reports whether counting goes on.
func (t *tally) add(k int) bool {
	t.n += k
	return t.n <= t.limit
}

// live reports whether counting goes on: the limit is not passed and the
// context is not done (t.err records why it is).
func (t *tally) live() bool {
	if t.n > t.limit || t.err != nil {
		return false
	}
	if t.ctx != nil {
		if err := t.ctx.Err(); err != nil {
			t.err = err
			return false
		}
	}
	return true
}

// limitCounter is implemented by the package's counters: countTo adds the
// tokens of text to t piece by piece and returns false as soon as t stops
// (t.n > t.limit, or t.err is set). When it returns true it has added
// exactly Count(text).
type limitCounter interface {
	Counter
	countTo(t *tally, text string) bool
}

// countText counts text with c into t, piece by piece when c supports it.
func countText(c Counter, t *tally, text string) bool {
	if lc, ok := c.(limitCounter); ok {
		return lc.countTo(t, text)
	}
	return t.add(c.Count(text))
}

// pieceModel is the BPE model of a counter, seen by countPiece.
type pieceModel interface {
	// merge returns the BPE count of p. whole says p is an entire
	// pre-token piece, for which a vocabulary lookup may answer at once.
	merge(p string, sc *bpeScratch, whole bool) int
	// canCut reports whether no token of the vocabulary can span position
	// k of p (0 < k < len(p)): BPE then never merges across k, so the
	// count of p is the count of p[:k] plus the count of p[k:].
	canCut(p string, k int) bool
	// symbols returns the number of symbols BPE starts p with, which no
	// merge can increase: an upper bound of merge(p).
	symbols(p string) int
}

// countPiece adds the tokens of one pre-token piece to t.
//
// A piece up to pieceCut bytes is merged at once. A longer one is cut at
// the first position at or after every pieceCut bytes where m.canCut holds,
// and each part is merged on its own: the sum is exact, since no merge
// spans such a position. A part longer than maxExactPiece (no cut position
// in 64 KiB: one character repeated, or one random word of letters) counts
// m.symbols, never less than its exact count. The work and scratch memory
// per part are thus bounded by maxExactPiece, whatever the piece.
//
// whole says p is an entire pre-token piece (not a part of one), for the
// vocabulary lookup of m.merge.
func countPiece(m pieceModel, t *tally, p string, whole bool, sc *bpeScratch) bool {
	if len(p) <= pieceCut {
		return t.add(m.merge(p, sc, whole))
	}
	for start := 0; start < len(p); {
		end := start + pieceCut
		for end < len(p) && !m.canCut(p, end) {
			end++
		}
		if end > len(p) {
			end = len(p)
		}
		part := p[start:end]
		var n int
		if len(part) > maxExactPiece {
			n = m.symbols(part)
		} else {
			n = m.merge(part, sc, whole && start == 0 && end == len(p))
		}
		if !t.add(n) {
			return false
		}
		start = end
	}
	return true
}

// bpeScratch holds buffers reused across the pieces of one count.
type bpeScratch struct {
	ids   []uint32
	nodes []bpeNode
	heap  mergeQueue
	parts []rankPart
}

// maxPooledScratch is the largest buffer length a scratch keeps when it goes
// back to the pool, so one long part does not pin its buffers.
const maxPooledScratch = 4 * pieceCut

var scratchPool = sync.Pool{New: func() any { return new(bpeScratch) }}

// getScratch takes a scratch from the pool.
func getScratch() *bpeScratch { return scratchPool.Get().(*bpeScratch) }

// putScratch returns sc to the pool, dropping buffers that grew large.
func putScratch(sc *bpeScratch) {
	if cap(sc.ids) > maxPooledScratch {
		sc.ids = nil
	}
	if cap(sc.nodes) > maxPooledScratch {
		sc.nodes = nil
	}
	if cap(sc.heap) > maxPooledScratch {
		sc.heap = nil
	}
	if cap(sc.parts) > maxPooledScratch {
		sc.parts = nil
	}
	scratchPool.Put(sc)
}
