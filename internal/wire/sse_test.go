package wire_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/caddyai/gateway/internal/wiretest"
)

// runTap feeds in to a new tap in pieces of the given sizes (cycled; nil = one write) and returns
// the output of the writes, the output of Finish, and the tap.
func runTap(t testing.TB, s wire.Surface, opts wire.TapOptions, in []byte, sizes []int, cause *wire.Error) (writes, finish []byte, tap *wire.StreamTap) {
	t.Helper()
	tap = wire.NewStreamTap(s, opts)
	for i := 0; len(in) > 0; i++ {
		n := len(in)
		if len(sizes) > 0 {
			n = min(max(sizes[i%len(sizes)], 1), len(in))
		}
		writes = tap.Write(writes, in[:n])
		in = in[n:]
	}
	finish = tap.Finish(nil, cause)
	return writes, finish, tap
}

// events splits SSE output framed with \n\n into its data payloads.
func dataPayloads(out []byte) []string {
	var ds []string
	for _, ev := range strings.Split(string(out), "\n\n") {
		for _, line := range strings.Split(ev, "\n") {
			if v, ok := strings.CutPrefix(line, "data:"); ok {
				ds = append(ds, strings.TrimPrefix(v, " "))
			}
		}
	}
	return ds
}

var splits = [][]int{nil, {1}, {2, 3}, {7}, {64}, {5, 100, 1}}

func TestStreamTapFixtures(t *testing.T) {
	tests := []struct {
		fixture   string
		text      string
		usage     wire.Usage
		haveUsage bool
	}{
		{"vllm/stream.sse", "Hello! été\n", wire.Usage{PromptTokens: 42, CompletionTokens: 4, TotalTokens: 46}, true},
		{"tgi/stream.sse", "Hello there!", wire.Usage{}, false},
		{"llamacpp/stream.sse", "Hi there!", wire.Usage{PromptTokens: 15, CompletionTokens: 3, TotalTokens: 18}, true},
		{"ollama/stream.sse", "Hello!", wire.Usage{PromptTokens: 26, CompletionTokens: 2, TotalTokens: 28}, true},
	}
	for _, tt := range tests {
		in := readFixture(t, tt.fixture)
		for _, sz := range splits {
			t.Run(fmt.Sprintf("%s/%v", tt.fixture, sz), func(t *testing.T) {
				var text strings.Builder
				firsts := 0
				opts := wire.TapOptions{
					OnText:       func(s string) { text.WriteString(s) },
					OnFirstToken: func() { firsts++ },
				}
				out, fin, tap := runTap(t, wire.OpenAI, opts, in, sz, nil)
				if !bytes.Equal(out, in) || len(fin) != 0 {
					t.Errorf("output differs from input:\n%q\nfinish %q", out, fin)
				}
				if !tap.Done() || tap.UpstreamError() != nil {
					t.Errorf("Done %v, UpstreamError %v", tap.Done(), tap.UpstreamError())
				}
				if text.String() != tt.text || firsts != 1 {
					t.Errorf("text %q (first token %d times), want %q", text.String(), firsts, tt.text)
				}
				u, ok := tap.Usage()
				if u != tt.usage || ok != tt.haveUsage {
					t.Errorf("usage %+v %v, want %+v %v", u, ok, tt.usage, tt.haveUsage)
				}
			})
		}
	}
}

