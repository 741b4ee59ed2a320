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
	if !utf8.ValidString(s) {
		return statsOfInvalid(s)
	}
	// Valid UTF-8: every byte counts, and the non-ASCII ones are exactly
	// the bytes of non-ASCII characters. The three counts are summed in
	// one word, 21 bits each, flushed before they can carry.
	st := textStats{valid: len(s)}
	for len(s) > 0 {
		chunk := s[:min(len(s), 1<<20)]
		s = s[len(chunk):]
		var sum uint64
		for i := 0; i < len(chunk); i++ {
			sum += byteClass[chunk[i]]
		}
		st.letters += int(sum & (1<<21 - 1))
		st.digits += int(sum >> 21 & (1<<21 - 1))
		st.wide += int(sum >> 42)
	}
	return st
}

// byteClass adds 1 to the letters field (bits 0-20) for ASCII letters, to
// the digits field (bits 21-41) for digits and to the wide field (bits 42-62)
// for non-ASCII bytes.
var byteClass = func() (t [256]uint64) {
	for c := range 256 {
		switch {
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
			t[c] = 1
		case c >= '0' && c <= '9':
			t[c] = 1 << 21
		case c >= utf8.RuneSelf:
			t[c] = 1 << 42
		}
	}
	return t
}()

// statsOfInvalid is statsOf for a text with invalid UTF-8.
func statsOfInvalid(s string) textStats {
	var st textStats
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch byteClass[c] {
			case 1:
				st.letters++
			case 1 << 21:
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
