package cache

import (
	"bytes"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	anthropicsse "github.com/anthropics/anthropic-sdk-go/v2/packages/ssestream"
	"github.com/caddyai/gateway/internal/wire"
	"github.com/caddyai/gateway/internal/wiretest"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/packages/ssestream"
)

var longText = strings.Repeat(`Paris is the capital of France — "la Ville Lumière" 😀.`+"\n", 12) + "The end."

var chatText = `{"id":"chatcmpl-abc","object":"chat.completion","created":1767322800,"model":"llama-3.1-8b","system_fingerprint":"fp_1",` +
	`"choices":[{"index":0,"message":{"role":"assistant","content":` + jsonStr(longText) + `,"refusal":null},"logprobs":null,"finish_reason":"stop"}],` +
	`"usage":{"prompt_tokens":12,"completion_tokens":180,"total_tokens":192,"prompt_tokens_details":{"cached_tokens":0}}}`

var chatTools = `{"id":"chatcmpl-tools","object":"chat.completion","created":1767322801,"model":"llama-3.1-8b",` +
	`"choices":[{"index":0,"message":{"role":"assistant","content":null,"refusal":null,"tool_calls":[` +
	`{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":` + jsonStr(`{"city":"Paris","units":"celsius","days":[1,2,3],"note":"`+strings.Repeat("é", 60)+`"}`) + `}},` +
	`{"id":"call_2","type":"function","function":{"name":"get_time","arguments":"{\"tz\":\"Europe/Paris\"}"}}]},"logprobs":null,"finish_reason":"tool_calls"}],` +
	`"usage":{"prompt_tokens":40,"completion_tokens":30,"total_tokens":70}}`

var chatMulti = `{"id":"chatcmpl-multi","object":"chat.completion","created":1767322802,"model":"llama-3.1-8b",` +
	`"choices":[{"index":0,"message":{"role":"assistant","content":"First answer.","refusal":null},"logprobs":null,"finish_reason":"stop"},` +
	`{"index":1,"message":{"role":"assistant","content":` + jsonStr(longText[:150]) + `,"refusal":null},"logprobs":null,"finish_reason":"length"}],` +
	`"usage":{"prompt_tokens":10,"completion_tokens":60,"total_tokens":70}}`

var chatLogprobs = `{"id":"chatcmpl-lp","object":"chat.completion","created":1767322803,"model":"llama-3.1-8b",` +
	`"choices":[{"index":0,"message":{"role":"assistant","content":"Hi there","refusal":null},` +
	`"logprobs":{"content":[{"token":"Hi","logprob":-0.1,"bytes":[72,105],"top_logprobs":[]},{"token":" there","logprob":-0.2,"bytes":[32,116,104,101,114,101],"top_logprobs":[]}],"refusal":null},"finish_reason":"stop"}],` +
	`"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}`

var completionText = `{"id":"cmpl-1","object":"text_completion","created":1767322804,"model":"llama-3.1-8b",` +
	`"choices":[{"text":` + jsonStr(longText) + `,"index":0,"logprobs":null,"finish_reason":"length"}],` +
	`"usage":{"prompt_tokens":4,"completion_tokens":180,"total_tokens":184}}`

var anthropicMsg = `{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5",` +
	`"content":[{"type":"thinking","thinking":` + jsonStr(longText[:200]) + `,"signature":"c2lnbmF0dXJl"},` +
	`{"type":"text","text":` + jsonStr(longText) + `},` +
	`{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris","units":["c","f"],"note":` + jsonStr(strings.Repeat("ü", 50)) + `}}],` +
	`"stop_reason":"tool_use","stop_sequence":null,` +
	`"usage":{"input_tokens":20,"cache_creation_input_tokens":0,"cache_read_input_tokens":5,"output_tokens":40}}`

var anthropicStop = `{"id":"msg_2","type":"message","role":"assistant","model":"claude-sonnet-4-5",` +
	`"content":[{"type":"text","text":"Stopped at"}],"stop_reason":"stop_sequence","stop_sequence":"STOP",` +
	`"usage":{"input_tokens":7,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":3}}`

