package caddymodule

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"github.com/caddyai/gateway/bridge"
	"github.com/caddyai/gateway/cache"
	"github.com/caddyai/gateway/internal/jsonscan"
	"github.com/caddyai/gateway/internal/wire"
)

// The modes of a response tap, chosen when the upstream's header arrives.
type tapMode uint8

const (
	modeUnset       tapMode = iota
	modeStream              // SSE: tapped event by event and flushed as it passes
	modeJSON                // a JSON completion: buffered (bounded) to read and complete its usage
	modeError               // an upstream error: buffered (bounded), then normalised into the surface's envelope
	modePassthrough         // anything else, or a JSON body over the buffer limit
)

const (
	maxBufferedJSON  = 8 << 20
	maxBufferedError = 64 << 10
)

// usageTrailers are declared on streams: headers leave before the body, so stream usage goes in
// trailers.
var usageTrailers = []string{"X-Usage-Prompt-Tokens, X-Usage-Completion-Tokens, X-Usage-Total-Tokens, X-Usage-Estimated"}

// responseTap wraps the response on its way back from the upstream. It sets the gateway's
// headers, normalises upstream errors, extracts (or estimates) usage from JSON bodies and SSE
// streams without holding back a stream, and makes sure a stream never ends silently.
type responseTap struct {
	*caddyhttp.ResponseWriterWrapper
	wrapper      caddyhttp.ResponseWriterWrapper
	g            *Gateway
	ex           *exchange
	mode         tapMode
	wroteHeader  bool // the client has its header
	buf          []byte
	out          []byte  // what the client gets of the upstream's last write, from outBuf
	outBuf       *[]byte // the stream's pooled output buffer
	stream       *wire.StreamTap
	completion   strings.Builder // generated text, kept only when the upstream may not report usage
	countText    bool
	asm          *cache.Assembler // rebuilds a streamed answer for the cache
	itl          prometheus.Observer
	finalBody    []byte // the JSON body sent, for the cache
	overflowed   bool   // a JSON body too large to hold was passed through unread
	eventsAtStop int    // the stream's events when text collection stopped

	chatTap    *wire.StreamTap // a bridged stream: frames the upstream's chat chunks
	bridgedOut []byte          // the Responses events the bridge made of them
	scratch    []byte
}

// cacheBody returns the complete answer as JSON, or nil when it cannot be cached.
func (t *responseTap) cacheBody() []byte {
	switch t.mode {
	case modeJSON:
		return t.finalBody
	case modeStream:
		if t.asm == nil || !t.stream.Done() || t.stream.UpstreamError() != nil {
			return nil
		}
		b, ok := t.asm.Result()
		if !ok {
			return nil
		}
		if m := t.ex.route.model; m.UpstreamName != "" {
			// the assembler saw the upstream's events, which name the model as the upstream knows it
			if out, err := sjson.SetBytes(b, "model", m.Name); err == nil {
				b = out
			}
		}
		return b
	}
	return nil
}

func newResponseTap(g *Gateway, w http.ResponseWriter, ex *exchange) *responseTap {
	t := &responseTap{g: g, ex: ex}
	t.wrapper.ResponseWriter = w
	t.ResponseWriterWrapper = &t.wrapper // one allocation for both
	return t
}

// WriteHeader receives the upstream's status and decides how the body will be handled. On an
// AI endpoint the answer must be of the kind the request asked for: SSE for a streamed
// request, JSON (or no Content-Type) for the others; a redirect, a protocol switch or anything
// else is an invalid upstream response, never passed on.
func (t *responseTap) WriteHeader(status int) {
	if t.mode != modeUnset {
		return
	}
	ai := t.ex.endpoint.HasBody()
	if status >= 100 && status < 200 && (status != http.StatusSwitchingProtocols || !ai) {
		t.ResponseWriterWrapper.WriteHeader(status)
		return
	}
	t.ex.status = status
	ct := t.Header().Get("Content-Type")
	sse := strings.HasPrefix(ct, "text/event-stream")
	switch {
	case !ai && status < 400:
		t.mode = modePassthrough
		t.sendHeader(status)
	case !ai:
		t.mode = modeError // a stored response's call: the upstream's error, normalised
	case status >= 400:
		t.mode = modeError
	case status >= 300 || status < 200:
		t.mode = modeError // a redirect to an internal Location, or a tunnel: not an answer
	case sse && t.ex.stream:
		t.mode = modeStream
		t.startStream()
	case !sse && !t.ex.stream && (strings.HasPrefix(ct, "application/json") || ct == ""):
		t.mode = modeJSON
	default:
		// the wrong kind (JSON for a stream, SSE for a JSON request) or not an AI answer at all
		// (an HTML page from a misrouted upstream, a proxy's error page)
		t.mode = modeError
	}
}

