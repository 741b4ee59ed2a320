package batch

import (
	"bufio"
	"errors"
	"hash/maphash"
	"io"
	"unsafe"
)

// lineReader hands out the lines of a stream one at a time, holding at most max bytes of a line
// (plus the bufio buffer): a longer line is reported as too long and skipped without being
// kept.
type lineReader struct {
	br  *bufio.Reader
	buf []byte
	max int
	off int64 // offset of the next unread byte
	n   int   // number of lines returned so far
}

// lineReaderBuffer is the bufio buffer size: lines are assembled from fragments of this size.
const lineReaderBuffer = 64 << 10

func newLineReader(r io.Reader, max int) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(r, lineReaderBuffer), max: max}
}

// next returns the next line without its "\n" or "\r\n", the offset of its first byte in the
// stream, and whether it was longer than max bytes (then line is nil). It returns io.EOF once
// the stream is exhausted; a last line without a final newline is returned like any other. The
// line is valid until the next call.
func (lr *lineReader) next() (line []byte, start int64, tooLong bool, err error) {
	lr.buf = lr.buf[:0]
	start = lr.off
	newline := false
	for {
		frag, ferr := lr.br.ReadSlice('\n')
		lr.off += int64(len(frag))
		if !tooLong {
			// Keep up to max content bytes plus "\r\n"; anything beyond is certainly too long.
			if need := len(lr.buf) + len(frag); need <= lr.max+2 {
				if need > cap(lr.buf) {
					// Double (not append's 1.25 for large slices): a long line costs about
					// twice its length in allocations, not five times.
					grown := make([]byte, len(lr.buf), min(max(2*cap(lr.buf), need, 4<<10), lr.max+2))
					copy(grown, lr.buf)
					lr.buf = grown
				}
				lr.buf = append(lr.buf, frag...)
			} else {
				tooLong = true
				lr.buf = lr.buf[:0]
			}
		}
		if ferr == nil {
			newline = true
			break
		}
		if errors.Is(ferr, bufio.ErrBufferFull) {
			continue
		}
		if ferr == io.EOF {
			if lr.off == start {
				return nil, start, false, io.EOF
			}
			break
		}
		return nil, start, false, ferr
	}
	lr.n++
	if tooLong {
		return nil, start, true, nil
	}
	line = lr.buf
	if newline {
		line = line[:len(line)-1]
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
	}
	if len(line) > lr.max {
		return nil, start, true, nil
	}
	return line, start, false, nil
}

// idSet remembers the custom_ids seen so far by a 64-bit keyed hash, so that memory stays
// bounded (about 24 bytes an id in the map, whatever the id's length) and a duplicate is found
// in one lookup. Two different ids collide with a probability of about n²/2⁶⁵ (below 10⁻¹⁰ for
// 100,000 ids); the seed is random per reader, so a collision would not repeat on a retry.
type idSet struct {
	seed  maphash.Seed
	first map[uint64]int32 // hash -> the position (line or index) where the id first appeared
}

func newIDSet(hint int) *idSet {
	return &idSet{seed: maphash.MakeSeed(), first: make(map[uint64]int32, hint)}
}

// add records id at position pos and returns the position where it was seen before, or -1.
func (s *idSet) add(id string, pos int) int {
	h := maphash.String(s.seed, id)
	if p, ok := s.first[h]; ok {
		return int(p)
	}
	s.first[h] = int32(pos)
	return -1
}

// view returns b as a string without copying. The string must not outlive b's contents; gjson
// results taken from it alias b the same way (strings.Clone what is kept).
func view(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// MaxDepth is the deepest nesting of arrays and objects a line (or a Message Batch request)
// may have: the 64 levels the gateway allows a live request body (policy.MaxDepth) plus the
// envelope around the body. It is checked before any recursive parser sees the bytes.
const MaxDepth = 65
