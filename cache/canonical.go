package cache

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"
)

// maxDepth bounds the nesting of arrays and objects the canonicaliser accepts, so a hostile body
// cannot exhaust the stack. Real requests nest a few levels (tool schemas perhaps a dozen).
const maxDepth = 512

var (
	errSyntax   = errors.New("invalid JSON")
	errDepth    = errors.New("JSON nested too deeply")
	errNotObj   = errors.New("body is not a JSON object")
	errTrailing = errors.New("data after the JSON value")
)

// member is one object member already written, canonical, to the output: the key (a canonical
// JSON string) at out[keyStart:keyEnd] and the whole `"key":value` at out[keyStart:end].
type member struct {
	keyStart, keyEnd, end int
}

// canonicalizer rewrites JSON into a canonical form:
//   - insignificant whitespace removed;
//   - object members sorted by key (stably, so duplicate keys keep their relative order, which
//     decides which one a server's "last one wins" parser sees);
//   - strings re-encoded from their decoded value: only `"`, `\` and control characters are
//     escaped (as \n, \r, \t, \b, \f or \u00xx), everything else is written literally, so "\u0061"
//     and "a" agree; an escaped lone surrogate stays escaped (\udxxx, lower case) and raw bytes
//     that are not UTF-8 are kept as they are, so distinct inputs never merge;
//   - numbers are kept exactly as written: 1, 1.0 and 1e0 differ. A server may treat them
//     differently (an integer-only field rejects 1.0), so merging them could serve an answer to
//     a request the upstream would have refused; splitting them only costs hit rate.
//
// With top set, the top-level value must be an object, and its members named in drop are left
// out. It keeps its scratch space between calls and is not safe for concurrent use.
type canonicalizer struct {
	src     []byte
	pos     int
	out     []byte
	tmp     []byte
	members []member
	drop    func(key []byte) bool
}

// canonical appends the canonical form of src to dst.
func (c *canonicalizer) canonical(dst, src []byte, top bool) ([]byte, error) {
	c.src, c.pos, c.out = src, 0, dst
	c.members = c.members[:0]
	c.skipSpace()
	if top && (c.pos >= len(c.src) || c.src[c.pos] != '{') {
		c.src = nil
		return dst, errNotObj
	}
	err := c.value(0, top)
	if err == nil {
		c.skipSpace()
		if c.pos != len(c.src) {
			err = errTrailing
		}
	}
	out := c.out
	c.src, c.out = nil, nil
	if err != nil {
		return dst, fmt.Errorf("canonicalising body at byte %d: %w", c.pos, err)
	}
	return out, nil
}

func (c *canonicalizer) skipSpace() {
	for c.pos < len(c.src) {
		switch c.src[c.pos] {
		case ' ', '\t', '\n', '\r':
			c.pos++
		default:
			return
		}
	}
}

// value writes the value at c.pos.
func (c *canonicalizer) value(depth int, top bool) error {
	if c.pos >= len(c.src) {
		return errSyntax
	}
	switch ch := c.src[c.pos]; {
	case ch == '{':
		return c.object(depth+1, top)
	case ch == '[':
		return c.array(depth + 1)
	case ch == '"':
		return c.str()
	case ch == '-' || (ch >= '0' && ch <= '9'):
		return c.number()
	case ch == 't':
		return c.literal("true")
	case ch == 'f':
		return c.literal("false")
	case ch == 'n':
		return c.literal("null")
	}
	return errSyntax
}

func (c *canonicalizer) literal(lit string) error {
	if !bytes.HasPrefix(c.src[c.pos:], []byte(lit)) {
		return errSyntax
	}
	c.out = append(c.out, lit...)
	c.pos += len(lit)
	return nil
}

