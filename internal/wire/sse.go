package wire

import (
	"bytes"
	"net/http"
	"strings"

	"github.com/caddyai/gateway/internal/jsonscan"
	"github.com/tidwall/gjson"
)

// DefaultMaxEventBytes is the largest SSE event a StreamTap holds back to inspect. Longer events
// (huge tool arguments, say) are forwarded as they arrive without being looked at.
const DefaultMaxEventBytes = 1 << 20

var (
	keyError = []byte(`"error"`)
	keyUsage = []byte(`"usage"`)
)

// TapOptions configures a StreamTap.
type TapOptions struct {
	// StripUsageChunk drops, on the OpenAI surface, the final usage chunk (usage set and choices
	// empty or absent) from the output. The gateway sets it when it added
	// stream_options.include_usage upstream for its own accounting and the client did not ask
	// for usage. The usage is still read (Usage). The `"usage":null` the other chunks then carry
	// is left in place: clients ignore it, and rewriting every chunk would cost more than it is
	// worth. A usage that comes inside a chunk with choices (llama.cpp's last chunk) is
	// forwarded too, as dropping it would drop content.
	StripUsageChunk bool
	// OnText, when set, is called with each piece of generated text: OpenAI chat delta.content,
	// delta.reasoning_content / delta.reasoning and tool-call argument fragments, completions
	// text, Anthropic text_delta, thinking_delta and input_json_delta. The gateway counts
	// completion tokens with it when the upstream reports no usage. text aliases the tap's
	// buffers: it is valid only during the call (use strings.Clone to keep it).
	OnText func(text string)
	// OnFirstToken, when set, is called once, at the first event that carries generated text
	// (time to first token).
	OnFirstToken func()
	// Model, when set, replaces the "model" of each OpenAI chunk and of Anthropic's
	// message_start with this name (the one the gateway resolved). Chunks already naming it are
	// forwarded untouched.
	Model string
	// OnEvent, when set, is called with each event that has data, as soon as the tap has framed
	// it and before it handles it (named error events, and everything after the tap sent an
	// error frame, are not passed on), so that another consumer (the cache's assembler) reads
	// the stream without parsing its framing again.
	OnEvent func(ev Event)
	// Secrets are redacted from the messages of upstream error events (the upstream's
	// credential, which a server may quote).
	Secrets []string
	// RequestID goes into the Anthropic error frames the tap writes.
	RequestID string
	// MaxEventBytes bounds the bytes held back for one event. Default: DefaultMaxEventBytes.
	MaxEventBytes int
	// Format is the stream's framing and end rule, from the endpoint's row. Default:
	// StreamBySurface.
	Format StreamFormat
}

// Event is one SSE event as the tap framed it: its event name and its data lines joined by
// '\n'. Both alias the tap's buffers and are valid only during the OnEvent call. Unread marks
// an event over the tap's size bound, forwarded without being looked at (Name and Data nil).
type Event struct {
	Name, Data []byte
	Unread     bool
}

