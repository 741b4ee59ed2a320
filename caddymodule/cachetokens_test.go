package caddymodule_test

import (
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/caddyai/gateway/simulator"
)

// TestCacheHitTokenKinds: the completion tokens of a cache hit are counted as cached_completion,
// never as completion (they cost no GPU time), and a hit replayed as a stream reports its prompt
// tokens as cached exactly as the JSON hit does, on both surfaces.
func TestCacheHitTokenKinds(t *testing.T) {
	s := startCache(t, simulator.Config{}, "")
	body := `{"model":"llama","temperature":0,"max_tokens":8,"messages":[{"role":"user","content":"count me once"}]}`
	kind := func(k string) float64 {
		return s.metric(t, "caddy_ai_gateway_tokens_total", map[string]string{"model": "demo-llama", "kind": k})
	}
	resp, miss := s.do(t, "/v1/chat/completions", "", body)
	if resp.StatusCode != 200 || resp.Header.Get("X-Cache") != "MISS" {
		t.Fatalf("miss: %d %s", resp.StatusCode, miss)
	}
	generated := gjson.GetBytes(miss, "usage.completion_tokens").Float()
	prompt := gjson.GetBytes(miss, "usage.prompt_tokens").Int()
	if generated == 0 || kind("completion") != generated || kind("cached_completion") != 0 {
		t.Fatalf("after the miss: completion %v cached_completion %v, generated %v", kind("completion"), kind("cached_completion"), generated)
	}

	resp, hit := s.do(t, "/v1/chat/completions", "", body)
	if resp.Header.Get("X-Cache") != "HIT" || gjson.GetBytes(hit, "usage.prompt_tokens_details.cached_tokens").Int() != prompt {
		t.Fatalf("JSON hit: %s %s", resp.Header.Get("X-Cache"), hit)
	}
	streamed := strings.Replace(body, `"temperature":0`, `"temperature":0,"stream":true,"stream_options":{"include_usage":true}`, 1)
	resp, sse := s.do(t, "/v1/chat/completions", "", streamed)
	if resp.Header.Get("X-Cache") != "HIT" {
		t.Fatalf("streamed request was no hit: %s", resp.Header.Get("X-Cache"))
	}
	frames := dataFrames(sse)
	if len(frames) < 2 {
		t.Fatalf("replayed stream: %s", sse)
	}
	last := frames[len(frames)-2] // the usage chunk, before [DONE]
	if gjson.Get(last, "usage.prompt_tokens_details.cached_tokens").Int() != prompt || gjson.Get(last, "usage.prompt_tokens").Int() != prompt {
		t.Errorf("the replayed stream's usage does not report the cached prompt tokens: %s", last)
	}
	if got := kind("completion"); got != generated {
		t.Errorf("completion tokens after two hits: %v, want the %v generated once", got, generated)
	}
	if got := kind("cached_completion"); got != 2*generated {
		t.Errorf("cached_completion tokens after two hits: %v, want %v", got, 2*generated)
	}

	// Anthropic: the JSON hit and the replayed stream both move the prompt to cache_read_input_tokens
	msg := `{"model":"llama","temperature":0,"max_tokens":8,"messages":[{"role":"user","content":"count me once"}]}`
	if resp, b := s.do(t, "/v1/messages", "", msg); resp.StatusCode != 200 {
		t.Fatalf("messages miss: %d %s", resp.StatusCode, b)
	}
	_, jsonHit := s.do(t, "/v1/messages", "", msg)
	read := gjson.GetBytes(jsonHit, "usage.cache_read_input_tokens").Int()
	if read == 0 || gjson.GetBytes(jsonHit, "usage.input_tokens").Int() != 0 {
		t.Fatalf("messages JSON hit: %s", jsonHit)
	}
	resp, events := s.do(t, "/v1/messages", "", strings.Replace(msg, `"temperature":0`, `"temperature":0,"stream":true`, 1))
	if resp.Header.Get("X-Cache") != "HIT" {
		t.Fatalf("streamed message was no hit: %s", resp.Header.Get("X-Cache"))
	}
	var start string
	for _, f := range dataFrames(events) {
		if gjson.Get(f, "type").String() == "message_start" {
			start = f
		}
	}
	if gjson.Get(start, "message.usage.cache_read_input_tokens").Int() != read || gjson.Get(start, "message.usage.input_tokens").Int() != 0 {
		t.Errorf("the replayed message_start does not report the cached prompt as the JSON hit does (%d): %s", read, start)
	}
}
