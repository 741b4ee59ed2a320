package tokens

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// noID marks a symbol without a vocabulary id; it never merges.
const noID = ^uint32(0)

// bpeModel is a BPE model over raw bytes (byte-level tokenizers, whose
// vocabulary is converted back from GPT-2's byte-to-rune mapping at load) or
// over characters with byte fallback (sentencepiece-style tokenizers).
type bpeModel struct {
	vocab        map[string]uint32 // token (raw bytes when byteLevel) -> id
	merges       map[uint64]merge  // (left id, right id) -> merge
	byteLevel    bool
	byteID       [256]uint32 // byte-level: id of each single byte
	fallback     [256]uint32 // byte_fallback: id of <0xXX>
	byteFallback bool
	unk          uint32
	hasUnk       bool
	fuseUnk      bool
	ignoreMerges bool
	// innerBytes (byte-level) and innerRunes (sorted, character models)
	// hold the pairs of bytes or characters found inside some token.
	innerBytes bigramSet
	innerRunes []uint64
	// fallbackMerges is set when a merge names a byte-fallback token.
	fallbackMerges bool
	// tokens are the tokens of the vocabulary, as text (raw bytes for
	// byte-level models).
	tokens []string
}

// merge is one entry of the merges list.
type merge struct {
	rank uint32
	id   uint32
}

// newBPE builds the model from the "model" object.
func newBPE(m *hfModel, byteLevel bool) (*bpeModel, error) {
	if m.Type != "BPE" && !(m.Type == "" && m.Vocab != nil) {
		return nil, fmt.Errorf("loading model %q: only BPE: %w", m.Type, ErrUnsupported)
	}
	if m.Dropout != nil && *m.Dropout != 0 {
		return nil, fmt.Errorf("loading model: dropout: %w", ErrUnsupported)
	}
	if m.ContinuingSubwordPrefix != nil && *m.ContinuingSubwordPrefix != "" ||
		m.EndOfWordSuffix != nil && *m.EndOfWordSuffix != "" {
		return nil, fmt.Errorf("loading model: subword prefix or suffix: %w", ErrUnsupported)
	}
	b := &bpeModel{
		vocab:        make(map[string]uint32, len(m.Vocab)),
		byteLevel:    byteLevel,
		byteFallback: m.ByteFallback,
		fuseUnk:      m.FuseUnk,
		ignoreMerges: m.IgnoreMerges,
	}
	var toBytes map[rune]byte
	if byteLevel {
		toBytes = byteDecoder()
	}
	decode := func(tok string) (string, bool) {
		if !byteLevel {
			return tok, true
		}
		var sb strings.Builder
		for _, r := range tok {
			c, ok := toBytes[r]
			if !ok {
				return "", false
			}
			sb.WriteByte(c)
		}
		return sb.String(), true
	}
	for tok, id := range m.Vocab {
		if raw, ok := decode(tok); ok {
			b.vocab[raw] = id
			b.tokens = append(b.tokens, raw)
		}
	}
	for _, t := range b.tokens {
		if byteLevel {
			for i := 1; i < len(t); i++ {
				b.innerBytes.add(t[i-1], t[i])
			}
			continue
		}
		prev := rune(-1)
		for _, r := range t {
			if prev >= 0 {
				b.innerRunes = append(b.innerRunes, runePair(prev, r))
			}
			prev = r
		}
	}
	slices.Sort(b.innerRunes)
	b.innerRunes = slices.Compact(b.innerRunes)
	for i := range 256 {
		b.byteID[i], b.fallback[i] = noID, noID
		if id, ok := b.vocab[string([]byte{byte(i)})]; ok && byteLevel {
			b.byteID[i] = id
		}
		if id, ok := m.Vocab[fmt.Sprintf("<0x%02X>", i)]; ok {
			b.fallback[i] = id
		}
	}
	if m.UnkToken != nil {
		if id, ok := m.Vocab[*m.UnkToken]; ok {
			b.unk, b.hasUnk = id, true
		}
	}
	pairs, err := parseMerges(m.Merges)
	if err != nil {
		return nil, err
	}
	b.merges = make(map[uint64]merge, len(pairs))
	for rank, p := range pairs {
		l, ok1 := decode(p[0])
		r, ok2 := decode(p[1])
		if !ok1 || !ok2 {
			continue
		}
		lid, ok1 := b.vocab[l]
		rid, ok2 := b.vocab[r]
		nid, ok3 := b.vocab[l+r]
		if !ok1 || !ok2 || !ok3 {
			return nil, fmt.Errorf("loading merge %d %q: a part or the result is not in the vocabulary: %w", rank, p, ErrUnsupported)
		}
		if !byteLevel && (isFallback(l) || isFallback(r)) {
			b.fallbackMerges = true
		}
		key := uint64(lid)<<32 | uint64(rid)
		if _, dup := b.merges[key]; !dup {
			b.merges[key] = merge{rank: uint32(rank), id: nid}
		}
	}
	return b, nil
}