// StreamTap is a transforming, streaming tap over an upstream SSE body. Bytes go in with Write
// and come out at once, event by event, as soon as each event is complete (an event ends at a
// blank line; \n, \r\n and \r line endings are all accepted); only the incomplete tail of the
// current event is held back. Comment lines (`:`) are forwarded.
//
// The output is the input, byte for byte, except for: (a) the usage chunk dropped by
// StripUsageChunk; (b) model fields rewritten to TapOptions.Model; (c) upstream error events,
// re-emitted in the client surface's normalised form (OpenAI `data: {"error":{...}}` followed
// by `data: [DONE]`, Anthropic `event: error`), after which the rest of the upstream stream is
// discarded since the client has had its last frame; (d) what Finish appends; and (e) an
// incomplete event still held at Finish, which is discarded rather than sent half-written.
//
// A StreamTap is not safe for concurrent use.
type StreamTap struct {
	surface Surface
	opts    TapOptions
	max     int

	buf []byte // the incomplete current event, from its first byte
	// Scanner state at the end of buf (or of the bytes forwarded in passthrough).
	lineStart   bool // at the start of a line
	lastCR      bool // the previous byte was a '\r' ending a line: a '\n' now completes it
	passthrough bool // the current event outgrew max: its bytes are forwarded as they come
	skipLF      bool // the last event ended on a '\r' that ended the input: a '\n' next belongs to it
	dropLF      bool // and that event's own terminator was not forwarded
	fwdTerm     bool // the event just handled was forwarded with its terminator

	data []byte // scratch for the data lines of a multi-line event

	usage      usageFields
	haveUsage  bool
	done       bool // [DONE] or message_stop seen
	closed     bool // the client has had its terminal frames (an error frame)
	firstToken bool
	usageKey   bool // an event carried a "usage" key (null or not)
	events     int  // events with data handled
	upErr      *Error
	typed      typedState // StreamTyped only
	// chunks checks each chunk's JSON; consecutive chunks that differ in their text only cost
	// a look at the bytes that changed
	chunks jsonscan.Sequence
	// whether the last valid chunk holds `"error"` or `"usage"` anywhere: when not, it has no
	// such key, and neither has a chunk shaped as it
	errorText, usageText bool
}

// UsageAnnounced reports whether an event so far carried a "usage" key (OpenAI's `"usage":null`
// on every chunk when include_usage is honoured, Anthropic's message_start usage): the upstream
// is going to report usage, so the caller may stop collecting text to count it itself.
func (t *StreamTap) UsageAnnounced() bool { return t.usageKey }

// Events returns the number of events with data the tap has handled.
func (t *StreamTap) Events() int { return t.events }

// StopText stops OnText calls (and the text extraction they need) for the rest of the stream.
func (t *StreamTap) StopText() { t.opts.OnText = nil }

// NewStreamTap returns a tap for a stream answering a request of surface s.
func NewStreamTap(s Surface, opts TapOptions) *StreamTap {
	t := &StreamTap{surface: s, opts: opts, max: opts.MaxEventBytes, lineStart: true}
	if t.max <= 0 {
		t.max = DefaultMaxEventBytes
	}
	return t
}

// Usage returns the usage the upstream reported: the last non-null usage of an OpenAI stream,
// or Anthropic's message_start usage updated by message_delta.
func (t *StreamTap) Usage() (Usage, bool) {
	if !t.haveUsage {
		return Usage{}, false
	}
	return t.usage.usage()
}

// Done reports whether the upstream ended its stream properly: [DONE] (OpenAI) or message_stop
// (Anthropic); for a StreamTyped tap, response.completed, response.incomplete or
// response.failed.
func (t *StreamTap) Done() bool { return t.done }

// UpstreamError returns the normalised error of an error event the upstream sent in the stream,
// or nil.
func (t *StreamTap) UpstreamError() *Error { return t.upErr }

// Write feeds the upstream bytes p to the tap and appends to dst the bytes to send to the
// client now.
func (t *StreamTap) Write(dst, p []byte) []byte {
	if len(p) == 0 {
		return dst
	}
	if t.skipLF {
		t.skipLF = false
		if p[0] == '\n' {
			if !t.dropLF {
				dst = append(dst, '\n')
			}
			p = p[1:]
		}
	}
	if t.passthrough {
		end, _, crAtEnd := t.findEnd(p, 0)
		if end < 0 {
			return append(dst, p...)
		}
		dst = append(dst, p[:end]...)
		t.passthrough = false
		t.skipLF, t.dropLF = crAtEnd, false
		p = p[end:]
	}
	if len(t.buf) == 0 {
		return t.consume(dst, p, 0, false)
	}
	from := len(t.buf)
	t.buf = append(t.buf, p...)
	return t.consume(dst, t.buf, from, true)
}

