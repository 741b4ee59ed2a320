package caddymodule_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"

	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/simulator"
)

// TestAccessLogNeverShowsKeys: with a plain `log` block (no filter), no key reaches Caddy's
// access log, whichever header carried it (the Anthropic SDK's x-api-key included); every
// request has exactly one entry, with the ai_* fields and log_append's fields; the upstream
// never sees a credential of the client.
func TestAccessLogNeverShowsKeys(t *testing.T) {
	up := newUpstream(t, simulator.Config{})
	port := freePort(t)
	accessPath := filepath.Join(t.TempDir(), "access.log")
	const wrongKey = "sk-wrong-never-logged-7e1"
	startCaddy(t, globalOptions+fmt.Sprintf(`
:%d {
	log {
		output file %s
	}
	log_append ai_key {http.ai_gateway.key_id}
	encode gzip
	header +X-Site once
	ai_gateway {
		key %s {
			id logged-team
		}
		model demo-llama {
			alias llama
			upstream %s
		}
	}
	reverse_proxy {
		dynamic ai_gateway
	}
}
`, port, accessPath, policy.FormatHash(policy.HashSecret(secretAll)), up.addr()))

	ctx := context.Background()
	client := anthropic.NewClient(aoption.WithBaseURL(url(port, "/")), aoption.WithAPIKey(secretAll), aoption.WithMaxRetries(0))
	msg, err := client.Messages.New(ctx, anthropic.MessageNewParams{Model: "llama", MaxTokens: 8,
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("Hello"))}})
	if err != nil || msg.Usage.OutputTokens == 0 {
		t.Fatalf("anthropic SDK: %v %+v", err, msg)
	}
	stream := client.Messages.NewStreaming(ctx, anthropic.MessageNewParams{Model: "llama", MaxTokens: 8,
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("Hello"))}})
	for stream.Next() {
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("anthropic SDK stream: %v", err)
	}
	s := &usageSetup{port: port, upstream: up}
	chat := `{"model":"llama","max_tokens":4,"messages":[{"role":"user","content":"hi"}]}`
	cases := []struct {
		header, value string
		status        int
	}{
		{"Api-Key", secretAll, 200},
		{"Authorization", "Bearer " + secretAll, 200},
		{"X-Api-Key", wrongKey, 401},
		{"Api-Key", wrongKey, 401},
	}
	for _, c := range cases {
		req := []string{"Authorization", "", c.header, c.value}
		if c.header == "Authorization" {
			req = req[2:]
		}
		resp, body := s.do(t, "/v1/chat/completions", "", chat, req...)
		if resp.StatusCode != c.status || !json.Valid(body) {
			t.Errorf("%s: %d %s", c.header, resp.StatusCode, body)
		}
		if got := resp.Header.Values("X-Site"); len(got) != 1 {
			t.Errorf("%s: the site's header was set %d times: %v", c.header, len(got), got)
		}
	}

	data, err := os.ReadFile(accessPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{secretAll, wrongKey} {
		if bytes.Contains(data, []byte(secret)) {
			t.Errorf("the access log holds the key %.10s...", secret)
		}
	}
	var entries []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e map[string]any
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("access log line is not JSON: %v: %s", err, sc.Text())
		}
		entries = append(entries, e)
	}
	if len(entries) != 2+len(cases) {
		t.Fatalf("%d access log entries for %d requests:\n%s", len(entries), 2+len(cases), data)
	}
	statuses := map[float64]int{}
	for _, e := range entries {
		statuses[e["status"].(float64)]++
		req, _ := e["request"].(map[string]any)
		if !strings.HasPrefix(fmt.Sprint(req["uri"]), "/v1/") {
			t.Errorf("entry for %v", req["uri"])
		}
		headers, _ := req["headers"].(map[string]any)
		for h := range headers {
			if strings.EqualFold(h, "X-Api-Key") || strings.EqualFold(h, "Api-Key") {
				t.Errorf("the access log records the %s header", h)
			}
		}
		if e["ai_request_id"] == nil {
			t.Errorf("entry without the gateway's fields: %v", e)
		}
		if e["status"].(float64) == 200 && (e["ai_key_id"] != "logged-team" || e["ai_key"] != "logged-team") {
			t.Errorf("served entry without its key id (ai_key_id %v, log_append ai_key %v)", e["ai_key_id"], e["ai_key"])
		}
	}
	if statuses[200] != 4 || statuses[401] != 2 {
		t.Errorf("statuses in the access log: %v", statuses)
	}
	for _, r := range up.requests() {
		for _, h := range []string{"X-Api-Key", "Api-Key"} {
			if r.Header.Get(h) != "" {
				t.Errorf("the upstream got the client's %s", h)
			}
		}
		if strings.Contains(r.Header.Get("Authorization"), secretAll) {
			t.Error("the upstream got the client's key")
		}
	}
}