func (t *responseTap) startStream() {
	ex := t.ex
	opts := wire.TapOptions{
		StripUsageChunk: ex.injectedUsage,
		RequestID:       ex.requestID,
		Secrets:         ex.route.secrets,
		OnFirstToken:    t.firstToken,
		OnText:          t.onText,
		Format:          ex.spec.StreamFormat,
	}
	if ex.route != nil && ex.route.model.UpstreamName != "" {
		opts.Model = ex.route.model.Name
	}
	if b := ex.bridged; b != nil {
		// chat chunks in, framed by a chat tap; the bridge's Responses events go on through the
		// typed tap below, which ends them properly and reads their usage
		b.stream = bridge.NewStream(b.req)
		t.chatTap = wire.NewStreamTap(wire.OpenAI, wire.TapOptions{RequestID: ex.requestID, Secrets: ex.route.secrets,
			OnEvent: func(ev wire.Event) {
				if !ev.Unread {
					t.bridgedOut = b.stream.Event(t.bridgedOut, ev.Data)
				}
			}})
		opts.Model = ex.route.model.Name
	}
	// Text is collected to count it should the upstream report no usage, unless the model's
	// last streams all had it.
	t.countText = ex.route == nil || ex.route.streamUsage == nil || ex.route.streamUsage.Load() < learnedStreamUsage
	if !t.countText {
		opts.OnText = nil
	}
	if ex.route != nil {
		t.itl = ex.route.series.itlObserver()
	}
	if ex.cacheable {
		t.asm = cache.NewAssembler(ex.endpoint, ex.surface)
		opts.OnEvent = t.asm.Event // the assembler reads the events the tap frames: one parse
	}
	t.stream = wire.NewStreamTap(ex.surface, opts)
	t.outBuf = streamOutPool.Get().(*[]byte)
	t.out = (*t.outBuf)[:0]
	h := t.Header()
	delete(h, "Content-Length")
	h["Trailer"] = usageTrailers
	t.sendHeader(ex.status)
}

func (t *responseTap) firstToken() {
	now := t.g.now()
	t.ex.firstToken = now
	t.ex.endUpstreamSpan()
	if t.ex.route != nil {
		t.ex.route.series.ttftObserver().Observe(now.Sub(t.ex.start).Seconds())
	}
}

// onText collects generated text to count it when the upstream reports no usage; it is turned
// off as soon as the stream shows it will report usage.
func (t *responseTap) onText(text string) {
	if t.countText && t.completion.Len() < maxBufferedJSON {
		t.completion.WriteString(text)
	}
}

// sendHeader sends the client its header with the gateway's own headers set.
func (t *responseTap) sendHeader(status int) {
	if t.wroteHeader {
		return
	}
	t.wroteHeader = true
	h := t.Header()
	t.ex.setResponseHeaders(h)
	setRateLimitHeaders(h, t.ex.surface, t.ex.decision, t.ex.start)
	h["X-Gateway-Overhead-Ms"] = []string{formatMS(t.ex.overhead(t.g.now()))}
	t.ResponseWriterWrapper.WriteHeader(status)
}

// Write takes body bytes from the upstream. It never reports a short write to the proxy: what
// the tap holds back is its own business.
func (t *responseTap) Write(p []byte) (int, error) {
	if t.mode == modeUnset {
		t.WriteHeader(http.StatusOK)
	}
	switch t.mode {
	case modeStream:
		n := len(p) // what the upstream gave: the proxy reads any other count as a failed write
		if t.chatTap != nil {
			p = t.bridge(p, nil, false) // the bridged events are the typed tap's input, not what was taken
		}
		t.out = t.stream.Write(t.out[:0], p)
		if t.ex.responseID == "" && t.ex.spec.Dialect == wire.DialectResponses {
			t.g.recordResponse(t.ex, t.stream.ResponseID()) // before the client has the id
		}
		if t.countText && t.stream.UsageAnnounced() {
			t.stream.StopText() // the upstream reports usage: no need to parse text for it
			t.countText = false
			t.eventsAtStop = t.stream.Events()
		}
		if len(t.out) > 0 {
			if _, err := t.ResponseWriterWrapper.Write(t.out); err != nil {
				return 0, err
			}
		}
		return n, nil
	case modeJSON:
		if len(t.buf)+len(p) > maxBufferedJSON {
			// too large to hold: send what we have and pass the rest through untouched
			t.mode = modePassthrough
			t.overflowed = true
			t.sendHeader(t.ex.status)
			if _, err := t.ResponseWriterWrapper.Write(t.buf); err != nil {
				return 0, err
			}
			t.buf = nil
			return t.ResponseWriterWrapper.Write(p)
		}
		t.buf = append(t.buf, p...)
		return len(p), nil
	case modeError:
		if room := maxBufferedError - len(t.buf); room > 0 {
			t.buf = append(t.buf, p[:min(len(p), room)]...)
		}
		return len(p), nil
	}
	return t.ResponseWriterWrapper.Write(p)
}