func TestStreamTapStripAndRewrite(t *testing.T) {
	for _, fixture := range []string{"vllm/stream.sse", "ollama/stream.sse", "llamacpp/stream.sse", "tgi/stream.sse"} {
		in := readFixture(t, fixture)
		var want []byte
		for _, sz := range splits {
			t.Run(fmt.Sprintf("%s/%v", fixture, sz), func(t *testing.T) {
				opts := wire.TapOptions{StripUsageChunk: true, Model: "gw/llama \"8b\""}
				out, fin, tap := runTap(t, wire.OpenAI, opts, in, sz, nil)
				if want == nil {
					want = out
				} else if !bytes.Equal(out, want) {
					t.Fatalf("output depends on the split:\n%q\n%q", out, want)
				}
				if len(fin) != 0 || !tap.Done() {
					t.Errorf("finish %q, done %v", fin, tap.Done())
				}
				payloads := dataPayloads(out)
				if payloads[len(payloads)-1] != "[DONE]" {
					t.Errorf("last payload %q", payloads[len(payloads)-1])
				}
				for _, p := range payloads[:len(payloads)-1] {
					var chunk struct {
						Model   string            `json:"model"`
						Choices []json.RawMessage `json:"choices"`
						Usage   json.RawMessage   `json:"usage"`
					}
					if err := json.Unmarshal([]byte(p), &chunk); err != nil {
						t.Fatalf("%v: %s", err, p)
					}
					if chunk.Model != opts.Model {
						t.Errorf("model not rewritten: %s", p)
					}
					if len(chunk.Choices) == 0 {
						t.Errorf("usage chunk not stripped: %s", p)
					}
				}
				if _, ok := tap.Usage(); !ok && fixture != "tgi/stream.sse" {
					t.Error("usage lost when stripping")
				}
			})
		}
	}
}

func TestStreamTapModelUnchangedWhenEqual(t *testing.T) {
	in := readFixture(t, "ollama/stream.sse")
	out, _, _ := runTap(t, wire.OpenAI, wire.TapOptions{Model: "llama3.2"}, in, nil, nil)
	if !bytes.Equal(out, in) {
		t.Errorf("output changed:\n%s", out)
	}
}

func TestStreamTapMidStreamErrors(t *testing.T) {
	tests := []struct {
		fixture   string
		textsSeen int
		code      string
	}{
		{"vllm/midstream_error.sse", 3, ""},
		{"tgi/midstream_error.sse", 2, ""},
		{"llamacpp/midstream_error.sse", 2, ""},
		{"llamacpp/midstream_error_legacy.sse", 2, ""},
		{"ollama/midstream_error.sse", 2, ""},
	}
	for _, tt := range tests {
		in := readFixture(t, tt.fixture)
		for _, sz := range splits {
			t.Run(fmt.Sprintf("%s/%v", tt.fixture, sz), func(t *testing.T) {
				out, fin, tap := runTap(t, wire.OpenAI, wire.TapOptions{}, in, sz, nil)
				if len(fin) != 0 {
					t.Errorf("Finish appended %q after an error frame", fin)
				}
				e := tap.UpstreamError()
				if e == nil || e.Status != 502 || e.Type != wire.TypeServer || e.Code != tt.code {
					t.Fatalf("UpstreamError = %+v", e)
				}
				payloads := dataPayloads(out)
				if len(payloads) != tt.textsSeen+2 {
					t.Fatalf("payloads %q", payloads)
				}
				wiretest.Validate(t, "ErrorResponse", []byte(payloads[tt.textsSeen]))
				if payloads[tt.textsSeen+1] != "[DONE]" || strings.Count(string(out), "[DONE]") != 1 {
					t.Errorf("want exactly one [DONE] after the error: %q", out)
				}
				if !bytes.HasPrefix(in, out[:bytes.Index(out, []byte(`data: {"error"`))]) {
					t.Errorf("bytes before the error changed")
				}
			})
		}
	}
}

func TestStreamTapTruncated(t *testing.T) {
	for _, fixture := range []string{"vllm/truncated.sse", "tgi/truncated.sse", "llamacpp/truncated.sse", "ollama/truncated.sse"} {
		in := readFixture(t, fixture)
		for _, sz := range splits {
			t.Run(fmt.Sprintf("%s/%v", fixture, sz), func(t *testing.T) {
				out, fin, tap := runTap(t, wire.OpenAI, wire.TapOptions{}, in, sz, nil)
				if tap.Done() {
					t.Error("Done on a truncated stream")
				}
				if !bytes.HasPrefix(in, out) || bytes.Contains(out, []byte(`"chat.comp"`)) {
					t.Errorf("forwarded %q", out)
				}
				want := `data: {"error":{"message":"upstream stream ended before completion","type":"server_error","param":null,"code":"stream_incomplete"}}` + "\n\ndata: [DONE]\n\n"
				if string(fin) != want {
					t.Errorf("Finish = %q, want %q", fin, want)
				}
				wiretest.Validate(t, "ErrorResponse", []byte(dataPayloads(fin)[0]))
			})
		}
	}
	// A cause given by the caller replaces the default.
	_, fin, _ := runTap(t, wire.OpenAI, wire.TapOptions{}, []byte("data: {}\n\n"), nil, wire.Internal())
	if !bytes.Contains(fin, []byte(`"type":"server_error","param":null,"code":null`)) {
		t.Errorf("Finish with cause = %q", fin)
	}
}

