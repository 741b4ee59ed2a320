package cache

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
	"unsafe"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/tidwall/gjson"
)

// replayPiece is the most text one replayed chunk carries. Real streams send a token (about four
// bytes) per chunk; a cached answer has no token boundaries to honour, and fewer, larger chunks
// cost less to write and parse while still looking like a stream to the client.
const replayPiece = 64

var errNotObject = errors.New("cached body is not a JSON object")

// AppendStream appends a cached JSON entry as a well-formed SSE stream, for a client that asked
// for stream:true.
//
// OpenAI chat completions become chat.completion.chunk frames: per choice, a role chunk, the
// reasoning (reasoning_content / reasoning), content and refusal in pieces (the choice's
// logprobs ride on its last content chunk), each tool call as a header delta (index, id, type,
// name) followed by argument pieces, and a final chunk with the finish_reason; with includeUsage
// every chunk carries "usage":null and a last chunk with "choices":[] carries the usage; then
// `data: [DONE]`. Completions become text_completion chunks the same way. Anthropic messages
// become message_start, content_block_start / content_block_delta (text_delta, thinking_delta
// and signature_delta, input_json_delta for tool_use, citations_delta) / content_block_stop per
// block, message_delta (stop_reason, stop_sequence, usage) and message_stop; blocks of other
// types are sent whole in their content_block_start. includeUsage does not apply to Anthropic
// (its stream always carries usage).
func AppendStream(dst []byte, e wire.Endpoint, s wire.Surface, entry *Entry, includeUsage bool) ([]byte, error) {
	if entry == nil {
		return dst, errors.New("replaying cached entry: nil entry")
	}
	root := gjson.Parse(unsafe.String(unsafe.SliceData(entry.Body), len(entry.Body)))
	if !root.IsObject() {
		return dst, fmt.Errorf("replaying cached entry: %w", errNotObject)
	}
	switch d := e.Spec().Dialect; {
	case !e.Spec().Streams && !(e == wire.EndpointUnknown && s == wire.Anthropic):
	case d == wire.DialectMessages || s == wire.Anthropic:
		return appendAnthropicStream(dst, root, entry), nil
	case d == wire.DialectChat:
		r := openAIReplay{entry: entry, includeUsage: includeUsage}
		return r.appendChat(dst, root), nil
	case d == wire.DialectCompletion:
		r := openAIReplay{entry: entry, includeUsage: includeUsage, completions: true}
		return r.appendCompletions(dst, root), nil
	}
	return dst, fmt.Errorf("replaying cached entry: endpoint %s has no stream form", e)
}

// openAIReplay writes the chunks of an OpenAI stream.
type openAIReplay struct {
	entry        *Entry
	includeUsage bool
	completions  bool
	head         []byte // `{"id":...,"object":...,"created":...,"model":...,` shared by every chunk
}

// header builds the fields every chunk repeats from the cached response.
func (r *openAIReplay) header(root gjson.Result) {
	object := "chat.completion.chunk"
	if r.completions {
		object = "text_completion"
	}
	h := append(make([]byte, 0, 160), `{"id":`...)
	if id := root.Get("id"); id.Type == gjson.String {
		h = append(h, id.Raw...)
	} else {
		h = append(h, `"cached"`...)
	}
	h = append(h, `,"object":"`...)
	h = append(h, object...)
	h = append(h, `","created":`...)
	if c := root.Get("created"); c.Type == gjson.Number {
		h = append(h, c.Raw...)
	} else {
		h = strconv.AppendInt(h, r.entry.Created.Unix(), 10)
	}
	h = append(h, `,"model":`...)
	if m := root.Get("model"); m.Type == gjson.String {
		h = append(h, m.Raw...)
	} else {
		h = wire.AppendString(h, r.entry.Model)
	}
	for _, k := range [...]string{"system_fingerprint", "service_tier"} {
		if v := root.Get(k); v.Exists() {
			h = append(h, `,"`...)
			h = append(h, k...)
			h = append(h, `":`...)
			h = append(h, v.Raw...)
		}
	}
	r.head = append(h, ',')
}

