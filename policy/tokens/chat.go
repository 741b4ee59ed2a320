package tokens

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unsafe"

	"github.com/caddyai/gateway/internal/jsonscan"

	"github.com/tidwall/gjson"

	"github.com/caddyai/gateway/internal/wire"
)

// Fixed parts of the chat formula (see the package documentation).
const (
	// ImageTokens is the fixed allowance for one image part or block: OpenAI's
	// cost of a low-detail image (one 512px tile).
	ImageTokens = 85
	// AudioBytesPerToken is the allowance for audio input: one token per
	// this many bytes of audio data (base64-decoded). Audio models take 10
	// to 50 tokens per second (gpt-4o audio 10, Qwen2-Audio 25, Gemini 32),
	// and the leanest stream a client sends (8 kbit/s MP3) is 1,000 bytes a
	// second: 20 bytes a token at 50 tokens a second. Uncompressed WAV is
	// over-counted about 30 times.
	AudioBytesPerToken = 16
	// perMessage is the framing of one message (start, role separator, end).
	perMessage = 3
	// perName is the separator a "name" adds besides its own tokens.
	perName = 1
	// replyPrimer is the start of the assistant reply the template appends.
	replyPrimer = 3
	// perSystem is the framing of Anthropic's top-level system prompt.
	perSystem = 3
)

// ErrMalformed is wrapped by every error about a body that is not JSON or
// does not have the shape its API requires.
var ErrMalformed = errors.New("malformed request body")

// ChatCounter counts the prompt tokens of request bodies with the formula in
// the package documentation, memoising the count of each text in Memo (which
// may be nil) and, when Inflight is set, bounding the text counted exactly at
// once across every ChatCounter sharing it. It is safe for concurrent use.
// The body passed to its methods must not be modified while the call runs.
type ChatCounter struct {
	Counter
	Memo     *Memo
	Inflight *Inflight
	// Validated says the bodies passed in are known to be valid JSON (the gateway checks every
	// request body before counting it): the counter does not check them again. A body that is
	// not valid JSON then counts to an unspecified number, or fails as malformed.
	Validated bool
}

// NewChatCounter returns a ChatCounter counting with c and memoising in m
// (nil: no memo), without an Inflight bound.
func NewChatCounter(c Counter, m *Memo) *ChatCounter {
	return &ChatCounter{Counter: c, Memo: m}
}

// Count returns the prompt tokens of a body of dialect d, with the counter of that dialect. A
// dialect without one (images, bodies without a prompt) is an error.
func (c *ChatCounter) Count(d wire.Dialect, body []byte) (int, error) {
	n, _, err := c.run(context.Background(), d, body, unlimited)
	return n, err
}

// CountLimit counts the prompt tokens of a body of dialect d like Count, but
// stops as soon as the count is known to pass limit: first when LowerBound
// does (no BPE runs), then message by message, text by text and, inside a
// text, piece by piece. It returns:
//   - (Count(d, body), false, nil) when that is at most limit;
//   - (n, true, nil) otherwise, with limit < n <= Count(d, body): the
//     tokens counted when it stopped (or the lower bound), not the total;
//   - an error wrapping ErrMalformed for a malformed body (the shape is
//     checked in full first), or wrapping ctx.Err() when ctx is done while
//     counting or waiting for Inflight.
//
// The gateway passes the room left for the prompt: the context window minus
// the output allowance, or the tokens its limits still grant minus the
// output reservation, whichever is less. Once a body is known to pass it the
// rest of the body is not counted, so the refusal costs at most limit tokens
// of counting.
func (c *ChatCounter) CountLimit(ctx context.Context, d wire.Dialect, body []byte, limit int) (n int, exceeded bool, err error) {
	return c.run(ctx, d, body, limit)
}

