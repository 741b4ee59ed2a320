package bridge

import (
	"bytes"
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/caddyai/gateway/internal/wiretest"
	"github.com/caddyai/gateway/policy"
)

func TestToChat(t *testing.T) {
	body := `{"model":"m","instructions":"Be brief.","input":[{"role":"user","content":[{"type":"input_text","text":"Hi"},{"type":"input_image","image_url":"https://x/i.png","detail":"low"}]},` +
		`{"type":"message","role":"assistant","content":[{"type":"output_text","text":"Calling."}]},` +
		`{"type":"function_call","call_id":"c1","name":"f","arguments":"{}"},{"type":"function_call","call_id":"c2","name":"g","arguments":"{\"a\":1}"},` +
		`{"type":"function_call_output","call_id":"c1","output":"one"},{"type":"function_call_output","call_id":"c2","output":[{"type":"input_text","text":"two"}]}],` +
		`"max_output_tokens":50,"temperature":0.5,"stream":true,"store":false,"tools":[{"type":"function","name":"f","parameters":{"type":"object"},"strict":true}],` +
		`"tool_choice":{"type":"function","name":"f"},"text":{"format":{"type":"json_schema","name":"s","schema":{"type":"object"}}},"reasoning":{"effort":"low"},"vendor_x":1}`
	out, req, werr := ToChat([]byte(body), "max_completion_tokens")
	if werr != nil {
		t.Fatal(werr)
	}
	js := string(out)
	wiretest.Validate(t, "CreateChatCompletionRequest", out)
	for path, want := range map[string]string{
		"messages.0":                  `{"role":"system","content":"Be brief."}`,
		"messages.1.content.1":        `{"type":"image_url","image_url":{"url":"https://x/i.png","detail":"low"}}`,
		"messages.2":                  `{"role":"assistant","content":"Calling."}`,
		"messages.3.tool_calls.#":     `2`,
		"messages.3.tool_calls.1":     `{"id":"c2","type":"function","function":{"name":"g","arguments":"{\"a\":1}"}}`,
		"messages.4":                  `{"role":"tool","tool_call_id":"c1","content":"one"}`,
		"messages.5.content":          `"two"`,
		"max_completion_tokens":       `50`,
		"stream_options":              `{"include_usage":true}`,
		"tools.0":                     `{"type":"function","function":{"name":"f","parameters":{"type":"object"},"strict":true}}`,
		"tool_choice":                 `{"type":"function","function":{"name":"f"}}`,
		"response_format.json_schema": `{"name":"s","schema":{"type":"object"}}`,
		"reasoning_effort":            `"low"`,
		"vendor_x":                    `1`,
	} {
		if got := gjson.Get(js, path).Raw; got != want {
			t.Errorf("%s = %s, want %s", path, got, want)
		}
	}
	if gjson.Get(js, "store").Exists() || gjson.Get(js, "input").Exists() || gjson.Get(js, "max_output_tokens").Exists() || req.MaxOutputTokens != "50" {
		t.Errorf("chat body %s", js)
	}
	for _, tc := range []struct{ body, param string }{
		{`{"model":"m","input":"x","store":true}`, "store"},
		{`{"model":"m","input":"x","previous_response_id":"resp_1"}`, "previous_response_id"},
		{`{"model":"m","input":"x","background":true}`, "background"},
		{`{"model":"m","input":"x","tools":[{"type":"function","name":"f"},{"type":"file_search"}]}`, "tools[1].type"},
		{`{"model":"m","input":[{"type":"item_reference","id":"x"}]}`, "input[0].type"},
		{`{"model":"m","input":[{"role":"user","content":[{"type":"input_image","file_id":"f"}]}]}`, "input[0].content[0].file_id"},
		{`{"model":"m"}`, "input"},
	} {
		if _, _, werr := ToChat([]byte(tc.body), ""); werr == nil || werr.Param != tc.param || werr.Status != 400 {
			t.Errorf("%s: %+v", tc.body, werr)
		}
	}
}

var req = &Request{Model: `"m"`, Tools: `[{"type":"function","name":"get","parameters":{"type":"object"}}]`, MaxOutputTokens: "9"}

