package caddymodule_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/tidwall/gjson"

	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/simulator"
)

const secretOther = "sk-test-other-tenant"

func startCache(t *testing.T, sim simulator.Config, keyLimits string) *usageSetup {
	t.Helper()
	up := newUpstream(t, sim)
	port := freePort(t)
	startCaddy(t, gatewaySite(port, fmt.Sprintf(`
key %s {
	id all
	%s
}
key %s {
	id other
}
model demo-llama {
	alias llama
	upstream %s
}
model demo-llama-old {
	upstream %s
}
cache {
	ttl 10m
	max_size 8MiB
}`, policy.FormatHash(policy.HashSecret(secretAll)), keyLimits, policy.FormatHash(policy.HashSecret(secretOther)), up.addr(), up.addr()), ""))
	return &usageSetup{port: port, upstream: up}
}

func TestCacheKeysAndHeaders(t *testing.T) {
	s := startCache(t, simulator.Config{}, "")
	det := func(extra string) string {
		return `{"model":"llama","temperature":0,"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]` + extra + `}`
	}
	check := func(name, body, want string, hdr ...string) {
		t.Helper()
		resp, b := s.do(t, "/v1/chat/completions", "", body, hdr...)
		if resp.StatusCode != 200 || resp.Header.Get("X-Cache") != want {
			t.Errorf("%s: %d x-cache %q, want %q: %s", name, resp.StatusCode, resp.Header.Get("X-Cache"), want, b)
		}
	}
	check("first", det(""), "MISS")
	check("same request", det(""), "HIT")
	check("keys reordered, whitespace, stream_options and user differ", `{ "messages":[{"content":"be brief","role":"system"},{"content":"hi","role":"user"}],
		"temperature":0, "user":"someone", "model":"llama" }`, "HIT")
	check("by canonical model name", strings.Replace(det(""), `"llama"`, `"demo-llama"`, 1), "HIT")
	for name, extra := range map[string]string{
		"max_tokens":  `,"max_tokens":7`,
		"top_p":       `,"top_p":0.5`,
		"tool_choice": `,"tool_choice":"none"`,
		"seed":        `,"seed":3`,
	} {
		check(name, det(extra), "MISS")
		check(name+" again", det(extra), "HIT")
	}
	check("system prompt", strings.Replace(det(""), "be brief", "be verbose", 1), "MISS")
	check("other snapshot", strings.Replace(det(""), `"llama"`, `"demo-llama-old"`, 1), "MISS")
	check("other tenant", det(""), "MISS", "Authorization", "Bearer "+secretOther)
	check("not deterministic", `{"model":"llama","messages":[{"role":"user","content":"hi"}]}`, "BYPASS")
	check("no-store", det(""), "BYPASS", "Cache-Control", "no-store")
	before := len(s.upstream.requests())
	check("no-cache refreshes", det(""), "MISS", "Cache-Control", "no-cache")
	if len(s.upstream.requests()) != before+1 {
		t.Error("no-cache did not go upstream")
	}

	resp, b := s.do(t, "/v1/chat/completions", "", det(""))
	if resp.Header.Get("Age") == "" || gjson.GetBytes(b, "usage.prompt_tokens_details.cached_tokens").Int() != gjson.GetBytes(b, "usage.prompt_tokens").Int() {
		t.Errorf("hit: age %q body %s", resp.Header.Get("Age"), b)
	}
	if got := s.metric(t, "caddy_ai_gateway_cache_requests_total", map[string]string{"result": "hit"}); got < 6 {
		t.Errorf("hits counted %v", got)
	}
	if got := s.metric(t, "caddy_ai_gateway_tokens_total", map[string]string{"kind": "cached"}); got == 0 {
		t.Error("cached tokens not counted")
	}
}

// TestCacheStreamReplay: a hit for a streaming request is a well-formed stream that openai-go
// reads into the same content as the original answer; a streamed miss fills the cache too.
func TestCacheStreamReplay(t *testing.T) {
	s := startCache(t, simulator.Config{}, "")
	client := openai.NewClient(option.WithBaseURL(url(s.port, "/v1/")), option.WithAPIKey(secretAll), option.WithMaxRetries(0))
	params := openai.ChatCompletionNewParams{Model: "llama", Temperature: openai.Float(0),
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("stream me")}}
	ctx := context.Background()
	orig, err := client.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	collect := func() (string, string) {
		stream := client.Chat.Completions.NewStreaming(ctx, params)
		var acc openai.ChatCompletionAccumulator
		for stream.Next() {
			acc.AddChunk(stream.Current())
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		return acc.Choices[0].Message.Content, string(acc.Choices[0].FinishReason)
	}
	before := len(s.upstream.requests())
	content, finish := collect()
	if content != orig.Choices[0].Message.Content || finish != string(orig.Choices[0].FinishReason) || len(s.upstream.requests()) != before {
		t.Errorf("replayed %q/%s, original %q/%s; upstream calls %d", content, finish, orig.Choices[0].Message.Content, orig.Choices[0].FinishReason, len(s.upstream.requests())-before)
	}
	// a streamed miss is assembled into the cache and then served as JSON
	params.Messages = []openai.ChatCompletionMessageParamUnion{openai.UserMessage("first streamed")}
	streamed, _ := collect()
	before = len(s.upstream.requests())
	got, err := client.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if got.Choices[0].Message.Content != streamed || len(s.upstream.requests()) != before {
		t.Errorf("JSON from a streamed fill: %q vs %q (upstream calls %d)", got.Choices[0].Message.Content, streamed, len(s.upstream.requests())-before)
	}
}

// TestCacheSingleFlight: many identical requests at once do not all go upstream.
func TestCacheSingleFlight(t *testing.T) {
	s := startCache(t, simulator.Config{TTFT: 300 * time.Millisecond}, "")
	body := `{"model":"llama","temperature":0,"messages":[{"role":"user","content":"together"}]}`
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if resp, b := s.do(t, "/v1/chat/completions", "", body); resp.StatusCode != 200 {
				t.Errorf("%d %s", resp.StatusCode, b)
			}
		}()
	}
	wg.Wait()
	if n := len(s.upstream.requests()); n > 2 {
		t.Errorf("%d of 20 identical concurrent requests went upstream", n)
	}
}

// TestCacheHitsSpareTheTokenBudget: hits count as requests but not as tokens.
func TestCacheHitsSpareTheTokenBudget(t *testing.T) {
	s := startCache(t, simulator.Config{}, "tpm 80")
	body := `{"model":"llama","temperature":0,"max_tokens":16,"messages":[{"role":"user","content":"budget"}]}`
	for i := 0; i < 6; i++ {
		resp, b := s.do(t, "/v1/chat/completions", "", body)
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, b)
		}
	}
}