// LowerBound returns a cheap lower bound of Count(d, body): the same formula
// with each text counted by the fewest tokens its bytes can make (see
// tokenBytes: for cl100k_base, one token per 128 bytes, 42 ASCII letters, 3
// digits or 48 bytes of non-ASCII characters, whichever gives more), so it
// runs no BPE and reads each text once. Fixed framing, images, files and
// audio count exactly as in Count. A counter whose token lengths are unknown
// (a Counter from outside this package) counts 0 per text. It returns an
// error wrapping ErrMalformed for a malformed body, as Count does.
func (c *ChatCounter) LowerBound(d wire.Dialect, body []byte) (int, error) {
	prefix, err := dialectPrefix(d)
	if err != nil {
		return 0, err
	}
	root, err := parseRoot(body, c.Validated)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", prefix, err)
	}
	w := c.newWalk(context.Background(), unlimited, true)
	if err := w.dialect(d, root); err != nil {
		return 0, fmt.Errorf("%s: %w", prefix, err)
	}
	return w.t.n, nil
}

// CountChat returns the prompt tokens of an OpenAI chat completions body.
func (c *ChatCounter) CountChat(body []byte) (int, error) { return c.Count(wire.DialectChat, body) }

// CountAnthropic returns the prompt tokens of an Anthropic messages body.
func (c *ChatCounter) CountAnthropic(body []byte) (int, error) {
	return c.Count(wire.DialectMessages, body)
}

// CountCompletion returns the prompt tokens of an OpenAI completions body:
// "prompt" as a string, an array of strings, a token array or an array of
// token arrays, plus "suffix".
func (c *ChatCounter) CountCompletion(body []byte) (int, error) {
	return c.Count(wire.DialectCompletion, body)
}

// CountEmbedding returns the prompt tokens of an OpenAI embeddings body:
// "input" as a string, an array of strings, a token array or an array of
// token arrays.
func (c *ChatCounter) CountEmbedding(body []byte) (int, error) {
	return c.Count(wire.DialectEmbedding, body)
}

// errStopped unwinds a walk whose tally stopped (limit passed or context
// done).
var errStopped = errors.New("counting stopped")

// run parses body once, checks the lower bound against limit (when there is
// one) and counts.
func (c *ChatCounter) run(ctx context.Context, d wire.Dialect, body []byte, limit int) (int, bool, error) {
	prefix, err := dialectPrefix(d)
	if err != nil {
		return 0, false, err
	}
	root, err := parseRoot(body, c.Validated)
	if err != nil {
		return 0, false, fmt.Errorf("%s: %w", prefix, err)
	}
	if limit != unlimited {
		lw := c.newWalk(ctx, unlimited, true)
		if err := lw.dialect(d, root); err != nil {
			return 0, false, fmt.Errorf("%s: %w", prefix, err)
		}
		if lw.t.n > limit {
			return lw.t.n, true, nil
		}
	}
	w := c.newWalk(ctx, limit, false)
	switch err := w.dialect(d, root); {
	case errors.Is(err, errStopped) && w.t.err != nil:
		return w.t.n, false, fmt.Errorf("%s: %w", prefix, w.t.err)
	case errors.Is(err, errStopped):
		return w.t.n, true, nil
	case err != nil:
		return 0, false, fmt.Errorf("%s: %w", prefix, err)
	}
	return w.t.n, false, nil
}

// dialectPrefix returns the prefix of the errors about a body of dialect d.
func dialectPrefix(d wire.Dialect) (string, error) {
	switch d {
	case wire.DialectChat:
		return "counting chat body", nil
	case wire.DialectCompletion:
		return "counting completion body", nil
	case wire.DialectEmbedding:
		return "counting embedding body", nil
	case wire.DialectMessages:
		return "counting messages body", nil
	case wire.DialectResponses:
		return "counting responses body", nil
	}
	return "", fmt.Errorf("counting body: dialect %d has no token counter", d)
}

// walk is one pass of the formula over a body: fixed framing and the count
// of each text go into t. With lower set, each text counts its lower bound
// instead (no BPE, no memo).
type walk struct {
	c     *ChatCounter
	t     *tally
	lower bool
	bytes tokenBytes
	tally tally // what t points to
}

