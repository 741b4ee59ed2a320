package caddymodule_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/simulator"
)

// startLogged starts a simulator and a site :port whose access log goes to a file, with the
// directives of body (a fmt format, given args(the simulator's address)); it returns the
// simulator, the port and the log's path.
func startLogged(t *testing.T, body string, args func(upstream string) []any) (*recordingUpstream, int, string) {
	t.Helper()
	up := newUpstream(t, simulator.Config{})
	port := freePort(t)
	accessPath := filepath.Join(t.TempDir(), "access.log")
	startCaddy(t, globalOptions+fmt.Sprintf(":%d {\n\tlog {\n\t\toutput file %s\n\t}", port, accessPath)+
		fmt.Sprintf(body, args(up.addr())...)+"\n}\n")
	return up, port, accessPath
}

// TestPlaceholderForms: the README's working forms of the gateway's placeholders: `header
// >Name` (deferred until the response is written, after ai_gateway ran), `header_up` inside
// reverse_proxy (sent upstream), and `log_append` (the access log entry); on JSON answers and
// streams.
func TestPlaceholderForms(t *testing.T) {
	up, port, accessPath := startLogged(t, `
	header >X-Ai-Key-Id {http.ai_gateway.key_id}
	header >X-Ai-Model {http.ai_gateway.model}
	log_append ai_tenant {http.ai_gateway.key_id}
	log_append ai_cache {http.ai_gateway.cache}
	ai_gateway {
		key %s {
			id placeholder-team
		}
		model demo-llama {
			alias llama
			upstream %s
		}
	}
	reverse_proxy {
		dynamic ai_gateway
		header_up X-Gateway-Key-Id {http.ai_gateway.key_id}
		header_up X-Gateway-Model {http.ai_gateway.model}
	}`, func(upstream string) []any { return []any{policy.FormatHash(policy.HashSecret(secretAll)), upstream} })
	s := &usageSetup{port: port, upstream: up}
	for _, body := range []string{chatBody, streamBody(false)} {
		resp, b := s.do(t, "/v1/chat/completions", "", body)
		if resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}
		if got := resp.Header.Get("X-Ai-Key-Id"); got != "placeholder-team" {
			t.Errorf("header >X-Ai-Key-Id: %q", got)
		}
		if got := resp.Header.Get("X-Ai-Model"); got != "demo-llama" {
			t.Errorf("header >X-Ai-Model: %q", got)
		}
	}
	for _, r := range up.requests() {
		if r.Header.Get("X-Gateway-Key-Id") != "placeholder-team" || r.Header.Get("X-Gateway-Model") != "demo-llama" {
			t.Errorf("header_up: the upstream got key id %q model %q", r.Header.Get("X-Gateway-Key-Id"), r.Header.Get("X-Gateway-Model"))
		}
	}
	data, err := os.ReadFile(accessPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSpace(data), []byte("\n"))
	if len(lines) != 2 {
		t.Fatalf("%d access log entries, want 2:\n%s", len(lines), data)
	}
	for _, l := range lines {
		var e map[string]any
		if err := json.Unmarshal(l, &e); err != nil {
			t.Fatal(err)
		}
		if e["ai_tenant"] != "placeholder-team" {
			t.Errorf("log_append ai_tenant: %v", e["ai_tenant"])
		}
	}
}

// TestCostPlaceholder: {http.ai_gateway.cost} is the request's cost, as the access log's
// ai_cost field has it: the prompt and completion tokens at the model's prices.
func TestCostPlaceholder(t *testing.T) {
	storeDir := t.TempDir()
	up, port, accessPath := startLogged(t, `
	log_append ai_cost_placeholder {http.ai_gateway.cost}
	ai_gateway {
		key %s {
			id cost-team
		}
		model demo-llama {
			alias llama
			upstream %s
			price {
				input 2
				output 10
			}
		}
		storage {
			dir %s
		}
		accounting {
			currency USD
		}
	}
	reverse_proxy {
		dynamic ai_gateway
	}`, func(upstream string) []any {
		return []any{policy.FormatHash(policy.HashSecret(secretAll)), upstream, storeDir}
	})
	s := &usageSetup{port: port, upstream: up}
	resp, b := s.do(t, "/v1/chat/completions", "", chatBody)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	var answer struct {
		Usage struct {
			PromptTokens     int64 `json:"prompt_tokens"`
			CompletionTokens int64 `json:"completion_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(b, &answer); err != nil {
		t.Fatal(err)
	}
	var data []byte
	for range 50 { // the access log entry is written after the response
		if data, _ = os.ReadFile(accessPath); bytes.Contains(data, []byte("ai_cost_placeholder")) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	var e map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(data), &e); err != nil {
		t.Fatalf("%v: %s", err, data)
	}
	// cost in micro-units: tokens x price per million tokens
	micros := answer.Usage.PromptTokens*2 + answer.Usage.CompletionTokens*10
	want := fmt.Sprintf("%d.%06d", micros/1_000_000, micros%1_000_000)
	if e["ai_cost_placeholder"] != want || e["ai_cost"] != want {
		t.Errorf("cost placeholder %v, log field %v, want %s (usage %+v)", e["ai_cost_placeholder"], e["ai_cost"], want, answer.Usage)
	}
}
