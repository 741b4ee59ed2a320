package cache

import (
	"bytes"
	"strconv"
	"unsafe"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/tidwall/gjson"
)

// DefaultAssembleBytes bounds what an Assembler holds (the pending event plus the response
// being rebuilt). A stream whose answer outgrows it is not cached.
const DefaultAssembleBytes = 4 << 20

// maxChoices bounds the choice index an Assembler accepts (the OpenAI API allows n up to 128).
const maxChoices = 128

// maxToolCalls bounds the tool-call index within one choice.
const maxToolCalls = 1024

// Assembler rebuilds the JSON response equivalent to an SSE stream a client received, so a
// streaming miss can fill the cache. It reads the events the stream tap has already framed
// (wire.TapOptions.OnEvent): the stream is parsed once, by the tap. Result returns the JSON
// body only when the stream completed properly:
// `data: [DONE]` (OpenAI) or message_stop (Anthropic), no error frame, and for OpenAI a
// finish_reason for every choice. It holds at most its byte limit and gives up beyond it.
//
// OpenAI chat chunks are merged per choice index (role, content, reasoning_content, reasoning,
// refusal, tool calls by index, legacy function_call, logprobs content and refusal arrays,
// finish_reason) and the last non-null usage is kept; completions chunks merge text per choice
// (a stream with completion logprobs is not rebuilt). Anthropic events are merged as the SDKs
// do: message_start, content blocks with their text, thinking, signature, input_json and
// citations deltas, and message_delta's stop fields and usage (later counts replace earlier).
//
// An Assembler is not safe for concurrent use.
type Assembler struct {
	endpoint wire.Endpoint
	surface  wire.Surface
	max      int
	size     int

	failed bool
	done   bool

	// OpenAI
	id, created, model, fingerprint, tier []byte // raw JSON values
	choices                               []*asmChoice
	usage                                 []byte // raw JSON of the last non-null usage

	// Anthropic
	message    []byte // raw message of message_start
	blocks     []*asmBlock
	stopReason []byte
	stopSeq    []byte
	stopDet    []byte
	usageKeys  [][]byte // merged usage, in order: raw keys ...
	usageVals  [][]byte // ... and raw values
}

type asmChoice struct {
	seen                                   bool
	role                                   []byte
	content, reasoningContent, reasoning   []byte
	refusal                                []byte
	hasContent, hasRC, hasReasoning, hasRe bool
	tools                                  []*asmTool
	fc                                     *asmTool
	lpContent, lpRefusal                   []byte // comma-joined raw items
	hasLP, hasLPContent, hasLPRefusal      bool
	finish                                 []byte
}

type asmTool struct {
	id, typ    []byte // raw JSON
	name, args []byte // decoded text
}

type asmBlock struct {
	start                                            []byte // raw content_block of content_block_start
	text                                             []byte
	thinking                                         []byte
	sig                                              []byte
	input                                            []byte
	cites                                            []byte // comma-joined raw citations
	hasText, hasThinking, hasSig, hasInput, hasCites bool
}

// NewAssembler returns an assembler for a stream answering a request to endpoint e on surface s,
// holding at most DefaultAssembleBytes.
func NewAssembler(e wire.Endpoint, s wire.Surface) *Assembler {
	return NewAssemblerLimit(e, s, DefaultAssembleBytes)
}

// NewAssemblerLimit is NewAssembler with a byte limit of maxBytes (DefaultAssembleBytes when
// maxBytes <= 0).
func NewAssemblerLimit(e wire.Endpoint, s wire.Surface, maxBytes int) *Assembler {
	if maxBytes <= 0 {
		maxBytes = DefaultAssembleBytes
	}
	a := &Assembler{endpoint: e, surface: s, max: maxBytes}
	a.failed = !e.Spec().Streams // no stream form to rebuild
	return a
}

// Failed reports whether the assembler has given up (over its limit, an error frame, a
// malformed event or an endpoint without a stream form). Callers may stop feeding it.
func (a *Assembler) Failed() bool { return a.failed }

// give up and drop what was held.
func (a *Assembler) fail() {
	*a = Assembler{endpoint: a.endpoint, surface: a.surface, max: a.max, failed: true}
}