// ReadFrom keeps io.Copy from bypassing Write.
func (t *responseTap) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(writerOnly{t}, r)
}

type writerOnly struct{ io.Writer }

// FlushError flushes what has been sent; buffered modes have nothing to flush yet (and must not
// let a flush send a header early).
func (t *responseTap) FlushError() error {
	if !t.wroteHeader || t.mode == modeJSON || t.mode == modeError {
		return nil
	}
	return http.NewResponseController(t.ResponseWriterWrapper.ResponseWriter).Flush()
}

// Flush implements http.Flusher.
func (t *responseTap) Flush() { _ = t.FlushError() }

// finish completes the response once the proxy is done (or failed): it ends streams properly,
// writes buffered bodies with their usage, normalises errors and returns the usage to settle.
func (t *responseTap) finish(proxyErr error) (wire.Usage, error) {
	ex := t.ex
	switch t.mode {
	case modeUnset:
		if ex.clientGone() {
			ex.status, ex.reject = 499, "client_closed"
			return wire.Usage{}, proxyErr
		}
		if proxyErr == nil {
			if !ex.endpoint.HasBody() {
				return wire.Usage{}, nil
			}
			// the upstream answered nothing the tap could use (a refused protocol switch)
			werr := invalidUpstreamResponse()
			ex.reject = werr.ReasonOrCode()
			return wire.Usage{}, t.writeError(werr)
		}
		werr := proxyError(proxyErr, ex)
		ex.reject = werr.ReasonOrCode()
		return wire.Usage{}, t.writeError(werr)
	case modeError:
		if ex.status < 400 {
			werr := invalidUpstreamResponse()
			ex.reject = werr.ReasonOrCode()
			return wire.Usage{}, t.writeError(werr)
		}
		werr := wire.NormalizeUpstreamError(ex.status, t.Header().Get("Content-Type"), t.buf)
		if ex.predictReq != nil {
			werr = t.predictUpstreamError()
		}
		werr.Message = wire.Redact(werr.Message, ex.route.secrets...)
		if werr.Code == "context_length_exceeded" {
			// the same overflow gets the same answer as the gateway's own refusal
			werr.Status, werr.Param = t.g.contextStatus(), ex.spec.ContextParam
		}
		if ra, ok := wire.ParseRetryAfter(t.Header().Get("Retry-After"), t.g.now()); ok && werr.RetryAfter > 0 {
			werr.RetryAfter = ra
		}
		ex.reject = werr.ReasonOrCode()
		return wire.Usage{}, t.writeError(werr)
	case modeJSON:
		if proxyErr != nil && !ex.clientGone() {
			werr := wire.StreamIncomplete()
			werr.Message = "The model server's response ended before it was complete."
			ex.reject = werr.ReasonOrCode()
			return wire.Usage{}, t.writeError(werr)
		}
		return t.finishJSON()
	case modeStream:
		return t.finishStream(proxyErr)
	}
	if t.overflowed {
		// the usage was not read: charge what was reserved rather than nothing
		p, c := int64(ex.promptTokens), int64(ex.reservedOutput)
		return wire.Usage{PromptTokens: p, CompletionTokens: c, TotalTokens: p + c, Estimated: true}, nil
	}
	return wire.Usage{}, nil
}

func (t *responseTap) finishJSON() (wire.Usage, error) {
	ex := t.ex
	if ex.predictReq != nil {
		return t.finishPredict()
	}
	body := t.buf
	if !jsonscan.Valid(body) {
		werr := invalidUpstreamResponse()
		ex.reject = werr.ReasonOrCode()
		return wire.Usage{}, t.writeError(werr)
	}
	if ex.bridged != nil {
		b, ok := bridge.Response(body, ex.bridged.req)
		if !ok {
			werr := invalidUpstreamResponse()
			ex.reject = werr.ReasonOrCode()
			return wire.Usage{}, t.writeError(werr)
		}
		body = b
	}
	u, ok := wire.ExtractUsage(ex.surface, body)
	if !ok {
		u = t.estimateJSONUsage(body)
		if len(ex.spec.AnswerText) > 0 || u.PromptTokens > 0 {
			if b, err := sjson.SetRawBytes(body, "usage", wire.AppendUsageJSONFor(nil, ex.surface, ex.spec.Dialect, u)); err == nil {
				body = b
			}
		}
	}
	if ex.route != nil && ex.route.model.UpstreamName != "" {
		if b, err := sjson.SetBytes(body, "model", ex.route.model.Name); err == nil {
			body = b
		}
	}
	if ex.spec.Dialect == wire.DialectResponses && ex.status == http.StatusOK {
		t.g.recordResponse(ex, gjson.GetBytes(body, "id").String())
	}
	h := t.Header()
	setUsageHeaders(h, u)
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	t.sendHeader(ex.status)
	t.finalBody = body
	_, err := t.ResponseWriterWrapper.Write(body)
	return u, err
}