func TestStreamTapFraming(t *testing.T) {
	tests := []struct {
		name string
		in   string
		out  string // after all writes
		fin  string
		done bool
	}{
		{"lf", "data: {\"a\":1}\n\ndata: [DONE]\n\n", "data: {\"a\":1}\n\ndata: [DONE]\n\n", "", true},
		{"crlf", "data: {\"a\":1}\r\n\r\ndata: [DONE]\r\n\r\n", "data: {\"a\":1}\r\n\r\ndata: [DONE]\r\n\r\n", "", true},
		{"cr", "data: {\"a\":1}\r\rdata: [DONE]\r\r", "data: {\"a\":1}\r\rdata: [DONE]\r\r", "", true},
		{"mixed", "data: {\"a\":1}\r\n\ndata: [DONE]\n\r\n", "data: {\"a\":1}\r\n\ndata: [DONE]\n\r\n", "", true},
		{"comments kept", ": keep-alive\n\n: x\ndata: [DONE]\n\n", ": keep-alive\n\n: x\ndata: [DONE]\n\n", "", true},
		{"done without blank line", "data: {\"a\":1}\n\ndata: [DONE]\n", "data: {\"a\":1}\n\n", "data: [DONE]\n\n", true},
		{"done without newline", "data: [DONE]", "", "data: [DONE]\n\n", true},
		{"done cr tail", "data: [DONE]\r", "", "data: [DONE]\r\r", true},
		{"data without space", "data:[DONE]\n\n", "data:[DONE]\n\n", "", true},
		{"multi-line data", "data: {\"a\":\ndata: 1}\n\ndata: [DONE]\n\n", "data: {\"a\":\ndata: 1}\n\ndata: [DONE]\n\n", "", true},
		{"leading blank lines", "\n\r\ndata: [DONE]\n\n", "\n\r\ndata: [DONE]\n\n", "", true},
		{"half json tail dropped", "data: {\"a\":1}\n\ndata: {\"b\"", "data: {\"a\":1}\n\n", "data: {\"error\"", false},
	}
	for _, tt := range tests {
		for _, sz := range splits {
			t.Run(fmt.Sprintf("%s/%v", tt.name, sz), func(t *testing.T) {
				out, fin, tap := runTap(t, wire.OpenAI, wire.TapOptions{}, []byte(tt.in), sz, nil)
				if string(out) != tt.out || !strings.HasPrefix(string(fin), tt.fin) || tap.Done() != tt.done {
					t.Errorf("out %q fin %q done %v; want %q %q... %v", out, fin, tap.Done(), tt.out, tt.fin, tt.done)
				}
			})
		}
	}
}

func TestStreamTapForwardsEventsAtOnce(t *testing.T) {
	tap := wire.NewStreamTap(wire.OpenAI, wire.TapOptions{})
	out := tap.Write(nil, []byte("data: {\"choices\":[]}\n\ndata: {\"cho"))
	if string(out) != "data: {\"choices\":[]}\n\n" {
		t.Fatalf("first write gave %q", out)
	}
	out = tap.Write(nil, []byte("ices\":[]}\n"))
	if len(out) != 0 {
		t.Fatalf("incomplete event forwarded: %q", out)
	}
	out = tap.Write(nil, []byte("\n"))
	if string(out) != "data: {\"choices\":[]}\n\n" {
		t.Fatalf("completed event gave %q", out)
	}
}

