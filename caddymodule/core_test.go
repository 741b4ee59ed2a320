package caddymodule_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/caddyai/gateway/internal/wiretest"
	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/simulator"
)

// coreSetup runs a gateway in front of a recording simulated upstream and returns the gateway's port.
type coreSetup struct {
	port     int
	upstream *recordingUpstream
}

const (
	secretAll   = "sk-test-all"
	secretQwen  = "sk-test-qwen-only"
	secretOff   = "sk-test-disabled"
	upstreamKey = "upstream-secret-xyz"
)

func startCore(t *testing.T, extra string) *coreSetup {
	t.Helper()
	up := newUpstream(t, simulator.Config{Models: []string{"demo-llama"}})
	port := freePort(t)
	t.Setenv("TEST_UPSTREAM_KEY", upstreamKey)
	startCaddy(t, globalOptions+fmt.Sprintf(`
:%d {
	ai_gateway {
		key %s {
			id all
		}
		key %s {
			id qwen-team
			models qwen*
		}
		key %s {
			id off
			disabled
		}
		model demo-llama {
			alias llama
			context_window 8192
			upstream %s
			upstream_key {env.TEST_UPSTREAM_KEY}
		}
		model qwen-7b {
			upstream %s
		}
		max_body 64KiB
		%s
	}
	reverse_proxy {
		dynamic ai_gateway
	}
}
`, port, policy.FormatHash(policy.HashSecret(secretAll)), policy.FormatHash(policy.HashSecret(secretQwen)),
		policy.FormatHash(policy.HashSecret(secretOff)), up.addr(), up.addr(), extra))
	return &coreSetup{port: port, upstream: up}
}

func (s *coreSetup) openai(key string) *openai.Client {
	c := openai.NewClient(option.WithBaseURL(url(s.port, "/v1/")), option.WithAPIKey(key), option.WithMaxRetries(0))
	return &c
}

func (s *coreSetup) post(t *testing.T, path string, headers map[string]string, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url(s.port, path), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	return doRequest(t, req)
}

func TestOpenAISDKThroughGateway(t *testing.T) {
	s := startCore(t, "")
	ctx := context.Background()
	client := s.openai(secretAll)

	t.Run("completion via alias", func(t *testing.T) {
		resp, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model:    "llama",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello there")},
		})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Model != "demo-llama" || resp.Choices[0].Message.Content == "" || resp.Usage.PromptTokens == 0 || resp.Usage.CompletionTokens == 0 {
			t.Errorf("response %+v", resp)
		}
		wiretest.Validate(t, "CreateChatCompletionResponse", []byte(resp.RawJSON()))
	})

	t.Run("streaming", func(t *testing.T) {
		stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
			Model:    "llama",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Stream please")},
		})
		var acc openai.ChatCompletionAccumulator
		chunks := 0
		for stream.Next() {
			acc.AddChunk(stream.Current())
			chunks++
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if chunks < 3 || acc.Choices[0].Message.Content == "" || acc.Model != "demo-llama" {
			t.Errorf("%d chunks, accumulated %+v", chunks, acc.ChatCompletion)
		}
	})

	errCases := []struct {
		name       string
		key, model string
		status     int
		typ, code  string
	}{
		{"unknown key", "sk-wrong", "llama", 401, "invalid_request_error", "invalid_api_key"},
		{"disabled key", secretOff, "llama", 401, "invalid_request_error", "invalid_api_key"},
		{"model not allowed", secretQwen, "llama", 403, "permission_error", "model_not_allowed"},
		{"unknown model", secretAll, "gpt-9", 404, "invalid_request_error", "model_not_found"},
	}
	for _, tc := range errCases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.openai(tc.key).Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
				Model:    tc.model,
				Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
			})
			var apiErr *openai.Error
			if !errors.As(err, &apiErr) {
				t.Fatalf("want *openai.Error, got %T %v", err, err)
			}
			if apiErr.StatusCode != tc.status || apiErr.Type != tc.typ || apiErr.Code != tc.code {
				t.Errorf("got %d %s %s (%s)", apiErr.StatusCode, apiErr.Type, apiErr.Code, apiErr.Message)
			}
			if strings.Contains(apiErr.RawJSON(), tc.key) {
				t.Errorf("error echoes the key: %s", apiErr.RawJSON())
			}
			wiretest.Validate(t, "ErrorResponse", []byte(`{"error":`+apiErr.RawJSON()+`}`))
		})
	}

	t.Run("models list only allowed models", func(t *testing.T) {
		page, err := s.openai(secretQwen).Models.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Data) != 1 || page.Data[0].ID != "qwen-7b" {
			t.Errorf("models %+v", page.Data)
		}
		m, err := client.Models.Get(ctx, "llama")
		if err != nil {
			t.Fatal(err)
		}
		if m.ID != "demo-llama" || !strings.Contains(m.RawJSON(), `"context_window":8192`) {
			t.Errorf("model %s", m.RawJSON())
		}
		_, err = s.openai(secretQwen).Models.Get(ctx, "demo-llama")
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 {
			t.Errorf("a model the key may not use must look absent, got %v", err)
		}
	})
}