func TestResponse(t *testing.T) {
	for _, chat := range []string{
		`{"id":"c","object":"chat.completion","created":5,"model":"up","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9,"prompt_tokens_details":{"cached_tokens":3}}}`,
		`{"id":"c","object":"chat.completion","created":5,"model":"up","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get","arguments":"{}"}}]},"finish_reason":"tool_calls"}]}`,
		`{"id":"c","object":"chat.completion","created":5,"model":"up","choices":[{"index":0,"message":{"role":"assistant","content":"Hel"},"finish_reason":"length"}]}`,
	} {
		out, ok := Response([]byte(chat), req)
		if !ok {
			t.Fatalf("not translated: %s", chat)
		}
		wiretest.Validate(t, "Response", out)
		js := string(out)
		switch {
		case strings.Contains(chat, "Hello"):
			if gjson.Get(js, "output.0.content.0.text").Str != "Hello" || gjson.Get(js, "usage.input_tokens").Int() != 7 ||
				gjson.Get(js, "usage.input_tokens_details.cached_tokens").Int() != 3 || gjson.Get(js, "status").Str != "completed" {
				t.Errorf("%s", js)
			}
			if u, ok := wire.ExtractUsage(wire.OpenAI, out); !ok || u.PromptTokens != 7 || u.CompletionTokens != 2 || u.CachedTokens != 3 {
				t.Errorf("usage read back %+v", u)
			}
		case strings.Contains(chat, "tool_calls"):
			if gjson.Get(js, "output.0.type").Str != "function_call" || gjson.Get(js, "output.0.call_id").Str != "call_1" {
				t.Errorf("%s", js)
			}
		default:
			if gjson.Get(js, "status").Str != "incomplete" || gjson.Get(js, "incomplete_details.reason").Str != "max_output_tokens" {
				t.Errorf("%s", js)
			}
		}
	}
	if _, ok := Response([]byte(`{"error":{}}`), req); ok {
		t.Error("translated a body without choices")
	}
}

// chatStream is a chat stream with text, a tool call and the usage chunk.
var chatStream = []string{
	`{"id":"c","object":"chat.completion.chunk","created":5,"model":"up","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}`,
	`{"id":"c","object":"chat.completion.chunk","created":5,"model":"up","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}`,
	`{"id":"c","object":"chat.completion.chunk","created":5,"model":"up","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}]}`,
	`{"id":"c","object":"chat.completion.chunk","created":5,"model":"up","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get","arguments":""}}]},"finish_reason":null}]}`,
	`{"id":"c","object":"chat.completion.chunk","created":5,"model":"up","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":"}}]},"finish_reason":null}]}`,
	`{"id":"c","object":"chat.completion.chunk","created":5,"model":"up","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]},"finish_reason":null}]}`,
	`{"id":"c","object":"chat.completion.chunk","created":5,"model":"up","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}`,
	`{"id":"c","object":"chat.completion.chunk","created":5,"model":"up","choices":[],"usage":{"prompt_tokens":4,"completion_tokens":6,"total_tokens":10}}`,
	`[DONE]`,
}

// events splits typed SSE into data payloads.
func events(b []byte) []string {
	var out []string
	for _, ev := range strings.Split(string(b), "\n\n") {
		for _, line := range strings.Split(ev, "\n") {
			if d, ok := strings.CutPrefix(line, "data: "); ok {
				out = append(out, d)
			}
		}
	}
	return out
}

func TestStream(t *testing.T) {
	s := NewStream(req)
	var out []byte
	for _, d := range chatStream {
		out = s.Event(out, []byte(d))
	}
	if !s.Done() {
		t.Fatal("not done after [DONE]")
	}
	evs := events(out)
	var types []string
	for i, d := range evs {
		wiretest.Validate(t, "ResponseStreamEvent", []byte(d))
		if gjson.Get(d, "sequence_number").Int() != int64(i) {
			t.Errorf("event %d: %s", i, d)
		}
		types = append(types, gjson.Get(d, "type").Str)
	}
	want := "response.created response.in_progress response.output_item.added response.content_part.added response.output_text.delta " +
		"response.output_text.delta response.output_item.added response.function_call_arguments.delta response.function_call_arguments.delta " +
		"response.output_text.done response.content_part.done response.output_item.done response.function_call_arguments.done " +
		"response.output_item.done response.completed"
	if strings.Join(types, " ") != want {
		t.Errorf("events %v", types)
	}
	last := evs[len(evs)-1]
	if gjson.Get(last, "response.output.0.content.0.text").Str != "Hello" || gjson.Get(last, "response.output.1.arguments").Str != `{"a":1}` ||
		gjson.Get(last, "response.usage.output_tokens").Int() != 6 || gjson.Get(last, "response.output.1.call_id").Str != "call_1" {
		t.Errorf("completed %s", last)
	}
	// an error chunk and an unreadable one end the stream with an error event
	for _, bad := range []string{`{"error":{"message":"boom","type":"server_error"}}`, `not json`} {
		s := NewStream(req)
		out := s.Event(nil, []byte(chatStream[1]))
		out = s.Event(out, []byte(bad))
		if evs := events(out); !s.Done() || gjson.Get(evs[len(evs)-1], "error.message").Str == "" && gjson.Get(evs[len(evs)-1], "type").Str != "error" {
			t.Errorf("%s: %s", bad, out)
		}
		if more := s.Event(nil, []byte(chatStream[2])); len(more) != 0 {
			t.Errorf("events after the end: %s", more)
		}
	}
}

