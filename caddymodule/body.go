package caddymodule

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/caddyai/gateway/internal/wire"
)

var bodyPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledBody keeps unusually large buffers out of the pool.
const maxPooledBody = 1 << 20

// requestBody is the request body, read once into a pooled buffer. Stages read it through
// bytes(); a rewrite replaces it; install hands it to the next handler. The buffer goes back to
// the pool when the body handed on is closed (or at once, if it was never handed on).
type requestBody struct {
	buf       *bytes.Buffer
	rewritten []byte
	handed    *pooledBody
}

// read reads the whole body, refusing more than limit bytes without reading further.
func (b *requestBody) read(r *http.Request, limit int64) *wire.Error {
	if r.ContentLength > limit {
		return wire.RequestTooLarge(limit)
	}
	if r.Body == nil || r.Body == http.NoBody {
		return wire.InvalidRequest("", "The request has no body; send a JSON object.")
	}
	buf := bodyPool.Get().(*bytes.Buffer)
	buf.Reset()
	b.buf = buf
	_, err := buf.ReadFrom(io.LimitReader(r.Body, limit+1))
	if int64(buf.Len()) > limit {
		return wire.RequestTooLarge(limit)
	}
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return wire.RequestTooLarge(limit)
		}
		return wire.InvalidRequest("", "The request body could not be read completely.")
	}
	return nil
}

func (b *requestBody) bytes() []byte {
	if b.rewritten != nil {
		return b.rewritten
	}
	if b.buf == nil {
		return nil
	}
	return b.buf.Bytes()
}

// replace makes p the body. The pooled buffer is no longer needed and goes back at once.
func (b *requestBody) replace(p []byte) {
	b.rewritten = p
	b.putBuf()
}

// install sets the (possibly rewritten) body on the request with a correct Content-Length.
func (b *requestBody) install(r *http.Request) {
	p := b.bytes()
	pb := &pooledBody{Reader: bytes.NewReader(p), owner: b}
	b.handed = pb
	r.Body = pb
	r.ContentLength = int64(len(p))
	r.Header["Content-Length"] = []string{strconv.Itoa(len(p))}
	r.GetBody = nil
}

// release returns the buffer unless a handed-on body still owns it (that body returns it when
// closed).
func (b *requestBody) release() {
	if b.handed == nil {
		b.putBuf()
	}
}

func (b *requestBody) putBuf() {
	if b.buf != nil {
		if b.buf.Cap() <= maxPooledBody {
			bodyPool.Put(b.buf)
		}
		b.buf = nil
	}
}

// untouched reports whether no byte of the handed-on body was read yet (so it can be sent to
// another upstream).
func (b *requestBody) untouched() bool {
	return b.handed == nil || !b.handed.closed.Load() && b.handed.Len() == int(b.handed.Size())
}

// pooledBody is the body handed to the next handler.
type pooledBody struct {
	*bytes.Reader
	owner  *requestBody
	closed atomic.Bool
}

// Close returns the buffer to the pool; it is safe to call more than once.
func (p *pooledBody) Close() error {
	if p.closed.CompareAndSwap(false, true) {
		p.owner.putBuf()
	}
	return nil
}