func TestAnthropicSDKThroughGateway(t *testing.T) {
	s := startCore(t, "")
	ctx := context.Background()
	client := anthropic.NewClient(aoption.WithBaseURL(url(s.port, "/")), aoption.WithAPIKey(secretAll), aoption.WithMaxRetries(0))
	params := anthropic.MessageNewParams{
		Model:     "llama",
		MaxTokens: 12,
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("Hello"))},
	}
	msg, err := client.Messages.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Model != "demo-llama" || len(msg.Content) == 0 || msg.Content[0].Text == "" || msg.Usage.InputTokens == 0 {
		t.Errorf("message %+v", msg)
	}

	stream := client.Messages.NewStreaming(ctx, params)
	var acc anthropic.Message
	for stream.Next() {
		if err := acc.Accumulate(stream.Current()); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if len(acc.Content) == 0 || acc.Content[0].Text == "" || acc.Usage.OutputTokens == 0 {
		t.Errorf("streamed message %+v", acc)
	}

	bad := anthropic.NewClient(aoption.WithBaseURL(url(s.port, "/")), aoption.WithAPIKey("sk-nope"), aoption.WithMaxRetries(0))
	_, err = bad.Messages.New(ctx, params)
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("want *anthropic.Error, got %T %v", err, err)
	}
	if apiErr.StatusCode != 401 || string(apiErr.Type()) != "authentication_error" || apiErr.RequestID == "" {
		t.Errorf("got %d %q request-id %q", apiErr.StatusCode, apiErr.Type(), apiErr.RequestID)
	}
}

