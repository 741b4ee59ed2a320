package policy

import (
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/caddyai/gateway/internal/wire"
)

// gatewayRules are the gateway-wide rules the merge tests start from.
var gatewayRules = RewriteConfig{
	Defaults:       map[string]string{"temperature": "0.7", "top_p": "0.9", "max_tokens": "256"},
	Clamps:         []Clamp{{Param: "max_tokens", Min: 1, Max: 4096}, {Param: "temperature", Min: 0, Max: 2}},
	DenyParams:     []string{"logit_bias"},
	StripParams:    []string{"user"},
	SystemPrompt:   "gateway",
	MaxTokensField: "max_completion_tokens",
}

// checkBody asserts raw JSON values of out ("" = absent).
func checkBody(t *testing.T, out string, want map[string]string) {
	t.Helper()
	for path, w := range want {
		if got := get(out, path).Raw; got != w {
			t.Errorf("%s = %q, want %q in %s", path, got, w, out)
		}
	}
}

func TestRewriteMergeInherit(t *testing.T) {
	for name, model := range map[string]RewriteConfig{
		"no model rules":     {},
		"empty model values": {Defaults: map[string]string{}, Clamps: []Clamp{}, DenyParams: []string{}, StripParams: []string{}, AllowParams: []string{}},
	} {
		t.Run(name, func(t *testing.T) {
			rw := mustRewriter(t, gatewayRules, model)
			out, _, err := rewrite(t, rw, chat, chatBody(`"user":"u"`))
			if err != nil {
				t.Fatal(err)
			}
			checkBody(t, out, map[string]string{"temperature": "0.7", "top_p": "0.9", "max_completion_tokens": "256", "max_tokens": "", "user": "", "messages.0.content": `"gateway"`})
			_, _, err = rewrite(t, rw, chat, chatBody(`"logit_bias":{"1":2}`))
			assertRejected(t, err, http.StatusBadRequest, CodeParamNotAllowed, "logit_bias", "")
		})
	}
}

func TestRewriteMergeDenyUnion(t *testing.T) {
	// Also listed by the model: still one rule.
	rw := mustRewriter(t, RewriteConfig{DenyParams: []string{"logit_bias"}}, RewriteConfig{DenyParams: []string{"logprobs", "logit_bias"}})
	for _, p := range []string{"logit_bias", "logprobs"} {
		body := chatBody(`"logprobs":true`)
		if p == "logit_bias" {
			body = chatBody(`"logit_bias":{"1":2}`)
		}
		_, _, err := rewrite(t, rw, chat, body)
		assertRejected(t, err, http.StatusBadRequest, CodeParamNotAllowed, p, "")
	}
}

func TestRewriteMergeStripUnion(t *testing.T) {
	rw := mustRewriter(t, RewriteConfig{StripParams: []string{"user"}}, RewriteConfig{StripParams: []string{"metadata"}})
	out, _, err := rewrite(t, rw, chat, chatBody(`"user":"u","metadata":{"a":"b"},"seed":1`))
	if err != nil {
		t.Fatal(err)
	}
	checkBody(t, out, map[string]string{"user": "", "metadata": "", "seed": "1"})
}

func TestRewriteMergeClampPerParam(t *testing.T) {
	global := RewriteConfig{Clamps: []Clamp{{Param: "max_tokens", Min: 1, Max: 4096}, {Param: "temperature", Min: 0, Max: 1.5}}}
	rw := mustRewriter(t, global, RewriteConfig{Clamps: []Clamp{{Param: "temperature", Min: 0, Max: 1}}})
	// The gateway's max_tokens clamp stays (max_tokens 99999 used to reach the upstream).
	_, _, err := rewrite(t, rw, chat, chatBody(`"max_tokens":99999`))
	assertRejected(t, err, http.StatusBadRequest, CodeValueAboveMaximum, "max_tokens", "from 1 to 4096")
	// The model's temperature clamp replaces the gateway's.
	_, _, err = rewrite(t, rw, chat, chatBody(`"temperature":1.5`))
	assertRejected(t, err, http.StatusBadRequest, CodeValueAboveMaximum, "temperature", "from 0 to 1")
	if _, _, err := rewrite(t, rw, chat, chatBody(`"temperature":0.9,"max_tokens":4096`)); err != nil {
		t.Fatalf("in-range values rejected: %v", err)
	}
	// max_tokens and max_completion_tokens are one output limit: a model's clamp on either
	// replaces the gateway's on either.
	rw = mustRewriter(t, global, RewriteConfig{Clamps: []Clamp{{Param: "max_completion_tokens", Min: 1, Max: 100}}})
	_, _, err = rewrite(t, rw, chat, chatBody(`"max_tokens":200`))
	assertRejected(t, err, http.StatusBadRequest, CodeValueAboveMaximum, "max_tokens", "from 1 to 100")
	// clamp_mode set on the model applies to the merged clamps.
	rw = mustRewriter(t, global, RewriteConfig{ClampMode: ClampClamp})
	out, info, err := rewrite(t, rw, chat, chatBody(`"max_tokens":99999,"temperature":1.9`))
	if err != nil {
		t.Fatal(err)
	}
	checkBody(t, out, map[string]string{"max_tokens": "4096", "temperature": "1.5"})
	if info.MaxTokens != 4096 {
		t.Errorf("info max tokens %d", info.MaxTokens)
	}
}

