package wire_test

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/caddyai/gateway/internal/wire"
)

// TestStreamTapNullUsageSkip: the `"usage":null` of every chunk is not looked up once a usage
// key has been seen, and nothing that only looks like it hides a real usage object.
func TestStreamTapNullUsageSkip(t *testing.T) {
	chunk := func(content, extra string) string {
		return `data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"` + content + `"}}]` + extra + "}\n\n"
	}
	usage := `{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}`
	tests := []struct {
		name  string
		last  string
		want  int64 // total tokens read, 0 for none
		strip bool  // the last chunk is dropped by StripUsageChunk
	}{
		{"null then usage", `data: {"id":"c","choices":[],"usage":` + usage + "}\n\n", 12, true},
		{"spaced null then usage", `data: {"id":"c","choices":[], "usage" : ` + usage + "}\n\n", 12, true},
		{"nested null beside a usage", `data: {"id":"c","choices":[{"index":0,"delta":{"usage":null}}],"usage":` + usage + "}\n\n", 12, false},
		{"usage as a string before the key", `data: {"id":"c","note":"usage","choices":[],"usage":` + usage + "}\n\n", 12, true},
		{"null only", chunk("z", `,"usage":null`), 0, false},
	}
	for _, tt := range tests {
		in := chunk("a", `,"usage":null`) + chunk("b", `,"usage": null`) + tt.last + "data: [DONE]\n\n"
		for _, sz := range splits {
			t.Run(fmt.Sprintf("%s/%v", tt.name, sz), func(t *testing.T) {
				writes, finish, tap := runTap(t, wire.OpenAI, wire.TapOptions{StripUsageChunk: true}, []byte(in), sz, nil)
				out := append(writes, finish...)
				u, ok := tap.Usage()
				if tt.want == 0 {
					if ok {
						t.Fatalf("usage %+v from null usages", u)
					}
				} else if !ok || u.TotalTokens != tt.want {
					t.Fatalf("usage %+v %v, want total %d", u, ok, tt.want)
				}
				if !tap.UsageAnnounced() {
					t.Fatal("usage key not seen")
				}
				if sent := bytes.Contains(out, []byte(tt.last)); sent == tt.strip {
					t.Fatalf("last chunk forwarded %v, want stripped %v:\n%s", sent, tt.strip, out)
				}
			})
		}
	}
}

// BenchmarkStreamTapNullUsage: the gateway's case, an upstream honouring include_usage: every
// chunk carries `"usage":null`, the last one the usage, stripped for a client that did not ask.
func BenchmarkStreamTapNullUsage(b *testing.B) {
	var chunks [][]byte
	for i := range 19 {
		chunks = append(chunks, fmt.Appendf(nil, `data: {"id":"chatcmpl-8f2c1e0a9b6d4f3e","object":"chat.completion.chunk","created":1731000000,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"delta":{"content":" token%d"},"logprobs":null,"finish_reason":null}],"usage":null}`+"\n\n", i))
	}
	chunks = append(chunks, []byte(`data: {"id":"chatcmpl-8f2c1e0a9b6d4f3e","object":"chat.completion.chunk","created":1731000000,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[],"usage":{"prompt_tokens":42,"total_tokens":61,"completion_tokens":19}}`+"\n\n"))
	out := make([]byte, 0, 1024)
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		tap := wire.NewStreamTap(wire.OpenAI, wire.TapOptions{StripUsageChunk: true, OnFirstToken: func() {}, OnText: func(s string) { n += len(s) }})
		for _, c := range chunks {
			out = tap.Write(out[:0], c)
			if tap.UsageAnnounced() {
				tap.StopText() // as the gateway does
			}
		}
		if _, ok := tap.Usage(); !ok {
			b.Fatal("no usage")
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(chunks)), "ns/chunk")
}