// open starts a chunk, up to and including the `[` of its choices.
func (r *openAIReplay) open(dst []byte) []byte {
	dst = append(dst, "data: "...)
	dst = append(dst, r.head...)
	return append(dst, `"choices":[`...)
}

// close ends a chunk opened with open.
func (r *openAIReplay) close(dst []byte) []byte {
	dst = append(dst, ']')
	if r.includeUsage {
		dst = append(dst, `,"usage":null`...)
	}
	return append(dst, "}\n\n"...)
}

// choiceOpen appends `{"index":i,"delta":{` (chat).
func choiceOpen(dst []byte, index string) []byte {
	dst = append(dst, `{"index":`...)
	dst = append(dst, index...)
	return append(dst, `,"delta":{`...)
}

// choiceClose appends the end of a chat choice: `},"logprobs":...,"finish_reason":...}`.
func choiceClose(dst []byte, logprobs, finish string) []byte {
	dst = append(dst, `},"logprobs":`...)
	dst = append(dst, logprobs...)
	dst = append(dst, `,"finish_reason":`...)
	dst = append(dst, finish...)
	return append(dst, '}')
}

// deltaChunk appends a chunk whose only choice has the delta `{"<field>":<piece>}`.
func (r *openAIReplay) deltaChunk(dst []byte, index, field, piece, logprobs string) []byte {
	dst = r.open(dst)
	dst = choiceOpen(dst, index)
	dst = append(dst, '"')
	dst = append(dst, field...)
	dst = append(dst, `":`...)
	dst = wire.AppendString(dst, piece)
	dst = choiceClose(dst, logprobs, "null")
	return r.close(dst)
}

// appendText streams text as pieces of field, with logprobs on the last piece.
func (r *openAIReplay) appendText(dst []byte, index, field, text, logprobs string) []byte {
	for len(text) > 0 {
		n := splitPoint(text, replayPiece)
		lp := "null"
		if n == len(text) {
			lp = logprobs
		}
		dst = r.deltaChunk(dst, index, field, text[:n], lp)
		text = text[n:]
	}
	return dst
}

// appendChat writes a chat completion as chunks.
func (r *openAIReplay) appendChat(dst []byte, root gjson.Result) []byte {
	r.header(root)
	root.Get("choices").ForEach(func(i, ch gjson.Result) bool {
		index := choiceIndex(i, ch)
		msg := ch.Get("message")
		logprobs := "null"
		if lp := ch.Get("logprobs"); lp.Exists() {
			logprobs = lp.Raw
		}
		// The role chunk.
		dst = r.open(dst)
		dst = choiceOpen(dst, index)
		dst = append(dst, `"role":`...)
		if role := msg.Get("role"); role.Type == gjson.String {
			dst = append(dst, role.Raw...)
		} else {
			dst = append(dst, `"assistant"`...)
		}
		content := msg.Get("content")
		if content.Type == gjson.String {
			dst = append(dst, `,"content":""`...)
		} else {
			dst = append(dst, `,"content":null`...)
		}
		dst = choiceClose(dst, "null", "null")
		dst = r.close(dst)

		for _, f := range [...]string{"reasoning_content", "reasoning"} {
			if v := msg.Get(f); v.Type == gjson.String {
				dst = r.appendText(dst, index, f, v.Str, "null")
			}
		}
		lpPending := logprobs != "null"
		if content.Type == gjson.String && content.Str != "" {
			dst = r.appendText(dst, index, "content", content.Str, logprobs)
			lpPending = false
		}
		if v := msg.Get("refusal"); v.Type == gjson.String && v.Str != "" {
			lp := "null"
			if lpPending {
				lp, lpPending = logprobs, false
			}
			dst = r.appendText(dst, index, "refusal", v.Str, lp)
		}
		dst = r.appendToolCalls(dst, index, msg.Get("tool_calls"))
		if fc := msg.Get("function_call"); fc.IsObject() {
			dst = r.appendFunctionCall(dst, index, fc)
		}
		// The final chunk.
		finish := "null"
		if f := ch.Get("finish_reason"); f.Exists() {
			finish = f.Raw
		}
		lp := "null"
		if lpPending {
			lp = logprobs
		}
		dst = r.open(dst)
		dst = choiceOpen(dst, index)
		dst = choiceClose(dst, lp, finish)
		dst = r.close(dst)
		return true
	})
	dst = r.appendUsage(dst, root)
	return append(dst, "data: [DONE]\n\n"...)
}