// newWalk returns a walk adding into a new tally.
func (c *ChatCounter) newWalk(ctx context.Context, limit int, lower bool) *walk {
	w := &walk{c: c, lower: lower, tally: tally{ctx: ctx, limit: limit}}
	w.t = &w.tally
	if b, ok := c.Counter.(interface{ maxTokenBytes() tokenBytes }); ok {
		w.bytes = b.maxTokenBytes()
	}
	return w
}

// fixed adds n tokens of framing or allowance.
func (w *walk) fixed(n int) error {
	if !w.t.add(n) {
		return errStopped
	}
	return nil
}

// text adds the tokens of one text.
func (w *walk) text(s string) error {
	switch {
	case s == "":
		return nil
	case w.lower:
		return w.fixed(w.bytes.lower(statsOf(s)))
	}
	return w.c.countInto(w.t, s)
}

// texts adds the tokens of the parts in buf, counted as one text.
func (w *walk) texts(buf *textBuf) error {
	if w.lower {
		// The bytes of the parts, each class summed, never exceed those of
		// the concatenation.
		var st textStats
		for _, p := range buf.parts() {
			st.add(statsOf(p))
		}
		return w.fixed(w.bytes.lower(st))
	}
	return w.text(buf.String())
}

// countInto counts text into t with the memo and the Inflight bound.
func (c *ChatCounter) countInto(t *tally, text string) error {
	if !t.live() {
		return errStopped
	}
	if rc, ok := c.Counter.(RemoteCounter); ok {
		return c.countRemote(t, rc, text)
	}
	_, estimate := c.Counter.(estimateCounter)
	var key uint64
	if c.Memo != nil && !estimate {
		key = c.Memo.Key(c.Counter.Name(), text)
		if n, ok := c.Memo.Get(key); ok {
			return c.fixedInto(t, n)
		}
	}
	if !estimate && c.Inflight != nil {
		ok, err := c.Inflight.acquire(t.ctx, len(text))
		if err != nil {
			t.err = err
			return errStopped
		}
		if !ok {
			// Too much text is being counted: the Estimate bound, never
			// fewer tokens than the exact count, and not memoised.
			t.estimated++
			return c.fixedInto(t, Estimate().Count(text))
		}
		defer c.Inflight.release(len(text))
	}
	before := t.n
	if !countText(c.Counter, t, text) {
		return errStopped
	}
	if c.Memo != nil && !estimate {
		c.Memo.Put(key, t.n-before)
	}
	return nil
}

// fixedInto adds n to t.
func (c *ChatCounter) fixedInto(t *tally, n int) error {
	if !t.add(n) {
		return errStopped
	}
	return nil
}

// dialect walks a body of dialect d.
func (w *walk) dialect(d wire.Dialect, root gjson.Result) error {
	switch d {
	case wire.DialectChat:
		return w.chat(root)
	case wire.DialectMessages:
		return w.anthropic(root)
	case wire.DialectCompletion:
		f := fieldsOf(root, completionKeys)
		if err := w.inputs(f[0], "prompt"); err != nil {
			return err
		}
		return w.optionalString(f[1], "suffix")
	case wire.DialectEmbedding:
		return w.inputs(root.Get("input"), "input")
	case wire.DialectResponses:
		return w.responses(root)
	}
	return fmt.Errorf("counting body: dialect %d has no token counter", d)
}

// completionKeys are the top-level fields of a completions body the formula
// reads.
var completionKeys = []string{"prompt", "suffix"}

// chatKeys are the top-level fields of a chat body the formula reads.
var chatKeys = []string{"messages", "tools", "functions", "documents", "chat_template", "chat_template_kwargs", "response_format", "prediction"}

