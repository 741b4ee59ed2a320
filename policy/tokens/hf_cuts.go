package tokens

import (
	"strings"
	"unicode/utf8"
)

// cutMode says how a segment of an hf tokenizer may be cut into parts that
// go through the normalizers, pre-tokenizers and model on their own, with
// the sum of their counts equal to the count of the whole.
type cutMode uint8

const (
	// cutNone: the segment is counted whole (its pieces are still merged
	// in bounded parts).
	cutNone cutMode = iota
	// cutSplit: the first pre-tokenizer splits by a known pattern and the
	// rest works piece by piece; cut where the pattern is known to cut
	// (splitCuts). Needs no prefixing component and no normalizer but NFC,
	// which leaves the characters around such a cut alone.
	cutSplit
	// cutSpace: the pre-tokenizers leave the segment one piece
	// (sentencepiece style: Metaspace without split, or none); cut before
	// a space that follows an ASCII character c when no token holds c
	// followed by what the space becomes (usually "▁"), so BPE never merges
	// across it. Prefixes are added to the first part only, and a part
	// that starts with a space never gets one.
	cutSpace
)

// hfCuts is the cut rule of an hf counter.
type hfCuts struct {
	mode  cutMode
	split splitCuts
	// space[c] allows a cutSpace cut between the ASCII character c and a
	// space.
	space [utf8.RuneSelf]bool
}

// parts calls yield with the parts of s, cut at the first allowed position
// at or after every segmentTarget bytes, until yield returns false.
func (c *hfCuts) parts(s string, yield func(string) bool) {
	if c.mode == cutSplit {
		c.split.segments(s, yield)
		return
	}
	start := 0
	for len(s)-start > segmentTarget {
		k := start + segmentTarget
		for k < len(s) && !(s[k] == ' ' && s[k-1] < utf8.RuneSelf && c.space[s[k-1]]) {
			k++
		}
		if k >= len(s) {
			break
		}
		if !yield(s[start:k]) {
			return
		}
		start = k
	}
	yield(s[start:])
}

// setCuts chooses the cut rule of h from its components.
func (h *hfCounter) setCuts() {
	for _, st := range h.pre {
		if st.re != nil && st.next == nil && strings.Contains(st.pattern, `\s+(?!\S)`) {
			h.slowSplit = true
		}
	}
	if len(h.pre) > 0 {
		first := h.pre[0]
		cuts, known := knownCuts[first.pattern]
		splitting := first.re != nil && (first.kind == preSplit && first.behavior == behaviorIsolated && !first.invert ||
			first.kind == preByteLevel && !first.prefix)
		onlyNFC := true
		for _, n := range h.norms {
			onlyNFC = onlyNFC && n.kind == normNFC
		}
		if known && splitting && onlyNFC && h.prefixes == 0 {
			h.cuts = hfCuts{mode: cutSplit, split: cuts}
			return
		}
	}
	h.setSpaceCuts()
}

// setSpaceCuts sets the cutSpace rule when the pipeline leaves a segment one
// piece.
func (h *hfCounter) setSpaceCuts() {
	space := " "
	replaced := map[string]bool{}
	for _, n := range h.norms {
		if n.kind != normReplace {
			continue
		}
		if utf8.RuneCountInString(n.a) != 1 {
			return // a pattern could span a cut
		}
		replaced[n.a] = true
		if space == n.a {
			space = n.b
		}
	}
	for _, st := range h.pre {
		switch {
		case st.kind == preMetaspace && !st.split:
			if space == " " {
				space = st.lit
			}
		case st.kind == preByteLevel && st.re == nil:
		default:
			return // splits the segment
		}
	}
	if space == "" {
		return
	}
	any := false
	for c := byte('!'); c <= '~'; c++ {
		if replaced[string(c)] {
			continue
		}
		p := string(c) + space
		h.cuts.space[c] = h.model.canCut(p, 1)
		any = any || h.cuts.space[c]
	}
	if any {
		h.cuts.mode = cutSpace
	}
}
