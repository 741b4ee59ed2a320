package policy

import (
	"regexp/syntax"
	"strings"
	"unicode"
	"unicode/utf8"
)

// A prefilter is a cheap necessary condition for a pattern to match: the text must contain one
// of its literals. Go's regexp has no DFA, so a pattern without a literal prefix costs tens of
// nanoseconds per byte; a substring search costs well under one. A prefilter may let text
// through that the pattern then rejects, but it must never hold back text the pattern would
// match: when in doubt, there is no prefilter.
type prefilter []needle

// needle is one literal (fold: ASCII case-insensitive, lit in lower case) or, when set is not
// nil, one byte of an ASCII set.
type needle struct {
	lit  string
	fold bool
	set  *byteSet
}

// byteSet is a set of ASCII bytes.
type byteSet [2]uint64

func (b *byteSet) has(c byte) bool { return c < 128 && b[c>>6]&(1<<(c&63)) != 0 }

// maxNeedles bounds the alternatives of one prefilter.
const maxNeedles = 16

// buildPrefilter derives a prefilter from a pattern, or nil when none is safe.
func buildPrefilter(pattern string) prefilter {
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return nil
	}
	return required(re)
}

// required returns literals one of which every match of re contains.
func required(re *syntax.Regexp) prefilter {
	switch re.Op {
	case syntax.OpLiteral:
		if n, ok := literalNeedle(re); ok {
			return prefilter{n}
		}
	case syntax.OpCharClass:
		if set, ok := asciiClass(re); ok {
			return prefilter{{set: set}}
		}
	case syntax.OpCapture, syntax.OpPlus:
		return required(re.Sub[0])
	case syntax.OpRepeat:
		if re.Min >= 1 {
			return required(re.Sub[0])
		}
	case syntax.OpConcat:
		var best prefilter
		for _, sub := range re.Sub {
			if p := required(sub); p != nil && p.weight() > best.weight() {
				best = p
			}
		}
		return best
	case syntax.OpAlternate:
		var all prefilter
		for _, sub := range re.Sub {
			p := required(sub)
			if p == nil || len(all)+len(p) > maxNeedles {
				return nil
			}
			all = append(all, p...)
		}
		return all
	}
	return nil
}

// weight ranks prefilters by their weakest needle: a byte set counts least, then literals by
// length.
func (p prefilter) weight() int {
	if len(p) == 0 {
		return 0
	}
	w := p[0].weight()
	for _, n := range p[1:] {
		w = min(w, n.weight())
	}
	return w
}

func (n needle) weight() int {
	if n.set != nil {
		return 1
	}
	return 2 * len(n.lit)
}

// asciiClass returns the byte set of a character class made only of ASCII runes.
func asciiClass(re *syntax.Regexp) (*byteSet, bool) {
	var set byteSet
	for i := 0; i+1 < len(re.Rune); i += 2 {
		lo, hi := re.Rune[i], re.Rune[i+1]
		if hi >= utf8.RuneSelf {
			return nil, false
		}
		for c := lo; c <= hi; c++ {
			set[c>>6] |= 1 << (c & 63)
		}
	}
	return &set, len(re.Rune) > 0
}

// literalNeedle turns a literal node into a needle: its longest run of runes that a plain
// substring search finds exactly. U+FFFD is left out (the regexp reads invalid UTF-8 in the
// text as U+FFFD); in a case-folded literal, so is every rune with a non-ASCII case variant
// ('k' also matches the Kelvin sign, 's' the long s).
func literalNeedle(re *syntax.Regexp) (needle, bool) {
	fold := re.Flags&syntax.FoldCase != 0
	best, start := "", 0
	flush := func(end int) {
		if end-start <= len(best) {
			return
		}
		var b strings.Builder
		for _, r := range re.Rune[start:end] {
			if fold {
				r = unicode.ToLower(r)
			}
			b.WriteRune(r)
		}
		if b.Len() > len(best) {
			best = b.String()
		}
	}
	for i, r := range re.Rune {
		if r == utf8.RuneError || fold && !asciiFoldOnly(r) {
			flush(i)
			start = i + 1
		}
	}
	flush(len(re.Rune))
	return needle{lit: best, fold: fold}, best != ""
}

// asciiFoldOnly reports whether r and every rune it case-folds to are ASCII.
func asciiFoldOnly(r rune) bool {
	if r >= utf8.RuneSelf {
		return false
	}
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		if f >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// pass reports whether text may match (always true for an empty prefilter).
func (p prefilter) pass(text string) bool {
	if len(p) == 0 {
		return true
	}
	for _, n := range p {
		if n.set != nil {
			if containsAny(text, n.set) {
				return true
			}
		} else if n.fold {
			if containsFoldASCII(text, n.lit) {
				return true
			}
		} else if strings.Contains(text, n.lit) {
			return true
		}
	}
	return false
}

// containsFoldASCII reports whether s contains lit (lower-case ASCII) ignoring ASCII case.
func containsFoldASCII(s, lit string) bool {
	if len(lit) == 0 {
		return true
	}
	c0 := lit[0]
	upper := c0
	if c0 >= 'a' && c0 <= 'z' {
		upper = c0 - 'a' + 'A'
	}
	for i := 0; i+len(lit) <= len(s); i++ {
		if c := s[i]; c != c0 && c != upper {
			continue
		}
		if equalFoldASCII(s[i+1:i+len(lit)], lit[1:]) {
			return true
		}
	}
	return false
}

// equalFoldASCII compares s with lower-case lit, folding ASCII letters of s.
func equalFoldASCII(s, lit string) bool {
	for i := 0; i < len(lit); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lit[i] {
			return false
		}
	}
	return true
}

// containsAny reports whether s contains a byte of set.
func containsAny(s string, set *byteSet) bool {
	for i := 0; i < len(s); i++ {
		if set.has(s[i]) {
			return true
		}
	}
	return false
}
