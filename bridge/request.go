// Package bridge serves the OpenAI Responses API on model servers that speak only chat
// completions (TGI, older vLLM): a Responses request becomes a chat completions request, and the
// chat answer (JSON or stream) becomes a Response object or the Responses stream's typed events.
//
// The bridge is stateless: it keeps no conversation, so a request that asks for one
// (store: true, previous_response_id, an item_reference, background) is refused with a 400
// naming the param, and every bridged Response says store: false. Only function tools cross
// the bridge; the Responses API's hosted tools have no chat equivalent.
//
// Nothing here knows about HTTP or Caddy.
package bridge

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"unsafe"

	"github.com/tidwall/gjson"

	"github.com/caddyai/gateway/internal/wire"
)

// Request is what the answer's translation needs to know about the Responses request: the
// members a Response object echoes, as their raw JSON ("" when absent).
type Request struct {
	Model, Instructions, MaxOutputTokens, Tools, ToolChoice, Text, Temperature, TopP, Metadata string
	ParallelToolCalls, Reasoning, User                                                         string
}

// view returns b as a string without copying.
func view(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// unsupported is the 400 for a param the bridge cannot carry.
func unsupported(param, format string, args ...any) *wire.Error {
	e := wire.InvalidRequest(param, format, args...)
	e.Code = "unsupported_parameter"
	return e
}

// ToChat translates a Responses request body (one Validate accepted) into a chat completions
// body: instructions become a system message, input items messages (a function call an
// assistant message with tool_calls, consecutive calls joined; its output a tool message),
// function tools chat tools, tool_choice and text.format (response_format) their chat forms,
// max_output_tokens the field maxField names (max_tokens when empty), reasoning.effort
// reasoning_effort, and a stream asks for the usage chunk. Sampling params go as they are.
func ToChat(body []byte, maxField string) ([]byte, *Request, *wire.Error) {
	if maxField == "" {
		maxField = "max_tokens"
	}
	req := &Request{}
	out := make([]byte, 0, len(body)+64)
	out = append(out, '{')
	var msgs []byte
	var werr *wire.Error
	var inputRaw, instructions gjson.Result
	stream := false
	gjson.Parse(view(body)).ForEach(func(k, v gjson.Result) bool {
		null := v.Type == gjson.Null
		switch k.Str {
		case "model":
			req.Model = v.Raw
			out = appendMember(out, "model", v.Raw)
		case "input":
			inputRaw = v
		case "instructions":
			instructions = v
			req.Instructions = v.Raw
		case "max_output_tokens":
			req.MaxOutputTokens = v.Raw
			if !null {
				out = appendMember(out, maxField, v.Raw)
			}
		case "temperature", "top_p", "parallel_tool_calls", "user", "top_logprobs", "service_tier", "safety_identifier", "prompt_cache_key":
			switch k.Str {
			case "temperature":
				req.Temperature = v.Raw
			case "top_p":
				req.TopP = v.Raw
			case "parallel_tool_calls":
				req.ParallelToolCalls = v.Raw
			case "user":
				req.User = v.Raw
			}
			if !null {
				out = appendMember(out, k.Str, v.Raw)
				if k.Str == "top_logprobs" {
					out = appendMember(out, "logprobs", "true")
				}
			}
		case "stream":
			stream = v.Type == gjson.True
			out = appendMember(out, "stream", v.Raw)
		case "tools":
			req.Tools = v.Raw
			if !null {
				var tools []byte
				if tools, werr = chatTools(v); werr != nil {
					return false
				}
				out = appendMember(out, "tools", string(tools))
			}
		case "tool_choice":
			req.ToolChoice = v.Raw
			if !null {
				var tc string
				if tc, werr = chatToolChoice(v); werr != nil {
					return false
				}
				out = appendMember(out, "tool_choice", tc)
			}
		case "text":
			req.Text = v.Raw
			if f := v.Get("format"); f.IsObject() {
				var rf string
				if rf, werr = responseFormat(f); werr != nil {
					return false
				}
				if rf != "" {
					out = appendMember(out, "response_format", rf)
				}
			}
			if vb := v.Get("verbosity"); vb.Type == gjson.String {
				out = appendMember(out, "verbosity", vb.Raw)
			}
		case "reasoning":
			req.Reasoning = v.Raw
			if e := v.Get("effort"); e.Type == gjson.String {
				out = appendMember(out, "reasoning_effort", e.Raw)
			}
		case "metadata":
			req.Metadata = v.Raw
		case "store":
			if v.Type == gjson.True {
				werr = unsupported("store", "This model is served through a chat completions bridge, which keeps no responses: set 'store' to false or leave it out.")
			}
		case "previous_response_id", "conversation", "prompt":
			if !null {
				werr = unsupported(k.Str, "This model is served through a chat completions bridge, which keeps no conversation: '%s' is not supported; send the whole conversation in 'input'.", k.Str)
			}
		case "background":
			if v.Type == gjson.True {
				werr = unsupported("background", "This model is served through a chat completions bridge: background responses are not supported.")
			}
		case "truncation", "include", "stream_options", "max_tool_calls":
			// no chat equivalent; a disabled truncation is the chat default
		default:
			out = appendMember(out, k.Str, v.Raw) // unknown params pass, as for chat
		}
		return werr == nil
	})
	if werr != nil {
		return nil, nil, werr
	}
	if msgs, werr = chatMessages(instructions, inputRaw); werr != nil {
		return nil, nil, werr
	}
	out = appendMember(out, "messages", string(msgs))
	if stream {
		out = appendMember(out, "stream_options", `{"include_usage":true}`)
	}
	return append(out, '}'), req, nil
}

// appendMember appends "key":raw to an object being written.
func appendMember(out []byte, key, raw string) []byte {
	if len(out) > 1 {
		out = append(out, ',')
	}
	out = wire.AppendString(out, key)
	out = append(out, ':')
	return append(out, raw...)
}

// appendGiven appends, with appendMember, each of keys that obj gives (not null).
func appendGiven(out []byte, obj gjson.Result, keys ...string) []byte {
	for _, k := range keys {
		if v := obj.Get(k); v.Exists() && v.Type != gjson.Null {
			out = appendMember(out, k, v.Raw)
		}
	}
	return out
}

// chatMessages builds the messages array.
func chatMessages(instructions, input gjson.Result) ([]byte, *wire.Error) {
	b := []byte{'['}
	n := 0
	add := func(msg []byte) {
		if n > 0 {
			b = append(b, ',')
		}
		n++
		b = append(b, msg...)
	}
	if instructions.Type == gjson.String && instructions.Str != "" {
		add(textMessage("system", instructions.Raw))
	}
	switch {
	case input.Type == gjson.String:
		add(textMessage("user", input.Raw))
	case input.IsArray():
		var calls []byte // the tool_calls of consecutive function_call items
		flush := func() {
			if calls != nil {
				add(append(append([]byte(`{"role":"assistant","content":null,"tool_calls":`), append(calls, ']')...), '}'))
				calls = nil
			}
		}
		var werr *wire.Error
		i := 0
		input.ForEach(func(_, item gjson.Result) bool {
			typ := item.Get("type").Str
			if typ != "function_call" {
				flush()
			}
			switch typ {
			case "", "message":
				var msg []byte
				if msg, werr = chatMessage(i, item); werr == nil {
					add(msg)
				}
			case "function_call":
				call := []byte(`{"id":`)
				call = append(call, item.Get("call_id").Raw...)
				call = append(call, `,"type":"function","function":{"name":`...)
				call = append(call, item.Get("name").Raw...)
				call = append(call, `,"arguments":`...)
				call = append(call, item.Get("arguments").Raw...)
				call = append(call, "}}"...)
				if calls == nil {
					calls = []byte{'['}
				} else {
					calls = append(calls, ',')
				}
				calls = append(calls, call...)
			case "function_call_output":
				msg := []byte(`{"role":"tool","tool_call_id":`)
				msg = append(msg, item.Get("call_id").Raw...)
				msg = append(msg, `,"content":`...)
				if out := item.Get("output"); out.Type == gjson.String {
					msg = append(msg, out.Raw...)
				} else {
					msg = wire.AppendString(msg, partsText(out))
				}
				add(append(msg, '}'))
			case "reasoning":
				// a reasoning item of an earlier answer: chat servers take no such input
			default:
				werr = unsupported(fmt.Sprintf("input[%d].type", i),
					"This model is served through a chat completions bridge: input items of type '%s' are not supported.", wire.Shorten(typ, 40))
			}
			i++
			return werr == nil
		})
		if werr != nil {
			return nil, werr
		}
		flush()
	}
	if n == 0 {
		return nil, wire.InvalidRequest("input", "This model is served through a chat completions bridge, which needs at least one message: send 'input'.")
	}
	return append(b, ']'), nil
}

// textMessage is {"role":role,"content":<raw string>}.
func textMessage(role, raw string) []byte {
	b := append([]byte(`{"role":"`), role...)
	b = append(b, `","content":`...)
	b = append(b, raw...)
	return append(b, '}')
}

// chatMessage translates a message item.
func chatMessage(i int, item gjson.Result) ([]byte, *wire.Error) {
	role := item.Get("role").Str
	content := item.Get("content")
	if content.Type == gjson.String {
		return textMessage(role, content.Raw), nil
	}
	if role == "assistant" || role == "system" || role == "developer" {
		// chat takes text only from these roles
		return textMessage(role, string(wire.AppendString(nil, partsText(content)))), nil
	}
	parts := []byte{'['}
	var werr *wire.Error
	j := 0
	content.ForEach(func(_, p gjson.Result) bool {
		if j > 0 {
			parts = append(parts, ',')
		}
		switch p.Get("type").Str {
		case "input_text", "output_text":
			parts = append(parts, `{"type":"text","text":`...)
			parts = append(parts, p.Get("text").Raw...)
			parts = append(parts, '}')
		case "input_image":
			u := p.Get("image_url")
			if u.Type != gjson.String {
				werr = unsupported(fmt.Sprintf("input[%d].content[%d].file_id", i, j),
					"This model is served through a chat completions bridge: images must be given by image_url, not by file_id.")
				return false
			}
			parts = append(parts, `{"type":"image_url","image_url":{"url":`...)
			parts = append(parts, u.Raw...)
			if d := p.Get("detail"); d.Type == gjson.String {
				parts = append(parts, `,"detail":`...)
				parts = append(parts, d.Raw...)
			}
			parts = append(parts, "}}"...)
		case "input_file":
			parts = append(parts, `{"type":"file","file":{`...)
			m := 0
			for _, k := range [...]string{"file_id", "file_data", "filename"} {
				if v := p.Get(k); v.Type == gjson.String {
					if m > 0 {
						parts = append(parts, ',')
					}
					m++
					parts = wire.AppendString(parts, k)
					parts = append(parts, ':')
					parts = append(parts, v.Raw...)
				}
			}
			parts = append(parts, "}}"...)
		case "input_audio":
			parts = append(parts, `{"type":"input_audio","input_audio":`...)
			parts = append(parts, p.Get("input_audio").Raw...)
			parts = append(parts, '}')
		default:
			werr = unsupported(fmt.Sprintf("input[%d].content[%d].type", i, j),
				"This model is served through a chat completions bridge: content parts of type '%s' are not supported.", wire.Shorten(p.Get("type").Str, 40))
			return false
		}
		j++
		return true
	})
	if werr != nil {
		return nil, werr
	}
	if j == 0 { // no parts: chat wants at least one, and an empty list says the same as no text
		return textMessage(role, `""`), nil
	}
	b := append([]byte(`{"role":`), wire.AppendString(nil, role)...)
	b = append(b, `,"content":`...)
	b = append(b, parts...)
	return append(b, "]}"...), nil
}

// partsText concatenates the texts of content parts.
func partsText(parts gjson.Result) string {
	var sb strings.Builder
	parts.ForEach(func(_, p gjson.Result) bool {
		if t := p.Get("text"); t.Type == gjson.String {
			sb.WriteString(t.Str)
		} else if r := p.Get("refusal"); r.Type == gjson.String {
			sb.WriteString(r.Str)
		}
		return true
	})
	return sb.String()
}

// chatTools translates function tools; any other tool is refused.
func chatTools(tools gjson.Result) ([]byte, *wire.Error) {
	b := []byte{'['}
	var werr *wire.Error
	i := 0
	tools.ForEach(func(_, t gjson.Result) bool {
		if typ := t.Get("type").Str; typ != "function" {
			werr = unsupported(fmt.Sprintf("tools[%d].type", i),
				"This model is served through a chat completions bridge: only function tools are supported, not '%s'.", wire.Shorten(typ, 40))
			return false
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"type":"function","function":{"name":`...)
		b = append(b, t.Get("name").Raw...)
		b = appendGiven(b, t, "description", "parameters", "strict")
		b = append(b, "}}"...)
		i++
		return true
	})
	return append(b, ']'), werr
}

// chatToolChoice translates tool_choice.
func chatToolChoice(v gjson.Result) (string, *wire.Error) {
	if v.Type == gjson.String {
		return v.Raw, nil
	}
	if v.Get("type").Str != "function" {
		return "", unsupported("tool_choice.type", "This model is served through a chat completions bridge: tool_choice may name a function only.")
	}
	return `{"type":"function","function":{"name":` + v.Get("name").Raw + `}}`, nil
}

// responseFormat translates text.format into response_format ("" for plain text).
func responseFormat(f gjson.Result) (string, *wire.Error) {
	switch f.Get("type").Str {
	case "json_object":
		return `{"type":"json_object"}`, nil
	case "json_schema":
		b := []byte(`{"type":"json_schema","json_schema":{"name":`)
		b = append(b, f.Get("name").Raw...)
		b = appendGiven(b, f, "description", "schema", "strict")
		return string(append(b, "}}"...)), nil
	}
	return "", nil
}

// NewID returns a fresh id with the prefix ("resp_", "msg_", "fc_").
func NewID(prefix string) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}