// TestStreamReusedBuffer feeds each chat event from one buffer that is overwritten after the
// call, as a stream tap's framing buffer is: the Stream keeps nothing that aliases it.
func TestStreamReusedBuffer(t *testing.T) {
	s := NewStream(req)
	var out, buf []byte
	for _, d := range chatStream {
		buf = append(buf[:0], d...)
		out = s.Event(out, buf)
		for i := range buf {
			buf[i] = 'x'
		}
	}
	evs := events(out)
	last := evs[len(evs)-1]
	wiretest.Validate(t, "ResponseStreamEvent", []byte(last))
	if gjson.Get(last, "response.output.1.call_id").Str != "call_1" || gjson.Get(last, "response.output.1.name").Str != "get" ||
		gjson.Get(last, "response.model").Str != "up" || gjson.Get(last, "response.status").Str != "completed" {
		t.Errorf("completed %s", last)
	}
}

func FuzzStream(f *testing.F) {
	f.Add([]byte(strings.Join(chatStream, "\n")))
	f.Add([]byte(`{"choices":[{"delta":{"tool_calls":[{"index":3},{"index":-1,"function":{"arguments":"x"}}]}}]}` + "\n[DONE]"))
	f.Add([]byte(`{"choices":[{"delta":{"content":"\ud83d"}}],"usage":{"prompt_tokens":-1}}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		s := NewStream(req)
		var out []byte
		for _, d := range bytes.Split(in, []byte("\n")) {
			out = s.Event(out, d)
		}
		out = s.Event(out, []byte("[DONE]"))
		if !s.Done() {
			t.Fatal("not done after [DONE]")
		}
		seq := int64(0)
		for _, d := range events(out) {
			if !gjson.Valid(d) || !gjson.Parse(d).IsObject() {
				t.Fatalf("event data is not a JSON object: %q", d)
			}
			if n := gjson.Get(d, "sequence_number"); n.Exists() && n.Int() != seq {
				t.Fatalf("sequence_number %d, want %d", n.Int(), seq)
			}
			seq++
		}
	})
}

func FuzzToChat(f *testing.F) {
	f.Add([]byte(`{"model":"m","instructions":"i","input":[{"role":"user","content":[{"type":"input_text","text":"a"}]},{"type":"function_call","call_id":"c","name":"f","arguments":"{}"},{"type":"function_call_output","call_id":"c","output":"o"}],"tools":[{"type":"function","name":"f"}],"text":{"format":{"type":"json_object"}}}`))
	f.Add([]byte(`{"model":"m","input":"x","stream":true,"max_output_tokens":3,"tool_choice":"auto"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		if _, werr := policy.Validate(wire.EndpointResponses, body); werr != nil {
			return
		}
		out, _, werr := ToChat(body, "")
		if werr != nil {
			if werr.Status != 400 || werr.Param == "" || werr.Message == "" {
				t.Fatalf("malformed refusal %+v", werr)
			}
			return
		}
		if !gjson.ValidBytes(out) || !gjson.GetBytes(out, "messages").IsArray() {
			t.Fatalf("chat body %s", out)
		}
		if _, werr := policy.Validate(wire.EndpointChatCompletions, out); werr != nil {
			t.Fatalf("the chat body is refused: %v\n%s\nfrom %s", werr, out, body)
		}
	})
}
