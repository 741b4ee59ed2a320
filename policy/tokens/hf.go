package tokens

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/dlclark/regexp2/v2"
	"golang.org/x/text/unicode/norm"
)

// hfCounter counts with a tokenizer.json: added tokens, normalizers,
// pre-tokenizers, then the BPE model on each piece. It is immutable after
// ParseHF and safe for concurrent use.
type hfCounter struct {
	name          string
	norms         []normStep
	pre           []preStep
	model         *bpeModel
	added         addedMatcher
	byteLevel     bool
	prefixes      int
	mustHaveRunes []rune
	// cuts says where a segment may be cut into parts counted on their own.
	cuts hfCuts
	// slowSplit is set when a split regex backtracks over whitespace runs
	// (\s+(?!\S)), so parts with long ones are bounded instead.
	slowSplit bool
	// maxBytes is the most bytes of text one token covers, per class.
	maxBytes tokenBytes
}

type normKind uint8

const (
	normNFC normKind = iota
	normPrepend
	normReplace
)

// normStep is one normalizer.
type normStep struct {
	kind normKind
	a, b string
}

type preKind uint8

const (
	preSplit preKind = iota
	preByteLevel
	preMetaspace
)

type behavior uint8

const (
	behaviorIsolated behavior = iota
	behaviorRemoved
	behaviorMergedWithPrevious
	behaviorMergedWithNext
	behaviorContiguous
)

type prependScheme uint8

const (
	prependAlways prependScheme = iota
	prependFirst
	prependNever
)

// preStep is one pre-tokenizer.
type preStep struct {
	kind    preKind
	re      *regexp2.Regexp
	pattern string // the regex of re
	// next is the pattern written out as code, when it is one of
	// pieceFuncs: used instead of re (faster, and regexp2 would run
	// tiktoken-go's generated matcher for these strings, which cuts
	// whitespace runs otherwise than tokenizers' regex engine).
	next     func(s string, i int) int
	lit      string
	behavior behavior
	invert   bool
	prefix   bool // ByteLevel add_prefix_space
	prepend  prependScheme
	split    bool // Metaspace split
}

// piece is a part of the text on its way through the pre-tokenizers.
type piece struct {
	text  string
	first bool // starts at offset 0 of the original text
}

// compileRegex compiles a tokenizer.json regex with regexp2 in its default
// (Perl/.NET-like) mode, which, unlike Go's regexp, has the look-ahead these
// patterns use.
func compileRegex(expr string) (*regexp2.Regexp, error) {
	re, err := regexp2.Compile(expr, regexp2.None)
	if err != nil {
		return nil, fmt.Errorf("compiling split regex %q: %w", expr, err)
	}
	return re, nil
}

// Name returns "hf:<path>".
func (h *hfCounter) Name() string { return h.name }

// Count returns the number of tokens of text, without the special tokens a
// post-processor would add.
func (h *hfCounter) Count(text string) int {
	t := tally{limit: unlimited}
	h.countTo(&t, text)
	return t.n
}

// countTo adds the tokens of text to t, part by part and piece by piece.
func (h *hfCounter) countTo(t *tally, text string) bool {
	if text == "" {
		return true
	}
	if !utf8.ValidString(text) {
		// tokenizers works on Rust strings: invalid bytes cannot reach it.
		text = strings.ToValidUTF8(text, "\uFFFD")
	}
	sc := getScratch()
	defer putScratch(sc)
	i := 0
	for seg, rest := range h.added.segments(text) {
		if !h.countSegment(t, seg, i == 0, sc) {
			return false
		}
		if rest && !t.add(1) { // the added token after seg
			return false
		}
		i++
	}
	return true
}