func TestStreamTapCRLFAcrossWrites(t *testing.T) {
	// The "\n" of a final "\r\n" arriving in the next write belongs to the dropped usage chunk.
	in := "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\r\n\r\ndata: [DONE]\r\n\r\n"
	tap := wire.NewStreamTap(wire.OpenAI, wire.TapOptions{StripUsageChunk: true})
	cut := strings.Index(in, "\r\n\r\n") + 3
	out := tap.Write(nil, []byte(in[:cut]))
	out = tap.Write(out, []byte(in[cut:]))
	if string(out) != "data: [DONE]\r\n\r\n" {
		t.Errorf("out %q", out)
	}
	if u, ok := tap.Usage(); !ok || u.TotalTokens != 3 {
		t.Errorf("usage %+v %v", u, ok)
	}
}

func TestStreamTapOversizeEvent(t *testing.T) {
	big := `data: {"choices":[{"delta":{"content":"` + strings.Repeat("a", 200) + `"}}],"model":"m"}` + "\n\n"
	in := []byte(big + "data: {\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\ndata: [DONE]\n\n")
	for _, sz := range splits {
		var texts []string
		opts := wire.TapOptions{MaxEventBytes: 100, Model: "x", OnText: func(s string) { texts = append(texts, s) }}
		out, fin, tap := runTap(t, wire.OpenAI, opts, in, sz, nil)
		want := big + "data: {\"model\":\"x\",\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\ndata: [DONE]\n\n"
		if string(out) != want || len(fin) != 0 || !tap.Done() {
			t.Errorf("%v: out %q fin %q", sz, out, fin)
		}
		if len(texts) != 1 || texts[0] != "b" {
			t.Errorf("%v: texts %q (the oversize event is not inspected)", sz, texts)
		}
	}
}

func TestStreamTapAnthropic(t *testing.T) {
	in := "event: message_start\n" +
		`data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[],"stop_reason":null,"usage":{"input_tokens":25,"cache_read_input_tokens":10,"output_tokens":1}}}` + "\n\n" +
		"event: content_block_start\n" + `data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}` + "\n\n" +
		"event: ping\n" + `data: {"type": "ping"}` + "\n\n" +
		"event: content_block_delta\n" + `data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}` + "\n\n" +
		"event: content_block_delta\n" + `data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" world"}}` + "\n\n" +
		"event: content_block_stop\n" + `data: {"type":"content_block_stop","index":0}` + "\n\n" +
		"event: message_delta\n" + `data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}` + "\n\n" +
		"event: message_stop\n" + `data: {"type":"message_stop"}` + "\n\n"
	for _, sz := range splits {
		var text strings.Builder
		opts := wire.TapOptions{Model: "gw-claude", OnText: func(s string) { text.WriteString(s) }}
		out, fin, tap := runTap(t, wire.Anthropic, opts, []byte(in), sz, nil)
		want := strings.Replace(in, `"model":"claude-x"`, `"model":"gw-claude"`, 1)
		if string(out) != want || len(fin) != 0 || !tap.Done() {
			t.Errorf("%v: out %q fin %q done %v", sz, out, fin, tap.Done())
		}
		if text.String() != "Hello world" {
			t.Errorf("text %q", text.String())
		}
		u, ok := tap.Usage()
		if !ok || u != (wire.Usage{PromptTokens: 35, CompletionTokens: 15, TotalTokens: 50, CachedTokens: 10}) {
			t.Errorf("usage %+v %v", u, ok)
		}
	}
}

func TestStreamTapAnthropicErrors(t *testing.T) {
	in := "event: message_start\n" + `data: {"type":"message_start","message":{"model":"m","usage":{"input_tokens":3,"output_tokens":1}}}` + "\n\n" +
		"event: error\n" + `data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}` + "\n\n" +
		"event: message_stop\n" + `data: {"type":"message_stop"}` + "\n\n"
	out, fin, tap := runTap(t, wire.Anthropic, wire.TapOptions{RequestID: "req_7"}, []byte(in), nil, nil)
	wantErr := "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"The model is overloaded. Please retry after a short wait.\"},\"request_id\":\"req_7\"}\n\n"
	if !strings.HasSuffix(string(out), wantErr) || strings.Contains(string(out), "message_stop") || len(fin) != 0 {
		t.Errorf("out %q fin %q", out, fin)
	}
	if e := tap.UpstreamError(); e == nil || e.Code != "model_overloaded" {
		t.Errorf("UpstreamError %+v", e)
	}
	// Truncated: Finish sends an Anthropic error event.
	_, fin, _ = runTap(t, wire.Anthropic, wire.TapOptions{RequestID: "req_8"}, []byte(in[:strings.Index(in, "event: error")]), nil, nil)
	var env struct {
		Type  string `json:"type"`
		Error struct {
			Type, Message string
		} `json:"error"`
	}
	payload, ok := strings.CutPrefix(string(fin), "event: error\ndata: ")
	if !ok || json.Unmarshal([]byte(strings.TrimSpace(payload)), &env) != nil || env.Type != "error" || env.Error.Type != "api_error" {
		t.Errorf("Finish = %q", fin)
	}
}