// chat walks an OpenAI chat completions body.
func (w *walk) chat(root gjson.Result) error {
	f := fieldsOf(root, chatKeys)
	if err := w.messages(f[0], false); err != nil {
		return err
	}
	for i, key := range chatKeys[1:4] {
		if err := w.rawOf(f[1+i], key, '['); err != nil {
			return err
		}
	}
	if err := w.optionalString(f[4], "chat_template"); err != nil {
		return err
	}
	if err := w.rawOf(f[5], "chat_template_kwargs", '{'); err != nil {
		return err
	}
	switch rf := f[6]; {
	case !rf.Exists() || rf.Type == gjson.Null:
	case rf.IsObject():
		if err := w.rawOf(rf.Get("json_schema"), "response_format.json_schema", '{'); err != nil {
			return err
		}
	default:
		return malformed("response_format", "an object")
	}
	switch pr := f[7]; {
	case !pr.Exists() || pr.Type == gjson.Null:
	case pr.IsObject():
		return w.content(pr.Get("content"), "prediction.content", -1, false)
	default:
		return malformed("prediction", "an object")
	}
	return nil
}

// anthropicKeys are the top-level fields of a messages body the formula
// reads.
var anthropicKeys = []string{"messages", "system", "tools"}

// anthropic walks an Anthropic messages body.
func (w *walk) anthropic(root gjson.Result) error {
	f := fieldsOf(root, anthropicKeys)
	if err := w.messages(f[0], true); err != nil {
		return err
	}
	switch sys := f[1]; {
	case !sys.Exists() || sys.Type == gjson.Null:
	case sys.Type == gjson.String:
		if err := w.text(sys.Str); err != nil {
			return err
		}
		if err := w.fixed(perSystem); err != nil {
			return err
		}
	case sys.IsArray():
		var buf textBuf
		if err := w.blocks(sys, "system", &buf, true); err != nil {
			return err
		}
		if err := w.texts(&buf); err != nil {
			return err
		}
		if err := w.fixed(perSystem); err != nil {
			return err
		}
	default:
		return malformed("system", "a string or an array of blocks")
	}
	return w.rawOf(f[2], "tools", '[')
}

// maxFields is the most top-level fields a formula reads.
const maxFields = 8

// fieldsOf reads root's values of keys (at most maxFields) in one pass over
// root (a Get per key would skip over a long prompt once for each); the
// first of repeated keys wins, as with gjson's Get.
func fieldsOf(root gjson.Result, keys []string) (out [maxFields]gjson.Result) {
	jsonscan.ForEach(root, func(k, v gjson.Result) bool {
		for i, key := range keys {
			if k.Str == key && !out[i].Exists() {
				out[i] = v
			}
		}
		return true
	})
	return out
}

// messages walks a body's "messages" plus the reply primer.
func (w *walk) messages(msgs gjson.Result, anthropic bool) error {
	if !msgs.IsArray() {
		return malformed("messages", "an array")
	}
	if err := w.fixed(replyPrimer); err != nil {
		return err
	}
	var err error
	i := 0
	jsonscan.ForEach(msgs, func(_, m gjson.Result) bool {
		err = w.memoMessage(m, i, anthropic)
		i++
		return err == nil
	})
	return err
}

// memoMessage walks one message through the memo: a message whose JSON was counted before (the
// earlier turns of a conversation, resent as they were) costs one lookup, not a walk of its
// fields and a lookup per text. What it adds is what message would: a message's count depends
// on its bytes, the counter and the API only. A message that fails, stops the count or had a
// text estimated is not memoised.
func (w *walk) memoMessage(m gjson.Result, i int, anthropic bool) error {
	c := w.c
	if _, estimate := c.Counter.(estimateCounter); w.lower || estimate || c.Memo == nil || !m.IsObject() {
		return w.message(m, i, anthropic)
	}
	key := c.Memo.MessageKey(c.Counter.Name(), anthropic, m.Raw)
	if n, ok := c.Memo.Get(key); ok {
		if !w.t.live() {
			return errStopped
		}
		return w.fixed(n)
	}
	before, estimated := w.t.n, w.t.estimated
	if err := w.message(m, i, anthropic); err != nil {
		return err
	}
	if w.t.estimated == estimated {
		c.Memo.Put(key, w.t.n-before)
	}
	return nil
}

