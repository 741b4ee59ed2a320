package cache

import (
	"testing"

	"github.com/caddyai/gateway/internal/wire"
)

func TestMarkCached(t *testing.T) {
	tests := []struct {
		name string
		e    wire.Endpoint
		body string
		want string
	}{
		{"chat", wire.EndpointChatCompletions, `{"id":"x","usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}`,
			`{"id":"x","usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17,"prompt_tokens_details":{"cached_tokens":12}}}`},
		{"chat with details", wire.EndpointChatCompletions, `{"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17,"prompt_tokens_details":{"cached_tokens":4,"audio_tokens":0}}}`,
			`{"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17,"prompt_tokens_details":{"cached_tokens":12,"audio_tokens":0}}}`},
		{"chat with null details", wire.EndpointChatCompletions, `{"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17,"prompt_tokens_details":null}}`,
			`{"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17,"prompt_tokens_details":{"cached_tokens":12}}}`},
		{"completions", wire.EndpointCompletions, `{"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}`,
			`{"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4,"prompt_tokens_details":{"cached_tokens":3}}}`},
		{"anthropic", wire.EndpointMessages, `{"usage":{"input_tokens":20,"cache_creation_input_tokens":2,"cache_read_input_tokens":5,"output_tokens":40}}`,
			`{"usage":{"input_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":27,"output_tokens":40}}`},
		{"anthropic minimal", wire.EndpointMessages, `{"usage":{"input_tokens":20,"output_tokens":40}}`,
			`{"usage":{"input_tokens":0,"output_tokens":40,"cache_read_input_tokens":20}}`},
		{"embeddings unchanged", wire.EndpointEmbeddings, `{"usage":{"prompt_tokens":3,"total_tokens":3}}`, `{"usage":{"prompt_tokens":3,"total_tokens":3}}`},
		{"no usage", wire.EndpointChatCompletions, `{"id":"x"}`, `{"id":"x"}`},
		{"not JSON", wire.EndpointChatCompletions, `{"usage":`, `{"usage":`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := []byte(tt.body)
			got := MarkCached(tt.e, tt.e.Surface(), body)
			if string(body) != tt.body {
				t.Fatalf("input modified: %s", body)
			}
			if tt.want == tt.body {
				if string(got) != tt.want {
					t.Fatalf("got %s, want it unchanged", got)
				}
				return
			}
			jsonEqual(t, got, []byte(tt.want))
			before, _ := wire.ExtractUsage(tt.e.Surface(), body)
			after, _ := wire.ExtractUsage(tt.e.Surface(), got)
			if after.PromptTokens != before.PromptTokens || after.CachedTokens != after.PromptTokens {
				t.Fatalf("usage %+v -> %+v: want every prompt token cached", before, after)
			}
		})
	}
}