// FuzzStreamTap feeds arbitrary bytes split at arbitrary boundaries: no panic, the same output
// whatever the split, and (when nothing can be transformed) the output is the input minus at
// most the tail held when the stream ended.
func FuzzStreamTap(f *testing.F) {
	for _, name := range []string{"vllm/stream.sse", "tgi/midstream_error.sse", "llamacpp/midstream_error_legacy.sse", "ollama/truncated.sse"} {
		f.Add(readFixture(f, name), uint8(7), uint8(0))
	}
	f.Add([]byte("data: {\"a\":1}\r\n\r\n: c\r\rdata: [DONE]\r"), uint8(1), uint8(1))
	f.Add([]byte("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"m\"}}\n\n"), uint8(3), uint8(2))
	f.Fuzz(func(t *testing.T, in []byte, step, mode uint8) {
		s := wire.Surface(mode & 1)
		opts := wire.TapOptions{MaxEventBytes: 4096}
		if mode&2 != 0 {
			opts.StripUsageChunk, opts.Model = true, "gw"
		}
		whole, wholeFin, tap := runTap(t, s, opts, in, nil, nil)
		sizes := []int{int(step%16) + 1, int(step/16) + 1}
		split, splitFin, _ := runTap(t, s, opts, in, sizes, nil)
		if !bytes.Equal(whole, split) || !bytes.Equal(wholeFin, splitFin) {
			t.Fatalf("output depends on the split %v:\n%q + %q\n%q + %q", sizes, whole, wholeFin, split, splitFin)
		}
		ones, onesFin, _ := runTap(t, s, opts, in, []int{1}, nil)
		if !bytes.Equal(whole, ones) || !bytes.Equal(wholeFin, onesFin) {
			t.Fatalf("output depends on the split [1]:\n%q\n%q", whole, ones)
		}
		// an unreadable event ends the stream with an error frame: the output is then not the input
		if mode&2 == 0 && tap.UpstreamError() == nil && !bytes.Contains(in, []byte("error")) && !bytes.Contains(in, []byte(`\u`)) {
			if !bytes.HasPrefix(in, whole) {
				t.Fatalf("output is not the input:\n%q\n%q", in, whole)
			}
			// after [DONE] / message_stop the rest is dropped, not held
			if held := in[len(whole):]; !tap.Done() && (bytes.Contains(held, []byte("\n\n")) || bytes.Contains(held, []byte("\r\r"))) {
				t.Fatalf("a complete event was held back: %q", held)
			}
		}
	})
}

// benchStream is a 20-chunk chat stream as vLLM sends it, one chunk per write.
func benchStream() [][]byte {
	var chunks [][]byte
	for i := range 19 {
		chunks = append(chunks, fmt.Appendf(nil, `data: {"id":"chatcmpl-8f2c1e0a9b6d4f3e","object":"chat.completion.chunk","created":1731000000,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"delta":{"content":" token%d"},"logprobs":null,"finish_reason":null}]}`+"\n\n", i))
	}
	chunks = append(chunks, []byte(`data: {"id":"chatcmpl-8f2c1e0a9b6d4f3e","object":"chat.completion.chunk","created":1731000000,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[],"usage":{"prompt_tokens":42,"total_tokens":61,"completion_tokens":19}}`+"\n\n"))
	return chunks
}

func benchmarkTap(b *testing.B, opts wire.TapOptions) {
	chunks := benchStream()
	out := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		tap := wire.NewStreamTap(wire.OpenAI, opts)
		for _, c := range chunks {
			out = tap.Write(out[:0], c)
		}
		if _, ok := tap.Usage(); !ok {
			b.Fatal("no usage")
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(chunks)), "ns/chunk")
}

