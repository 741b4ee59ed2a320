package tokens

import (
	"unicode"
	"unicode/utf8"
)

// pieceFuncs are the split patterns written out as code: each returns the
// end of the piece of s that starts at i (i < len(s)), the pieces covering
// s without gaps as the patterns' matches do.
var pieceFuncs = map[string]func(s string, i int) int{
	cl100kPattern: cl100kPiece,
	o200kPattern:  o200kPiece,
}

// cl100kPiece returns the end of the piece of s that starts at i, as
// cl100kPattern splits s: the first of the pattern's alternatives that
// matches at i, each taken as the regexp engine takes it (greedy, the
// alternation atomic). It is the regexp written out as code, in one pass
// over the piece and without allocating, about ten times faster than
// running the pattern (FuzzCl100kSplitMatchesRegexp checks that the pieces
// are the regexp's). Character classes are those of the regexp engine:
// \p{L} is unicode.IsLetter, \p{N} unicode.IsNumber and \s unicode.IsSpace;
// an invalid UTF-8 byte is one U+FFFD, a symbol. i < len(s).
func cl100kPiece(s string, i int) int {
	c, n := decodeAt(s, i)
	// (?i:'s|'t|'re|'ve|'m|'ll|'d); the engine folds 's' with 'ſ' too.
	if c == '\'' {
		if j := contractionEnd(s, i+1); j > 0 {
			return j
		}
	}
	// [^\r\n\p{L}\p{N}]?\p{L}+
	if isLetterRune(c) {
		return letterRunEnd(s, i+n)
	}
	if c != '\r' && c != '\n' && !isNumberRune(c) && i+n < len(s) {
		if c2, n2 := decodeAt(s, i+n); isLetterRune(c2) {
			return letterRunEnd(s, i+n+n2)
		}
	}
	if isNumberRune(c) {
		return digitGroupEnd(s, i+n)
	}
	if j := symbolPieceEnd(s, i, c, n, false); j > 0 { //  ?[^\s\p{L}\p{N}]+[\r\n]*
		return j
	}
	return spacePieceEnd(s, i)
}

// digitGroupEnd returns the end of \p{N}{1,3} whose first number ends at j.
func digitGroupEnd(s string, j int) int {
	for k := 1; k < 3 && j < len(s); k++ {
		c, n := decodeAt(s, j)
		if !isNumberRune(c) {
			break
		}
		j += n
	}
	return j
}

// symbolPieceEnd matches ` ?[^\s\p{L}\p{N}]+[\r\n]*` at s[i], whose rune is c of n bytes
// (with slash, `[\r\n/]*` at the end, as o200k has it), and returns its end, or -1.
func symbolPieceEnd(s string, i int, c rune, n int, slash bool) int {
	j := i
	if c == ' ' {
		j = i + n
	}
	if j >= len(s) {
		return -1
	}
	if c2, _ := decodeAt(s, j); !isSymbolRune(c2) {
		return -1
	}
	j = runEnd(s, j, isSymbolRune)
	for j < len(s) && (s[j] == '\r' || s[j] == '\n' || slash && s[j] == '/') {
		j++
	}
	return j
}

// spacePieceEnd returns the end of the piece of whitespace starting at
// s[i] by the alternatives both patterns end with,
// \s*[\r\n]+|\s+(?!\S)|\s+: up to the last line break of the run, else
// all of the run but its last character before a non-space, else the run.
func spacePieceEnd(s string, i int) int {
	// The run is s[i:end], its last rune starts at last and its last \r
	// or \n ends at newline (0: none).
	end, last, newline := i, i, 0
	for end < len(s) {
		c, n := decodeAt(s, end)
		if !isSpaceRune(c) {
			break
		}
		if c == '\r' || c == '\n' {
			newline = end + 1
		}
		last = end
		end += n
	}
	switch {
	case newline > 0: // \s*[\r\n]+
		return newline
	case end < len(s) && last > i: // \s+(?!\S): all but the last space before a non-space
		return last
	default: // \s+(?!\S) at the end of s, or \s+
		return end
	}
}

// contractionEnd returns the end of the contraction suffix (s, t, re, ve,
// m, ll or d, in either case, or 'ſ') starting at s[i], or 0.
func contractionEnd(s string, i int) int {
	if i >= len(s) {
		return 0
	}
	if s[i] == 0xc5 && i+1 < len(s) && s[i+1] == 0xbf { // ſ (U+017F)
		return i + 2
	}
	lower := func(k int) byte {
		if k < len(s) {
			return s[k] | 0x20
		}
		return 0
	}
	switch s[i] | 0x20 {
	case 's', 't', 'm', 'd':
		if s[i] >= 'A' { // not a punctuation mark that |0x20 maps onto a letter
			return i + 1
		}
	case 'r', 'v':
		if s[i] >= 'A' && lower(i+1) == 'e' && s[i+1] >= 'A' {
			return i + 2
		}
	case 'l':
		if s[i] >= 'A' && lower(i+1) == 'l' && s[i+1] >= 'A' {
			return i + 2
		}
	}
	return 0
}

// runEnd returns the end of the run of characters in class that starts at s[j].
func runEnd(s string, j int, in func(rune) bool) int {
	for j < len(s) {
		c, n := decodeAt(s, j)
		if !in(c) {
			break
		}
		j += n
	}
	return j
}