// grow accounts for n more bytes held and reports whether that stays within the limit.
func (a *Assembler) grow(n int) bool {
	a.size += n
	if a.size > a.max {
		a.fail()
		return false
	}
	return true
}

// Event takes the next event of the stream, as the tap framed it. Data aliases the tap's
// buffers: what the assembler keeps, it copies.
func (a *Assembler) Event(ev wire.Event) {
	if a.failed || a.done {
		return
	}
	if ev.Unread || string(ev.Name) == "error" {
		a.fail() // too large to have been looked at, or an error: nothing to rebuild
		return
	}
	d := bytes.TrimSpace(ev.Data)
	if a.endpoint.Spec().Dialect != wire.DialectMessages && string(d) == "[DONE]" {
		a.done = true
		return
	}
	if len(d) == 0 || d[0] != '{' || len(d) > a.max || !gjson.ValidBytes(d) {
		a.fail()
		return
	}
	root := gjson.Parse(unsafe.String(unsafe.SliceData(d), len(d)))
	if a.endpoint.Spec().Dialect == wire.DialectMessages {
		a.anthropicEvent(root)
	} else {
		a.openAIChunk(root)
	}
}

// keep copies a raw value into dst, accounting for it.
func (a *Assembler) keep(dst []byte, raw string) []byte {
	if !a.grow(len(raw)) {
		return nil
	}
	return append(dst[:0], raw...)
}

// add appends text to dst, accounting for it.
func (a *Assembler) add(dst []byte, s string) []byte {
	if !a.grow(len(s)) {
		return nil
	}
	return append(dst, s...)
}

// addText appends a text delta to *dst and notes it given (*has); a delta that is no string is
// passed over.
func (a *Assembler) addText(dst *[]byte, has *bool, v gjson.Result) {
	if v.Type == gjson.String {
		*dst, *has = a.add(*dst, v.Str), true
	}
}

// openAIChunk merges one chunk.
func (a *Assembler) openAIChunk(root gjson.Result) {
	var choices, usage gjson.Result
	root.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "error":
			if v.Type != gjson.Null {
				a.fail()
				return false
			}
		case "id":
			if a.id == nil {
				a.id = a.keep(a.id, v.Raw)
			}
		case "created":
			if a.created == nil {
				a.created = a.keep(a.created, v.Raw)
			}
		case "model":
			a.model = a.keep(a.model, v.Raw)
		case "system_fingerprint":
			a.fingerprint = a.keep(a.fingerprint, v.Raw)
		case "service_tier":
			a.tier = a.keep(a.tier, v.Raw)
		case "choices":
			choices = v
		case "usage":
			usage = v
		}
		return !a.failed
	})
	if a.failed {
		return
	}
	if usage.IsObject() {
		a.usage = a.keep(a.usage, usage.Raw)
	}
	if choices.Exists() && choices.Type != gjson.Null && !choices.IsArray() {
		a.fail()
		return
	}
	choices.ForEach(func(_, ch gjson.Result) bool {
		a.openAIChoice(ch)
		return !a.failed
	})
}

// choice returns the state of choice index i, creating it.
func (a *Assembler) choice(idx gjson.Result) *asmChoice {
	i := 0
	if idx.Exists() {
		if idx.Type != gjson.Number || idx.Num < 0 || idx.Num >= maxChoices || idx.Num != float64(int(idx.Num)) {
			a.fail()
			return nil
		}
		i = int(idx.Num)
	}
	for len(a.choices) <= i {
		a.choices = append(a.choices, nil)
	}
	if a.choices[i] == nil {
		if !a.grow(256) {
			return nil
		}
		a.choices[i] = &asmChoice{seen: true}
	}
	return a.choices[i]
}

func (a *Assembler) openAIChoice(ch gjson.Result) {
	c := a.choice(ch.Get("index"))
	if c == nil {
		return
	}
	if a.endpoint.Spec().Dialect == wire.DialectCompletion {
		a.addText(&c.content, &c.hasContent, ch.Get("text"))
		if lp := ch.Get("logprobs"); lp.Exists() && lp.Type != gjson.Null {
			a.fail() // completion logprobs are not merged
			return
		}
	} else {
		delta := ch.Get("delta")
		if !delta.IsObject() && delta.Exists() && delta.Type != gjson.Null {
			a.fail()
			return
		}
		a.openAIDelta(c, delta)
		if lp := ch.Get("logprobs"); lp.IsObject() {
			c.hasLP = true
			if v := lp.Get("content"); v.IsArray() {
				c.hasLPContent = true
				c.lpContent = a.appendItems(c.lpContent, v)
			}
			if v := lp.Get("refusal"); v.IsArray() {
				c.hasLPRefusal = true
				c.lpRefusal = a.appendItems(c.lpRefusal, v)
			}
		}
	}
	if f := ch.Get("finish_reason"); f.Type == gjson.String {
		c.finish = a.keep(c.finish, f.Raw)
	}
}

