package caddymodule

import (
	"context"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/predict"
)

func TestCaddyfilePredictErrors(t *testing.T) {
	for name, tc := range map[string]struct{ input, want string }{
		"kind":              {"ai_gateway {\nmodel m {\nkind classifier\n}\n}", `kind: expected chat or predict, got "classifier"`},
		"protocol":          {"ai_gateway {\nmodel m {\nprotocol grpc\n}\n}", `protocol: expected kserve_v1, oip_v2 or passthrough <path>, got "grpc"`},
		"passthrough path":  {"ai_gateway {\nmodel m {\nprotocol passthrough\n}\n}", "protocol: expected"},
		"kserve with path":  {"ai_gateway {\nmodel m {\nprotocol kserve_v1 /x\n}\n}", "protocol: expected"},
		"tensor_input args": {"ai_gateway {\nmodel m {\ntensor_input x\n}\n}", "tensor_input: expected <name> <datatype> [<field>]"},
		"tensor_output":     {"ai_gateway {\nmodel m {\ntensor_output\n}\n}", "tensor_output: expected at least one value"},
		"repeated protocol": {"ai_gateway {\nmodel m {\nprotocol kserve_v1\nprotocol oip_v2\n}\n}", "more than once"},
		"input_schema":      {"ai_gateway {\nmodel m {\ninput_schema a b\n}\n}", "input_schema: expected one value"},
	} {
		t.Run(name, func(t *testing.T) {
			err := new(Gateway).UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
	// tensor_input repeats
	g := new(Gateway)
	if err := g.UnmarshalCaddyfile(caddyfile.NewTestDispenser("ai_gateway {\nmodel m {\nkind predict\nprotocol oip_v2\ntensor_input a FP32\ntensor_input b int64 x.y\n}\n}")); err != nil {
		t.Fatal(err)
	}
	if in := g.Models[0].TensorInputs; len(in) != 2 || in[1].Datatype != "INT64" || in[1].Field != "x.y" {
		t.Errorf("tensor inputs = %+v", in)
	}
}

func TestProvisionPredictErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		model ModelConfig
		want  string
	}{
		"chat with protocol": {ModelConfig{Name: "m", Config: predict.Config{Protocol: "oip_v2"}}, "need kind predict"},
		"bad kind":           {ModelConfig{Name: "m", Kind: "vision"}, `kind must be chat or predict, got "vision"`},
		"bad schema":         {ModelConfig{Name: "m", Kind: "predict", Config: predict.Config{InputSchema: `{"minimum":"x"}`}}, "compiling input_schema"},
		"missing schema":     {ModelConfig{Name: "m", Kind: "predict", Config: predict.Config{InputSchema: "/nonexistent.json"}}, "reading input_schema"},
		"oip without inputs": {ModelConfig{Name: "m", Kind: "predict", Config: predict.Config{Protocol: "oip_v2", InputSchema: `{}`}}, "tensor_input"},
	} {
		t.Run(name, func(t *testing.T) {
			g := &Gateway{Models: []ModelConfig{tc.model}, Keys: []policy.KeyConfig{{ID: "k", Secret: "sha256:" + strings.Repeat("0", 64)}}}
			ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
			defer cancel()
			err := g.Provision(ctx)
			_ = g.Cleanup()
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), `model "m"`) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func TestCaddyfileFineTuningErrors(t *testing.T) {
	for name, tc := range map[string]struct{ input, want string }{
		"no upstream": {"ai_gateway {\nfine_tuning {\nupstream_key x\n}\n}", "upstream is required"},
		"unknown":     {"ai_gateway {\nfine_tuning {\nupstream a:1\ntrainer x\n}\n}", `unrecognized fine_tuning subdirective "trainer"`},
		"repeated":    {"ai_gateway {\nfine_tuning {\nupstream a:1\nupstream b:1\n}\n}", "more than once"},
		"argument":    {"ai_gateway {\nfine_tuning x {\nupstream a:1\n}\n}", "wrong argument count"},
		"timeout":     {"ai_gateway {\nfine_tuning {\nupstream a:1\ntimeout soon\n}\n}", "timeout"},
	} {
		t.Run(name, func(t *testing.T) {
			err := new(Gateway).UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
}