// Finish ends the stream at the upstream's EOF or failure. A held tail that is a complete event
// lacking only its final blank line is handled and terminated; any other tail is dropped. When
// the stream did not end properly (no [DONE] / message_stop, no error frame sent), it appends
// the error frame for cause (StreamIncomplete when cause is nil) and, on the OpenAI surface,
// `data: [DONE]`; a StreamTyped tap appends response.failed and an error event instead.
func (t *StreamTap) Finish(dst []byte, cause *Error) []byte {
	if t.passthrough {
		dst = append(dst, "\n\n"...)
		t.passthrough = false
	}
	t.skipLF = false
	if len(t.buf) > 0 {
		if t.tailComplete(t.buf) {
			term := "\n\n"
			switch t.buf[len(t.buf)-1] {
			case '\n':
				term = "\n"
			case '\r':
				term = "\r"
			}
			t.buf = append(t.buf, term...)
			dst = t.event(dst, t.buf, false)
		}
		t.buf = t.buf[:0]
	}
	t.lineStart, t.lastCR = true, false
	if t.done || t.closed {
		return dst
	}
	if cause == nil {
		cause = StreamIncomplete()
	}
	return t.terminate(dst, cause)
}

// terminate appends the error frame for e (and [DONE] on OpenAI) and closes the stream.
func (t *StreamTap) terminate(dst []byte, e *Error) []byte {
	if t.opts.Format == StreamTyped {
		dst = t.typedTerminate(dst, e)
		t.closed = true
		return dst
	}
	dst = AppendStreamError(dst, t.surface, e, t.opts.RequestID)
	if t.surface == OpenAI {
		dst = append(dst, "data: [DONE]\n\n"...)
	}
	t.closed = true
	return dst
}

// consume handles the complete events of b, scanning from from (b[:from] was scanned before),
// and keeps the incomplete tail in t.buf. inBuf says b is t.buf.
func (t *StreamTap) consume(dst, b []byte, from int, inBuf bool) []byte {
	start := 0
	for {
		end, core, crAtEnd := t.findEnd(b, from)
		if end < 0 {
			break
		}
		dst = t.event(dst, b[start:end], core-start > t.max)
		if crAtEnd {
			t.skipLF, t.dropLF = true, !t.fwdTerm
		}
		start, from = end, end
	}
	tail := b[start:]
	switch {
	case len(tail) > t.max:
		dst = append(dst, tail...)
		t.passthrough = true
		t.buf = t.buf[:0]
	case inBuf:
		t.buf = t.buf[:copy(t.buf, tail)]
	default:
		t.buf = append(t.buf[:0], tail...)
	}
	return dst
}

// findEnd scans b from i with the tap's line state and returns the index just past the blank
// line that ends the current event (past the '\n' of a final "\r\n" when b holds it), core (the
// same without that '\n'), and whether the event ended on a '\r' that is b's last byte. end is
// -1 when b holds no event end; the line state then describes b's end.
func (t *StreamTap) findEnd(b []byte, i int) (end, core int, crAtEnd bool) {
	for i < len(b) {
		if !t.lineStart {
			j := indexEOL(b[i:])
			if j < 0 {
				return -1, -1, false
			}
			i += j
		}
		switch c := b[i]; {
		case c == '\n' && t.lastCR:
			t.lastCR = false // the second half of a "\r\n"
			i++
		case c == '\n' || c == '\r':
			if !t.lineStart {
				t.lineStart, t.lastCR = true, c == '\r'
				i++
				continue
			}
			t.lineStart, t.lastCR = true, false
			if c == '\n' {
				return i + 1, i + 1, false
			}
			switch {
			case i+1 == len(b):
				return i + 1, i + 1, true
			case b[i+1] == '\n':
				return i + 2, i + 1, false
			}
			return i + 1, i + 1, false
		default:
			t.lineStart, t.lastCR = false, false
			i++
		}
	}
	return -1, -1, false
}