func TestGatewayWireDetails(t *testing.T) {
	s := startCore(t, "")
	auth := map[string]string{"Authorization": "Bearer " + secretAll}
	chat := `{"model":"llama","messages":[{"role":"user","content":"hi"}]}`

	t.Run("credentials never reach the upstream; the upstream key does", func(t *testing.T) {
		for _, h := range []map[string]string{auth, {"X-Api-Key": secretAll}, {"Api-Key": secretAll}} {
			resp, body := s.post(t, "/v1/chat/completions", h, chat)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
		}
		seen := s.upstream.requests()
		if len(seen) != 3 {
			t.Fatalf("upstream saw %d requests", len(seen))
		}
		for _, r := range seen {
			if r.Header.Get("Authorization") != "Bearer "+upstreamKey || r.Header.Get("X-Api-Key") != "" || r.Header.Get("Api-Key") != "" {
				t.Errorf("upstream headers %v", r.Header)
			}
			for _, vals := range r.Header {
				for _, v := range vals {
					if strings.Contains(v, secretAll) {
						t.Errorf("client secret reached the upstream: %v", r.Header)
					}
				}
			}
			if !bytes.Contains(r.Body, []byte(`"model":"demo-llama"`)) {
				t.Errorf("alias not rewritten: %s", r.Body)
			}
		}
	})

	t.Run("request ids", func(t *testing.T) {
		resp, _ := s.post(t, "/v1/chat/completions", map[string]string{"Authorization": "Bearer " + secretAll, "X-Request-Id": "client-id-1"}, chat)
		if resp.Header.Get("X-Request-Id") != "client-id-1" || len(resp.Header.Values("X-Request-Id")) != 1 {
			t.Errorf("x-request-id %v", resp.Header.Values("X-Request-Id"))
		}
		seen := s.upstream.requests()
		if got := seen[len(seen)-1].Header.Get("X-Request-Id"); got != "client-id-1" {
			t.Errorf("upstream got request id %q", got)
		}
		resp, _ = s.post(t, "/v1/chat/completions", map[string]string{"X-Request-Id": "bad id\twith tab"}, chat)
		if id := resp.Header.Get("X-Request-Id"); !strings.HasPrefix(id, "req_") {
			t.Errorf("invalid client id not replaced: %q", id)
		}
		resp, _ = s.post(t, "/v1/messages", map[string]string{"X-Api-Key": "nope", "Anthropic-Version": "2023-06-01"}, `{}`)
		if resp.Header.Get("Request-Id") == "" || resp.Header.Get("Request-Id") != resp.Header.Get("X-Request-Id") {
			t.Errorf("anthropic request-id %q / %q", resp.Header.Get("Request-Id"), resp.Header.Get("X-Request-Id"))
		}
	})

	envelopes := []struct {
		name    string
		path    string
		headers map[string]string
		body    string
		status  int
		code    string // OpenAI code, or Anthropic error type for /v1/messages
	}{
		{"missing key", "/v1/chat/completions", nil, chat, 401, "invalid_api_key"},
		{"bad json", "/v1/chat/completions", auth, `{"model":`, 400, "invalid_json"},
		{"model not a string", "/v1/chat/completions", auth, `{"model":7}`, 400, "invalid_type"},
		{"missing model", "/v1/embeddings", auth, `{"input":"x"}`, 400, "missing_required_parameter"},
		{"bad role", "/v1/chat/completions", auth, `{"model":"llama","messages":[{"role":"robot","content":"hi"}]}`, 400, "invalid_value"},
		{"too large", "/v1/chat/completions", auth, `{"model":"llama","messages":[{"role":"user","content":"` + strings.Repeat("a", 70<<10) + `"}]}`, 413, "request_too_large"},
		{"unknown path", "/v1/fine_tuning/jobs", auth, `{}`, 404, ""},
		{"other api version", "/v2/chat/completions", auth, chat, 404, "unsupported_api_version"},
		{"anthropic missing version", "/v1/messages", map[string]string{"X-Api-Key": secretAll}, `{"model":"llama","max_tokens":5,"messages":[]}`, 400, "invalid_request_error"},
		{"anthropic bad key", "/v1/messages", map[string]string{"X-Api-Key": "nope", "Anthropic-Version": "2023-06-01"}, `{}`, 401, "authentication_error"},
		{"anthropic unknown model", "/v1/messages", map[string]string{"X-Api-Key": secretAll, "Anthropic-Version": "2023-06-01"}, `{"model":"nope","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`, 404, "not_found_error"},
	}
	for _, tc := range envelopes {
		t.Run(tc.name, func(t *testing.T) {
			before := len(s.upstream.requests())
			resp, body := s.post(t, tc.path, tc.headers, tc.body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if len(s.upstream.requests()) != before {
				t.Error("a refused request reached the upstream")
			}
			env := decodeJSON(t, body)
			if strings.HasPrefix(tc.path, "/v1/messages") {
				if env["type"] != "error" || env["error"].(map[string]any)["type"] != tc.code || env["request_id"] == nil {
					t.Errorf("anthropic envelope %s", body)
				}
				return
			}
			wiretest.Validate(t, "ErrorResponse", body)
			code, _ := env["error"].(map[string]any)["code"].(string)
			if code != tc.code {
				t.Errorf("code %q, want %q: %s", code, tc.code, body)
			}
		})
	}

	t.Run("stream ends with DONE", func(t *testing.T) {
		resp, body := s.post(t, "/v1/chat/completions", auth, `{"model":"llama","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") || !bytes.HasSuffix(body, []byte("data: [DONE]\n\n")) {
			t.Errorf("status %d type %q body %q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
	})
}

func TestKeysFileHotReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keys.json")
	writeKeys := func(content string) {
		t.Helper()
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	keyDoc := func(id, secret string) string {
		return fmt.Sprintf(`{"keys":[{"id":%q,"secret":%q}]}`, id, policy.FormatHash(policy.HashSecret(secret)))
	}
	writeKeys(keyDoc("file-a", "sk-file-a"))
	s := startCore(t, "keys_file "+path+"\n\t\tkeys_file_interval 20ms\n\t\tauth_failures off")
	status := func(secret string) int {
		resp, _ := s.post(t, "/v1/chat/completions", map[string]string{"Authorization": "Bearer " + secret}, `{"model":"llama","messages":[{"role":"user","content":"hi"}]}`)
		return resp.StatusCode
	}
	if status("sk-file-a") != 200 || status(secretAll) != 200 {
		t.Fatal("file key or inline key refused")
	}
	writeKeys(keyDoc("file-b", "sk-file-b"))
	waitFor(t, "the new key file to be loaded", 5*time.Second, func() bool { return status("sk-file-b") == 200 })
	if status("sk-file-a") != 401 {
		t.Error("a key removed from the file still works")
	}
	writeKeys("{ this is not json")
	time.Sleep(100 * time.Millisecond) // several poll intervals: the broken file must not take effect
	if status("sk-file-b") != 200 || status(secretAll) != 200 {
		t.Error("a broken keys file dropped the last good key set")
	}
	writeKeys(keyDoc("file-c", "sk-file-c"))
	waitFor(t, "recovery after the broken file", 5*time.Second, func() bool { return status("sk-file-c") == 200 })
}

func TestConfigReloadKeepsServing(t *testing.T) {
	s := startCore(t, "")
	auth := map[string]string{"Authorization": "Bearer " + secretAll}
	chat := `{"model":"llama","messages":[{"role":"user","content":"hi"}]}`
	if resp, body := s.post(t, "/v1/chat/completions", auth, chat); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	// reload with one more alias: the new config takes effect, nothing else changes
	loadCaddy(t, globalOptions+fmt.Sprintf(`
:%d {
	ai_gateway {
		key %s {
			id all
		}
		model demo-llama {
			alias llama llama-latest
			upstream %s
		}
	}
	reverse_proxy {
		dynamic ai_gateway
	}
}
`, s.port, policy.FormatHash(policy.HashSecret(secretAll)), s.upstream.addr()))
	resp, body := s.post(t, "/v1/chat/completions", auth, `{"model":"llama-latest","messages":[{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != 200 || decodeJSON(t, body)["model"] != "demo-llama" {
		t.Fatalf("after reload: %d %s", resp.StatusCode, body)
	}
}

// TestBruteForceGuard: failed key checks are limited per client IP; past the limit even a right
// key from that address waits.
func TestBruteForceGuard(t *testing.T) {
	s := startCore(t, "auth_failures 5")
	chat := `{"model":"llama","messages":[{"role":"user","content":"hi"}]}`
	for i := 0; i < 5; i++ {
		if resp, _ := s.post(t, "/v1/chat/completions", map[string]string{"Authorization": fmt.Sprintf("Bearer sk-guess-%d", i)}, chat); resp.StatusCode != 401 {
			t.Fatalf("guess %d: %d", i, resp.StatusCode)
		}
	}
	resp, body := s.post(t, "/v1/chat/completions", map[string]string{"Authorization": "Bearer sk-guess-x"}, chat)
	if resp.StatusCode != 429 || !strings.Contains(string(body), "too_many_auth_failures") {
		t.Errorf("after 5 failures, a sixth guess: %d %s", resp.StatusCode, body)
	}
	// 5 failures a minute: the next one fits 12s after the last, not the 2s of the default 30
	if ra := resp.Header.Get("Retry-After"); ra != "12" && ra != "11" {
		t.Errorf("after 5 failures: Retry-After %q, want 12 (a fifth of a minute)", ra)
	}
	// a valid key from the same address (clients behind one NAT or load balancer) is served
	for i := 0; i < 3; i++ {
		if resp, body := s.post(t, "/v1/chat/completions", map[string]string{"Authorization": "Bearer " + secretAll}, chat); resp.StatusCode != 200 {
			t.Errorf("a valid key behind an address past its failures: %d %s", resp.StatusCode, body)
		}
		if resp, _ := s.post(t, "/v1/chat/completions", map[string]string{"Authorization": "Bearer sk-guess-again"}, chat); resp.StatusCode != 429 {
			t.Errorf("a guess between valid requests: %d, want 429", resp.StatusCode)
		}
	}
}

// TestAnthropicCountTokens: /v1/messages/count_tokens is answered by the gateway with the
// model's tokenizer, and the count equals the input tokens the model server reports.
func TestAnthropicCountTokens(t *testing.T) {
	s := startCore(t, "")
	hdr := map[string]string{"X-Api-Key": secretAll, "Anthropic-Version": "2023-06-01"}
	msg := `"system":"Be brief.","messages":[{"role":"user","content":"How many tokens is this sentence?"}]`
	before := len(s.upstream.requests())
	resp, body := s.post(t, "/v1/messages/count_tokens", hdr, `{"model":"llama",`+msg+`}`)
	if resp.StatusCode != 200 || len(s.upstream.requests()) != before {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	counted := decodeJSON(t, body)["input_tokens"].(float64)
	resp, body = s.post(t, "/v1/messages", hdr, `{"model":"llama","max_tokens":5,`+msg+`}`)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	used := decodeJSON(t, body)["usage"].(map[string]any)["input_tokens"].(float64)
	if counted == 0 || counted != used {
		t.Errorf("count_tokens %v, model server's input_tokens %v", counted, used)
	}
}