// message walks one message of either API.
func (w *walk) message(m gjson.Result, i int, anthropic bool) error {
	if !m.IsObject() {
		return malformed(fmt.Sprintf("messages[%d]", i), "an object")
	}
	f := messageFields(m)
	if f.role.Type != gjson.String {
		return malformed(fmt.Sprintf("messages[%d].role", i), "a string")
	}
	if err := w.fixed(perMessage); err != nil {
		return err
	}
	if err := w.text(f.role.Str); err != nil {
		return err
	}
	if err := w.content(f.content, "messages[].content", i, anthropic); err != nil {
		return err
	}
	switch name := f.name; {
	case !name.Exists() || name.Type == gjson.Null:
	case name.Type == gjson.String:
		if err := w.text(name.Str); err != nil {
			return err
		}
		if err := w.fixed(perName); err != nil {
			return err
		}
	default:
		return malformed(fmt.Sprintf("messages[%d].name", i), "a string")
	}
	if anthropic {
		return nil
	}
	switch r := f.refusal; {
	case !r.Exists() || r.Type == gjson.Null:
	case r.Type == gjson.String:
		if err := w.text(r.Str); err != nil {
			return err
		}
	default:
		return malformed(fmt.Sprintf("messages[%d].refusal", i), "a string")
	}
	switch calls := f.toolCalls; {
	case !calls.Exists() || calls.Type == gjson.Null:
	case calls.IsArray():
		var err error
		jsonscan.ForEach(calls, func(_, call gjson.Result) bool {
			err = w.function(call.Get("function"), "messages[].tool_calls[].function")
			return err == nil
		})
		if err != nil {
			return err
		}
	default:
		return malformed(fmt.Sprintf("messages[%d].tool_calls", i), "an array")
	}
	if fc := f.functionCall; fc.Exists() && fc.Type != gjson.Null {
		return w.function(fc, "messages[].function_call")
	}
	return nil
}

// content walks a message's (or a prediction's) content: a string, or an
// array of parts or blocks whose texts count as one text. where names it in
// errors, with the message's index i in place of "[]" when i >= 0.
func (w *walk) content(content gjson.Result, where string, i int, anthropic bool) error {
	switch {
	case !content.Exists() || content.Type == gjson.Null:
		return nil
	case content.Type == gjson.String:
		return w.text(content.Str)
	case content.IsArray():
		var buf textBuf
		if err := w.blocks(content, where, &buf, anthropic); err != nil {
			return err
		}
		return w.texts(&buf)
	}
	if i >= 0 {
		where = strings.Replace(where, "[]", fmt.Sprintf("[%d]", i), 1)
	}
	return malformed(where, "a string or an array")
}

// msgFields are the fields of a message the formula reads.
type msgFields struct {
	role, content, name, refusal, toolCalls, functionCall gjson.Result
}

// messageFields reads the fields of m in one pass; the first of repeated keys
// wins, as with gjson's Get.
func messageFields(m gjson.Result) msgFields {
	var f msgFields
	jsonscan.ForEach(m, func(k, v gjson.Result) bool {
		var dst *gjson.Result
		switch k.Str {
		case "role":
			dst = &f.role
		case "content":
			dst = &f.content
		case "name":
			dst = &f.name
		case "refusal":
			dst = &f.refusal
		case "tool_calls":
			dst = &f.toolCalls
		case "function_call":
			dst = &f.functionCall
		default:
			return true
		}
		if !dst.Exists() {
			*dst = v
		}
		return true
	})
	return f
}

// function walks a tool call's function: count(name) + count(arguments).
func (w *walk) function(f gjson.Result, where string) error {
	if !f.IsObject() {
		return malformed(where, "an object")
	}
	for _, key := range [...]string{"name", "arguments"} {
		switch v := f.Get(key); {
		case !v.Exists() || v.Type == gjson.Null:
		case v.Type == gjson.String:
			if err := w.text(v.Str); err != nil {
				return err
			}
		default:
			return malformed(where+"."+key, "a string")
		}
	}
	return nil
}

