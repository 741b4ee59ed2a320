package batch

import (
	"bytes"
	"unicode/utf8"
)

// Shape checks, while an upload streams past it, that a batch input file looks like JSONL:
// valid UTF-8, and every non-blank line starting with '{' and ending with '}' (a UTF-8 byte
// order mark before the first line, blanks around a line and CRLF endings are allowed). It
// keeps no line: a few bytes of state whatever the file's size. It is a cheap first look at
// upload time; ReadInput checks every line when a batch is created.
//
// Write never fails; call Check once the stream has ended.
type Shape struct {
	pending []byte // an incomplete UTF-8 sequence at the end of the last Write
	line    int64  // the current line, 1-based
	started bool   // the current line has a non-blank byte
	last    byte   // the current line's last non-blank byte
	badLine int64  // the first line of the wrong shape, 0 for none
	badUTF8 bool
	bomSeen int // how many bytes of a leading byte order mark have been skipped
	off     int64
}

// Write looks at the next bytes of the stream.
func (s *Shape) Write(p []byte) (int, error) {
	n := len(p)
	s.checkUTF8(p)
	if s.line == 0 {
		s.line = 1
	}
	for s.off < int64(len(bom)) && s.off == int64(s.bomSeen) && len(p) > 0 && p[0] == bom[s.bomSeen] {
		p, s.bomSeen, s.off = p[1:], s.bomSeen+1, s.off+1
	}
	s.off += int64(len(p))
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		seg := p
		if i >= 0 {
			seg = p[:i]
		}
		s.segment(seg)
		if i < 0 {
			break
		}
		s.endLine()
		p = p[i+1:]
	}
	return n, nil
}

// blanks are the bytes a line may start or end with.
const blanks = " \t\r"

// bom is the UTF-8 byte order mark, allowed before the first line.
const bom = "\xef\xbb\xbf"

func (s *Shape) segment(seg []byte) {
	if !s.started {
		seg = bytes.TrimLeft(seg, blanks)
		if len(seg) == 0 {
			return
		}
		s.started = true
		if seg[0] != '{' {
			s.bad()
		}
	}
	if t := bytes.TrimRight(seg, blanks); len(t) > 0 {
		s.last = t[len(t)-1]
	}
}

func (s *Shape) endLine() {
	if s.started && s.last != '}' {
		s.bad()
	}
	s.line++
	s.started, s.last = false, 0
}

func (s *Shape) bad() {
	if s.badLine == 0 {
		s.badLine = s.line
	}
}

// checkUTF8 checks p, continuing a sequence the last Write cut off.
func (s *Shape) checkUTF8(p []byte) {
	if s.badUTF8 {
		return
	}
	if len(s.pending) > 0 {
		need := min(len(p), utf8.UTFMax-len(s.pending))
		head := append(s.pending, p[:need]...)
		r, size := utf8.DecodeRune(head)
		if r == utf8.RuneError && size <= 1 {
			if !utf8.FullRune(head) && need == len(p) {
				s.pending = head // still incomplete: the chunk was tiny
				return
			}
			s.badUTF8 = true
			return
		}
		p = p[size-len(s.pending):]
		s.pending = s.pending[:0]
	}
	// hold back the start of a sequence the chunk cuts off
	start := len(p)
	for i := len(p) - 1; i >= 0 && i >= len(p)-utf8.UTFMax; i-- {
		if utf8.RuneStart(p[i]) {
			start = i
			break
		}
	}
	if start < len(p) && !utf8.FullRune(p[start:]) {
		s.pending = append(s.pending[:0], p[start:]...)
		p = p[:start]
	}
	if !utf8.Valid(p) {
		s.badUTF8 = true
	}
}

// Check reports, once the stream has ended, the first line of the wrong shape (1-based), or
// whether the stream is not valid UTF-8: ok is false then. A file of blank lines only is
// shaped right (ReadInput reports it as empty_file).
func (s *Shape) Check() (line int64, badUTF8, ok bool) {
	if len(s.pending) > 0 {
		s.badUTF8 = true
	}
	if s.started && s.last != '}' {
		s.bad()
	}
	return s.badLine, s.badUTF8, s.badLine == 0 && !s.badUTF8
}
