package jsonscan

import (
	"encoding/binary"
	"math"
	"math/bits"
)

// ValidNext reports whether cur is valid JSON, given that prev is: Valid(cur)'s answer. When cur
// differs from prev inside one string only (consecutive chunks of a stream differ in their
// text), only the bytes that changed are checked, besides a scan of prev for its quotes;
// otherwise cur is checked in full. prev must be valid JSON; for any other prev the answer is
// unspecified.
//
// Why it holds: write prev = prefix + old + suffix and cur = prefix + mid + suffix. When the
// prefix ends inside a string of prev and outside its escapes, and old holds no unescaped quote
// and does not end inside an escape, a parser reading prev is in the same state where the
// suffix starts as where the prefix ends: inside that string, between two characters. When mid
// is plain string content (no quote, backslash or control character), a parser reading cur
// reaches the suffix in that state too, and from there it reads what it read in prev, which
// was valid: so is cur.
func ValidNext(prev, cur []byte) bool {
	if _, _, ok := sameButText(prev, cur, 0); ok {
		return true
	}
	return Valid(cur)
}

// sameButText reports whether cur differs from the valid JSON prev inside one string of it only,
// with plain text (ValidNext's fast path). It returns a position p of cur inside that string and
// outside its escapes (the length of their common prefix) and the end e of the bytes that
// changed in cur, where the common suffix starts; for the same document, p is at and e is -1.
// at, when not 0, is a position of prev inside a string and outside its escapes known
// beforehand: the scan for quotes starts there.
func sameButText(prev, cur []byte, at int) (p, e int, ok bool) {
	n := min(len(prev), len(cur))
	p = commonPrefix(prev, cur, n)
	if p == len(prev) && p == len(cur) {
		return at, -1, true // the same document: at holds for it as well
	}
	s := commonSuffix(prev, cur, n-p)
	e = len(cur) - s
	// cheapest first: the changed bytes, then the scan of prev up to them
	if !plainText(cur[p:e]) || !stringGoesOn(prev, p, len(prev)-s) {
		return p, e, false
	}
	from, in := 0, false
	if at > 0 && at <= p {
		from, in = at, true
	}
	return p, e, inStringAt(prev, from, in, p)
}

// isValueString reports whether the string of the valid JSON data that position i is inside
// (outside its escapes) is a value, not a key: what follows its closing quote is not a colon.
func isValueString(data []byte, i int) bool {
	for {
		j := quoteOrSlash(data, i, len(data))
		switch {
		case j < 0:
			return false
		case data[j] == '\\':
			i = escapeEnd(data, j)
			continue
		}
		k := j + 1
		for k < len(data) && (data[k] == ' ' || data[k] == '\t' || data[k] == '\n' || data[k] == '\r') {
			k++
		}
		return k == len(data) || data[k] != ':'
	}
}

// Sequence checks a sequence of JSON documents that resemble each other, such as the chunks of a
// stream, keeping a copy of the last valid one: Valid gives Valid's answer for each, through
// ValidNext's fast path when a document differs from the last valid one inside one string only.
// A sequence where that path does not apply twice in a row is checked in full from then on. The
// zero Sequence is ready to use; it allocates only for a document over 448 bytes.
type Sequence struct {
	kept   int  // length of the last valid document (in keep, or big when longer), 0 for none
	at     int  // a position in it inside a string and outside escapes, 0 when unknown
	misses int  // consecutive documents the fast path did not take
	shape  bool // the last document is shaped as the one before it (SameShape)
	big    []byte
	keep   [448]byte
}

// Valid reports whether doc is valid JSON.
func (q *Sequence) Valid(doc []byte) bool {
	if q.kept > 0 && q.misses < 2 {
		var prev []byte
		if q.big != nil {
			prev = q.big[:q.kept]
		} else {
			prev = q.keep[:q.kept]
		}
		if p, e, ok := sameButText(prev, doc, q.at); ok {
			q.misses = 0
			q.shape = e < 0 || isValueString(doc, e)
			q.store(doc, p)
			return true
		}
		q.misses++
	}
	q.shape = false
	if !Valid(doc) {
		q.kept = 0
		return false
	}
	q.store(doc, 0)
	return true
}