// blocks walks an array of content parts or blocks: text (and refusal)
// parts go to buf (to be counted once, concatenated), images, files and
// audio add their allowances, and in Anthropic bodies tool_use inputs,
// tool_result contents and documents are counted on their own.
func (w *walk) blocks(arr gjson.Result, where string, buf *textBuf, anthropic bool) error {
	var err error
	jsonscan.ForEach(arr, func(_, b gjson.Result) bool {
		if !b.IsObject() {
			err = malformed(where+"[]", "an object")
			return false
		}
		err = w.block(b, where, buf, anthropic)
		return err == nil
	})
	return err
}

// block walks one content part or block.
func (w *walk) block(b gjson.Result, where string, buf *textBuf, anthropic bool) error {
	typ := b.Get("type")
	switch typ.Raw {
	case `"text"`:
		t := b.Get("text")
		if t.Type != gjson.String {
			return malformed(where+"[].text", "a string")
		}
		buf.Add(t.Str)
	case `"refusal"`:
		if anthropic {
			break
		}
		t := b.Get("refusal")
		if t.Type != gjson.String {
			return malformed(where+"[].refusal", "a string")
		}
		buf.Add(t.Str)
	case `"image_url"`, `"input_image"`, `"image"`:
		return w.fixed(ImageTokens)
	case `"file"`:
		if !anthropic {
			return w.fixed(fileTokens(b.Get("file.file_data").Str))
		}
	case `"input_audio"`:
		if !anthropic {
			return w.fixed(audioTokens(b.Get("input_audio.data").Str))
		}
	case `"tool_use"`:
		if anthropic {
			if in := b.Get("input"); in.Exists() {
				return w.text(in.Raw)
			}
		}
	case `"tool_result"`:
		if anthropic {
			return w.nested(b.Get("content"), where+"[].content")
		}
	case `"document"`:
		if anthropic {
			return w.document(b, where+"[]")
		}
	default:
		if typ.Type != gjson.String {
			return malformed(where+"[].type", "a string")
		}
	}
	return nil
}

// nested walks a tool_result's (or a document's) content: a string, or
// blocks counted like a message's content.
func (w *walk) nested(rc gjson.Result, where string) error {
	switch {
	case !rc.Exists() || rc.Type == gjson.Null:
		return nil
	case rc.Type == gjson.String:
		return w.text(rc.Str)
	case rc.IsArray():
		var inner textBuf
		if err := w.blocks(rc, where, &inner, true); err != nil {
			return err
		}
		return w.texts(&inner)
	}
	return malformed(where, "a string or an array")
}

// document walks an Anthropic document block: its title and context, and
// its source: plain text counts as text, a content source as nested blocks,
// base64 data (a PDF) as inline file data; a URL or file id adds nothing
// (the gateway cannot see it).
func (w *walk) document(b gjson.Result, where string) error {
	for _, key := range [...]string{"title", "context"} {
		if err := w.optionalString(b.Get(key), key); err != nil {
			return err
		}
	}
	src := b.Get("source")
	switch src.Get("type").Str {
	case "text":
		return w.text(src.Get("data").Str)
	case "base64":
		return w.fixed(fileTokens(src.Get("data").Str))
	case "content":
		return w.nested(src.Get("content"), where+".source.content")
	}
	return nil
}

// optionalString counts v (the value of key) when it is a string.
func (w *walk) optionalString(v gjson.Result, key string) error {
	switch {
	case !v.Exists() || v.Type == gjson.Null:
		return nil
	case v.Type == gjson.String:
		return w.text(v.Str)
	}
	return malformed(key, "a string")
}