// countSegment counts a text between added tokens, cut into parts of about
// 16 KiB where the pipeline allows it (see hfCuts).
func (h *hfCounter) countSegment(t *tally, s string, first bool, sc *bpeScratch) bool {
	if s == "" {
		return true
	}
	if h.cuts.mode == cutNone || len(s) <= segmentTarget {
		return t.live() && h.countPart(t, s, first, true, true, sc)
	}
	ok, head := true, true
	h.cuts.parts(s, func(part string) bool {
		ok = t.live() && h.countPart(t, part, first && head, head, head && len(part) == len(s), sc)
		head = false
		return ok
	})
	return ok
}

// countPart normalizes one part of a segment, splits it into pieces and
// counts them. head says the part starts its segment (where the Prepend
// normalizer applies), first that it starts the text, whole that it is the
// whole segment.
func (h *hfCounter) countPart(t *tally, s string, first, head, whole bool, sc *bpeScratch) bool {
	orig := s
	for _, n := range h.norms {
		switch n.kind {
		case normNFC:
			if !norm.NFC.IsNormalString(s) {
				s = norm.NFC.String(s)
			}
		case normPrepend:
			if head {
				s = n.a + s
			}
		case normReplace:
			s = strings.ReplaceAll(s, n.a, n.b)
		}
	}
	if h.slowSplit && whitespaceCost(s) > maxWhitespaceCost {
		// The Estimate bound of the part: one start symbol per byte at
		// most, plus the prefix a head part may get.
		n := estimateBytes(orig)
		if head && h.prefixes > 0 {
			n++
		}
		return t.add(n)
	}
	return h.preTokenize(t, 0, piece{text: s, first: first}, whole, sc)
}

// preTokenize runs the pre-tokenizers from step i on pc and counts the
// pieces that come out, one at a time.
func (h *hfCounter) preTokenize(t *tally, i int, pc piece, whole bool, sc *bpeScratch) bool {
	if i == len(h.pre) {
		return countPiece(h.model, t, pc.text, whole || h.cuts.mode != cutSpace, sc)
	}
	return h.pre[i].each(pc, func(p piece) bool { return h.preTokenize(t, i+1, p, whole, sc) })
}

// each runs the pre-tokenizer on one piece, calling yield with each piece
// it makes until yield returns false; it reports whether all were yielded.
func (p *preStep) each(pc piece, yield func(piece) bool) bool {
	switch p.kind {
	case preByteLevel:
		if p.prefix && !strings.HasPrefix(pc.text, " ") {
			pc.text = " " + pc.text
		}
		if p.re == nil {
			return yield(pc)
		}
		return p.splitPiece(pc, yield)
	case preMetaspace:
		t := strings.ReplaceAll(pc.text, " ", p.lit)
		if !strings.HasPrefix(t, p.lit) &&
			(p.prepend == prependAlways || p.prepend == prependFirst && pc.first) {
			t = p.lit + t
		}
		if !p.split {
			return yield(piece{text: t, first: pc.first})
		}
		// Split on the replacement, each one merged with what follows.
		start := 0
		for i := 0; ; {
			k := strings.Index(t[i:], p.lit)
			if k < 0 {
				break
			}
			if pos := i + k; pos > start {
				if !yield(piece{text: t[start:pos], first: pc.first && start == 0}) {
					return false
				}
				start = pos
			}
			i += k + len(p.lit)
		}
		return yield(piece{text: t[start:], first: pc.first && start == 0})
	}
	return p.splitPiece(pc, yield)
}

// span is a part of a piece that matched the split pattern or lies between
// matches.
type span struct {
	start, end int
	match      bool
}