// indexEOL returns the index of the first '\r' or '\n' in b, or -1.
func indexEOL(b []byte) int {
	n := bytes.IndexByte(b, '\n')
	if n < 0 {
		return bytes.IndexByte(b, '\r')
	}
	if r := bytes.IndexByte(b[:n], '\r'); r >= 0 {
		return r
	}
	return n
}

// eventFields is what one SSE event holds.
type eventFields struct {
	name     []byte // event:
	data     []byte // data: lines joined by '\n'
	dataOff  int    // offset of data in the event, when it is a single line
	multi    bool   // data spans several lines (then data is the tap's scratch)
	errField bool   // an `error:` field (older llama.cpp servers) supplied data
}

// parseEvent splits ev into its fields.
func (t *StreamTap) parseEvent(ev []byte) eventFields {
	f := eventFields{dataOff: -1}
	for i := 0; i < len(ev); {
		lineOff := i
		line := ev[i:]
		if j := indexEOL(line); j >= 0 {
			line = line[:j]
			i += j + 1
			if ev[i-1] == '\r' && i < len(ev) && ev[i] == '\n' {
				i++
			}
		} else {
			i = len(ev)
		}
		if len(line) == 0 || line[0] == ':' {
			continue
		}
		name, value, valueOff := line, []byte(nil), lineOff+len(line)
		if c := bytes.IndexByte(line, ':'); c >= 0 {
			v := c + 1
			if v < len(line) && line[v] == ' ' {
				v++
			}
			name, value, valueOff = line[:c], line[v:], lineOff+v
		}
		switch string(name) {
		case "data", "error":
			if string(name) == "error" {
				f.errField = true
			}
			switch {
			case f.dataOff < 0 && !f.multi:
				f.data, f.dataOff = value, valueOff
			case !f.multi:
				t.data = append(append(append(t.data[:0], f.data...), '\n'), value...)
				f.data, f.multi, f.dataOff = t.data, true, -1
			default:
				t.data = append(append(t.data, '\n'), value...)
				f.data = t.data
			}
		case "event":
			f.name = value
		}
	}
	return f
}

// tailComplete reports whether a tail held at the end of the stream is a whole event that only
// lacks its blank line: its data is [DONE] or complete JSON.
func (t *StreamTap) tailComplete(tail []byte) bool {
	f := t.parseEvent(tail)
	d := bytes.TrimSpace(f.data)
	if string(d) == "[DONE]" {
		return true
	}
	return len(d) > 0 && (d[0] == '{' || d[0] == '[') && gjson.Valid(view(d))
}

// event handles one complete event ev (terminator included) and appends what the client gets.
// raw events (over the size bound) are forwarded without a look.
func (t *StreamTap) event(dst, ev []byte, raw bool) []byte {
	t.fwdTerm = true
	if t.closed || t.done {
		// after an error frame, [DONE] or message_stop the client has had the end of its
		// stream: whatever the upstream sends after that is not passed on
		t.fwdTerm = false
		return dst
	}
	if raw {
		if t.opts.OnEvent != nil {
			t.opts.OnEvent(Event{Unread: true})
		}
		return append(dst, ev...)
	}
	f := t.parseEvent(ev)
	if f.errField || string(f.name) == "error" {
		return t.errorFrame(dst, f.data)
	}
	if f.data == nil {
		return append(dst, ev...)
	}
	t.events++
	if t.opts.OnEvent != nil {
		t.opts.OnEvent(Event{Name: f.name, Data: f.data})
	}
	if t.opts.Format == StreamTyped {
		return t.typedEvent(dst, ev, &f)
	}
	if t.surface == Anthropic {
		return t.anthropicEvent(dst, ev, &f)
	}
	return t.openAIEvent(dst, ev, &f)
}