func BenchmarkStreamTap(b *testing.B) {
	n := 0
	b.Run("passthrough", func(b *testing.B) { benchmarkTap(b, wire.TapOptions{}) })
	b.Run("count", func(b *testing.B) {
		benchmarkTap(b, wire.TapOptions{OnText: func(s string) { n += len(s) }, OnFirstToken: func() {}})
	})
	b.Run("rewrite+strip", func(b *testing.B) {
		benchmarkTap(b, wire.TapOptions{Model: "llama-8b", StripUsageChunk: true, OnText: func(s string) { n += len(s) }})
	})
	b.Run("split", func(b *testing.B) {
		chunks := benchStream()
		var all []byte
		for _, c := range chunks {
			all = append(all, c...)
		}
		out := make([]byte, 0, 4096)
		b.ReportAllocs()
		for b.Loop() {
			tap := wire.NewStreamTap(wire.OpenAI, wire.TapOptions{})
			for p := all; len(p) > 0; {
				k := min(100, len(p))
				out = tap.Write(out[:0], p[:k])
				p = p[k:]
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(chunks)), "ns/chunk")
	})
}

func TestStreamTapUsageAnnouncedAndStopText(t *testing.T) {
	texts := 0
	tap := wire.NewStreamTap(wire.OpenAI, wire.TapOptions{OnText: func(string) { texts++ }})
	chunk := func(content string, usage string) []byte {
		return []byte(`data: {"choices":[{"index":0,"delta":{"content":"` + content + `"}}]` + usage + "}\n\n")
	}
	out := tap.Write(nil, chunk("a", ""))
	if tap.UsageAnnounced() || texts != 1 {
		t.Fatalf("announced %v, texts %d", tap.UsageAnnounced(), texts)
	}
	out = tap.Write(out, chunk("b", `,"usage":null`))
	if !tap.UsageAnnounced() || texts != 2 {
		t.Fatalf("announced %v, texts %d", tap.UsageAnnounced(), texts)
	}
	tap.StopText()
	out = tap.Write(out, chunk("c", `,"usage":null`))
	if texts != 2 || !bytes.Contains(out, []byte(`"c"`)) {
		t.Errorf("after StopText: %d texts, output %q", texts, out)
	}
	a := wire.NewStreamTap(wire.Anthropic, wire.TapOptions{})
	a.Write(nil, []byte("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n"))
	if !a.UsageAnnounced() {
		t.Error("Anthropic message_start usage not seen")
	}
}

