package wire_test

import (
	"strings"
	"testing"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/caddyai/gateway/internal/wiretest"
)

func TestExtractUsage(t *testing.T) {
	tests := []struct {
		name    string
		surface wire.Surface
		body    string
		want    wire.Usage
		ok      bool
	}{
		{"vllm chat", wire.OpenAI, string(readFixture(t, "vllm/success.json")), wire.Usage{PromptTokens: 42, CompletionTokens: 10, TotalTokens: 52}, true},
		{"tgi chat", wire.OpenAI, string(readFixture(t, "tgi/success.json")), wire.Usage{PromptTokens: 20, CompletionTokens: 4, TotalTokens: 24}, true},
		{"llama.cpp chat", wire.OpenAI, string(readFixture(t, "llamacpp/success.json")), wire.Usage{PromptTokens: 15, CompletionTokens: 3, TotalTokens: 18}, true},
		{"ollama chat", wire.OpenAI, string(readFixture(t, "ollama/success.json")), wire.Usage{PromptTokens: 26, CompletionTokens: 7, TotalTokens: 33}, true},
		{"openai cached", wire.OpenAI, `{"usage":{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,"prompt_tokens_details":{"cached_tokens":1920}}}`,
			wire.Usage{PromptTokens: 2006, CompletionTokens: 300, TotalTokens: 2306, CachedTokens: 1920}, true},
		{"completions", wire.OpenAI, `{"object":"text_completion","choices":[{"text":"x"}],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}`,
			wire.Usage{PromptTokens: 5, CompletionTokens: 7, TotalTokens: 12}, true},
		{"embeddings", wire.OpenAI, `{"object":"list","data":[{"embedding":[0.1,0.2]}],"usage":{"prompt_tokens":8,"total_tokens":8}}`,
			wire.Usage{PromptTokens: 8, TotalTokens: 8}, true},
		{"total missing", wire.OpenAI, `{"usage":{"prompt_tokens":3,"completion_tokens":4}}`, wire.Usage{PromptTokens: 3, CompletionTokens: 4, TotalTokens: 7}, true},
		{"anthropic", wire.Anthropic, `{"id":"msg_1","type":"message","usage":{"input_tokens":10,"cache_creation_input_tokens":5,"cache_read_input_tokens":100,"output_tokens":20}}`,
			wire.Usage{PromptTokens: 115, CompletionTokens: 20, TotalTokens: 135, CachedTokens: 100}, true},
		{"images (gpt-image-1)", wire.OpenAI, `{"created":1,"data":[],"usage":{"input_tokens":12,"output_tokens":272,"total_tokens":284,"input_tokens_details":{"text_tokens":12,"image_tokens":0}}}`,
			wire.Usage{PromptTokens: 12, CompletionTokens: 272, TotalTokens: 284}, true},
		{"negative and strings", wire.OpenAI, `{"usage":{"prompt_tokens":-3,"completion_tokens":"4"}}`, wire.Usage{}, true},
		{"null usage", wire.OpenAI, `{"usage":null}`, wire.Usage{}, false},
		{"no usage", wire.OpenAI, `{"choices":[]}`, wire.Usage{}, false},
		{"unknown keys", wire.OpenAI, `{"usage":{"tokens":3}}`, wire.Usage{}, false},
		{"not json", wire.OpenAI, `<html>`, wire.Usage{}, false},
		{"empty", wire.Anthropic, ``, wire.Usage{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := wire.ExtractUsage(tt.surface, []byte(tt.body))
			if got != tt.want || ok != tt.ok {
				t.Errorf("ExtractUsage = %+v, %v; want %+v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestAppendUsageJSONRoundTrip(t *testing.T) {
	for _, u := range []wire.Usage{
		{PromptTokens: 10, CompletionTokens: 5, TotalTokens: 15},
		{PromptTokens: 2006, CompletionTokens: 300, TotalTokens: 2306, CachedTokens: 1920},
		{},
	} {
		for _, s := range []wire.Surface{wire.OpenAI, wire.Anthropic} {
			obj := wire.AppendUsageJSON(nil, s, u)
			if s == wire.OpenAI {
				wiretest.Validate(t, "CompletionUsage", obj)
			}
			body := append(append([]byte(`{"id":"x","usage":`), obj...), '}')
			got, ok := wire.ExtractUsage(s, body)
			if !ok || got != u {
				t.Errorf("%s: %s read back as %+v, %v; want %+v", s, obj, got, ok, u)
			}
		}
	}
	if got := string(wire.AppendUsageJSON(nil, wire.Anthropic, wire.Usage{PromptTokens: 12, CompletionTokens: 3, CachedTokens: 2})); !strings.Contains(got, `"input_tokens":10`) {
		t.Errorf("Anthropic input_tokens should exclude cached tokens: %s", got)
	}
}

func BenchmarkExtractUsage(b *testing.B) {
	// A ~1 KB chat completion with usage at the end, as servers send it.
	content := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 18)
	body := []byte(`{"id":"chatcmpl-8f2c1e0a9b6d4f3e","object":"chat.completion","created":1731000000,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"message":{"role":"assistant","content":"` +
		content + `"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":42,"total_tokens":210,"completion_tokens":168,"prompt_tokens_details":{"cached_tokens":32}}}`)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if u, ok := wire.ExtractUsage(wire.OpenAI, body); !ok || u.TotalTokens != 210 {
			b.Fatal(u)
		}
	}
}