// SameShape reports whether the document of the last Valid call, a valid one, is shaped as the
// valid document before it: it differs from it inside one string value only, so it has the same
// keys, the same numbers and literals, the same nesting and every other string the same.
func (q *Sequence) SameShape() bool { return q.shape }

// store keeps doc as the last valid document, at being a position of it inside a string (or 0).
func (q *Sequence) store(doc []byte, at int) {
	if len(doc) <= len(q.keep) {
		copy(q.keep[:], doc)
		q.big = nil
	} else {
		q.big = append(q.big[:0], doc...)
	}
	q.kept, q.at = len(doc), at
}

// commonPrefix returns the length of the longest common prefix of a and b, at most n.
func commonPrefix(a, b []byte, n int) int {
	i := 0
	for ; i+8 <= n; i += 8 {
		if x := binary.LittleEndian.Uint64(a[i:]) ^ binary.LittleEndian.Uint64(b[i:]); x != 0 {
			return i + bits.TrailingZeros64(x)/8
		}
	}
	for i < n && a[i] == b[i] {
		i++
	}
	return i
}

// commonSuffix returns the length of the longest common suffix of a and b, at most n.
func commonSuffix(a, b []byte, n int) int {
	i := 0
	for ; i+8 <= n; i += 8 {
		if x := binary.LittleEndian.Uint64(a[len(a)-i-8:]) ^ binary.LittleEndian.Uint64(b[len(b)-i-8:]); x != 0 {
			return i + bits.LeadingZeros64(x)/8
		}
	}
	for i < n && a[len(a)-1-i] == b[len(b)-1-i] {
		i++
	}
	return i
}

// quoteOrSlash returns the index of the first '"' or '\\' in data[i:end], or -1.
func quoteOrSlash(data []byte, i, end int) int {
	for ; i+8 <= end; i += 8 {
		w := binary.LittleEndian.Uint64(data[i:])
		q, b := w^lanes22, w^lanes5c
		// a zero byte of q or b is a quote or a backslash; the lowest flagged byte is exact
		if m := ((q-lanes01)&^q | (b-lanes01)&^b) & lanes80; m != 0 {
			return i + bits.TrailingZeros64(m)/8
		}
	}
	for ; i < end; i++ {
		if c := data[i]; c == '"' || c == '\\' {
			return i
		}
	}
	return -1
}

// escapeEnd returns the end of the escape whose backslash is at data[j].
func escapeEnd(data []byte, j int) int {
	if j+1 < len(data) && data[j+1] == 'u' {
		return j + 6
	}
	return j + 2
}

// quotes counts the unescaped quotes of the valid JSON data in data[from:end], where from is
// outside any escape, stopping once they pass max; ok is false when an escape runs past end.
func quotes(data []byte, from, end, max int) (n int, ok bool) {
	for i := from; n <= max; {
		j := quoteOrSlash(data, i, end)
		switch {
		case j < 0:
			return n, true
		case data[j] == '"':
			n++
			i = j + 1
		default: // a backslash, inside a string of valid JSON
			if i = escapeEnd(data, j); i > end {
				return n, false
			}
		}
	}
	return n, true
}

// inStringAt reports whether position p of the valid JSON data lies inside a string (its
// content or its closing quote) and outside any escape, scanning from position from, where the
// scan is inside a string (outside escapes) when in is set, and outside any string otherwise.
func inStringAt(data []byte, from int, in bool, p int) bool {
	n, ok := quotes(data, from, p, math.MaxInt-1)
	return ok && in != (n%2 == 1)
}

// stringGoesOn reports whether data[p:end], inside a string of valid JSON, holds no unescaped
// quote and does not end inside an escape.
func stringGoesOn(data []byte, p, end int) bool {
	n, ok := quotes(data, p, end, 0)
	return ok && n == 0
}

// plainText reports whether b holds no quote, backslash or control character: string content
// that needs no check beyond that.
func plainText(b []byte) bool {
	i := 0
	for ; i+8 <= len(b); i += 8 {
		if !plain(binary.LittleEndian.Uint64(b[i:])) {
			return false
		}
	}
	for ; i < len(b); i++ {
		if c := b[i]; c == '"' || c == '\\' || c < ' ' {
			return false
		}
	}
	return true
}