// appendToolCalls streams each tool call: a header delta, then its arguments in pieces.
func (r *openAIReplay) appendToolCalls(dst []byte, index string, calls gjson.Result) []byte {
	calls.ForEach(func(j, tc gjson.Result) bool {
		tcIndex := choiceIndex(j, tc)
		dst = r.open(dst)
		dst = choiceOpen(dst, index)
		dst = append(dst, `"tool_calls":[{"index":`...)
		dst = append(dst, tcIndex...)
		if id := tc.Get("id"); id.Exists() {
			dst = append(dst, `,"id":`...)
			dst = append(dst, id.Raw...)
		}
		typ := tc.Get("type")
		if typ.Exists() {
			dst = append(dst, `,"type":`...)
			dst = append(dst, typ.Raw...)
		}
		fn := tc.Get("function")
		dst = append(dst, `,"function":{"name":`...)
		if name := fn.Get("name"); name.Exists() {
			dst = append(dst, name.Raw...)
		} else {
			dst = append(dst, `""`...)
		}
		dst = append(dst, `,"arguments":""}}]`...)
		dst = choiceClose(dst, "null", "null")
		dst = r.close(dst)

		dst = r.appendArguments(dst, index, fn.Get("arguments").Str, func(dst []byte, piece string) []byte {
			dst = append(dst, `"tool_calls":[{"index":`...)
			dst = append(dst, tcIndex...)
			dst = append(dst, `,"function":{"arguments":`...)
			dst = wire.AppendString(dst, piece)
			return append(dst, `}}]`...)
		})
		return true
	})
	return dst
}

// appendFunctionCall streams a legacy function_call: the name, then the arguments in pieces.
func (r *openAIReplay) appendFunctionCall(dst []byte, index string, fc gjson.Result) []byte {
	dst = r.open(dst)
	dst = choiceOpen(dst, index)
	dst = append(dst, `"function_call":{"name":`...)
	dst = wire.AppendString(dst, fc.Get("name").Str)
	dst = append(dst, `,"arguments":""}`...)
	dst = choiceClose(dst, "null", "null")
	dst = r.close(dst)
	return r.appendArguments(dst, index, fc.Get("arguments").Str, func(dst []byte, piece string) []byte {
		dst = append(dst, `"function_call":{"arguments":`...)
		dst = wire.AppendString(dst, piece)
		return append(dst, '}')
	})
}

// appendArguments streams a call's arguments in pieces, a chunk each, whose delta is written by
// delta (a tool call's or a function_call's).
func (r *openAIReplay) appendArguments(dst []byte, index, args string, delta func(dst []byte, piece string) []byte) []byte {
	for len(args) > 0 {
		n := splitPoint(args, replayPiece)
		dst = r.open(dst)
		dst = choiceOpen(dst, index)
		dst = delta(dst, args[:n])
		dst = choiceClose(dst, "null", "null")
		dst = r.close(dst)
		args = args[n:]
	}
	return dst
}

// appendUsage writes the usage chunk when the client asked for one.
func (r *openAIReplay) appendUsage(dst []byte, root gjson.Result) []byte {
	if !r.includeUsage {
		return dst
	}
	dst = r.open(dst)
	dst = append(dst, `],"usage":`...)
	if u := root.Get("usage"); u.IsObject() {
		dst = append(dst, u.Raw...)
	} else {
		dst = wire.AppendUsageJSON(dst, wire.OpenAI, r.entry.Usage)
	}
	return append(dst, "}\n\n"...)
}

