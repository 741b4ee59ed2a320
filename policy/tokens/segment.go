package tokens

import "unicode/utf8"

// The split patterns whose cut positions are known (see splitCuts): OpenAI's
// cl100k_base (also Llama 3's), o200k_base, GPT-2's (the ByteLevel
// pre-tokenizer's) and Qwen 2's.
const (
	cl100kPattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	o200kPattern  = `[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	gpt2Pattern   = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
	qwen2Pattern  = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

// knownCuts maps each known split pattern to its cut rule.
var knownCuts = map[string]splitCuts{
	cl100kPattern: {digitGroup: 3},
	o200kPattern:  {digitGroup: 3},
	gpt2Pattern:   {digitGroup: 0},
	qwen2Pattern:  {digitGroup: 1},
}

// segmentTarget is the length after which segments looks for a cut.
const segmentTarget = 16 << 10

// splitCuts says where a text may be cut for one of the known split patterns
// so that the pattern's matches in the whole text are exactly the matches in
// the two parts: a match ends at the cut, the next starts there, and no
// match before it depends on what follows (the patterns have no look-behind,
// and their only look-ahead, \s+(?!\S), never looks past a non-space).
//
// A cut at k is allowed when, with a the character before k and b the one
// at k (L: an ASCII letter or a CJK ideograph or Hangul syllable; N: an
// ASCII digit; P: ASCII punctuation or CJK punctuation):
//   - b is a space and a is not whitespace: no match of a non-space
//     character goes on into a space;
//   - a is L or N and b is P (not an apostrophe after a letter, which
//     o200k's letter runs take as a contraction), or a is L and b is N, or
//     a is N and b is L, or a is P and b is N: a run of letters, digits or
//     punctuation ends at k, and no pattern lets a digit or a letter take the
//     other kind or a punctuation mark after it;
//   - a and b are both N, the pattern groups digits by digitGroup (3:
//     \p{N}{1,3}, 1: \p{N}) and k is a multiple of digitGroup past the start
//     of the digit run.
//
// Letters followed by letters, whitespace runs and punctuation followed by a
// letter (which cl100k attaches to the letters) are never cut.
type splitCuts struct {
	digitGroup int
}

// charClass is the class of a character around a cut.
type charClass uint8

const (
	classOther charClass = iota
	classSpace
	classLetter
	classDigit
	classPunct
	classApostrophe
)

// classAt returns the class of the character starting at s[i].
func classAt(s string, i int) charClass {
	c := s[i]
	switch {
	case c == ' ':
		return classSpace
	case c == '\'':
		return classApostrophe
	case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
		return classLetter
	case c >= '0' && c <= '9':
		return classDigit
	case c > ' ' && c < utf8.RuneSelf:
		return classPunct
	case c < utf8.RuneSelf:
		return classOther
	}
	r, _ := utf8.DecodeRuneInString(s[i:])
	return wideClass(r)
}

// classBefore returns the class of the character ending at s[k-1].
func classBefore(s string, k int) charClass {
	if c := s[k-1]; c < utf8.RuneSelf {
		return classAt(s, k-1)
	}
	r, _ := utf8.DecodeLastRuneInString(s[:k])
	return wideClass(r)
}

// wideClass classifies the few non-ASCII characters a cut may touch: CJK
// ideographs, kana and Hangul syllables (letters in every Unicode version
// regexp2 may use) and CJK punctuation.
func wideClass(r rune) charClass {
	switch {
	case r >= 0x4E00 && r <= 0x9FEF, r >= 0xAC00 && r <= 0xD7A3,
		r >= 0x3041 && r <= 0x3096, r >= 0x30A1 && r <= 0x30FA:
		return classLetter
	}
	switch r {
	case 0x3001, 0x3002, 0x300C, 0x300D, 0x300E, 0x300F, 0xFF01, 0xFF08, 0xFF09, 0xFF0C, 0xFF1A, 0xFF1B, 0xFF1F:
		return classPunct
	}
	return classOther
}

// canCut reports whether s may be cut at k (0 < k < len(s)); digitStart is
// the start of the digit run ending at k-1 when s[k-1] and s[k] are digits.
func (c splitCuts) canCut(s string, k, digitStart int) bool {
	if s[k]&0xC0 == 0x80 {
		return false // inside a character
	}
	a, b := classBefore(s, k), classAt(s, k)
	switch {
	case b == classSpace:
		return a != classSpace && a != classOther
	case a == classLetter:
		return b == classPunct || b == classDigit
	case a == classDigit:
		switch b {
		case classPunct, classApostrophe, classLetter:
			return true
		case classDigit:
			return c.digitGroup > 0 && digitStart >= 0 && (k-digitStart)%c.digitGroup == 0
		}
	case a == classPunct || a == classApostrophe:
		return b == classDigit
	}
	return false
}

// digitRunStart returns the start of the run of ASCII digits ending at
// s[k-1], or -1 when a non-ASCII character before it may be a digit too.
func digitRunStart(s string, k int) int {
	i := k
	for i > 0 && isDigit(s[i-1]) {
		i--
	}
	if i > 0 && s[i-1] >= utf8.RuneSelf {
		return -1
	}
	return i
}

// segments calls yield with the parts of s, cut at the first allowed
// position at or after every segmentTarget bytes, until yield returns false.
func (c splitCuts) segments(s string, yield func(string) bool) {
	start := 0
	for len(s)-start > segmentTarget {
		k := start + segmentTarget
		digitStart, known := -1, false
		for ; k < len(s); k++ {
			if isDigit(s[k-1]) && isDigit(s[k]) {
				if !known && c.digitGroup > 0 {
					digitStart, known = digitRunStart(s, k), true
				}
			} else {
				known = false
			}
			if c.canCut(s, k, digitStart) {
				break
			}
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

// isDigit reports whether c is an ASCII digit.
func isDigit(c byte) bool { return c >= '0' && c <= '9' }