func TestRewriteMergeDefaultPerParam(t *testing.T) {
	global := RewriteConfig{Defaults: map[string]string{"temperature": "0.7", "top_p": "0.9", "max_tokens": "256"}}
	rw := mustRewriter(t, global, RewriteConfig{Defaults: map[string]string{"temperature": "0.2", "max_completion_tokens": "100"}})
	out, info, err := rewrite(t, rw, chat, chatBody(""))
	if err != nil {
		t.Fatal(err)
	}
	checkBody(t, out, map[string]string{"temperature": "0.2", "top_p": "0.9", "max_tokens": "", "max_completion_tokens": "100"})
	if info.MaxTokens != 100 || info.MaxTokensField != fieldMaxCompletionTokens {
		t.Errorf("info %q %d", info.MaxTokensField, info.MaxTokens)
	}
	if !reflect.DeepEqual(global.Defaults, map[string]string{"temperature": "0.7", "top_p": "0.9", "max_tokens": "256"}) {
		t.Errorf("gateway-wide defaults modified: %v", global.Defaults)
	}
}

func TestRewriteMergeSystemPrompt(t *testing.T) {
	global := RewriteConfig{SystemPrompt: "gateway"}
	twoSystems := `{"model":"m","messages":[{"role":"system","content":"client"},{"role":"user","content":"hi"}]}`
	for _, tc := range []struct {
		name  string
		model RewriteConfig
		roles string
		first string
	}{
		{"model prompt replaces", RewriteConfig{SystemPrompt: "model"}, `["system","system","user"]`, "model"},
		{"model mode applies to the gateway's prompt", RewriteConfig{SystemPromptMode: SystemPromptReplace}, `["system","user"]`, "gateway"},
		{"both", RewriteConfig{SystemPrompt: "model", SystemPromptMode: SystemPromptReplace}, `["system","user"]`, "model"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := rewrite(t, mustRewriter(t, global, tc.model), chat, twoSystems)
			if err != nil {
				t.Fatal(err)
			}
			if get(out, "messages.#.role").Raw != tc.roles || get(out, "messages.0.content").Str != tc.first {
				t.Errorf("%s", out)
			}
		})
	}
}

func TestRewriteMergeMaxTokensField(t *testing.T) {
	rw := mustRewriter(t, RewriteConfig{MaxTokensField: fieldMaxCompletionTokens}, RewriteConfig{MaxTokensField: fieldMaxTokens})
	out, info, err := rewrite(t, rw, chat, chatBody(`"max_completion_tokens":100`))
	if err != nil {
		t.Fatal(err)
	}
	checkBody(t, out, map[string]string{"max_tokens": "100", "max_completion_tokens": ""})
	if info.MaxTokensField != fieldMaxTokens {
		t.Errorf("info field %q", info.MaxTokensField)
	}
}