// isFallback reports whether tok is a byte-fallback token, <0xXX>.
func isFallback(tok string) bool {
	return len(tok) == 6 && strings.HasPrefix(tok, "<0x") && tok[5] == '>'
}

// parseMerges reads merges written as "a b" strings or as ["a", "b"] pairs.
func parseMerges(raw json.RawMessage) ([][2]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var pairs [][2]string
	if err := json.Unmarshal(raw, &pairs); err == nil {
		return pairs, nil
	}
	var lines []string
	if err := json.Unmarshal(raw, &lines); err != nil {
		return nil, fmt.Errorf("parsing merges: %w", err)
	}
	pairs = make([][2]string, len(lines))
	for i, l := range lines {
		a, b, ok := strings.Cut(l, " ")
		if !ok {
			return nil, fmt.Errorf("parsing merge %d %q: no space: %w", i, l, ErrUnsupported)
		}
		pairs[i] = [2]string{a, b}
	}
	return pairs, nil
}

// byteDecoder returns the inverse of GPT-2's bytes_to_unicode: printable
// Latin-1 bytes map to themselves, the others to U+0100 onwards in order.
func byteDecoder() map[rune]byte {
	m := make(map[rune]byte, 256)
	n := 0
	for i := range 256 {
		b := byte(i)
		if b >= '!' && b <= '~' || b >= 0xA1 && b <= 0xAC || b >= 0xAE {
			m[rune(b)] = b
		} else {
			m[rune(256+n)] = b
			n++
		}
	}
	return m
}

// bpeNode is a symbol in the doubly linked list being merged.
type bpeNode struct {
	prev, next int32
	rank       uint32 // rank of merging with next, noID if none
	id         uint32
}

// merge returns the number of tokens the model splits p into. whole says p
// is an entire pre-token piece: only then does ignore_merges look p up in
// the vocabulary first, as tokenizers does per word.
func (b *bpeModel) merge(p string, sc *bpeScratch, whole bool) int {
	if p == "" {
		return 0
	}
	if b.ignoreMerges && whole {
		if _, ok := b.vocab[p]; ok {
			return 1
		}
	}
	ids := sc.ids[:0]
	if b.byteLevel {
		for i := 0; i < len(p); i++ {
			ids = append(ids, b.byteID[p[i]])
		}
	} else {
		prevUnk := false
		for i := 0; i < len(p); {
			_, n := utf8.DecodeRuneInString(p[i:])
			if id, ok := b.vocab[p[i:i+n]]; ok {
				ids = append(ids, id)
				prevUnk = false
			} else if b.byteFallback && b.fallback[p[i]] != noID {
				for j := i; j < i+n; j++ {
					ids = append(ids, b.fallback[p[j]])
				}
				prevUnk = false
			} else {
				if !(b.fuseUnk && prevUnk) {
					ids = append(ids, noID) // unk: never merges
				}
				prevUnk = true
			}
			i += n
		}
	}
	sc.ids = ids
	if len(ids) < 2 {
		return len(ids)
	}
	return b.mergeAll(ids, sc)
}

// symbols returns the number of symbols the model starts p with (one per
// byte, or per character, fallback byte or unknown run), which merges only
// lower.
func (b *bpeModel) symbols(p string) int {
	if b.byteLevel {
		return len(p)
	}
	n, prevUnk := 0, false
	for i := 0; i < len(p); {
		_, size := utf8.DecodeRuneInString(p[i:])
		switch {
		case b.inVocab(p[i : i+size]):
			n++
			prevUnk = false
		case b.byteFallback && b.fallback[p[i]] != noID:
			n += size
			prevUnk = false
		default:
			if !(b.fuseUnk && prevUnk) {
				n++
			}
			prevUnk = true
		}
		i += size
	}
	return n
}

// unknownPossible reports whether a character can become the unknown token:
// always without byte fallback, else when a byte has no <0xXX> token.
func (b *bpeModel) unknownPossible() bool {
	if !b.byteFallback {
		return true
	}
	for _, id := range b.fallback {
		if id == noID {
			return true
		}
	}
	return false
}

