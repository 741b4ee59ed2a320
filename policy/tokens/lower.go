package tokens

import "unicode/utf8"

// tokenBytes bounds how many bytes of text one token of a vocabulary can
// stand for: any bytes (all) and, per class, ASCII letters, ASCII digits and
// bytes of non-ASCII characters (a token holding one letter covers at most
// letters bytes, and so on). 0 means no bound is known.
//
// A text of n such bytes then counts at least ceil(n / bound) tokens, for
// every class: for cl100k_base the bounds are 128 bytes, 42 letters (the
// longest token with a letter is ".translatesAutoresizingMaskIntoConstraints"),
// 3 digits and 48 non-ASCII bytes; for o200k_base 128, 26, 3 and 61.
type tokenBytes struct {
	all, letters, digits, wide int
}

// classBytes returns the bounds for the raw tokens toks and the strings
// extra that also count one token each (added tokens).
func classBytes(toks, extra []string) tokenBytes {
	var b tokenBytes
	for _, list := range [2][]string{toks, extra} {
		for _, t := range list {
			st := statsOf(t)
			b.all = max(b.all, len(t))
			if st.letters > 0 {
				b.letters = max(b.letters, len(t))
			}
			if st.digits > 0 {
				b.digits = max(b.digits, len(t))
			}
			if st.wide > 0 || st.valid < len(t) {
				b.wide = max(b.wide, len(t))
			}
		}
	}
	return b
}

// textStats counts the bytes of a text by class; invalid UTF-8 bytes are
// left out (a counter may replace a run of them by one U+FFFD).
type textStats struct {
	valid, letters, digits, wide int
}

// add adds the counts of o.
func (s *textStats) add(o textStats) {
	s.valid += o.valid
	s.letters += o.letters
	s.digits += o.digits
	s.wide += o.wide
}

// statsOf counts the bytes of s by class.
func statsOf(s string) textStats {
	var st textStats
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
				st.letters++
			case c >= '0' && c <= '9':
				st.digits++
			}
			st.valid++
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r != utf8.RuneError || size > 1 {
			st.valid += size
			st.wide += size
		}
		i += size
	}
	return st
}

// lower returns the fewest tokens a text with the stats st can count.
func (b tokenBytes) lower(st textStats) int {
	n := 0
	for _, p := range [4][2]int{{st.valid, b.all}, {st.letters, b.letters}, {st.digits, b.digits}, {st.wide, b.wide}} {
		if p[1] > 0 {
			n = max(n, (p[0]+p[1]-1)/p[1])
		}
	}
	return n
}