func TestRewriteMergeLifts(t *testing.T) {
	tests := []struct {
		name  string
		model RewriteConfig
		e     wire.Endpoint
		body  string
		want  map[string]string
	}{
		{"allow_params lifts a deny", RewriteConfig{AllowParams: []string{"logit_bias"}}, chat, chatBody(`"logit_bias":{"1":2}`),
			map[string]string{"logit_bias": `{"1":2}`}},
		{"allow_params lifts a strip", RewriteConfig{AllowParams: []string{"user"}}, chat, chatBody(`"user":"u"`),
			map[string]string{"user": `"u"`}},
		{"allow_params then strip what the gateway denies", RewriteConfig{AllowParams: []string{"logit_bias"}, StripParams: []string{"logit_bias"}}, chat, chatBody(`"logit_bias":{"1":2}`),
			map[string]string{"logit_bias": ""}},
		{"allow_params then default", RewriteConfig{AllowParams: []string{"user"}, Defaults: map[string]string{"user": `"gw"`}}, chat, chatBody(""),
			map[string]string{"user": `"gw"`}},
		{"clamp off", RewriteConfig{Clamps: []Clamp{{Param: "max_tokens", Off: true}}}, chat, chatBody(`"max_tokens":99999`),
			map[string]string{"max_completion_tokens": "99999", "temperature": "0.7"}},
		{"clamp off by the other max-tokens field", RewriteConfig{Clamps: []Clamp{{Param: "max_completion_tokens", Off: true}}}, chat, chatBody(`"max_tokens":99999`),
			map[string]string{"max_completion_tokens": "99999"}},
		{"default off", RewriteConfig{Defaults: map[string]string{"temperature": Off, "max_tokens": Off}}, chat, chatBody(""),
			map[string]string{"temperature": "", "max_tokens": "", "max_completion_tokens": "", "top_p": "0.9"}},
		{"default off, then deny", RewriteConfig{Defaults: map[string]string{"top_p": Off}, DenyParams: []string{"top_p"}}, chat, chatBody(""),
			map[string]string{"top_p": "", "temperature": "0.7"}},
		{"clamp off, then strip", RewriteConfig{Clamps: []Clamp{{Param: "temperature", Off: true}}, Defaults: map[string]string{"temperature": Off}, StripParams: []string{"temperature"}},
			chat, chatBody(`"temperature":1.9`), map[string]string{"temperature": ""}},
		{"system_prompt off", RewriteConfig{SystemPrompt: Off}, chat, chatBody(""),
			map[string]string{"messages.#.role": `["user"]`}},
		{"max_tokens_field off", RewriteConfig{MaxTokensField: Off}, chat, chatBody(`"max_tokens":10`),
			map[string]string{"max_tokens": "10", "max_completion_tokens": ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := rewrite(t, mustRewriter(t, gatewayRules, tt.model), tt.e, tt.body)
			if err != nil {
				t.Fatal(err)
			}
			checkBody(t, out, tt.want)
		})
	}
	// A lift is for one model only: the gateway-wide rules are not modified.
	before, _ := json.Marshal(gatewayRules)
	mustRewriter(t, gatewayRules, RewriteConfig{AllowParams: []string{"logit_bias", "user"}, Clamps: []Clamp{{Param: "temperature", Off: true}}, Defaults: map[string]string{"top_p": Off}})
	if after, _ := json.Marshal(gatewayRules); string(after) != string(before) {
		t.Errorf("gateway-wide rules modified:\n%s\n%s", before, after)
	}
}