// rawOf counts the raw JSON of v when it is an array (open '[') or an
// object (open '{').
func (w *walk) rawOf(v gjson.Result, key string, open byte) error {
	switch {
	case !v.Exists() || v.Type == gjson.Null:
		return nil
	case open == '[' && v.IsArray(), open == '{' && v.IsObject():
		return w.text(v.Raw)
	case open == '[':
		return malformed(key, "an array")
	}
	return malformed(key, "an object")
}

// inputs walks a completions prompt or an embeddings input, v.
func (w *walk) inputs(v gjson.Result, key string) error {
	switch {
	case v.Type == gjson.String:
		return w.text(v.Str)
	case !v.IsArray():
		return malformed(key, "a string or an array")
	}
	var err error
	jsonscan.ForEach(v, func(_, e gjson.Result) bool {
		switch {
		case e.Type == gjson.String:
			err = w.text(e.Str)
		case isTokenID(e):
			err = w.fixed(1)
		case e.IsArray():
			jsonscan.ForEach(e, func(_, id gjson.Result) bool {
				if !isTokenID(id) {
					err = malformed(key+"[][]", "a token id")
					return false
				}
				err = w.fixed(1)
				return err == nil
			})
		default:
			err = malformed(key+"[]", "a string, a token id or a token array")
		}
		return err == nil
	})
	return err
}

// fileTokens is the allowance for inline file data (a base64 PDF or other
// document): its Estimate bytes, one token per character of the encoding.
// OpenAI puts a page's extracted text and an image of the page in the
// context (about 1,500 tokens a page); a dense PDF page compresses to 2 or
// 3 KB, so a token per encoded byte is of the order of a dense document and
// far above a sparse one. A file sent by id adds nothing: the gateway cannot
// see it.
func fileTokens(data string) int { return estimateBytes(data) }

// audioTokens is the allowance for base64 audio data: one token per
// AudioBytesPerToken decoded bytes.
func audioTokens(data string) int {
	n := len(data) / 4 * 3
	return (n + AudioBytesPerToken - 1) / AudioBytesPerToken
}

// isTokenID reports whether v is a non-negative integer.
func isTokenID(v gjson.Result) bool {
	if v.Type != gjson.Number || v.Num < 0 {
		return false
	}
	for i := 0; i < len(v.Raw); i++ {
		if b := v.Raw[i]; b < '0' || b > '9' {
			return false
		}
	}
	return true
}

// parseRoot checks that body is a JSON object and parses it without copying:
// the results alias body, which must not change while they are in use.
func parseRoot(body []byte, validated bool) (gjson.Result, error) {
	s := unsafe.String(unsafe.SliceData(body), len(body))
	if !validated && !gjson.Valid(s) {
		return gjson.Result{}, fmt.Errorf("parsing JSON: %w", ErrMalformed)
	}
	root := gjson.Parse(s)
	if !root.IsObject() {
		return gjson.Result{}, malformed("body", "an object")
	}
	return root, nil
}

// malformed returns the error for a field that does not have the wanted shape.
func malformed(where, want string) error {
	return fmt.Errorf("reading %s: want %s: %w", where, want, ErrMalformed)
}

// textBuf collects the text parts of one content array, counted as one
// text. The common single part is kept as is.
type textBuf struct {
	first string
	rest  []string
	n     int
}

// Add appends s.
func (t *textBuf) Add(s string) {
	if t.n == 0 {
		t.first = s
	} else {
		t.rest = append(t.rest, s)
	}
	t.n++
}

// parts returns the parts in order.
func (t *textBuf) parts() []string {
	if t.n == 0 {
		return nil
	}
	return append([]string{t.first}, t.rest...)
}

// String returns the concatenation.
func (t *textBuf) String() string {
	if t.n <= 1 {
		return t.first
	}
	size := len(t.first)
	for _, p := range t.rest {
		size += len(p)
	}
	var b strings.Builder
	b.Grow(size)
	b.WriteString(t.first)
	for _, p := range t.rest {
		b.WriteString(p)
	}
	return b.String()
}