// errorFrame replaces an upstream error event with the normalised frame(s).
func (t *StreamTap) errorFrame(dst, data []byte) []byte {
	t.upErr = NormalizeStreamError(data)
	t.upErr.Message = Redact(t.upErr.Message, t.opts.Secrets...)
	t.fwdTerm = false
	return t.terminate(dst, t.upErr)
}

// unreadable ends the stream with an error frame in place of an event whose data is not a JSON
// object (a truncated chunk, a stray log line): the SDKs would fail to parse it.
func (t *StreamTap) unreadable(dst []byte) []byte {
	t.upErr = &Error{Status: http.StatusBadGateway, Type: TypeServer, Code: "upstream_invalid_response", Reason: "upstream_invalid_response",
		Message: "The model server sent a stream event the gateway could not read."}
	t.fwdTerm = false
	return t.terminate(dst, t.upErr)
}

// openAIEvent handles an OpenAI chunk: [DONE], error, usage, text, model rewrite, usage strip.
func (t *StreamTap) openAIEvent(dst, ev []byte, f *eventFields) []byte {
	d := bytes.TrimSpace(f.data)
	if string(d) == "[DONE]" {
		t.done = true
		return append(dst, ev...)
	}
	js := view(f.data)
	if len(d) == 0 || d[0] != '{' || !t.chunks.Valid(d) {
		return t.unreadable(dst) // an SDK would fail parsing it; end the stream properly instead
	}
	// Targeted lookups, each skipped when its key cannot be there, cost less than walking every
	// value of the chunk. A chunk shaped as the valid one before it (its text changed, nothing
	// else) has that one's keys: the search for a key that one did not hold is not repeated.
	same := t.chunks.SameShape()
	var model, choices, usage gjson.Result
	if !same || t.errorText {
		if t.errorText = bytes.Contains(d, keyError); t.errorText {
			if e := gjson.Get(js, "error"); e.Exists() && e.Type != gjson.Null {
				return t.errorFrame(dst, f.data)
			}
		}
	}
	if !same || t.usageText {
		i := bytes.Index(d, keyUsage)
		if t.usageText = i >= 0; t.usageText && !(t.usageKey && onlyNullUsage(d, i)) {
			usage = gjson.Get(js, "usage")
			t.usageKey = t.usageKey || usage.Exists()
		}
	}
	strip := t.opts.StripUsageChunk && usage.IsObject()
	if strip || t.opts.OnText != nil || !t.firstToken {
		choices = gjson.Get(js, "choices")
	}
	if t.opts.Model != "" && !f.multi {
		model = gjson.Get(js, "model")
	}
	if usage.IsObject() {
		var u usageFields
		u.parse(usage)
		if u.has != 0 {
			t.usage, t.haveUsage = u, true
		}
	}
	if choices.IsArray() && (t.opts.OnText != nil || !t.firstToken) {
		t.openAIText(choices)
	}
	if strip && (!choices.Exists() || isEmptyArray(choices)) {
		t.fwdTerm = false
		return dst
	}
	if t.opts.Model != "" && !f.multi && model.Type == gjson.String && model.Str != t.opts.Model {
		return t.rewrite(dst, ev, f.dataOff+model.Index, len(model.Raw))
	}
	return append(dst, ev...)
}

// onlyNullUsage reports whether the `"usage"` at i in the chunk d is its only one and is a key
// whose value is null. Then the chunk's usage is null or absent and, once a usage key has been
// seen, there is nothing to look up: the `"usage":null` OpenAI puts on every chunk of a stream
// that reports usage costs no lookup. Anything else (a usage object, "usage" as a string, a
// second occurrence) answers false and goes to the lookup.
func onlyNullUsage(d []byte, i int) bool {
	rest := d[i+len(keyUsage):]
	if bytes.Contains(rest, keyUsage) {
		return false
	}
	rest = bytes.TrimLeft(rest, " \t\r\n")
	if len(rest) == 0 || rest[0] != ':' {
		return false
	}
	return bytes.HasPrefix(bytes.TrimLeft(rest[1:], " \t\r\n"), null)
}