// letterRunEnd returns the end of the run of letters starting at s[j] (runEnd's loop
// written out for the commonest class, on the counting path of every word).
func letterRunEnd(s string, j int) int {
	for j < len(s) {
		if c := s[j]; c < utf8.RuneSelf { // ASCII letters without a call: most text is
			if c|0x20 < 'a' || c|0x20 > 'z' {
				break
			}
			j++
			continue
		}
		c, n := utf8.DecodeRuneInString(s[j:])
		if !unicode.IsLetter(c) {
			break
		}
		j += n
	}
	return j
}

// decodeAt decodes the rune at s[i] (ASCII without a call).
func decodeAt(s string, i int) (rune, int) {
	if c := s[i]; c < utf8.RuneSelf {
		return rune(c), 1
	}
	return decodeRune(s, i)
}

// decodeRune is decodeAt's path for a multi-byte rune, out of line so that decodeAt inlines.
//
//go:noinline
func decodeRune(s string, i int) (rune, int) { return utf8.DecodeRuneInString(s[i:]) }

func isLetterRune(c rune) bool {
	if c < utf8.RuneSelf {
		return uint32(c|0x20)-'a' < 26
	}
	return isLetter(c)
}

// isLetter, isNumber and isSpace are the rune classes' paths past ASCII, out of line so that
// the functions they serve inline.
//
//go:noinline
func isLetter(c rune) bool { return unicode.IsLetter(c) }

//go:noinline
func isNumber(c rune) bool { return unicode.IsNumber(c) }

//go:noinline
func isSpace(c rune) bool { return unicode.IsSpace(c) }

func isNumberRune(c rune) bool {
	if c < utf8.RuneSelf {
		return uint32(c)-'0' < 10
	}
	return isNumber(c)
}

func isSpaceRune(c rune) bool {
	if c < utf8.RuneSelf {
		return c == ' ' || c >= '\t' && c <= '\r'
	}
	return isSpace(c)
}

// isSymbolRune reports whether c is in [^\s\p{L}\p{N}].
func isSymbolRune(c rune) bool {
	return !isSpaceRune(c) && !isLetterRune(c) && !isNumberRune(c)
}

// o200kPiece returns the end of the piece of s that starts at i, as
// o200kPattern splits s, like cl100kPiece for cl100kPattern. Its first two
// alternatives, words in lower or mixed case and words in upper case, share
// Lm, Lo and M between their two letter classes; the backtracking of the
// first one is taken into account by remembering where the last character
// of the second class in the run of the first class ends. i < len(s).
func o200kPiece(s string, i int) int {
	c, n := decodeAt(s, i)
	// [^\r\n\p{L}\p{N}]? before the letters, tried with the character and
	// then without it.
	starts := [2]int{i, -1}
	if c != '\r' && c != '\n' && !isLetterRune(c) && !isNumberRune(c) {
		starts = [2]int{i + n, i}
	}
	for _, word := range [2]func(string, int) int{o200kWordEnd, o200kCapsEnd} {
		for _, s0 := range starts {
			if s0 < 0 {
				continue
			}
			if j := word(s, s0); j > 0 {
				if j < len(s) && s[j] == '\'' {
					if k := contractionEnd(s, j+1); k > 0 {
						return k
					}
				}
				return j
			}
		}
	}
	if isNumberRune(c) {
		return digitGroupEnd(s, i+n)
	}
	if j := symbolPieceEnd(s, i, c, n, true); j > 0 { //  ?[^\s\p{L}\p{N}]+[\r\n/]*
		return j
	}
	return spacePieceEnd(s, i)
}

// o200kWordEnd matches [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+
// at s[j] and returns its end, or -1.
func o200kWordEnd(s string, j int) int {
	lastLower := -1 // end of the last character of both classes in the first run
	for j < len(s) {
		c, n := decodeAt(s, j)
		if !isCapsClass(c) {
			break
		}
		if isLowerClass(c) {
			lastLower = j + n
		}
		j += n
	}
	if j < len(s) {
		if c, n := decodeAt(s, j); isLowerClass(c) {
			j += n
			for j < len(s) {
				c, n := decodeAt(s, j)
				if !isLowerClass(c) {
					break
				}
				j += n
			}
			return j
		}
	}
	return lastLower
}

// o200kCapsEnd matches [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*
// at s[j] and returns its end, or -1.
func o200kCapsEnd(s string, j int) int {
	start := j
	j = runEnd(s, j, isCapsClass)
	if j == start {
		return -1
	}
	j = runEnd(s, j, isLowerClass)
	return j
}

// isCapsClass reports whether c is in [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}].
func isCapsClass(c rune) bool {
	if c < utf8.RuneSelf {
		return c >= 'A' && c <= 'Z'
	}
	return unicode.In(c, unicode.Lu, unicode.Lt, unicode.Lm, unicode.Lo, unicode.M)
}

// isLowerClass reports whether c is in [\p{Ll}\p{Lm}\p{Lo}\p{M}].
func isLowerClass(c rune) bool {
	if c < utf8.RuneSelf {
		return c >= 'a' && c <= 'z'
	}
	return unicode.In(c, unicode.Ll, unicode.Lm, unicode.Lo, unicode.M)
}
