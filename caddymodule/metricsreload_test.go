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

// TestMetricsSeriesLabels: the per-model series resolved when a model is provisioned count
// under the model's name and an empty key_id, and metrics_key_id puts every request and token
// under the key's id instead (none under an empty one).
func TestMetricsSeriesLabels(t *testing.T) {
	for _, keyIDs := range []bool{false, true} {
		t.Run(map[bool]string{false: "without key ids", true: "metrics_key_id"}[keyIDs], func(t *testing.T) {
			up := newUpstream(t, simulator.Config{})
			port := freePort(t)
			opt := ""
			if keyIDs {
				opt = "metrics_key_id\n"
			}
			startCaddy(t, gatewaySite(port, keyAll+"\n"+opt+`model demo-llama {
	alias llama
	upstream `+up.addr()+`
}
`, ""))
			s := &usageSetup{port: port, upstream: up}
			// a series appears when first counted, not at provision (tests and dashboards wait
			// for a request's series to show up)
			for _, name := range []string{"requests_total", "tokens_total", "in_flight_requests", "upstream_duration_seconds"} {
				if text := metricsText(t, port); strings.Contains(text, "caddy_ai_gateway_"+name+"{") {
					t.Errorf("caddy_ai_gateway_%s has a series before any request", name)
				}
			}
			for i := 0; i < 2; i++ {
				if resp, body := s.do(t, "/v1/chat/completions", "", chatBody); resp.StatusCode != 200 {
					t.Fatalf("chat: %d %s", resp.StatusCode, body)
				}
			}
			if resp, _ := s.do(t, "/v1/chat/completions", "", `{"model":"llama","messages":"nope"}`); resp.StatusCode != 400 {
				t.Fatalf("a bad request: %d", resp.StatusCode)
			}
			id, other := "", "all"
			if keyIDs {
				id, other = "all", ""
			}
			want := func(name string, labels map[string]string, n float64) {
				t.Helper()
				if got := s.metric(t, name, labels); got != n {
					t.Errorf("%s %v = %v, want %v", name, labels, got, n)
				}
			}
			want("caddy_ai_gateway_requests_total", map[string]string{"model": "demo-llama", "code": "200", "reject_reason": "", "key_id": id}, 2)
			want("caddy_ai_gateway_requests_total", map[string]string{"model": "demo-llama", "code": "200", "key_id": other}, 0)
			want("caddy_ai_gateway_requests_total", map[string]string{"code": "400", "key_id": id}, 1)
			want("caddy_ai_gateway_upstream_duration_seconds", map[string]string{"model": "demo-llama"}, 2)
			want("caddy_ai_gateway_in_flight_requests", map[string]string{"model": "demo-llama"}, 0)
			for _, kind := range []string{"prompt", "completion"} {
				if got := s.metric(t, "caddy_ai_gateway_tokens_total", map[string]string{"model": "demo-llama", "kind": kind, "key_id": id}); got <= 0 {
					t.Errorf("tokens_total{%s, key_id %q} = %v", kind, id, got)
				}
				want("caddy_ai_gateway_tokens_total", map[string]string{"model": "demo-llama", "kind": kind, "key_id": other}, 0)
			}
		})
	}
}
