package caddymodule_test

import (
	"strings"
	"testing"

	"github.com/caddyai/gateway/simulator"
)

// TestMetricsSurviveReload: a config reload (caddy.Load, as the admin API's /load and `caddy
// reload` do it) that adds a model keeps every caddy_ai_gateway_* count, and the new model's
// series join them.
func TestMetricsSurviveReload(t *testing.T) {
	up := newUpstream(t, simulator.Config{})
	port := freePort(t)
	config := func(extraModel string) string {
		return gatewaySite(port, keyAll+`
model demo-llama {
	alias llama
	upstream `+up.addr()+`
}
`+extraModel, "")
	}
	startCaddy(t, config(""))
	s := &usageSetup{port: port, upstream: up}
	for i := 0; i < 3; i++ {
		if resp, body := s.do(t, "/v1/chat/completions", "", chatBody); resp.StatusCode != 200 {
			t.Fatalf("chat: %d %s", resp.StatusCode, body)
		}
	}
	if resp, _ := s.do(t, "/v1/chat/completions", "", strings.Replace(chatBody, "llama", "nope", 1)); resp.StatusCode != 404 {
		t.Fatalf("unknown model: %d", resp.StatusCode)
	}
	type series struct {
		name   string
		labels map[string]string
	}
	watched := []series{
		{"caddy_ai_gateway_requests_total", map[string]string{"model": "demo-llama", "code": "200"}},
		{"caddy_ai_gateway_requests_total", map[string]string{"code": "404", "reject_reason": "model_not_found"}},
		{"caddy_ai_gateway_tokens_total", map[string]string{"model": "demo-llama", "kind": "prompt"}},
		{"caddy_ai_gateway_tokens_total", map[string]string{"model": "demo-llama", "kind": "completion"}},
		{"caddy_ai_gateway_upstream_duration_seconds", map[string]string{"model": "demo-llama"}},
		{"caddy_ai_gateway_prompt_counts_total", map[string]string{"model": "demo-llama"}},
	}
	before := make([]float64, len(watched))
	for i, w := range watched {
		if before[i] = s.metric(t, w.name, w.labels); before[i] == 0 {
			t.Fatalf("%s %v is 0 before the reload", w.name, w.labels)
		}
	}

	loadCaddy(t, config(`model second {
				upstream `+up.addr()+`
			}`))
	for i, w := range watched {
		if got := s.metric(t, w.name, w.labels); got != before[i] {
			t.Errorf("after a reload %s %v = %v, was %v", w.name, w.labels, got, before[i])
		}
	}
	if resp, body := s.do(t, "/v1/chat/completions", "", strings.Replace(chatBody, "llama", "second", 1)); resp.StatusCode != 200 {
		t.Fatalf("chat with the new model: %d %s", resp.StatusCode, body)
	}
	if resp, _ := s.do(t, "/v1/chat/completions", "", chatBody); resp.StatusCode != 200 {
		t.Fatal("chat after the reload failed")
	}
	if got := s.metric(t, watched[0].name, watched[0].labels); got != before[0]+1 {
		t.Errorf("requests of demo-llama after the reload: %v, want %v", got, before[0]+1)
	}
	if got := s.metric(t, "caddy_ai_gateway_requests_total", map[string]string{"model": "second", "code": "200"}); got != 1 {
		t.Errorf("requests of the added model: %v, want 1", got)
	}
}
