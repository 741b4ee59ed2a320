package caddymodule

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"github.com/caddyai/gateway/internal/jsonscan"
	"github.com/caddyai/gateway/internal/wire"
)

var bodyPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledBody keeps unusually large buffers out of the pool.
const maxPooledBody = 1 << 20

// requestBody is the request body, read once into a pooled buffer. Stages read it through
// bytes(); a rewrite replaces it; install hands it to the next handler. The buffer goes back to
// the pool once both the body handed on is closed and the request is finished (release), so it
// is never reused while the proxy may still read it, and the gateway can still read it after
// the answer (to count a prompt whose usage the upstream did not report).
type requestBody struct {
	buf       *bytes.Buffer
	rewritten []byte
	handed    *pooledBody
	complete  bool // the whole body was read
	released  bool
	// given marks a buffer handed to a transport to send from memory: a connection may hold it
	// past any close or release (an attempt that failed while writing, then a retry), so it
	// never goes back to the pool
	given   atomic.Bool
	length  [1]string // the Content-Length header's value, kept here rather than allocated
	limited io.LimitedReader
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
	if n := r.ContentLength; n > 0 && n <= maxSentFromMemory {
		// one allocation for a small declared length (ReadFrom keeps MinRead free for each
		// read, the one that meets the end too); a large one grows as its bytes arrive, so a
		// client declaring max_body and sending nothing costs no more than it sent
		buf.Grow(int(n) + bytes.MinRead)
	}
	b.buf = buf
	b.limited = io.LimitedReader{R: r.Body, N: limit + 1}
	_, err := buf.ReadFrom(&b.limited)
	b.limited.R = nil
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
	b.complete = true
	return nil
}

// unread reports whether the request declares a body that was not read to its end (a refusal
// before the body stage, a body over the limit): the connection cannot be reused without
// draining it.
func (b *requestBody) unread(r *http.Request) bool {
	return !b.complete && r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
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
	pb := &pooledBody{owner: b}
	pb.Reset(p)
	pb.holds.Store(2)
	b.handed = pb
	r.Body = pb
	r.ContentLength = int64(len(p))
	b.length[0] = strconv.Itoa(len(p))
	r.Header["Content-Length"] = b.length[:1:1]
	r.GetBody = nil
}

// release is the request's end: the buffer goes back now, or when the handed-on body is closed
// if that has not happened yet.
func (b *requestBody) release() {
	if b.released {
		return
	}
	b.released = true
	if b.handed == nil || b.handed.drop() {
		b.putBuf()
	}
}

func (b *requestBody) putBuf() {
	if b.buf != nil {
		if b.buf.Cap() <= maxPooledBody && !b.given.Load() {
			bodyPool.Put(b.buf)
		}
		b.buf = nil
	}
}

// untouched reports whether no byte of the handed-on body was read yet (so it can be sent to
// another upstream).
func (b *requestBody) untouched() bool {
	return b.handed == nil || !b.handed.sent.Load() && !b.handed.closed.Load() && b.handed.Len() == int(b.handed.Size())
}

// maxSentFromMemory is the largest body Transport sends from memory. Its buffer cannot go back
// to the pool (the connection may still be writing it when the request ends), and past this
// size a fresh allocation of it costs about what the write saved.
const maxSentFromMemory = 64 << 10

// inMemory returns the bytes of the body handed on with req, for the transport to send from
// memory in its place, or nil when that body was read or closed already, is over
// maxSentFromMemory, or req does not carry it as it was handed on (another length, trailers to
// forward). A buffer it returns stays out of the pool (given).
func (b *requestBody) inMemory(req *http.Request) []byte {
	if b.handed == nil || !b.untouched() || req.Body == nil || len(req.Trailer) > 0 {
		return nil
	}
	p := b.bytes()
	if len(p) == 0 || len(p) > maxSentFromMemory || req.ContentLength != int64(len(p)) {
		return nil
	}
	b.given.Store(true)
	return p
}

// pooledBody is the body handed to the next handler. It and the request hold the buffer
// together: whichever lets go last returns it.
type pooledBody struct {
	bytes.Reader
	owner  *requestBody
	closed atomic.Bool
	sent   atomic.Bool  // sent from memory by Transport in its place
	holds  atomic.Int32 // 2 when handed on: the body and the request
}

// Close lets go of the buffer for the body; it is safe to call more than once.
func (p *pooledBody) Close() error {
	if p.closed.CompareAndSwap(false, true) && p.drop() {
		p.owner.putBuf()
	}
	return nil
}

// drop lets go of one hold and reports whether it was the last.
func (p *pooledBody) drop() bool { return p.holds.Add(-1) == 0 }

// setModel returns body with its top-level "model" set to model, in one new buffer when the
// field is there (sjson.SetBytes otherwise). body is read through a string view for the lookup
// only, never written.
func setModel(body []byte, model string) ([]byte, error) {
	if len(body) == 0 {
		return sjson.SetBytes(body, "model", model)
	}
	res := gjson.Get(unsafe.String(unsafe.SliceData(body), len(body)), "model")
	if res.Type != gjson.String || res.Index <= 0 || res.Index+len(res.Raw) > len(body) {
		return sjson.SetBytes(body, "model", model)
	}
	out := make([]byte, 0, len(body)-len(res.Raw)+len(model)+8)
	out = append(out, body[:res.Index]...)
	out = wire.AppendString(out, model)
	return append(out, body[res.Index+len(res.Raw):]...), nil
}

// streamUsageMember is the stream_options member that asks for the usage chunk.
const streamUsageMember = `"stream_options":{"include_usage":true}`

// askStreamUsage sets stream_options.include_usage to true. When absent is true (Validate saw
// every top-level key and none was stream_options, and the body was not rebuilt since), the
// member is spliced in after the object's opening brace, without parsing the body; otherwise,
// or when the body does not start with a brace, sjson sets it.
func askStreamUsage(body []byte, absent bool) ([]byte, error) {
	i := jsonscan.SkipSpace(body, 0)
	if !absent || i == len(body) || body[i] != '{' {
		return sjson.SetBytes(body, "stream_options.include_usage", true)
	}
	out := make([]byte, 0, len(body)+len(streamUsageMember)+1)
	out = append(out, body[:i+1]...)
	out = append(out, streamUsageMember...)
	if j := jsonscan.SkipSpace(body, i+1); j < len(body) && body[j] != '}' {
		out = append(out, ',')
	}
	return append(out, body[i+1:]...), nil
}
