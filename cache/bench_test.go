package cache

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/caddyai/gateway/internal/wire"
)

// benchChatBody is a chat request of about 1 KB.
var benchChatBody = []byte(`{"model":"llama-3.1-8b","stream":true,"stream_options":{"include_usage":true},"temperature":0,"max_tokens":512,"top_p":1,"user":"u-42",` +
	`"messages":[{"role":"system","content":"You are a helpful assistant that answers questions about European geography concisely and accurately."},` +
	`{"role":"user","content":"` + strings.Repeat("What is the capital of France and what river runs through it? ", 11) + `"}],` +
	`"response_format":{"type":"json_schema","json_schema":{"name":"answer","strict":true,"schema":{"type":"object","properties":{"city":{"type":"string"},"river":{"type":"string"}},"required":["city","river"]}}}}`)

func BenchmarkKey(b *testing.B) {
	in := KeyInput{Endpoint: wire.EndpointChatCompletions, Surface: wire.OpenAI, Model: "llama-3.1-8b-2024-07-23", Scope: "k:team-a", Body: benchChatBody}
	b.SetBytes(int64(len(benchChatBody)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Key(in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCacheable(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if ok, _ := Cacheable(wire.EndpointChatCompletions, benchChatBody, WhenDeterministic); !ok {
			b.Fatal("not cacheable")
		}
	}
}

func BenchmarkMemoryStoreGetHit(b *testing.B) {
	s := newMemoryStore(b, 64<<20)
	ctx := context.Background()
	k := testKey("bench")
	if err := s.Set(ctx, k, testEntry(chatText), time.Hour); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok, _ := s.Get(ctx, k); !ok {
			b.Fatal("miss")
		}
	}
}

// benchEntry200 is a chat completion of about 200 tokens (some 800 bytes of text).
var benchEntry200 = entryOf(`{"id":"chatcmpl-bench","object":"chat.completion","created":1767322800,"model":"llama-3.1-8b","choices":[{"index":0,"message":{"role":"assistant","content":` +
	jsonStr(strings.Repeat("The quick brown fox jumps over the lazy dog. ", 18)) + `,"refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":50,"completion_tokens":200,"total_tokens":250}}`)

func BenchmarkAppendStream(b *testing.B) {
	b.Run("chat", func(b *testing.B) {
		buf := make([]byte, 0, 16<<10)
		b.ReportAllocs()
		for b.Loop() {
			var err error
			if buf, err = AppendStream(buf[:0], wire.EndpointChatCompletions, wire.OpenAI, benchEntry200, true); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("anthropic", func(b *testing.B) {
		e := entryOf(anthropicMsg)
		buf := make([]byte, 0, 16<<10)
		b.ReportAllocs()
		for b.Loop() {
			var err error
			if buf, err = AppendStream(buf[:0], wire.EndpointMessages, wire.Anthropic, e, false); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkAssembler(b *testing.B) {
	stream, err := AppendStream(nil, wire.EndpointChatCompletions, wire.OpenAI, benchEntry200, true)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		a := NewAssembler(wire.EndpointChatCompletions, wire.OpenAI)
		tap := wire.NewStreamTap(wire.OpenAI, wire.TapOptions{OnEvent: a.Event})
		var out []byte
		for p := stream; len(p) > 0; {
			n := min(len(p), 512)
			out = tap.Write(out[:0], p[:n])
			p = p[n:]
		}
		if _, ok := a.Result(); !ok {
			b.Fatal("no result")
		}
	}
}