// appendItems appends the raw items of array v to dst, comma-separated.
func (a *Assembler) appendItems(dst []byte, v gjson.Result) []byte {
	v.ForEach(func(_, item gjson.Result) bool {
		if !a.grow(len(item.Raw) + 1) {
			return false
		}
		if len(dst) > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, item.Raw...)
		return true
	})
	return dst
}

func (a *Assembler) openAIDelta(c *asmChoice, delta gjson.Result) {
	delta.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "role":
			if v.Type == gjson.String {
				c.role = a.keep(c.role, v.Raw)
			}
		case "content":
			a.addText(&c.content, &c.hasContent, v)
		case "reasoning_content":
			a.addText(&c.reasoningContent, &c.hasRC, v)
		case "reasoning":
			a.addText(&c.reasoning, &c.hasReasoning, v)
		case "refusal":
			a.addText(&c.refusal, &c.hasRe, v)
		case "tool_calls":
			v.ForEach(func(_, tc gjson.Result) bool {
				a.toolCall(c, tc)
				return !a.failed
			})
		case "function_call":
			if v.IsObject() {
				if c.fc == nil {
					c.fc = &asmTool{}
				}
				a.mergeFunction(c.fc, v)
			}
		}
		return !a.failed
	})
}

func (a *Assembler) toolCall(c *asmChoice, tc gjson.Result) {
	i := 0
	if idx := tc.Get("index"); idx.Exists() {
		if idx.Type != gjson.Number || idx.Num < -1 || idx.Num >= maxToolCalls || idx.Num != float64(int(idx.Num)) {
			a.fail()
			return
		}
		i = max(int(idx.Num), 0) // some servers send -1 for a single call
	}
	for len(c.tools) <= i {
		if !a.grow(64) {
			return
		}
		c.tools = append(c.tools, nil)
	}
	t := c.tools[i]
	if t == nil {
		t = &asmTool{}
		c.tools[i] = t
	}
	if id := tc.Get("id"); id.Type == gjson.String && id.Str != "" {
		t.id = a.keep(t.id, id.Raw)
	}
	if typ := tc.Get("type"); typ.Type == gjson.String {
		t.typ = a.keep(t.typ, typ.Raw)
	}
	if fn := tc.Get("function"); fn.IsObject() {
		a.mergeFunction(t, fn)
	}
}

func (a *Assembler) mergeFunction(t *asmTool, fn gjson.Result) {
	if name := fn.Get("name"); name.Type == gjson.String {
		t.name = a.add(t.name, name.Str)
	}
	if args := fn.Get("arguments"); args.Type == gjson.String {
		t.args = a.add(t.args, args.Str)
	}
}