func TestRewriteMergeErrors(t *testing.T) {
	g := gatewayRules
	tests := []struct {
		name   string
		global RewriteConfig
		model  RewriteConfig
		want   string
	}{
		// Lifts belong to a model.
		{"gateway allow_params", RewriteConfig{AllowParams: []string{"x"}}, RewriteConfig{}, "belongs in a model's config"},
		{"gateway clamp off", RewriteConfig{Clamps: []Clamp{{Param: "top_p", Off: true}}}, RewriteConfig{}, "belongs in a model's config"},
		{"gateway default off", RewriteConfig{Defaults: map[string]string{"top_p": Off}}, RewriteConfig{}, "belongs in a model's config"},
		{"gateway system_prompt off", RewriteConfig{SystemPrompt: Off}, RewriteConfig{}, "belongs in a model's config"},
		{"gateway max_tokens_field off", RewriteConfig{MaxTokensField: Off}, RewriteConfig{}, "belongs in a model's config"},
		// A lift must lift something.
		{"allow nothing", g, RewriteConfig{AllowParams: []string{"seed"}}, "lifts nothing"},
		{"clamp off nothing", g, RewriteConfig{Clamps: []Clamp{{Param: "top_p", Off: true}}}, "lifts nothing"},
		{"default off nothing", g, RewriteConfig{Defaults: map[string]string{"seed": Off}}, "lifts nothing"},
		{"system_prompt off nothing", RewriteConfig{}, RewriteConfig{SystemPrompt: Off}, "lifts nothing"},
		{"max_tokens_field off nothing", RewriteConfig{}, RewriteConfig{MaxTokensField: Off}, "lifts nothing"},
		{"allow twice", g, RewriteConfig{AllowParams: []string{"user", "user"}}, "listed twice"},
		{"allow path", g, RewriteConfig{AllowParams: []string{"a.b"}}, "plain top-level"},
		{"clamp off with bounds", g, RewriteConfig{Clamps: []Clamp{{Param: "temperature", Max: 1, Off: true}}}, "off takes no bounds"},
		{"clamp off and clamped", g, RewriteConfig{Clamps: []Clamp{{Param: "temperature", Off: true}, {Param: "temperature", Max: 1}}}, "both clamped and lifted"},
		{"clamped and clamp off", g, RewriteConfig{Clamps: []Clamp{{Param: "max_tokens", Max: 1}, {Param: "max_completion_tokens", Off: true}}}, "both clamped and lifted"},
		{"clamp off twice", g, RewriteConfig{Clamps: []Clamp{{Param: "temperature", Off: true}, {Param: "temperature", Off: true}}}, "twice"},
		// A model does not loosen a gateway-wide rule without a lift.
		{"strip a gateway deny", g, RewriteConfig{StripParams: []string{"logit_bias"}}, "allow_params"},
		{"deny a gateway strip", g, RewriteConfig{DenyParams: []string{"user"}}, "allow_params"},
		{"default a gateway deny", g, RewriteConfig{Defaults: map[string]string{"logit_bias": `{}`}}, "denied or stripped gateway-wide"},
		{"clamp a gateway strip", g, RewriteConfig{Clamps: []Clamp{{Param: "user", Max: 1}}}, "denied or stripped gateway-wide"},
		{"deny a gateway default", g, RewriteConfig{DenyParams: []string{"top_p"}}, "lift the default with off"},
		{"deny a gateway clamp", g, RewriteConfig{Defaults: map[string]string{"temperature": Off}, StripParams: []string{"temperature"}}, "lift the gateway-wide clamp with off"},
		// The merged rules are checked as one config.
		{"model default outside the gateway clamp", g, RewriteConfig{Defaults: map[string]string{"temperature": "2.5"}}, "outside its clamp"},
		{"model deny and default", RewriteConfig{}, RewriteConfig{Defaults: map[string]string{"top_k": `1`}, DenyParams: []string{"top_k"}}, "denied or stripped"},
		{"model deny twice", RewriteConfig{}, RewriteConfig{DenyParams: []string{"a", "a"}}, "listed twice"},
		{"model clamp twice", RewriteConfig{}, RewriteConfig{Clamps: []Clamp{{Param: "max_tokens", Max: 1}, {Param: "max_completion_tokens", Max: 2}}}, "clamped twice"},
		{"model clamp mode", g, RewriteConfig{ClampMode: Off}, "clamp_mode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := CompileRewrite(tt.global, tt.model)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "compiling rewrite: ") {
				t.Fatalf("error %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

// TestRewriteConfigJSONLift reads the JSON form of the lifts, as the README shows it.
func TestRewriteConfigJSONLift(t *testing.T) {
	var model RewriteConfig
	js := `{"allow_params": ["logit_bias"], "clamps": [{"param": "max_tokens", "off": true}], "defaults": {"temperature": "off"}, "system_prompt": "off"}`
	if err := json.Unmarshal([]byte(js), &model); err != nil {
		t.Fatal(err)
	}
	out, _, err := rewrite(t, mustRewriter(t, gatewayRules, model), chat, chatBody(`"logit_bias":{"1":2},"max_tokens":99999`))
	if err != nil {
		t.Fatal(err)
	}
	checkBody(t, out, map[string]string{"logit_bias": `{"1":2}`, "max_completion_tokens": "99999", "temperature": "", "messages.#.role": `["user"]`})
	if b, merr := json.Marshal(model.Clamps); merr != nil || string(b) != `[{"param":"max_tokens","off":true}]` {
		t.Errorf("clamp off marshals as %s (%v)", b, merr)
	}
	if b, _ := json.Marshal(Clamp{Param: "top_p", Min: 0, Max: 1}); string(b) != `{"param":"top_p","min":0,"max":1}` {
		t.Errorf("clamp marshals as %s", b)
	}
}