// appendCompletions writes a text completion as chunks.
func (r *openAIReplay) appendCompletions(dst []byte, root gjson.Result) []byte {
	r.header(root)
	root.Get("choices").ForEach(func(i, ch gjson.Result) bool {
		index := choiceIndex(i, ch)
		logprobs := "null"
		if lp := ch.Get("logprobs"); lp.Exists() {
			logprobs = lp.Raw
		}
		text := ch.Get("text").Str
		for len(text) > 0 {
			n := splitPoint(text, replayPiece)
			lp := "null"
			if n == len(text) {
				lp, logprobs = logprobs, "null"
			}
			dst = r.completionChunk(dst, index, text[:n], lp, "null")
			text = text[n:]
		}
		finish := "null"
		if f := ch.Get("finish_reason"); f.Exists() {
			finish = f.Raw
		}
		dst = r.completionChunk(dst, index, "", logprobs, finish)
		return true
	})
	dst = r.appendUsage(dst, root)
	return append(dst, "data: [DONE]\n\n"...)
}

func (r *openAIReplay) completionChunk(dst []byte, index, text, logprobs, finish string) []byte {
	dst = r.open(dst)
	dst = append(dst, `{"text":`...)
	dst = wire.AppendString(dst, text)
	dst = append(dst, `,"index":`...)
	dst = append(dst, index...)
	dst = append(dst, `,"logprobs":`...)
	dst = append(dst, logprobs...)
	dst = append(dst, `,"finish_reason":`...)
	dst = append(dst, finish...)
	dst = append(dst, '}')
	return r.close(dst)
}

// choiceIndex returns the raw index of an array element: its own "index" field when it has a
// numeric one, else its position.
func choiceIndex(pos, v gjson.Result) string {
	if idx := v.Get("index"); idx.Type == gjson.Number {
		return idx.Raw
	}
	return strconv.FormatInt(pos.Int(), 10)
}

// splitPoint returns how many bytes of s the next piece takes: at most max, never splitting a
// UTF-8 sequence, and after the last space of the window's second half when there is one.
func splitPoint(s string, max int) int {
	if len(s) <= max {
		return len(s)
	}
	n := max
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	if n == 0 { // no rune start in the window (invalid UTF-8): cut anywhere
		return max
	}
	for i := n - 1; i >= max/2; i-- {
		if s[i] == ' ' || s[i] == '\n' {
			return i + 1
		}
	}
	return n
}

// anthropicEvent appends `event: <name>\ndata: ` (the caller writes the JSON and "\n\n").
func anthropicEvent(dst []byte, name string) []byte {
	dst = append(dst, "event: "...)
	dst = append(dst, name...)
	return append(dst, "\ndata: "...)
}

// appendAnthropicStream writes a message as Anthropic stream events.
func appendAnthropicStream(dst []byte, root gjson.Result, entry *Entry) []byte {
	usage := root.Get("usage")
	usageRaw := usage.Raw
	if !usage.IsObject() {
		usageRaw = string(wire.AppendUsageJSON(nil, wire.Anthropic, entry.Usage))
	}

	// message_start: the message without its content and stop fields.
	dst = anthropicEvent(dst, "message_start")
	dst = append(dst, `{"type":"message_start","message":{`...)
	first := true
	sep := func() {
		if !first {
			dst = append(dst, ',')
		}
		first = false
	}
	hasModel := false
	root.ForEach(func(k, v gjson.Result) bool {
		sep()
		dst = append(dst, k.Raw...)
		dst = append(dst, ':')
		switch k.Str {
		case "content":
			dst = append(dst, "[]"...)
		case "stop_reason", "stop_sequence", "stop_details":
			dst = append(dst, "null"...)
		case "usage":
			dst = append(dst, usageRaw...)
		default:
			if k.Str == "model" {
				hasModel = true
			}
			dst = append(dst, v.Raw...)
		}
		return true
	})
	if !hasModel {
		sep()
		dst = append(dst, `"model":`...)
		dst = wire.AppendString(dst, entry.Model)
	}
	if !usage.IsObject() {
		sep()
		dst = append(dst, `"usage":`...)
		dst = append(dst, usageRaw...)
	}
	dst = append(dst, "}}\n\n"...)

	root.Get("content").ForEach(func(i, block gjson.Result) bool {
		dst = appendAnthropicBlock(dst, strconv.FormatInt(i.Int(), 10), block)
		return true
	})

	dst = anthropicEvent(dst, "message_delta")
	dst = append(dst, `{"type":"message_delta","delta":{"stop_reason":`...)
	dst = appendRawOrNull(dst, root.Get("stop_reason"))
	dst = append(dst, `,"stop_sequence":`...)
	dst = appendRawOrNull(dst, root.Get("stop_sequence"))
	if sd := root.Get("stop_details"); sd.Exists() {
		dst = append(dst, `,"stop_details":`...)
		dst = append(dst, sd.Raw...)
	}
	dst = append(dst, `},"usage":`...)
	dst = append(dst, usageRaw...)
	dst = append(dst, "}\n\n"...)
	dst = anthropicEvent(dst, "message_stop")
	return append(dst, "{\"type\":\"message_stop\"}\n\n"...)
}