// anthropicEvent merges one Anthropic event.
func (a *Assembler) anthropicEvent(root gjson.Result) {
	switch root.Get("type").Str {
	case "error":
		a.fail()
	case "message_start":
		msg := root.Get("message")
		if !msg.IsObject() {
			a.fail()
			return
		}
		a.message = a.keep(a.message, msg.Raw)
		a.usageKeys, a.usageVals = a.usageKeys[:0], a.usageVals[:0]
		a.mergeUsage(msg.Get("usage"))
	case "content_block_start":
		idx, cb := root.Get("index"), root.Get("content_block")
		if idx.Type != gjson.Number || idx.Int() != int64(len(a.blocks)) || !cb.IsObject() || a.message == nil {
			a.fail()
			return
		}
		if !a.grow(len(cb.Raw) + 128) {
			return
		}
		a.blocks = append(a.blocks, &asmBlock{start: []byte(cb.Raw)})
	case "content_block_delta":
		b := a.block(root.Get("index"))
		if b == nil {
			return
		}
		d := root.Get("delta")
		switch d.Get("type").Str {
		case "text_delta":
			b.text, b.hasText = a.add(b.text, d.Get("text").Str), true
		case "thinking_delta":
			b.thinking, b.hasThinking = a.add(b.thinking, d.Get("thinking").Str), true
		case "signature_delta":
			b.sig, b.hasSig = a.add(b.sig, d.Get("signature").Str), true
		case "input_json_delta":
			b.input, b.hasInput = a.add(b.input, d.Get("partial_json").Str), true
		case "citations_delta":
			c := d.Get("citation")
			if !c.IsObject() || !a.grow(len(c.Raw)+1) {
				a.fail()
				return
			}
			if len(b.cites) > 0 {
				b.cites = append(b.cites, ',')
			}
			b.cites, b.hasCites = append(b.cites, c.Raw...), true
		default:
			a.fail() // a delta this assembler cannot merge: do not cache a partial answer
		}
	case "content_block_stop":
		a.block(root.Get("index"))
	case "message_delta":
		if a.message == nil {
			a.fail()
			return
		}
		d := root.Get("delta")
		for _, f := range [...]struct {
			name string
			dst  *[]byte
		}{{"stop_reason", &a.stopReason}, {"stop_sequence", &a.stopSeq}, {"stop_details", &a.stopDet}} {
			if v := d.Get(f.name); v.Exists() {
				*f.dst = a.keep(*f.dst, v.Raw)
			}
		}
		a.mergeUsage(root.Get("usage"))
	case "message_stop":
		if a.message == nil {
			a.fail()
			return
		}
		a.done = true
	}
}

// block returns the started block at idx, failing on a bad index.
func (a *Assembler) block(idx gjson.Result) *asmBlock {
	if idx.Type != gjson.Number || idx.Num < 0 || idx.Num >= float64(len(a.blocks)) || idx.Num != float64(int(idx.Num)) {
		a.fail()
		return nil
	}
	return a.blocks[int(idx.Num)]
}

// mergeUsage folds a usage object in: non-null counts replace earlier ones (they are cumulative).
func (a *Assembler) mergeUsage(u gjson.Result) {
	u.ForEach(func(k, v gjson.Result) bool {
		if v.Type == gjson.Null {
			return true
		}
		if !a.grow(len(k.Raw) + len(v.Raw)) {
			return false
		}
		for i, key := range a.usageKeys {
			if string(key) == k.Raw {
				a.usageVals[i] = append(a.usageVals[i][:0], v.Raw...)
				return true
			}
		}
		a.usageKeys = append(a.usageKeys, []byte(k.Raw))
		a.usageVals = append(a.usageVals, []byte(v.Raw))
		return true
	})
}

// Result returns the rebuilt JSON response, or false when the stream did not complete properly
// or could not be rebuilt.
func (a *Assembler) Result() ([]byte, bool) {
	if a.failed || !a.done {
		return nil, false
	}
	var out []byte
	if a.endpoint.Spec().Dialect == wire.DialectMessages {
		out = a.anthropicResult()
	} else {
		out = a.openAIResult()
	}
	if out == nil || !gjson.ValidBytes(out) {
		return nil, false
	}
	return out, true
}

func (a *Assembler) openAIResult() []byte {
	if len(a.choices) == 0 {
		return nil
	}
	for _, c := range a.choices {
		if c == nil || c.finish == nil {
			return nil // a missing choice or one that never finished
		}
	}
	chat := a.endpoint.Spec().Dialect == wire.DialectChat
	out := make([]byte, 0, a.size+256)
	out = append(out, `{"id":`...)
	out = appendOr(out, a.id, `"cached"`)
	if chat {
		out = append(out, `,"object":"chat.completion","created":`...)
	} else {
		out = append(out, `,"object":"text_completion","created":`...)
	}
	out = appendOr(out, a.created, "0")
	out = append(out, `,"model":`...)
	out = appendOr(out, a.model, `""`)
	out = append(out, `,"choices":[`...)
	for i, c := range a.choices {
		if i > 0 {
			out = append(out, ',')
		}
		if chat {
			out = appendChatChoice(out, i, c)
		} else {
			out = append(out, `{"text":`...)
			out = wire.AppendString(out, bstr(c.content))
			out = append(out, `,"index":`...)
			out = strconv.AppendInt(out, int64(i), 10)
			out = append(out, `,"logprobs":null,"finish_reason":`...)
			out = append(out, c.finish...)
			out = append(out, '}')
		}
	}
	out = append(out, ']')
	if a.usage != nil {
		out = append(out, `,"usage":`...)
		out = append(out, a.usage...)
	}
	if a.fingerprint != nil {
		out = append(out, `,"system_fingerprint":`...)
		out = append(out, a.fingerprint...)
	}
	if a.tier != nil {
		out = append(out, `,"service_tier":`...)
		out = append(out, a.tier...)
	}
	return append(out, '}')
}