func jsonStr(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func entryOf(body string) *Entry {
	u, _ := wire.ExtractUsage(wire.OpenAI, []byte(body))
	return &Entry{Body: []byte(body), Usage: u, Model: "llama-3.1-8b"}
}

func sseResponse(b []byte) *http.Response {
	return &http.Response{
		StatusCode: http.StatusOK,
		Header:     http.Header{"Content-Type": []string{"text/event-stream"}},
		Body:       io.NopCloser(bytes.NewReader(b)),
	}
}

// dataFrames returns the payloads of the data: lines of an SSE stream.
func dataFrames(t *testing.T, stream []byte) []string {
	t.Helper()
	if !bytes.HasSuffix(stream, []byte("\n\n")) {
		t.Fatalf("stream does not end with a blank line: %q", stream[max(0, len(stream)-40):])
	}
	var out []string
	for ev := range strings.SplitSeq(strings.TrimSuffix(string(stream), "\n\n"), "\n\n") {
		for line := range strings.SplitSeq(ev, "\n") {
			if d, ok := strings.CutPrefix(line, "data: "); ok {
				out = append(out, d)
			}
		}
	}
	return out
}

func replay(t *testing.T, e wire.Endpoint, body string, includeUsage bool) []byte {
	t.Helper()
	s := e.Surface()
	out, err := AppendStream(nil, e, s, entryOf(body), includeUsage)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestReplayChatSDK(t *testing.T) {
	for _, fx := range []struct{ name, body string }{{"text", chatText}, {"tools", chatTools}, {"two choices", chatMulti}, {"logprobs", chatLogprobs}} {
		for _, includeUsage := range []bool{false, true} {
			name := fx.name
			if includeUsage {
				name += " with usage"
			}
			t.Run(name, func(t *testing.T) {
				stream := replay(t, wire.EndpointChatCompletions, fx.body, includeUsage)
				frames := dataFrames(t, stream)
				if frames[len(frames)-1] != "[DONE]" {
					t.Fatalf("last frame %q, want [DONE]", frames[len(frames)-1])
				}
				for i, f := range frames[:len(frames)-1] {
					wiretest.Validate(t, "CreateChatCompletionStreamResponse", []byte(f))
					hasUsage := strings.Contains(f, `"usage":`)
					if hasUsage != includeUsage {
						t.Fatalf("frame %d: usage present %v, want %v: %s", i, hasUsage, includeUsage, f)
					}
				}
				if includeUsage {
					last := frames[len(frames)-2]
					if !strings.Contains(last, `"choices":[]`) || strings.Contains(last, `"usage":null`) {
						t.Fatalf("usage chunk: %s", last)
					}
				}

				var want openai.ChatCompletion
				if err := json.Unmarshal([]byte(fx.body), &want); err != nil {
					t.Fatal(err)
				}
				st := ssestream.NewStream[openai.ChatCompletionChunk](ssestream.NewDecoder(sseResponse(stream)), nil)
				var acc openai.ChatCompletionAccumulator
				chunks := 0
				for st.Next() {
					chunks++
					if !acc.AddChunk(st.Current()) {
						t.Fatalf("accumulator refused chunk %d", chunks)
					}
				}
				if err := st.Err(); err != nil {
					t.Fatalf("stream: %v", err)
				}
				if chunks < 3 {
					t.Fatalf("only %d chunks", chunks)
				}
				got := acc.ChatCompletion
				if got.ID != want.ID || got.Model != want.Model || got.Created != want.Created || got.SystemFingerprint != want.SystemFingerprint {
					t.Fatalf("header: got %q %q %d %q", got.ID, got.Model, got.Created, got.SystemFingerprint)
				}
				if len(got.Choices) != len(want.Choices) {
					t.Fatalf("%d choices, want %d", len(got.Choices), len(want.Choices))
				}
				for i, w := range want.Choices {
					g := got.Choices[i]
					if g.Message.Content != w.Message.Content {
						t.Fatalf("choice %d content:\n%q\nwant\n%q", i, g.Message.Content, w.Message.Content)
					}
					if g.FinishReason != w.FinishReason || g.Message.Role != w.Message.Role {
						t.Fatalf("choice %d: finish %q role %q, want %q %q", i, g.FinishReason, g.Message.Role, w.FinishReason, w.Message.Role)
					}
					if len(g.Message.ToolCalls) != len(w.Message.ToolCalls) {
						t.Fatalf("choice %d: %d tool calls, want %d", i, len(g.Message.ToolCalls), len(w.Message.ToolCalls))
					}
					for j, wc := range w.Message.ToolCalls {
						gc := g.Message.ToolCalls[j]
						if gc.ID != wc.ID || gc.Function.Name != wc.Function.Name || gc.Function.Arguments != wc.Function.Arguments || gc.Type != wc.Type {
							t.Fatalf("tool call %d: got %+v, want %+v", j, gc.Function, wc.Function)
						}
					}
					if len(g.Logprobs.Content) != len(w.Logprobs.Content) {
						t.Fatalf("choice %d: %d logprobs, want %d", i, len(g.Logprobs.Content), len(w.Logprobs.Content))
					}
					for j, wl := range w.Logprobs.Content {
						if gl := g.Logprobs.Content[j]; gl.Token != wl.Token || gl.Logprob != wl.Logprob {
							t.Fatalf("logprob %d: %+v, want %+v", j, gl, wl)
						}
					}
				}
				if includeUsage {
					if got.Usage.PromptTokens != want.Usage.PromptTokens || got.Usage.CompletionTokens != want.Usage.CompletionTokens || got.Usage.TotalTokens != want.Usage.TotalTokens {
						t.Fatalf("usage %+v, want %+v", got.Usage, want.Usage)
					}
				}
			})
		}
	}
}

func TestReplayCompletionsSDK(t *testing.T) {
	stream := replay(t, wire.EndpointCompletions, completionText, true)
	st := ssestream.NewStream[openai.Completion](ssestream.NewDecoder(sseResponse(stream)), nil)
	var text strings.Builder
	var finish string
	var usage openai.CompletionUsage
	for st.Next() {
		c := st.Current()
		if c.Object != "text_completion" || c.ID != "cmpl-1" {
			t.Fatalf("chunk object %q id %q", c.Object, c.ID)
		}
		for _, ch := range c.Choices {
			text.WriteString(ch.Text)
			if ch.FinishReason != "" {
				finish = string(ch.FinishReason)
			}
		}
		if c.Usage.TotalTokens != 0 {
			usage = c.Usage
		}
	}
	if err := st.Err(); err != nil {
		t.Fatal(err)
	}
	if text.String() != longText || finish != "length" {
		t.Fatalf("text %q finish %q", text.String(), finish)
	}
	if usage.PromptTokens != 4 || usage.CompletionTokens != 180 || usage.TotalTokens != 184 {
		t.Fatalf("usage %+v", usage)
	}
}

func TestReplayAnthropicSDK(t *testing.T) {
	for _, body := range []string{anthropicMsg, anthropicStop} {
		stream := replay(t, wire.EndpointMessages, body, false)
		st := anthropicsse.NewStream[anthropic.MessageStreamEventUnion](anthropicsse.NewDecoder(sseResponse(stream)), nil)
		var msg anthropic.Message
		events := 0
		for st.Next() {
			events++
			if err := msg.Accumulate(st.Current()); err != nil {
				t.Fatalf("event %d: %v", events, err)
			}
		}
		if err := st.Err(); err != nil {
			t.Fatal(err)
		}
		var want anthropic.Message
		if err := json.Unmarshal([]byte(body), &want); err != nil {
			t.Fatal(err)
		}
		if msg.ID != want.ID || msg.Model != want.Model || msg.StopReason != want.StopReason || msg.StopSequence != want.StopSequence {
			t.Fatalf("message %q %q %q %q", msg.ID, msg.Model, msg.StopReason, msg.StopSequence)
		}
		if msg.Usage.InputTokens != want.Usage.InputTokens || msg.Usage.OutputTokens != want.Usage.OutputTokens || msg.Usage.CacheReadInputTokens != want.Usage.CacheReadInputTokens {
			t.Fatalf("usage %+v, want %+v", msg.Usage, want.Usage)
		}
		if len(msg.Content) != len(want.Content) {
			t.Fatalf("%d blocks, want %d", len(msg.Content), len(want.Content))
		}
		for i, w := range want.Content {
			g := msg.Content[i]
			if g.Type != w.Type || g.Text != w.Text || g.Thinking != w.Thinking || g.Signature != w.Signature || g.ID != w.ID || g.Name != w.Name {
				t.Fatalf("block %d: got %+v, want %+v", i, g, w)
			}
			if w.Type == "tool_use" {
				jsonEqual(t, g.Input, w.Input)
			}
		}
		// The SDK's wire JSON of the accumulated message is the cached body.
		jsonEqual(t, []byte(msg.RawJSON()), []byte(body))
	}
}

func TestReplayRejects(t *testing.T) {
	if _, err := AppendStream(nil, wire.EndpointEmbeddings, wire.OpenAI, entryOf(`{"data":[]}`), false); err == nil {
		t.Fatal("embeddings replayed as a stream")
	}
	if _, err := AppendStream(nil, wire.EndpointChatCompletions, wire.OpenAI, entryOf(`[1]`), false); err == nil {
		t.Fatal("non-object body replayed")
	}
	if _, err := AppendStream(nil, wire.EndpointChatCompletions, wire.OpenAI, nil, false); err == nil {
		t.Fatal("nil entry replayed")
	}
}

// jsonEqual fails unless a and b hold the same JSON value.
func jsonEqual(t *testing.T, a, b []byte) {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatalf("not JSON: %v: %s", err, a)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("not JSON: %v: %s", err, b)
	}
	if !reflect.DeepEqual(va, vb) {
		t.Fatalf("JSON differs:\n%s\n%s", a, b)
	}
}

// feed writes stream in pieces of random sizes (seeded), including single bytes, through the
// stream tap that frames it for the assembler, as the gateway does.
func feed(a *Assembler, stream []byte, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 1))
	tap := wire.NewStreamTap(a.surface, wire.TapOptions{OnEvent: a.Event})
	var out []byte
	for len(stream) > 0 {
		n := min(len(stream), 1+r.IntN(40))
		out = tap.Write(out[:0], stream[:n])
		stream = stream[n:]
	}
}

func TestAssemblerRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		e    wire.Endpoint
		body string
	}{
		{"chat text", wire.EndpointChatCompletions, chatText},
		{"chat tools", wire.EndpointChatCompletions, chatTools},
		{"chat two choices", wire.EndpointChatCompletions, chatMulti},
		{"chat logprobs", wire.EndpointChatCompletions, chatLogprobs},
		{"completions", wire.EndpointCompletions, completionText},
		{"anthropic", wire.EndpointMessages, anthropicMsg},
		{"anthropic stop sequence", wire.EndpointMessages, anthropicStop},
	}
	for _, tt := range tests {
		for _, includeUsage := range []bool{false, true} {
			name := tt.name
			if includeUsage {
				name += " with usage"
			}
			t.Run(name, func(t *testing.T) {
				stream := replay(t, tt.e, tt.body, includeUsage)
				for seed := range uint64(4) {
					a := NewAssembler(tt.e, tt.e.Surface())
					feed(a, stream, seed)
					got, ok := a.Result()
					if !ok {
						t.Fatalf("no result (failed %v)", a.Failed())
					}
					want := []byte(tt.body)
					if tt.e != wire.EndpointMessages && !includeUsage {
						// Without the usage chunk the stream carries no usage.
						var v map[string]any
						_ = json.Unmarshal(want, &v)
						delete(v, "usage")
						want, _ = json.Marshal(v)
					}
					jsonEqual(t, got, want)
					if includeUsage || tt.e == wire.EndpointMessages {
						gu, _ := wire.ExtractUsage(tt.e.Surface(), got)
						wu, _ := wire.ExtractUsage(tt.e.Surface(), []byte(tt.body))
						if gu != wu {
							t.Fatalf("usage %+v, want %+v", gu, wu)
						}
					}
				}
			})
		}
	}
}

