package caddymodule_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/simulator"
)

// TestVersionsThroughCaddy: API version header negotiation and renames, model snapshots with a
// moving alias, a per-key pin, deprecation headers and sunset refusals.
func TestVersionsThroughCaddy(t *testing.T) {
	up := newUpstream(t, simulator.Config{})
	port := freePort(t)
	pinned := "sk-test-pinned"
	startCaddy(t, globalOptions+fmt.Sprintf(`
:%d {
	ai_gateway {
		key %s {
			id current
		}
		key %s {
			id pinned
			pin llama llama-3.1-8b-2025-01-01
		}
		model llama-3.1-8b-2025-01-01 {
			upstream %s
			deprecated 2026-06-01T00:00:00Z
			sunset 2099-01-31T00:00:00Z
			deprecation_link https://docs.example.com/models
		}
		model llama-3.1-8b-2025-07-01 {
			alias llama
			upstream %s
		}
		model llama-2-7b {
			upstream %s
			sunset 2026-01-01T00:00:00Z
		}
		api_version {
			header X-Api-Version
			supported 2025-01-01 2026-06-01
			default 2026-06-01
			version 2025-01-01 {
				rename_param max_tokens max_completion_tokens
				deprecated 2026-06-01T00:00:00Z
				sunset 2099-01-01T00:00:00Z
			}
		}
	}
	reverse_proxy {
		dynamic ai_gateway
	}
}
`, port, policy.FormatHash(policy.HashSecret(secretAll)), policy.FormatHash(policy.HashSecret(pinned)), up.addr(), up.addr(), up.addr()))
	s := &usageSetup{port: port, upstream: up}
	ctx := context.Background()
	modelFor := func(key string) string {
		c := openai.NewClient(option.WithBaseURL(url(port, "/v1/")), option.WithAPIKey(key), option.WithMaxRetries(0))
		resp, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "llama",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}})
		if err != nil {
			t.Fatal(err)
		}
		return resp.Model
	}
	if a, b := modelFor(secretAll), modelFor(pinned); a != "llama-3.1-8b-2025-07-01" || b != "llama-3.1-8b-2025-01-01" {
		t.Errorf("same alias: current key got %q, pinned key got %q", a, b)
	}

	post := func(key, model, version string) (*http.Response, []byte) {
		hdr := []string{"Authorization", "Bearer " + key}
		if version != "" {
			hdr = append(hdr, "X-Api-Version", version)
		}
		return s.do(t, "/v1/chat/completions", "", `{"model":"`+model+`","max_tokens":3,"messages":[{"role":"user","content":"hi"}]}`, hdr...)
	}

	t.Run("deprecated snapshot headers", func(t *testing.T) {
		resp, _ := post(pinned, "llama", "")
		if resp.Header.Get("Deprecation") != "@1780272000" || resp.Header.Get("Sunset") != "Sat, 31 Jan 2099 00:00:00 GMT" ||
			resp.Header.Get("Link") != `<https://docs.example.com/models>; rel="deprecation"` {
			t.Errorf("headers %v", resp.Header)
		}
		resp, _ = post(secretAll, "llama", "")
		if resp.Header.Get("Deprecation") != "" {
			t.Errorf("current snapshot marked deprecated: %v", resp.Header)
		}
	})
	t.Run("sunset model is gone", func(t *testing.T) {
		resp, body := post(secretAll, "llama-2-7b", "")
		if resp.StatusCode != 410 || !strings.Contains(string(body), `"code":"model_sunset"`) {
			t.Errorf("%d %s", resp.StatusCode, body)
		}
	})
	t.Run("api version negotiation", func(t *testing.T) {
		resp, _ := post(secretAll, "llama", "")
		if resp.Header.Get("X-Api-Version") != "2026-06-01" {
			t.Errorf("default version not echoed: %v", resp.Header)
		}
		before := len(up.requests())
		resp, _ = post(secretAll, "llama", "2025-01-01")
		if resp.StatusCode != 200 || resp.Header.Get("X-Api-Version") != "2025-01-01" || resp.Header.Get("Deprecation") == "" {
			t.Errorf("old version: %d %v", resp.StatusCode, resp.Header)
		}
		seen := up.requests()
		if len(seen) != before+1 || !strings.Contains(string(seen[len(seen)-1].Body), `"max_completion_tokens":3`) || strings.Contains(string(seen[len(seen)-1].Body), `"max_tokens"`) {
			t.Errorf("rename not applied upstream: %s", seen[len(seen)-1].Body)
		}
		resp, body := post(secretAll, "llama", "2019-01-01")
		if resp.StatusCode != 400 || !strings.Contains(string(body), `"code":"unsupported_api_version"`) || !strings.Contains(string(body), "2025-01-01, 2026-06-01") {
			t.Errorf("unknown version: %d %s", resp.StatusCode, body)
		}
	})
	t.Run("models list shows snapshots and dates", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, url(port, "/v1/models"), nil)
		req.Header.Set("Authorization", "Bearer "+secretAll)
		_, b := doRequest(t, req)
		body := string(b)
		for _, want := range []string{`"id":"llama-3.1-8b-2025-01-01"`, `"deprecated_at":"2026-06-01T00:00:00Z"`, `"sunset_at":"2099-01-31T00:00:00Z"`, `"aliases":["llama"]`} {
			if !strings.Contains(body, want) {
				t.Errorf("models list lacks %s: %s", want, body)
			}
		}
	})
}