// splitPiece splits pc by the step's pattern and behaviour.
func (p *preStep) splitPiece(pc piece, yield func(piece) bool) bool {
	t := pc.text
	ok := true
	emit := func(s, e int) {
		if ok && e > s {
			ok = yield(piece{text: t[s:e], first: pc.first && s == 0})
		}
	}
	if p.next != nil && p.behavior == behaviorIsolated {
		// The pieces cover t without gaps.
		for i := 0; i < len(t) && ok; {
			j := p.next(t, i)
			emit(i, j)
			i = j
		}
		return ok
	}
	if p.re != nil && p.behavior == behaviorIsolated {
		// Matches and the text between them, in order (inverted or not):
		// no need for the spans.
		idx := p.matches(t)
		last := 0
		for _, m := range idx {
			emit(last, m[0])
			emit(m[0], m[1])
			last = max(last, m[1])
		}
		emit(last, len(t))
		return ok
	}
	spans := p.spans(t)
	switch p.behavior {
	case behaviorIsolated:
		for _, s := range spans {
			emit(s.start, s.end)
		}
	case behaviorRemoved:
		for _, s := range spans {
			if !s.match {
				emit(s.start, s.end)
			}
		}
	case behaviorMergedWithPrevious:
		start := 0
		for _, s := range spans {
			if s.match {
				emit(start, s.end)
				start = s.end
			}
		}
		emit(start, len(t))
	case behaviorMergedWithNext:
		start := 0
		for _, s := range spans {
			if s.match && s.start > start {
				emit(start, s.start)
				start = s.start
			}
		}
		emit(start, len(t))
	case behaviorContiguous:
		start, prevMatch := 0, false
		for i, s := range spans {
			if i > 0 && !(s.match && prevMatch) {
				emit(start, s.start)
				start = s.start
			}
			prevMatch = s.match
		}
		emit(start, len(t))
	}
	return ok
}

// matches returns the start and end of each match of the step's regex in
// t.
func (p *preStep) matches(t string) [][]int {
	if p.next != nil {
		var idx [][]int
		for i := 0; i < len(t); {
			j := p.next(t, i)
			idx = append(idx, []int{i, j})
			i = j
		}
		return idx
	}
	// The regexp only fails on a match timeout, which is not set.
	idx, _ := p.re.FindAllStringIndex(t, -1)
	return idx
}

// spans returns the matches of the step's pattern in t and the text between
// them, in order, flipped when the step is inverted.
func (p *preStep) spans(t string) []span {
	var spans []span
	last := 0
	add := func(s, e int) {
		if s > last {
			spans = append(spans, span{last, s, p.invert})
		}
		spans = append(spans, span{s, e, !p.invert})
		last = e
	}
	if p.re == nil {
		for i := 0; i < len(t); {
			k := strings.Index(t[i:], p.lit)
			if k < 0 {
				break
			}
			add(i+k, i+k+len(p.lit))
			i += k + len(p.lit)
		}
	} else {
		for _, m := range p.matches(t) {
			if m[1] > m[0] {
				add(m[0], m[1])
			}
		}
	}
	if last < len(t) {
		spans = append(spans, span{last, len(t), p.invert})
	}
	return spans
}

// addedMatcher finds added tokens in a text, longest first at each position.
type addedMatcher struct {
	byFirst [256][]string
}

// newAddedMatcher indexes the contents of the added tokens.
func newAddedMatcher(tokens []hfAddedToken) addedMatcher {
	var m addedMatcher
	for _, t := range tokens {
		if t.Content == "" {
			continue
		}
		b := t.Content[0]
		m.byFirst[b] = append(m.byFirst[b], t.Content)
	}
	for i := range m.byFirst {
		slices.SortFunc(m.byFirst[i], func(a, b string) int { return cmp.Compare(len(b), len(a)) })
	}
	return m
}

// segments yields the texts between added tokens; the flag tells whether an
// added token follows the segment.
func (m *addedMatcher) segments(text string) func(yield func(string, bool) bool) {
	return func(yield func(string, bool) bool) {
		start := 0
		for i := 0; i < len(text); i++ {
			cands := m.byFirst[text[i]]
			if len(cands) == 0 {
				continue
			}
			for _, c := range cands {
				if strings.HasPrefix(text[i:], c) {
					if !yield(text[start:i], true) {
						return
					}
					start = i + len(c)
					i = start - 1
					break
				}
			}
		}
		yield(text[start:], false)
	}
}
