package tokens

import (
	"errors"
	"sync"

	"github.com/dlclark/regexp2/v2"
	"github.com/tiktoken-go/tokenizer/codec"
)

// tiktokenCounter counts with one of OpenAI's byte-level BPE vocabularies,
// taken from tiktoken-go, exactly as tiktoken-go's Codec.Count does (split
// regexp, then BPE of each piece by rank), but in bounded memory and with a
// limit: the text is split into segments of about 16 KiB at positions where
// the split pattern is known to cut (splitCuts), and each piece is merged in
// parts (countPiece).
type tiktokenCounter struct {
	name  string
	split *regexp2.Regexp
	// next, when set, is split written out as code (pieceFuncs): the end
	// of the piece starting at an index.
	next func(s string, i int) int
	cuts splitCuts
	bpe  *rankBPE
	// maxBytes is the most bytes of text one token covers, per class.
	maxBytes tokenBytes
}

// The counters are immutable once built, so each is created once, on first
// use (about 30 ms: the vocabulary is read back from tiktoken-go).
var (
	cl100k = sync.OnceValue(func() *tiktokenCounter {
		return newTiktoken("cl100k_base", codec.NewCl100kBase(), cl100kPattern)
	})
	o200k = sync.OnceValue(func() *tiktokenCounter {
		return newTiktoken("o200k_base", codec.NewO200kBase(), o200kPattern)
	})
)

// errSlowSplit stands for a segment whose whitespace makes the split regexp
// slow (see whitespaceCost).
var errSlowSplit = errors.New("segment too slow to split")

// maxTiktokenID bounds the token ids read back from a codec (o200k_base has
// 199,998 ordinary tokens).
const maxTiktokenID = 1 << 18

// newTiktoken builds a counter from a codec's vocabulary (ordinary tokens
// only: rank = id) and its split pattern, which must be one of knownCuts
// (the same string compiles to tiktoken-go's generated matcher).
func newTiktoken(name string, c *codec.Codec, pattern string) *tiktokenCounter {
	var toks []string
	for id := range uint(maxTiktokenID) {
		s, err := c.Decode([]uint{id})
		if err != nil {
			s = ""
		}
		toks = append(toks, s)
	}
	bpe := newRankBPE(toks)
	next := pieceFuncs[pattern]
	return &tiktokenCounter{
		next:     next,
		name:     name,
		split:    regexp2.MustCompile(pattern, regexp2.None),
		cuts:     knownCuts[pattern],
		bpe:      bpe,
		maxBytes: classBytes(toks, nil),
	}
}

// Name returns the encoding name, "cl100k_base" or "o200k_base".
func (t *tiktokenCounter) Name() string { return t.name }

// Count returns the number of tokens of text. Special-token strings such as
// "<|endoftext|>" count as ordinary text, as tiktoken's encode_ordinary does.
func (t *tiktokenCounter) Count(text string) int {
	ta := tally{limit: unlimited}
	t.countTo(&ta, text)
	return ta.n
}

// countTo adds the tokens of text to ta, segment by segment and piece by
// piece. Invalid UTF-8 bytes stay as they are, as in tiktoken-go (its regexp
// matches each as one U+FFFD but the pieces keep the original bytes).
func (t *tiktokenCounter) countTo(ta *tally, text string) bool {
	if text == "" {
		return true
	}
	sc := getScratch()
	defer putScratch(sc)
	ok, first := true, true
	t.cuts.segments(text, func(seg string) bool {
		ok = ta.live() && t.countSegment(ta, seg, first, sc)
		first = false
		return ok
	})
	return ok
}

// countSegment counts one segment: its pieces, or, when its whitespace would
// make the split regexp slow, its Estimate bytes (plus Estimate's 1 for the
// first segment, so that a one-segment text counts as Estimate does).
func (t *tiktokenCounter) countSegment(ta *tally, seg string, first bool, sc *bpeScratch) bool {
	if t.next != nil {
		// Linear in the segment: no whitespace bound needed.
		for i := 0; i < len(seg); {
			j := t.next(seg, i)
			if !countPiece(t.bpe, ta, seg[i:j], true, sc) {
				return false
			}
			i = j
		}
		return true
	}
	var idx [][]int
	err := errSlowSplit
	if whitespaceCost(seg) <= maxWhitespaceCost {
		// The regexp only fails on a match timeout, which is not set.
		idx, err = t.split.FindAllStringIndex(seg, -1)
	}
	if err != nil {
		n := estimateBytes(seg)
		if first {
			n++
		}
		return ta.add(n)
	}
	for _, m := range idx {
		if !countPiece(t.bpe, ta, seg[m[0]:m[1]], true, sc) {
			return false
		}
	}
	return true
}

// maxTokenBytes returns the most bytes of text one token covers, per class.
func (t *tiktokenCounter) maxTokenBytes() tokenBytes { return t.maxBytes }
