package tokens

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/tidwall/gjson"

	"github.com/caddyai/gateway/internal/wire"
)

// Fixed parts of the chat formula (see the package documentation).
const (
	// ImageTokens is the fixed allowance for one image part or block: OpenAI's
	// cost of a low-detail image (one 512px tile).
	ImageTokens = 85
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
// may be nil). It is safe for concurrent use. The body passed to its methods
// must not be modified while the call runs.
type ChatCounter struct {
	Counter
	Memo *Memo
}

// NewChatCounter returns a ChatCounter counting with c and memoising in m
// (nil: no memo).
func NewChatCounter(c Counter, m *Memo) *ChatCounter {
	return &ChatCounter{Counter: c, Memo: m}
}

// Count returns the prompt tokens of a body of dialect d, with the counter of that dialect. A
// dialect without one (images, bodies without a prompt) is an error.
func (c *ChatCounter) Count(d wire.Dialect, body []byte) (int, error) {
	switch d {
	case wire.DialectChat:
		return c.CountChat(body)
	case wire.DialectCompletion:
		return c.CountCompletion(body)
	case wire.DialectEmbedding:
		return c.CountEmbedding(body)
	case wire.DialectMessages:
		return c.CountAnthropic(body)
	}
	return 0, fmt.Errorf("counting body: dialect %d has no token counter", d)
}

// CountChat returns the prompt tokens of an OpenAI chat completions body.
func (c *ChatCounter) CountChat(body []byte) (int, error) {
	root, err := parseRoot(body)
	if err != nil {
		return 0, fmt.Errorf("counting chat body: %w", err)
	}
	total, err := c.messages(root, false)
	if err != nil {
		return 0, fmt.Errorf("counting chat body: %w", err)
	}
	for _, key := range [...]string{"tools", "functions"} {
		n, err := c.rawArray(root, key)
		if err != nil {
			return 0, fmt.Errorf("counting chat body: %w", err)
		}
		total += n
	}
	return total, nil
}

// CountAnthropic returns the prompt tokens of an Anthropic messages body.
func (c *ChatCounter) CountAnthropic(body []byte) (int, error) {
	root, err := parseRoot(body)
	if err != nil {
		return 0, fmt.Errorf("counting messages body: %w", err)
	}
	total, err := c.messages(root, true)
	if err != nil {
		return 0, fmt.Errorf("counting messages body: %w", err)
	}
	switch sys := root.Get("system"); {
	case !sys.Exists() || sys.Type == gjson.Null:
	case sys.Type == gjson.String:
		total += c.count(sys.Str) + perSystem
	case sys.IsArray():
		var buf textBuf
		n, err := c.blocks(sys, "system", &buf, true)
		if err != nil {
			return 0, fmt.Errorf("counting messages body: %w", err)
		}
		total += n + c.count(buf.String()) + perSystem
	default:
		return 0, fmt.Errorf("counting messages body: %w", malformed("system", "a string or an array of blocks"))
	}
	n, err := c.rawArray(root, "tools")
	if err != nil {
		return 0, fmt.Errorf("counting messages body: %w", err)
	}
	return total + n, nil
}

// CountCompletion returns the prompt tokens of an OpenAI completions body:
// "prompt" as a string, an array of strings, a token array or an array of
// token arrays.
func (c *ChatCounter) CountCompletion(body []byte) (int, error) {
	n, err := c.inputs(body, "prompt")
	if err != nil {
		return 0, fmt.Errorf("counting completion body: %w", err)
	}
	return n, nil
}

// CountEmbedding returns the prompt tokens of an OpenAI embeddings body:
// "input" as a string, an array of strings, a token array or an array of
// token arrays.
func (c *ChatCounter) CountEmbedding(body []byte) (int, error) {
	n, err := c.inputs(body, "input")
	if err != nil {
		return 0, fmt.Errorf("counting embedding body: %w", err)
	}
	return n, nil
}

// count returns the memoised count of text.
func (c *ChatCounter) count(text string) int {
	if text == "" {
		return 0
	}
	if _, ok := c.Counter.(estimateCounter); ok || c.Memo == nil {
		return c.Counter.Count(text)
	}
	return c.Memo.Count(c.Counter, text)
}

// messages sums the formula over root's "messages" plus the reply primer.
func (c *ChatCounter) messages(root gjson.Result, anthropic bool) (int, error) {
	msgs := root.Get("messages")
	if !msgs.IsArray() {
		return 0, malformed("messages", "an array")
	}
	total := replyPrimer
	var err error
	i := 0
	msgs.ForEach(func(_, m gjson.Result) bool {
		var n int
		n, err = c.message(m, i, anthropic)
		total += n
		i++
		return err == nil
	})
	return total, err
}

// message counts one message of either API.
func (c *ChatCounter) message(m gjson.Result, i int, anthropic bool) (int, error) {
	if !m.IsObject() {
		return 0, malformed(fmt.Sprintf("messages[%d]", i), "an object")
	}
	f := messageFields(m)
	role := f.role
	if role.Type != gjson.String {
		return 0, malformed(fmt.Sprintf("messages[%d].role", i), "a string")
	}
	total := perMessage + c.count(role.Str)

	switch content := f.content; {
	case !content.Exists() || content.Type == gjson.Null:
	case content.Type == gjson.String:
		total += c.count(content.Str)
	case content.IsArray():
		var buf textBuf
		n, err := c.blocks(content, "messages[].content", &buf, anthropic)
		if err != nil {
			return 0, err
		}
		total += n + c.count(buf.String())
	default:
		return 0, malformed(fmt.Sprintf("messages[%d].content", i), "a string or an array")
	}

	switch name := f.name; {
	case !name.Exists() || name.Type == gjson.Null:
	case name.Type == gjson.String:
		total += c.count(name.Str) + perName
	default:
		return 0, malformed(fmt.Sprintf("messages[%d].name", i), "a string")
	}
	if anthropic {
		return total, nil
	}

	switch calls := f.toolCalls; {
	case !calls.Exists() || calls.Type == gjson.Null:
	case calls.IsArray():
		var err error
		calls.ForEach(func(_, call gjson.Result) bool {
			var n int
			n, err = c.function(call.Get("function"), "messages[].tool_calls[].function")
			total += n
			return err == nil
		})
		if err != nil {
			return 0, err
		}
	default:
		return 0, malformed(fmt.Sprintf("messages[%d].tool_calls", i), "an array")
	}
	if fc := f.functionCall; fc.Exists() && fc.Type != gjson.Null {
		n, err := c.function(fc, "messages[].function_call")
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// msgFields are the fields of a message the formula reads.
type msgFields struct {
	role, content, name, toolCalls, functionCall gjson.Result
}

// messageFields reads the fields of m in one pass; the first of repeated keys
// wins, as with gjson's Get.
func messageFields(m gjson.Result) msgFields {
	var f msgFields
	m.ForEach(func(k, v gjson.Result) bool {
		var dst *gjson.Result
		switch k.Str {
		case "role":
			dst = &f.role
		case "content":
			dst = &f.content
		case "name":
			dst = &f.name
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

// function counts a tool call's function: count(name) + count(arguments).
func (c *ChatCounter) function(f gjson.Result, where string) (int, error) {
	if !f.IsObject() {
		return 0, malformed(where, "an object")
	}
	total := 0
	for _, key := range [...]string{"name", "arguments"} {
		switch v := f.Get(key); {
		case !v.Exists() || v.Type == gjson.Null:
		case v.Type == gjson.String:
			total += c.count(v.Str)
		default:
			return 0, malformed(where+"."+key, "a string")
		}
	}
	return total, nil
}

// blocks walks an array of content parts or blocks: text goes to buf (to be
// counted once, concatenated), images add ImageTokens, and in Anthropic
// bodies tool_use inputs and tool_result contents are counted on their own.
// It returns the tokens counted besides buf.
func (c *ChatCounter) blocks(arr gjson.Result, where string, buf *textBuf, anthropic bool) (int, error) {
	total := 0
	var err error
	arr.ForEach(func(_, b gjson.Result) bool {
		if !b.IsObject() {
			err = malformed(where+"[]", "an object")
			return false
		}
		typ := b.Get("type")
		switch typ.Raw {
		case `"text"`:
			t := b.Get("text")
			if t.Type != gjson.String {
				err = malformed(where+"[].text", "a string")
				return false
			}
			buf.Add(t.Str)
		case `"image_url"`, `"input_image"`, `"image"`:
			total += ImageTokens
		case `"tool_use"`:
			if anthropic {
				if in := b.Get("input"); in.Exists() {
					total += c.count(in.Raw)
				}
			}
		case `"tool_result"`:
			if !anthropic {
				break
			}
			switch rc := b.Get("content"); {
			case !rc.Exists() || rc.Type == gjson.Null:
			case rc.Type == gjson.String:
				total += c.count(rc.Str)
			case rc.IsArray():
				var inner textBuf
				var n int
				n, err = c.blocks(rc, where+"[].content", &inner, anthropic)
				total += n + c.count(inner.String())
			default:
				err = malformed(where+"[].content", "a string or an array")
			}
		default:
			if typ.Type != gjson.String {
				err = malformed(where+"[].type", "a string")
			}
		}
		return err == nil
	})
	return total, err
}

// rawArray counts the raw JSON of root[key] when it is an array.
func (c *ChatCounter) rawArray(root gjson.Result, key string) (int, error) {
	switch v := root.Get(key); {
	case !v.Exists() || v.Type == gjson.Null:
		return 0, nil
	case v.IsArray():
		return c.count(v.Raw), nil
	default:
		return 0, malformed(key, "an array")
	}
}

// inputs counts a completions prompt or an embeddings input.
func (c *ChatCounter) inputs(body []byte, key string) (int, error) {
	root, err := parseRoot(body)
	if err != nil {
		return 0, err
	}
	v := root.Get(key)
	switch {
	case v.Type == gjson.String:
		return c.count(v.Str), nil
	case !v.IsArray():
		return 0, malformed(key, "a string or an array")
	}
	total := 0
	v.ForEach(func(_, e gjson.Result) bool {
		switch {
		case e.Type == gjson.String:
			total += c.count(e.Str)
		case isTokenID(e):
			total++
		case e.IsArray():
			e.ForEach(func(_, id gjson.Result) bool {
				if !isTokenID(id) {
					err = malformed(key+"[][]", "a token id")
					return false
				}
				total++
				return true
			})
		default:
			err = malformed(key+"[]", "a string, a token id or a token array")
		}
		return err == nil
	})
	if err != nil {
		return 0, err
	}
	return total, nil
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
func parseRoot(body []byte) (gjson.Result, error) {
	s := unsafe.String(unsafe.SliceData(body), len(body))
	if !gjson.Valid(s) {
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

// textBuf concatenates the text parts of one content array. A single part is
// kept as is, so the common case copies nothing.
type textBuf struct {
	first string
	buf   []byte
	n     int
}

// Add appends s.
func (t *textBuf) Add(s string) {
	switch t.n {
	case 0:
		t.first = s
	case 1:
		t.buf = append(append(make([]byte, 0, len(t.first)+len(s)), t.first...), s...)
	default:
		t.buf = append(t.buf, s...)
	}
	t.n++
}

// String returns the concatenation. The result aliases the buffer, which is
// never written again.
func (t *textBuf) String() string {
	if t.n <= 1 {
		return t.first
	}
	return unsafe.String(unsafe.SliceData(t.buf), len(t.buf))
}