func appendChatChoice(out []byte, i int, c *asmChoice) []byte {
	out = append(out, `{"index":`...)
	out = strconv.AppendInt(out, int64(i), 10)
	out = append(out, `,"message":{"role":`...)
	out = appendOr(out, c.role, `"assistant"`)
	out = append(out, `,"content":`...)
	hasTools := len(c.tools) > 0 || c.fc != nil
	if len(c.content) == 0 && (hasTools || !c.hasContent) {
		out = append(out, "null"...)
	} else {
		out = wire.AppendString(out, bstr(c.content))
	}
	out = append(out, `,"refusal":`...)
	if c.hasRe {
		out = wire.AppendString(out, bstr(c.refusal))
	} else {
		out = append(out, "null"...)
	}
	if c.hasRC {
		out = append(out, `,"reasoning_content":`...)
		out = wire.AppendString(out, bstr(c.reasoningContent))
	}
	if c.hasReasoning {
		out = append(out, `,"reasoning":`...)
		out = wire.AppendString(out, bstr(c.reasoning))
	}
	if len(c.tools) > 0 {
		out = append(out, `,"tool_calls":[`...)
		n := 0
		for _, t := range c.tools {
			if t == nil {
				continue
			}
			if n > 0 {
				out = append(out, ',')
			}
			n++
			out = append(out, `{"id":`...)
			out = appendOr(out, t.id, `""`)
			out = append(out, `,"type":`...)
			out = appendOr(out, t.typ, `"function"`)
			out = append(out, `,"function":{"name":`...)
			out = wire.AppendString(out, bstr(t.name))
			out = append(out, `,"arguments":`...)
			out = wire.AppendString(out, bstr(t.args))
			out = append(out, "}}"...)
		}
		out = append(out, ']')
	}
	if c.fc != nil {
		out = append(out, `,"function_call":{"name":`...)
		out = wire.AppendString(out, bstr(c.fc.name))
		out = append(out, `,"arguments":`...)
		out = wire.AppendString(out, bstr(c.fc.args))
		out = append(out, '}')
	}
	out = append(out, `},"logprobs":`...)
	if c.hasLP {
		out = append(out, `{"content":`...)
		out = appendArrayOrNull(out, c.lpContent, c.hasLPContent)
		out = append(out, `,"refusal":`...)
		out = appendArrayOrNull(out, c.lpRefusal, c.hasLPRefusal)
		out = append(out, '}')
	} else {
		out = append(out, "null"...)
	}
	out = append(out, `,"finish_reason":`...)
	out = append(out, c.finish...)
	return append(out, '}')
}

func appendArrayOrNull(out, items []byte, has bool) []byte {
	if !has {
		return append(out, "null"...)
	}
	out = append(out, '[')
	out = append(out, items...)
	return append(out, ']')
}

func appendOr(out, raw []byte, def string) []byte {
	if raw == nil {
		return append(out, def...)
	}
	return append(out, raw...)
}

// bstr views b as a string for the duration of a call.
func bstr(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}