var null = []byte("null")

// rewrite appends ev with the n bytes at off replaced by the configured model name.
func (t *StreamTap) rewrite(dst, ev []byte, off, n int) []byte {
	if off <= 0 || n < 2 || off+n > len(ev) || ev[off] != '"' || ev[off+n-1] != '"' {
		return append(dst, ev...)
	}
	dst = append(dst, ev[:off]...)
	dst = AppendString(dst, t.opts.Model)
	return append(dst, ev[off+n:]...)
}

// openAIText reports the generated text of every choice of a chunk.
func (t *StreamTap) openAIText(choices gjson.Result) {
	choices.ForEach(func(_, ch gjson.Result) bool {
		delta := ch.Get("delta")
		if !delta.Exists() {
			delta = ch.Get("message")
		}
		if !delta.IsObject() {
			t.text(ch.Get("text")) // completions
			return true
		}
		t.text(delta.Get("content"))
		if strings.Contains(delta.Raw, `"reasoning`) {
			t.text(delta.Get("reasoning_content"))
			t.text(delta.Get("reasoning"))
		}
		if strings.Contains(delta.Raw, `"tool_calls"`) {
			delta.Get("tool_calls").ForEach(func(_, tc gjson.Result) bool {
				t.text(tc.Get("function.arguments"))
				return true
			})
		}
		return true
	})
}

// anthropicEvent handles an Anthropic event: message_start, content_block_delta,
// message_delta, message_stop, error.
func (t *StreamTap) anthropicEvent(dst, ev []byte, f *eventFields) []byte {
	js := view(f.data)
	if !gjson.Valid(js) {
		return t.unreadable(dst)
	}
	root := gjson.Parse(js)
	if !root.IsObject() {
		return t.unreadable(dst)
	}
	var typ string
	var message, delta, usage gjson.Result
	root.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "type":
			typ = v.Str
		case "message":
			message = v
		case "delta":
			delta = v
		case "usage":
			usage = v
		}
		return true
	})
	switch typ {
	case "error":
		return t.errorFrame(dst, f.data)
	case "message_start":
		mu := message.Get("usage")
		t.usageKey = t.usageKey || mu.Exists()
		t.mergeUsage(mu)
		if t.opts.Model != "" && !f.multi {
			// Result.Get makes Index absolute; an unknown index would come back as message.Index.
			if m := message.Get("model"); m.Type == gjson.String && m.Str != t.opts.Model && m.Index > message.Index {
				return t.rewrite(dst, ev, f.dataOff+m.Index, len(m.Raw))
			}
		}
	case "content_block_delta":
		if t.opts.OnText != nil || !t.firstToken {
			delta.ForEach(func(k, v gjson.Result) bool {
				switch k.Str {
				case "text", "thinking", "partial_json":
					t.text(v)
				}
				return true
			})
		}
	case "message_delta":
		t.mergeUsage(usage)
	case "message_stop":
		t.done = true
	}
	return append(dst, ev...)
}

// mergeUsage folds an Anthropic usage object into the stream's usage.
func (t *StreamTap) mergeUsage(obj gjson.Result) {
	if t.usage.parse(obj) != 0 {
		t.haveUsage = true
	}
}

// text reports one piece of generated text.
func (t *StreamTap) text(v gjson.Result) {
	if v.Type != gjson.String || v.Str == "" {
		return
	}
	if !t.firstToken {
		t.firstToken = true
		if t.opts.OnFirstToken != nil {
			t.opts.OnFirstToken()
		}
	}
	if t.opts.OnText != nil {
		t.opts.OnText(v.Str)
	}
}

// isEmptyArray reports whether an array result has no elements.
func isEmptyArray(v gjson.Result) bool {
	empty := true
	v.ForEach(func(_, _ gjson.Result) bool {
		empty = false
		return false
	})
	return empty
}