// number validates a JSON number and copies it as written.
func (c *canonicalizer) number() error {
	start := c.pos
	p := c.pos
	s := c.src
	if p < len(s) && s[p] == '-' {
		p++
	}
	switch {
	case p < len(s) && s[p] == '0':
		p++
	case p < len(s) && s[p] >= '1' && s[p] <= '9':
		p = digits(s, p)
	default:
		return errSyntax
	}
	if p < len(s) && s[p] == '.' {
		d := p + 1
		if p = digits(s, d); p == d {
			return errSyntax // no digit after the point
		}
	}
	if p < len(s) && (s[p] == 'e' || s[p] == 'E') {
		p++
		if p < len(s) && (s[p] == '+' || s[p] == '-') {
			p++
		}
		d := p
		if p = digits(s, d); p == d {
			return errSyntax // no digit in the exponent
		}
	}
	c.out = append(c.out, s[start:p]...)
	c.pos = p
	return nil
}

// digits returns the end of the run of decimal digits at s[p:].
func digits(s []byte, p int) int {
	for p < len(s) && s[p] >= '0' && s[p] <= '9' {
		p++
	}
	return p
}

// open writes the bracket at c.pos that opens an array or object at depth; empty reports one
// that closes right away, and writes its closing bracket too.
func (c *canonicalizer) open(depth int, opening, closing byte) (empty bool, err error) {
	if depth > maxDepth {
		return false, errDepth
	}
	c.pos++
	c.out = append(c.out, opening)
	c.skipSpace()
	if c.pos < len(c.src) && c.src[c.pos] == closing {
		c.pos++
		c.out = append(c.out, closing)
		return true, nil
	}
	return false, nil
}

func (c *canonicalizer) array(depth int) error {
	if empty, err := c.open(depth, '[', ']'); empty || err != nil {
		return err
	}
	for {
		c.skipSpace()
		if err := c.value(depth, false); err != nil {
			return err
		}
		c.skipSpace()
		if c.pos >= len(c.src) {
			return errSyntax
		}
		switch c.src[c.pos] {
		case ',':
			c.pos++
			c.out = append(c.out, ',')
		case ']':
			c.pos++
			c.out = append(c.out, ']')
			return nil
		default:
			return errSyntax
		}
	}
}

func (c *canonicalizer) object(depth int, top bool) error {
	start, base := len(c.out), len(c.members)
	if empty, err := c.open(depth, '{', '}'); empty || err != nil {
		return err
	}
	for {
		c.skipSpace()
		if c.pos >= len(c.src) || c.src[c.pos] != '"' {
			return errSyntax
		}
		m := member{keyStart: len(c.out)}
		if err := c.str(); err != nil {
			return err
		}
		m.keyEnd = len(c.out)
		c.skipSpace()
		if c.pos >= len(c.src) || c.src[c.pos] != ':' {
			return errSyntax
		}
		c.pos++
		c.out = append(c.out, ':')
		c.skipSpace()
		if err := c.value(depth, false); err != nil {
			return err
		}
		m.end = len(c.out)
		if top && c.drop != nil && c.drop(c.out[m.keyStart+1:m.keyEnd-1]) {
			c.out = c.out[:m.keyStart]
		} else {
			c.members = append(c.members, m)
		}
		c.skipSpace()
		if c.pos >= len(c.src) {
			return errSyntax
		}
		if c.src[c.pos] == '}' {
			c.pos++
			break
		}
		if c.src[c.pos] != ',' {
			return errSyntax
		}
		c.pos++
	}
	c.finishObject(start, base)
	c.members = c.members[:base]
	return nil
}

// finishObject rewrites the members written after out[start] ('{') in key order, separated by
// commas, and closes the object.
func (c *canonicalizer) finishObject(start, base int) {
	ms := c.members[base:]
	key := func(m member) []byte { return c.out[m.keyStart:m.keyEnd] }
	cmp := func(a, b member) int { return bytes.Compare(key(a), key(b)) }
	if !slices.IsSortedFunc(ms, cmp) {
		slices.SortStableFunc(ms, cmp)
	}
	// Members were written back to back without commas; copy them out and back in order.
	c.tmp = append(c.tmp[:0], c.out[start+1:]...)
	c.out = c.out[:start+1]
	off := start + 1
	for i, m := range ms {
		if i > 0 {
			c.out = append(c.out, ',')
		}
		c.out = append(c.out, c.tmp[m.keyStart-off:m.end-off]...)
	}
	c.out = append(c.out, '}')
}

