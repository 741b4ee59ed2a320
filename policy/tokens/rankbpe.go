package tokens

import (
	"math"
	"strings"
)

// rankBPE is a byte-level BPE in tiktoken's form: any two adjacent parts
// whose concatenation is a token may merge, the token with the lowest rank
// first (leftmost among equal ranks), as tiktoken and tiktoken-go do.
type rankBPE struct {
	ranks map[string]uint32
	// short holds the ranks of the tokens of at most 8 bytes again, for fast lookups (rank).
	short shortRanks
	// inner has bit a<<8|b set when some token holds byte a followed by
	// byte b: where it is clear, no token spans the position between them.
	inner bigramSet
	// maxToken is the length in bytes of the longest token.
	maxToken int
	// cache holds the merges of recent short pieces.
	cache *pieceCache
}

// bigramSet is a set of byte pairs.
type bigramSet [1 << 16 / 64]uint64

func (s *bigramSet) add(a, b byte) {
	i := int(a)<<8 | int(b)
	s[i/64] |= 1 << (i % 64)
}

func (s *bigramSet) has(a, b byte) bool {
	i := int(a)<<8 | int(b)
	return s[i/64]&(1<<(i%64)) != 0
}

// newRankBPE builds the model from the tokens in rank order ("" for a rank
// without a token). The keys share one copy of the tokens' bytes.
func newRankBPE(tokens []string) *rankBPE {
	n, size := 0, 0
	for _, tok := range tokens {
		if tok != "" {
			n++
			size += len(tok)
		}
	}
	var arena strings.Builder
	arena.Grow(size)
	for _, tok := range tokens {
		arena.WriteString(tok)
	}
	all := arena.String()
	b := &rankBPE{ranks: make(map[string]uint32, n), cache: new(pieceCache)}
	off := 0
	for rank, tok := range tokens {
		if tok == "" {
			continue
		}
		tok = all[off : off+len(tok)]
		off += len(tok)
		if _, dup := b.ranks[tok]; dup {
			continue
		}
		b.ranks[tok] = uint32(rank)
		b.maxToken = max(b.maxToken, len(tok))
		for i := 1; i < len(tok); i++ {
			b.inner.add(tok[i-1], tok[i])
		}
	}
	b.short = newShortRanks(b.ranks)
	return b
}

// rank returns the rank of the token s.
func (b *rankBPE) rank(s string) (uint32, bool) {
	if len(s) <= maxShortToken && len(s) > 0 {
		return b.short.get(s)
	}
	r, ok := b.ranks[s]
	return r, ok
}

// noRank marks a part that cannot merge with the next one.
const noRank = math.MaxUint32

// scanMergeLimit is the piece length below which merge scans for the lowest
// rank instead of keeping a heap (tiktoken-go switches at the same length).
const scanMergeLimit = 96

// merge returns the number of tokens p is merged into.
func (b *rankBPE) merge(p string, sc *bpeScratch, whole bool) int {
	switch {
	case len(p) <= 1:
		return len(p)
	case whole:
		if _, ok := b.rank(p); ok {
			return 1
		}
	}
	if len(p) <= maxCachedPiece {
		if n, ok := b.cache.get(p); ok {
			return n
		}
		n := b.mergeScan(p, sc)
		b.cache.put(p, n)
		return n
	}
	if len(p) < scanMergeLimit {
		return b.mergeScan(p, sc)
	}
	return b.mergeHeap(p, sc)
}

// rankPart is a part of a piece being merged by mergeScan: its start and the
// rank of merging it with the next part.
type rankPart struct {
	start int32
	rank  uint32
}

// mergeScan merges the leftmost pair with the lowest rank, found by a linear
// scan, until none is left: O(n²) for a piece of n bytes, the fastest for
// short pieces.
func (b *rankBPE) mergeScan(p string, sc *bpeScratch) int {
	parts := sc.parts[:0]
	for i := 0; i <= len(p); i++ {
		parts = append(parts, rankPart{start: int32(i), rank: noRank})
	}
	rankAt := func(i int) uint32 {
		if i+2 < len(parts) {
			if r, ok := b.rank(p[parts[i].start:parts[i+2].start]); ok {
				return r
			}
		}
		return noRank
	}
	for i := 0; i+2 < len(parts); i++ {
		parts[i].rank = rankAt(i)
	}
	for len(parts) > 1 {
		minRank, minAt := uint32(noRank), -1
		for i, pt := range parts[:len(parts)-1] {
			if pt.rank < minRank {
				minRank, minAt = pt.rank, i
			}
		}
		if minAt < 0 {
			break
		}
		parts = append(parts[:minAt+1], parts[minAt+2:]...)
		parts[minAt].rank = rankAt(minAt)
		if minAt > 0 {
			parts[minAt-1].rank = rankAt(minAt - 1)
		}
	}
	sc.parts = parts
	return len(parts) - 1
}

// mergeHeap gives the result of mergeScan in O(n log n): one node per byte
// boundary in a linked list, candidates in a heap by rank then position.
func (b *rankBPE) mergeHeap(p string, sc *bpeScratch) int {
	n := int32(len(p))
	nodes := sc.nodes[:0]
	for i := int32(0); i <= n; i++ {
		nodes = append(nodes, bpeNode{prev: i - 1, next: i + 1, rank: noRank})
	}
	nodes[n].next = -1
	rankAt := func(i int32) uint32 {
		j := nodes[i].next
		if j < 0 {
			return noRank
		}
		k := nodes[j].next
		if k < 0 {
			return noRank
		}
		if r, ok := b.rank(p[i:k]); ok {
			return r
		}
		return noRank
	}
	h := sc.heap[:0]
	for i := int32(0); i+2 <= n; i++ {
		if r := rankAt(i); r != noRank {
			nodes[i].rank = r
			h = append(h, mergeItem{rank: r, pos: i})
		}
	}
	h.init()
	count := int(n)
	for len(h) > 0 {
		top := h.pop()
		i := top.pos
		if nodes[i].rank != top.rank {
			continue // stale
		}
		j := nodes[i].next
		k := nodes[j].next
		nodes[j].rank = noRank
		nodes[i].next = k
		if k >= 0 {
			nodes[k].prev = i
		}
		count--
		for _, at := range [2]int32{i, nodes[i].prev} {
			if at < 0 {
				continue
			}
			nodes[at].rank = rankAt(at)
			if nodes[at].rank != noRank {
				h.push(mergeItem{rank: nodes[at].rank, pos: at})
			}
		}
	}
	sc.nodes, sc.heap = nodes, h
	return count
}

// canCut reports whether no token holds the two bytes around position k.
func (b *rankBPE) canCut(p string, k int) bool { return !b.inner.has(p[k-1], p[k]) }

// symbols returns len(p): BPE starts from one part per byte.
func (b *rankBPE) symbols(p string) int { return len(p) }