// estimateJSONUsage counts what an upstream that reports no usage produced: the text at the
// row's answer paths (none for embeddings, whose usage is the prompt's).
func (t *responseTap) estimateJSONUsage(body []byte) wire.Usage {
	var text strings.Builder
	for _, path := range t.ex.spec.AnswerText {
		for _, v := range gjson.GetBytes(body, path).Array() {
			text.WriteString(v.String())
		}
	}
	return t.estimate(text.String())
}

// produced is the usage of a response cut off before the tap could finish it: what the upstream
// reported so far, else the prompt and an estimate of the text that passed.
func (t *responseTap) produced() wire.Usage {
	if t.stream != nil {
		if u, ok := t.stream.Usage(); ok && u.TotalTokens > 0 {
			return u
		}
	}
	return t.streamEstimate()
}

// streamEstimate is the usage of a stream whose upstream reported none: the text collected, or,
// once collection stopped, one token per event since.
func (t *responseTap) streamEstimate() wire.Usage {
	u := t.estimate(t.completion.String())
	if t.stream != nil && !t.countText {
		n := int64(t.stream.Events() - t.eventsAtStop)
		u.CompletionTokens += n
		u.TotalTokens += n
	}
	return u
}

func (t *responseTap) estimate(completion string) wire.Usage {
	ex := t.ex
	if !ex.promptExact && ex.spec.ExactCount && ex.route != nil {
		// admission could do with the byte bound; what is reported is counted (once)
		if n, err := ex.route.chat.Count(ex.spec.Dialect, ex.body.bytes()); err == nil {
			ex.promptTokens, ex.promptExact = n, true
		}
	}
	c := int64(ex.counter().Count(completion))
	p := int64(ex.promptTokens)
	return wire.Usage{PromptTokens: p, CompletionTokens: c, TotalTokens: p + c, Estimated: true}
}

func (t *responseTap) finishStream(proxyErr error) (wire.Usage, error) {
	ex := t.ex
	var cause *wire.Error
	if proxyErr != nil {
		cause = wire.StreamIncomplete()
		if isTimeout(proxyErr) {
			cause.Message = "The model server stopped sending the stream before it was complete (timeout)."
		}
	}
	if t.chatTap != nil {
		// what the chat tap held back, through the bridge and the typed tap
		if t.out = t.stream.Write(t.out[:0], t.bridge(nil, cause, true)); len(t.out) > 0 && !ex.clientGone() {
			_, _ = t.ResponseWriterWrapper.Write(t.out)
		}
	}
	gone := !t.stream.Done() && t.stream.UpstreamError() == nil && ex.clientGone()
	if !t.stream.Done() && !gone {
		ex.streamIncomplete = t.stream.UpstreamError() == nil
	}
	t.out = t.stream.Finish(t.out[:0], cause)
	if len(t.out) > 0 && !gone {
		_, _ = t.ResponseWriterWrapper.Write(t.out)
	}
	switch upErr := t.stream.UpstreamError(); {
	case gone:
		// the client hung up: the upstream did nothing wrong
		ex.status, ex.reject = 499, "client_closed"
	case upErr != nil:
		ex.reject = upErr.ReasonOrCode()
	case ex.streamIncomplete:
		ex.reject = "stream_incomplete"
	}
	u, ok := t.stream.Usage()
	reported := ok && (u.CompletionTokens > 0 || u.TotalTokens > 0)
	if !reported {
		u = t.streamEstimate()
	}
	if r := ex.route; r != nil && r.streamUsage != nil {
		switch {
		case reported:
			if r.streamUsage.Load() < learnedStreamUsage {
				r.streamUsage.Add(1)
			}
		case t.stream.Done():
			r.streamUsage.Store(0) // a whole stream without usage: collect text again
		}
	}
	if t.itl != nil && t.stream.Done() && !ex.firstToken.IsZero() && u.CompletionTokens > 1 {
		// the mean gap between the stream's tokens after the first, one observation a stream:
		// exact in its token count, where a gap per write would count frames (the finish
		// chunk, [DONE]) and read the clock on every chunk
		if d := t.g.now().Sub(ex.firstToken); d > 0 {
			t.itl.Observe(d.Seconds() / float64(u.CompletionTokens-1))
		}
	}
	setUsageHeaders(t.Header(), u)
	if t.outBuf != nil && cap(t.out) <= maxPooledStreamOut {
		*t.outBuf = t.out[:0]
		streamOutPool.Put(t.outBuf)
	}
	t.out, t.outBuf = nil, nil
	return u, nil
}