func (a *Assembler) anthropicResult() []byte {
	for _, b := range a.blocks {
		if in := bytes.TrimSpace(b.input); len(in) > 0 && !gjson.ValidBytes(in) {
			return nil // a tool input cut off or malformed
		}
	}
	msg := gjson.Parse(bstr(a.message))
	out := make([]byte, 0, a.size+256)
	out = append(out, '{')
	first := true
	member := func(key string) {
		if !first {
			out = append(out, ',')
		}
		first = false
		out = append(out, key...)
		out = append(out, ':')
	}
	seen := 0
	const (
		seenContent = 1 << iota
		seenStop
		seenSeq
		seenUsage
	)
	msg.ForEach(func(k, v gjson.Result) bool {
		member(k.Raw)
		switch k.Str {
		case "content":
			out = a.appendBlocks(out)
			seen |= seenContent
		case "stop_reason":
			out = appendOr(out, a.stopReason, v.Raw)
			seen |= seenStop
		case "stop_sequence":
			out = appendOr(out, a.stopSeq, v.Raw)
			seen |= seenSeq
		case "stop_details":
			out = appendOr(out, a.stopDet, v.Raw)
		case "usage":
			out = a.appendUsage(out)
			seen |= seenUsage
		default:
			out = append(out, v.Raw...)
		}
		return true
	})
	if seen&seenContent == 0 {
		member(`"content"`)
		out = a.appendBlocks(out)
	}
	if seen&seenStop == 0 {
		member(`"stop_reason"`)
		out = appendOr(out, a.stopReason, "null")
	}
	if seen&seenSeq == 0 {
		member(`"stop_sequence"`)
		out = appendOr(out, a.stopSeq, "null")
	}
	if seen&seenUsage == 0 && len(a.usageKeys) > 0 {
		member(`"usage"`)
		out = a.appendUsage(out)
	}
	return append(out, '}')
}

// appendUsage and appendBlocks write their comma-joined lists out, as every list here is: a
// helper taking the item writer as a closure would say less than the loop.
func (a *Assembler) appendUsage(out []byte) []byte {
	out = append(out, '{')
	for i, k := range a.usageKeys {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, k...)
		out = append(out, ':')
		out = append(out, a.usageVals[i]...)
	}
	return append(out, '}')
}

func (a *Assembler) appendBlocks(out []byte) []byte {
	out = append(out, '[')
	for i, b := range a.blocks {
		if i > 0 {
			out = append(out, ',')
		}
		out = b.appendJSON(out)
	}
	return append(out, ']')
}

// appendJSON writes the block: its start with the streamed fields filled in.
func (b *asmBlock) appendJSON(out []byte) []byte {
	start := gjson.Parse(bstr(b.start))
	out = append(out, '{')
	first := true
	var done uint8
	const (
		dText = 1 << iota
		dThinking
		dSig
		dInput
		dCites
	)
	member := func(key string) {
		if !first {
			out = append(out, ',')
		}
		first = false
		out = append(out, key...)
		out = append(out, ':')
	}
	str := func(prefix string, add []byte) {
		out = wire.AppendString(out, prefix+bstr(add))
	}
	start.ForEach(func(k, v gjson.Result) bool {
		member(k.Raw)
		switch {
		case k.Str == "text" && b.hasText:
			str(v.Str, b.text)
			done |= dText
		case k.Str == "thinking" && b.hasThinking:
			str(v.Str, b.thinking)
			done |= dThinking
		case k.Str == "signature" && b.hasSig:
			str(v.Str, b.sig)
			done |= dSig
		case k.Str == "input" && b.hasInput:
			out = appendInput(out, b.input)
			done |= dInput
		case k.Str == "citations" && b.hasCites:
			out = append(out, '[')
			out = append(out, b.cites...)
			out = append(out, ']')
			done |= dCites
		default:
			out = append(out, v.Raw...)
		}
		return true
	})
	if b.hasText && done&dText == 0 {
		member(`"text"`)
		str("", b.text)
	}
	if b.hasThinking && done&dThinking == 0 {
		member(`"thinking"`)
		str("", b.thinking)
	}
	if b.hasSig && done&dSig == 0 {
		member(`"signature"`)
		str("", b.sig)
	}
	if b.hasInput && done&dInput == 0 {
		member(`"input"`)
		out = appendInput(out, b.input)
	}
	if b.hasCites && done&dCites == 0 {
		member(`"citations"`)
		out = append(out, '[')
		out = append(out, b.cites...)
		out = append(out, ']')
	}
	return append(out, '}')
}

// appendInput writes accumulated tool input JSON; an empty input is {} and an invalid one makes
// the whole result invalid (Result then refuses it).
func appendInput(out, input []byte) []byte {
	if len(bytes.TrimSpace(input)) == 0 {
		return append(out, "{}"...)
	}
	return append(out, input...)
}
