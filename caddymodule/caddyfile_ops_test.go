package caddymodule

import (
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// TestCaddyfileOpsRejects: health_check, readiness_path and tokenizer upstream refuse what they
// cannot mean.
func TestCaddyfileOpsRejects(t *testing.T) {
	for name, input := range map[string]string{
		"health_check two paths":        "ai_gateway {\nmodel m {\nhealth_check /a /b\n}\n}",
		"health_check path twice":       "ai_gateway {\nmodel m {\nhealth_check /a {\npath /b\n}\n}\n}",
		"health_check relative path":    "ai_gateway {\nmodel m {\nhealth_check health\n}\n}",
		"health_check unknown":          "ai_gateway {\nmodel m {\nhealth_check {\nevery 1s\n}\n}\n}",
		"health_check bad interval":     "ai_gateway {\nmodel m {\nhealth_check {\ninterval soon\n}\n}\n}",
		"health_check repeated":         "ai_gateway {\nmodel m {\nhealth_check\nhealth_check\n}\n}",
		"readiness_path relative":       "ai_gateway {\nreadiness_path ready\n}",
		"readiness_path two values":     "ai_gateway {\nreadiness_path /a /b\n}",
		"tokenizer upstream three args": "ai_gateway {\nmodel m {\ntokenizer upstream tgi x\n}\n}",
	} {
		t.Run(name, func(t *testing.T) {
			if err := new(Gateway).UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err == nil {
				t.Errorf("accepted: %s", input)
			}
		})
	}
	if _, err := newCounter("upstream sglang"); err == nil {
		t.Error("tokenizer upstream sglang accepted")
	}
	for _, spec := range []string{"upstream", "upstream vllm", "upstream tgi", "upstream llamacpp"} {
		if _, err := newCounter(spec); err != nil {
			t.Errorf("%s: %v", spec, err)
		}
	}
}