func TestAssemblerCRLF(t *testing.T) {
	stream := replay(t, wire.EndpointChatCompletions, chatText, true)
	for _, eol := range []string{"\r\n", "\r"} {
		crlf := bytes.ReplaceAll(stream, []byte("\n"), []byte(eol))
		a := NewAssembler(wire.EndpointChatCompletions, wire.OpenAI)
		feed(a, crlf, 7)
		got, ok := a.Result()
		if !ok {
			t.Fatalf("%q line endings: no result", eol)
		}
		jsonEqual(t, got, []byte(chatText))
	}
}

func TestAssemblerIncomplete(t *testing.T) {
	chat := string(replay(t, wire.EndpointChatCompletions, chatText, true))
	msgs := string(replay(t, wire.EndpointMessages, anthropicMsg, false))
	withoutFinish := strings.Replace(chat, `"finish_reason":"stop"`, `"finish_reason":null`, 1)
	tests := []struct {
		name   string
		e      wire.Endpoint
		stream string
		limit  int
	}{
		{"no [DONE]", wire.EndpointChatCompletions, strings.TrimSuffix(chat, "data: [DONE]\n\n"), 0},
		{"cut mid-chunk", wire.EndpointChatCompletions, chat[:len(chat)/2], 0},
		{"error frame", wire.EndpointChatCompletions, chat[:len(chat)/2] + "\n\ndata: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\ndata: [DONE]\n\n", 0},
		{"no finish_reason", wire.EndpointChatCompletions, withoutFinish, 0},
		{"malformed chunk", wire.EndpointChatCompletions, "data: {\"id\":\n\n" + chat, 0},
		{"no message_stop", wire.EndpointMessages, strings.TrimSuffix(msgs, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"), 0},
		{"anthropic error", wire.EndpointMessages, strings.Replace(msgs, "event: message_delta", "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"x\"}}\n\nevent: message_delta", 1), 0},
		{"block out of order", wire.EndpointMessages, strings.Replace(msgs, `"type":"content_block_start","index":1`, `"type":"content_block_start","index":5`, 1), 0},
		{"over the limit", wire.EndpointChatCompletions, chat, 256},
		{"embeddings", wire.EndpointEmbeddings, "data: {}\n\ndata: [DONE]\n\n", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := NewAssemblerLimit(tt.e, tt.e.Surface(), tt.limit)
			feed(a, []byte(tt.stream), 3)
			if got, ok := a.Result(); ok {
				t.Fatalf("result from an improper stream: %s", got)
			}
		})
	}
}

// FuzzAssembler feeds arbitrary bytes: no panic, bounded memory, and a result only as valid JSON.
func FuzzAssembler(f *testing.F) {
	f.Add(uint8(0), []byte(chatText))
	f.Add(uint8(0), []byte("data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n"))
	f.Add(uint8(2), []byte("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"content\":[]}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"))
	f.Add(uint8(1), []byte("data: {\"choices\":[{\"text\":\"a\",\"index\":0,\"finish_reason\":\"stop\"}]}\r\n\r\ndata: [DONE]\r\n\r\n"))
	endpoints := []wire.Endpoint{wire.EndpointChatCompletions, wire.EndpointCompletions, wire.EndpointMessages}
	f.Fuzz(func(t *testing.T, sel uint8, data []byte) {
		e := endpoints[int(sel)%len(endpoints)]
		const limit = 4096
		a := NewAssemblerLimit(e, e.Surface(), limit)
		feed(a, data, uint64(sel))
		if a.size > limit {
			t.Fatalf("holding %d bytes, over the %d limit", a.size, limit)
		}
		if out, ok := a.Result(); ok && !json.Valid(out) {
			t.Fatalf("result is not JSON: %s", out)
		}
	})
}