// TestStreamTapEndsAtTheEnd: nothing an upstream sends after [DONE] or message_stop reaches the
// client, and an event whose data is not a JSON object ends the stream with an error frame
// (and [DONE] on OpenAI) instead of reaching an SDK that would fail to parse it.
func TestStreamTapEndsAtTheEnd(t *testing.T) {
	chunk := `data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}` + "\n\n"
	start := "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"x\",\"usage\":{\"input_tokens\":3}}}\n\n"
	stop := "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
	tests := []struct {
		name      string
		surface   wire.Surface
		in        string
		want      string // the exact output (writes and finish)
		wantError bool
	}{
		{"data after [DONE]", wire.OpenAI, chunk + "data: [DONE]\n\n" + chunk + "data: [DONE]\n\n",
			chunk + "data: [DONE]\n\n", false},
		{"events after message_stop", wire.Anthropic, start + stop + "event: ping\ndata: {\"type\":\"ping\"}\n\n",
			start + stop, false},
		{"a log line as data", wire.OpenAI, chunk + "data: INFO: generated 3 tokens\n\n" + chunk, "", true},
		{"truncated JSON", wire.OpenAI, chunk + "data: {\"id\":\"c\",\"choices\":[{\"index\"\n\n", "", true},
		{"empty data", wire.OpenAI, chunk + "data:\n\n", "", true},
		// chunks that differ from the valid one before them inside its text only
		{"a raw quote in the text", wire.OpenAI, chunk + strings.Replace(chunk, `"Hi"`, `"Hi"Hi"`, 1), "", true},
		{"a control character in the text", wire.OpenAI, chunk + strings.Replace(chunk, `"Hi"`, "\"Hi\x01\"", 1), "", true},
		{"a backslash before the closing quote", wire.OpenAI, chunk + strings.Replace(chunk, `"Hi"`, `"Hi\"`, 1), "", true},
		{"a broken escape in the text", wire.OpenAI, chunk + strings.Replace(chunk, `"Hi"`, `"Hi\u00zz"`, 1), "", true},
		{"Anthropic: not JSON", wire.Anthropic, start + "event: content_block_delta\ndata: oops\n\n" + stop, "", true},
	}
	for _, tt := range tests {
		for _, sz := range splits {
			t.Run(fmt.Sprintf("%s/%v", tt.name, sz), func(t *testing.T) {
				writes, finish, tap := runTap(t, tt.surface, wire.TapOptions{RequestID: "req_1"}, []byte(tt.in), sz, nil)
				out := string(writes) + string(finish)
				if !tt.wantError {
					if out != tt.want || tap.UpstreamError() != nil {
						t.Fatalf("output:\n%q\nwant:\n%q", out, tt.want)
					}
					return
				}
				if e := tap.UpstreamError(); e == nil || e.Code != "upstream_invalid_response" {
					t.Fatalf("upstream error = %+v, want upstream_invalid_response", e)
				}
				if strings.Contains(out, "INFO:") || strings.Contains(out, "oops") || strings.Count(out, `"Hi"`) > 1 {
					t.Fatalf("the unreadable event or what follows it reached the client:\n%s", out)
				}
				if tt.surface == wire.OpenAI && !strings.HasSuffix(out, "data: [DONE]\n\n") {
					t.Fatalf("no [DONE] after the error frame:\n%s", out)
				}
				if tt.surface == wire.Anthropic && !strings.Contains(out, "event: error\n") {
					t.Fatalf("no error event:\n%s", out)
				}
			})
		}
	}
}

// TestStreamTapSameShapeLookups: the searches for "error" and "usage" skipped for a chunk shaped
// as the one before it miss nothing: a text spelling a key is a text, a key renamed into
// "error" or "usage" (a change inside a key string only) is found, and so are the final usage
// chunk and an error chunk after chunks of one shape.
func TestStreamTapSameShapeLookups(t *testing.T) {
	text := func(s string) string {
		return `data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"` + s + `"},"finish_reason":null}]}` + "\n\n"
	}
	usage := `data: {"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":4,"total_tokens":9}}` + "\n\n"
	in := text("a") + text("usage") + text("error") + text(`\"usage\"`) + text("b") + usage + "data: [DONE]\n\n"
	for _, sz := range splits {
		out, _, tap := runTap(t, wire.OpenAI, wire.TapOptions{}, []byte(in), sz, nil)
		if u, ok := tap.Usage(); !ok || u.PromptTokens != 5 || u.CompletionTokens != 4 || tap.UpstreamError() != nil || string(out) != in {
			t.Fatalf("split %v: usage %+v %t, error %v, output changed: %t", sz, u, ok, tap.UpstreamError(), string(out) != in)
		}
	}
	renamed := []string{
		`data: {"erro":{"message":"overloaded","code":"x"}}` + "\n\n" + `data: {"error":{"message":"overloaded","code":"x"}}` + "\n\n",
		text("a") + text("b") + `data: {"error":{"message":"overloaded"}}` + "\n\n",
	}
	for _, in := range renamed {
		_, _, tap := runTap(t, wire.OpenAI, wire.TapOptions{}, []byte(in), nil, nil)
		if tap.UpstreamError() == nil {
			t.Errorf("no upstream error found in %q", in)
		}
	}
	in = `data: {"choices":[],"usag":{"prompt_tokens":5}}` + "\n\n" + `data: {"choices":[],"usage":{"prompt_tokens":5}}` + "\n\n"
	if _, _, tap := runTap(t, wire.OpenAI, wire.TapOptions{}, []byte(in), nil, nil); !tap.UsageAnnounced() {
		t.Error("a usage key renamed into place was not seen")
	}
}