// str decodes the string at c.pos and writes its canonical encoding.
func (c *canonicalizer) str() error {
	s := c.src
	p := c.pos + 1
	c.out = append(c.out, '"')
	for {
		// Copy the run of bytes that need no attention.
		run := p
		for p < len(s) && s[p] != '"' && s[p] != '\\' && s[p] >= 0x20 {
			p++
		}
		c.out = append(c.out, s[run:p]...)
		if p >= len(s) {
			return errSyntax
		}
		switch s[p] {
		case '"':
			c.pos = p + 1
			c.out = append(c.out, '"')
			return nil
		case '\\':
			n, err := c.escape(p)
			if err != nil {
				return err
			}
			p = n
		default: // a raw control character
			return errSyntax
		}
	}
}

// escape decodes the escape sequence at s[p] ('\\'), writes it canonically and returns the
// position after it.
func (c *canonicalizer) escape(p int) (int, error) {
	s := c.src
	if p+1 >= len(s) {
		return 0, errSyntax
	}
	switch s[p+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		c.out = appendRuneCanonical(c.out, rune(unescapeChar(s[p+1])))
		return p + 2, nil
	case 'u':
	default:
		return 0, errSyntax
	}
	r, ok := hex4(s, p+2)
	if !ok {
		return 0, errSyntax
	}
	p += 6
	if r >= 0xD800 && r < 0xDC00 {
		// A high surrogate: combine with a following low surrogate.
		if p+1 < len(s) && s[p] == '\\' && s[p+1] == 'u' {
			if lo, ok := hex4(s, p+2); ok && lo >= 0xDC00 && lo < 0xE000 {
				c.out = utf8.AppendRune(c.out, 0x10000+(r-0xD800)<<10+(lo-0xDC00))
				return p + 6, nil
			}
		}
		c.out = appendSurrogate(c.out, r)
		return p, nil
	}
	if r >= 0xDC00 && r < 0xE000 {
		c.out = appendSurrogate(c.out, r)
		return p, nil
	}
	c.out = appendRuneCanonical(c.out, r)
	return p, nil
}

func unescapeChar(b byte) byte {
	switch b {
	case 'b':
		return '\b'
	case 'f':
		return '\f'
	case 'n':
		return '\n'
	case 'r':
		return '\r'
	case 't':
		return '\t'
	}
	return b // '"', '\\', '/'
}

// hex4 reads four hex digits at s[p:].
func hex4(s []byte, p int) (rune, bool) {
	if p+4 > len(s) {
		return 0, false
	}
	var r rune
	for _, b := range s[p : p+4] {
		var v byte
		switch {
		case b >= '0' && b <= '9':
			v = b - '0'
		case b >= 'a' && b <= 'f':
			v = b - 'a' + 10
		case b >= 'A' && b <= 'F':
			v = b - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(v)
	}
	return r, true
}

// appendRuneCanonical writes r as it appears inside a canonical string.
func appendRuneCanonical(dst []byte, r rune) []byte {
	switch r {
	case '"', '\\':
		return append(dst, '\\', byte(r))
	case '\n':
		return append(dst, '\\', 'n')
	case '\r':
		return append(dst, '\\', 'r')
	case '\t':
		return append(dst, '\\', 't')
	case '\b':
		return append(dst, '\\', 'b')
	case '\f':
		return append(dst, '\\', 'f')
	}
	if r < 0x20 {
		return append(dst, '\\', 'u', '0', '0', hexDigits[r>>4], hexDigits[r&0xf])
	}
	return utf8.AppendRune(dst, r)
}

// appendSurrogate writes a lone surrogate as an escape.
func appendSurrogate(dst []byte, r rune) []byte {
	return append(dst, '\\', 'u', hexDigits[r>>12&0xf], hexDigits[r>>8&0xf], hexDigits[r>>4&0xf], hexDigits[r&0xf])
}

const hexDigits = "0123456789abcdef"