// inVocab reports whether the character c is a token of its own.
func (b *bpeModel) inVocab(c string) bool {
	_, ok := b.vocab[c]
	return ok
}

// canCut reports whether no merge can span position k of p: for byte-level
// models, no token holds the two bytes around k; for character models, k is
// a character boundary and either no token holds the two characters around
// it, or one of them is not a token (its fallback bytes or unknown token
// never merge, unless merges name them).
func (b *bpeModel) canCut(p string, k int) bool {
	if b.byteLevel {
		return !b.innerBytes.has(p[k-1], p[k])
	}
	if !utf8.RuneStart(p[k]) {
		return false
	}
	r1, n1 := utf8.DecodeLastRuneInString(p[:k])
	r2, n2 := utf8.DecodeRuneInString(p[k:])
	in1, in2 := b.inVocab(p[k-n1:k]), b.inVocab(p[k:k+n2])
	switch {
	case in1 && in2:
		_, found := slices.BinarySearch(b.innerRunes, runePair(r1, r2))
		return !found
	case b.fallbackMerges:
		return false
	case b.fuseUnk && !in1 && !in2:
		// Two unknown characters may fuse into one unknown token.
		return false
	}
	return true
}

// runePair packs two characters for innerRunes.
func runePair(a, b rune) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

// rankOf returns the merge of the symbols l and r, if any.
func (b *bpeModel) rankOf(l, r uint32) (merge, bool) {
	if l == noID || r == noID {
		return merge{}, false
	}
	m, ok := b.merges[uint64(l)<<32|uint64(r)]
	return m, ok
}

// mergeAll applies merges lowest rank first, leftmost first among equal
// ranks (as tokenizers' BPE does), and returns the number of symbols left.
func (b *bpeModel) mergeAll(ids []uint32, sc *bpeScratch) int {
	n := len(ids)
	nodes := sc.nodes[:0]
	for i, id := range ids {
		nodes = append(nodes, bpeNode{prev: int32(i) - 1, next: int32(i) + 1, rank: noID, id: id})
	}
	nodes[n-1].next = -1
	h := sc.heap[:0]
	for i := 0; i+1 < n; i++ {
		if m, ok := b.rankOf(ids[i], ids[i+1]); ok {
			nodes[i].rank = m.rank
			h = append(h, mergeItem{rank: m.rank, pos: int32(i)})
		}
	}
	h.init()
	count := n
	for len(h) > 0 {
		top := h.pop()
		i := top.pos
		nd := &nodes[i]
		if nd.rank != top.rank || nd.next < 0 {
			continue // stale
		}
		j := nd.next
		m, ok := b.rankOf(nd.id, nodes[j].id)
		if !ok || m.rank != top.rank {
			continue
		}
		nd.id = m.id
		nd.next = nodes[j].next
		if nd.next >= 0 {
			nodes[nd.next].prev = i
		}
		nodes[j].rank, nodes[j].next = noID, -1
		count--
		for _, k := range [2]int32{nd.prev, i} {
			if k < 0 || nodes[k].next < 0 {
				if k >= 0 {
					nodes[k].rank = noID
				}
				continue
			}
			if m, ok := b.rankOf(nodes[k].id, nodes[nodes[k].next].id); ok {
				nodes[k].rank = m.rank
				h.push(mergeItem{rank: m.rank, pos: k})
			} else {
				nodes[k].rank = noID
			}
		}
	}
	sc.nodes, sc.heap = nodes, h
	return count
}

// mergeItem is a candidate merge at a node.
type mergeItem struct {
	rank uint32
	pos  int32
}

// mergeQueue is a binary min-heap of merge candidates by rank, then position.
type mergeQueue []mergeItem

func (h mergeQueue) less(a, b int) bool {
	if h[a].rank != h[b].rank {
		return h[a].rank < h[b].rank
	}
	return h[a].pos < h[b].pos
}

func (h mergeQueue) init() {
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

func (h *mergeQueue) push(it mergeItem) {
	*h = append(*h, it)
	h.up(len(*h) - 1)
}

func (h *mergeQueue) pop() mergeItem {
	old := *h
	top := old[0]
	last := len(old) - 1
	old[0] = old[last]
	*h = old[:last]
	h.down(0)
	return top
}

func (h mergeQueue) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !h.less(i, p) {
			return
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
}

func (h mergeQueue) down(i int) {
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		m := l
		if r := l + 1; r < len(h) && h.less(r, l) {
			m = r
		}
		if !h.less(m, i) {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}