func appendRawOrNull(dst []byte, v gjson.Result) []byte {
	if !v.Exists() {
		return append(dst, "null"...)
	}
	return append(dst, v.Raw...)
}

// appendAnthropicBlock writes one content block: start (with its streamed fields emptied),
// deltas, stop.
func appendAnthropicBlock(dst []byte, index string, block gjson.Result) []byte {
	typ := block.Get("type").Str
	citations := typ == "text" && block.Get("citations").IsArray()
	dst = anthropicEvent(dst, "content_block_start")
	dst = append(dst, `{"type":"content_block_start","index":`...)
	dst = append(dst, index...)
	dst = append(dst, `,"content_block":{`...)
	first := true
	block.ForEach(func(k, v gjson.Result) bool {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, k.Raw...)
		dst = append(dst, ':')
		if empty, ok := streamedField(typ, k.Str, citations); ok {
			dst = append(dst, empty...)
		} else {
			dst = append(dst, v.Raw...)
		}
		return true
	})
	dst = append(dst, "}}\n\n"...)

	delta := func(kind, field, piece string) {
		dst = anthropicEvent(dst, "content_block_delta")
		dst = append(dst, `{"type":"content_block_delta","index":`...)
		dst = append(dst, index...)
		dst = append(dst, `,"delta":{"type":"`...)
		dst = append(dst, kind...)
		dst = append(dst, `","`...)
		dst = append(dst, field...)
		dst = append(dst, `":`...)
		dst = wire.AppendString(dst, piece)
		dst = append(dst, "}}\n\n"...)
	}
	pieces := func(kind, field, s string) {
		for len(s) > 0 {
			n := splitPoint(s, replayPiece)
			delta(kind, field, s[:n])
			s = s[n:]
		}
	}
	switch typ {
	case "text":
		pieces("text_delta", "text", block.Get("text").Str)
		if citations {
			block.Get("citations").ForEach(func(_, c gjson.Result) bool {
				dst = anthropicEvent(dst, "content_block_delta")
				dst = append(dst, `{"type":"content_block_delta","index":`...)
				dst = append(dst, index...)
				dst = append(dst, `,"delta":{"type":"citations_delta","citation":`...)
				dst = append(dst, c.Raw...)
				dst = append(dst, "}}\n\n"...)
				return true
			})
		}
	case "thinking":
		pieces("thinking_delta", "thinking", block.Get("thinking").Str)
		if sig := block.Get("signature").Str; sig != "" {
			delta("signature_delta", "signature", sig)
		}
	case "tool_use", "server_tool_use", "mcp_tool_use":
		if in := block.Get("input"); in.Exists() && in.Raw != "{}" {
			pieces("input_json_delta", "partial_json", in.Raw)
		}
	}
	dst = anthropicEvent(dst, "content_block_stop")
	dst = append(dst, `{"type":"content_block_stop","index":`...)
	dst = append(dst, index...)
	return append(dst, "}\n\n"...)
}

// streamedField reports whether field of a block of type typ is sent as deltas, and what it holds
// in the block's content_block_start. citations says a text block's citations are an array (null
// or absent citations are sent as they are).
func streamedField(typ, field string, citations bool) (string, bool) {
	switch typ {
	case "text":
		switch field {
		case "text":
			return `""`, true
		case "citations":
			return "[]", citations
		}
	case "thinking":
		switch field {
		case "thinking", "signature":
			return `""`, true
		}
	case "tool_use", "server_tool_use", "mcp_tool_use":
		if field == "input" {
			return "{}", true
		}
	}
	return "", false
}