// streamOutPool holds the buffers a stream's events are framed into before each write to the
// client: one per stream in flight, not a few grown per stream.
var streamOutPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// maxPooledStreamOut keeps buffers grown by unusually large writes out of the pool.
const maxPooledStreamOut = 64 << 10

// bridge feeds upstream chat bytes p through the chat tap and the bridge (at the end: the chat
// tap's held tail, and the failure if the chat stream broke) and returns the Responses events
// made of them, valid until the next call.
func (t *responseTap) bridge(p []byte, cause *wire.Error, end bool) []byte {
	b := t.ex.bridged
	t.bridgedOut = t.bridgedOut[:0]
	if end {
		t.scratch = t.chatTap.Finish(t.scratch[:0], cause)
	} else {
		t.scratch = t.chatTap.Write(t.scratch[:0], p)
	}
	if e := t.chatTap.UpstreamError(); e != nil {
		t.bridgedOut = b.stream.Fail(t.bridgedOut, e) // an error event the chat tap framed itself
	}
	return t.bridgedOut
}

// writeError answers with the gateway's envelope, unless the client already has a header.
func (t *responseTap) writeError(werr *wire.Error) error {
	if t.wroteHeader {
		return nil
	}
	t.wroteHeader = true
	h := t.Header()
	for k := range h {
		delete(h, k) // the upstream's headers describe a body we do not send
	}
	t.ex.setResponseHeaders(h)
	setRateLimitHeaders(h, t.ex.surface, t.ex.decision, t.ex.start)
	t.ex.status = werr.StatusFor(t.ex.surface)
	return wire.Write(t.ResponseWriterWrapper.ResponseWriter, t.ex.surface, werr, t.ex.requestID)
}

func setUsageHeaders(h http.Header, u wire.Usage) {
	// one string for the three numbers and one array for the slices (two allocations, not six)
	var buf [64]byte
	b := strconv.AppendInt(buf[:0], u.PromptTokens, 10)
	p := len(b)
	b = strconv.AppendInt(b, u.CompletionTokens, 10)
	c := len(b)
	b = strconv.AppendInt(b, u.TotalTokens, 10)
	str := string(b)
	vals := []string{str[:p], str[p:c], str[c:], "true"}
	h["X-Usage-Prompt-Tokens"] = vals[0:1:1]
	h["X-Usage-Completion-Tokens"] = vals[1:2:2]
	h["X-Usage-Total-Tokens"] = vals[2:3:3]
	if u.Estimated {
		h["X-Usage-Estimated"] = vals[3:4:4]
	}
}

// invalidUpstreamResponse is the answer to a 2xx upstream body that is not what an AI API sends.
func invalidUpstreamResponse() *wire.Error {
	return &wire.Error{Status: http.StatusBadGateway, Type: wire.TypeServer, Code: "upstream_invalid_response", Reason: "upstream_invalid_response",
		Message: "The model server returned a response the gateway could not read."}
}

// proxyError maps a reverse_proxy failure before any response into the gateway's error.
func proxyError(err error, ex *exchange) *wire.Error {
	if err == errHandlerPanic {
		return wire.Internal()
	}
	model := ex.modelName()
	var he caddyhttp.HandlerError
	status := http.StatusBadGateway
	if errors.As(err, &he) && he.StatusCode != 0 {
		status = he.StatusCode
	}
	if isTimeout(err) || status == http.StatusGatewayTimeout {
		return &wire.Error{Status: http.StatusGatewayTimeout, Type: wire.TypeServer, Code: "upstream_timeout", Reason: "upstream_timeout",
			Message: "The model server for `" + model + "` did not answer in time."}
	}
	return &wire.Error{Status: http.StatusServiceUnavailable, Type: wire.TypeServer, Code: "model_unavailable", Reason: "model_unavailable",
		RetryAfter: time.Second, Message: "No model server for `" + model + "` is reachable right now. Please try again shortly."}
}

func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded)
}

func formatMS(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 3, 64)
}
