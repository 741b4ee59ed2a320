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

// gpt2Pattern is the split regex of the ByteLevel pre-tokenizer when its
// use_regex option is on.
const gpt2Pattern = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`

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
	kind     preKind
	re       *regexp2.Regexp
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
	if text == "" {
		return 0
	}
	if !utf8.ValidString(text) {
		// tokenizers works on Rust strings: invalid bytes cannot reach it.
		text = strings.ToValidUTF8(text, "\uFFFD")
	}
	total := 0
	sc := &bpeScratch{}
	start := 0
	for seg, rest := range h.added.segments(text) {
		total += h.countSegment(seg, start == 0, sc)
		if rest {
			total++ // the added token after seg
		}
		start++
	}
	return total
}

// countSegment counts a text between added tokens.
func (h *hfCounter) countSegment(s string, first bool, sc *bpeScratch) int {
	if s == "" {
		return 0
	}
	for _, n := range h.norms {
		switch n.kind {
		case normNFC:
			if !norm.NFC.IsNormalString(s) {
				s = norm.NFC.String(s)
			}
		case normPrepend:
			s = n.a + s
		case normReplace:
			s = strings.ReplaceAll(s, n.a, n.b)
		}
	}
	pieces := []piece{{text: s, first: first}}
	for i := range h.pre {
		pieces = h.pre[i].apply(pieces)
	}
	total := 0
	for _, p := range pieces {
		total += h.model.count(p.text, sc)
	}
	return total
}

// apply runs the pre-tokenizer over every piece.
func (p *preStep) apply(in []piece) []piece {
	out := make([]piece, 0, len(in)*2)
	for _, pc := range in {
		switch p.kind {
		case preSplit:
			out = p.splitPiece(out, pc)
		case preByteLevel:
			if p.prefix && !strings.HasPrefix(pc.text, " ") {
				pc.text = " " + pc.text
			}
			if p.re == nil {
				out = append(out, pc)
			} else {
				out = p.splitPiece(out, pc)
			}
		case preMetaspace:
			t := strings.ReplaceAll(pc.text, " ", p.lit)
			if !strings.HasPrefix(t, p.lit) &&
				(p.prepend == prependAlways || p.prepend == prependFirst && pc.first) {
				t = p.lit + t
			}
			if !p.split {
				out = append(out, piece{text: t, first: pc.first})
				continue
			}
			// Split on the replacement, each one merged with what follows.
			start := 0
			for i := 0; ; {
				k := strings.Index(t[i:], p.lit)
				if k < 0 {
					break
				}
				if pos := i + k; pos > start {
					out = append(out, piece{text: t[start:pos], first: pc.first && start == 0})
					start = pos
				}
				i += k + len(p.lit)
			}
			out = append(out, piece{text: t[start:], first: pc.first && start == 0})
		}
	}
	return out
}

// span is a part of a piece that matched the split pattern or lies between
// matches.
type span struct {
	start, end int
	match      bool
}

// splitPiece splits pc by the step's pattern and behaviour.
func (p *preStep) splitPiece(out []piece, pc piece) []piece {
	spans := p.spans(pc.text)
	t := pc.text
	emit := func(s, e int) {
		if e > s {
			out = append(out, piece{text: t[s:e], first: pc.first && s == 0})
		}
	}
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
	return out
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
		m, err := p.re.FindStringMatch(t)
		for err == nil && m != nil {
			if s, n := m.ByteRange(); n > 0 {
				add(s, s+n)
			}
			m, err = p.re.FindNextMatch(m)
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
