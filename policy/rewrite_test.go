package policy

import (
	"encoding/json"
	"net/http"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/tidwall/gjson"
)

func mustRewriter(t testing.TB, global, model RewriteConfig) *Rewriter {
	t.Helper()
	rw, err := CompileRewrite(global, model)
	if err != nil {
		t.Fatal(err)
	}
	return rw
}

// rewrite validates body, applies rw and checks that the output is valid JSON that Validate
// accepts with the same info Apply reported.
func rewrite(t *testing.T, rw *Rewriter, e wire.Endpoint, body string) (string, RequestInfo, *wire.Error) {
	t.Helper()
	info, verr := Validate(e, []byte(body))
	if verr != nil {
		t.Fatalf("input rejected: %v", verr)
	}
	out, err := rw.Apply(e, []byte(body), &info)
	if err != nil {
		return "", info, err
	}
	if !json.Valid(out) {
		t.Fatalf("output is not valid JSON: %s", out)
	}
	again, verr := Validate(e, out)
	if verr != nil {
		t.Fatalf("output rejected: %v\n%s", verr, out)
	}
	if info.MaxTokens == 0 && again.MaxTokensField == "" {
		again.MaxTokensField = info.MaxTokensField // Apply may name the field the upstream expects
	}
	assertInfo(t, info, again)
	return string(out), info, nil
}

// get reads a path from JSON text.
func get(js, path string) gjson.Result { return gjson.Get(js, path) }

func TestRewriteNoopKeepsSlice(t *testing.T) {
	body := []byte(chatBody(`"temperature":0.5`))
	info, _ := Validate(chat, body)
	for _, cfg := range []RewriteConfig{
		{},
		{DenyParams: []string{"logit_bias"}, StripParams: []string{"user"}, Clamps: []Clamp{{Param: "temperature", Min: 0, Max: 1}}},
		{Defaults: map[string]string{"temperature": "0.7"}},
		{MaxTokensField: "max_tokens"},
	} {
		rw := mustRewriter(t, cfg, RewriteConfig{})
		out, err := rw.Apply(chat, body, &info)
		if err != nil {
			t.Fatal(err)
		}
		if &out[0] != &body[0] || len(out) != len(body) {
			t.Fatalf("%+v: body copied though nothing applied", cfg)
		}
		allocs := testing.AllocsPerRun(100, func() { rw.Apply(chat, body, &info) })
		if allocs != 0 {
			t.Errorf("%+v: %v allocations when nothing applies", cfg, allocs)
		}
	}
}

func TestRewriteDefaults(t *testing.T) {
	rw := mustRewriter(t, RewriteConfig{Defaults: map[string]string{
		"temperature":        "1.5",
		"stop":               `["\n"]`,
		"repetition_penalty": "1.1",
		"max_tokens":         "256",
		"top_k":              "40",
	}}, RewriteConfig{})
	tests := []struct {
		name  string
		e     wire.Endpoint
		body  string
		check map[string]string // path -> raw JSON wanted ("" = absent)
		temp  float64
		max   int
	}{
		{"chat absent", chat, chatBody(""), map[string]string{"temperature": "1.5", "stop": `["\n"]`, "repetition_penalty": "1.1", "max_tokens": "256", "top_k": ""}, 1.5, 256},
		{"chat present kept", chat, chatBody(`"temperature":0.2,"stop":"x","max_tokens":9`), map[string]string{"temperature": "0.2", "stop": `"x"`, "max_tokens": "9"}, 0.2, 9},
		{"chat null replaced", chat, chatBody(`"temperature":null`), map[string]string{"temperature": "1.5"}, 1.5, 256},
		{"chat max_completion_tokens blocks max_tokens default", chat, chatBody(`"max_completion_tokens":10`), map[string]string{"max_tokens": "", "max_completion_tokens": "10"}, 1.5, 10},
		{"completions", compl, `{"model":"m","prompt":"x"}`, map[string]string{"temperature": "1.5", "stop": `["\n"]`, "repetition_penalty": "1.1", "max_tokens": "256"}, 1.5, 256},
		// Anthropic: temperature 1.5 is out of its range, stop is not its param, extensions are
		// not sent, top_k is.
		{"anthropic", msgs, anthBody(""), map[string]string{"temperature": "", "stop": "", "repetition_penalty": "", "top_k": "40", "max_tokens": "64"}, 0, 64},
		{"embeddings untouched", embed, `{"model":"e","input":"x"}`, map[string]string{"temperature": "", "stop": "", "repetition_penalty": ""}, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, info, err := rewrite(t, rw, tt.e, tt.body)
			if err != nil {
				t.Fatal(err)
			}
			for path, want := range tt.check {
				if got := get(out, path); got.Raw != want {
					t.Errorf("%s = %q, want %q in %s", path, got.Raw, want, out)
				}
			}
			if tt.temp == 0 && info.Temperature != nil || tt.temp != 0 && (info.Temperature == nil || *info.Temperature != tt.temp) {
				t.Errorf("info temperature %v, want %v", ptrStr(info.Temperature), tt.temp)
			}
			if info.MaxTokens != tt.max {
				t.Errorf("info max tokens %d, want %d", info.MaxTokens, tt.max)
			}
		})
	}
}

func TestRewriteDeny(t *testing.T) {
	rw := mustRewriter(t, RewriteConfig{DenyParams: []string{"logit_bias", "top_k"}}, RewriteConfig{})
	for _, tc := range []struct {
		e    wire.Endpoint
		body string
		bad  string
	}{
		{chat, chatBody(`"logit_bias":{"1":2}`), "logit_bias"},
		{msgs, anthBody(`"top_k":3`), "top_k"},
	} {
		_, _, err := rewrite(t, rw, tc.e, tc.body)
		assertRejected(t, err, http.StatusBadRequest, CodeParamNotAllowed, tc.bad, "The parameter '"+tc.bad+"' is not allowed by this gateway.")
	}
	// An escaped key is the same key to the upstream's parser.
	_, _, err := rewrite(t, rw, chat, chatBody(`"logit\u005fbias":{"1":2}`))
	assertRejected(t, err, http.StatusBadRequest, CodeParamNotAllowed, "logit_bias", "")
	strip := mustRewriter(t, RewriteConfig{StripParams: []string{"user"}}, RewriteConfig{})
	out, _, err := rewrite(t, strip, chat, chatBody(`"us\u0065r":"u"`))
	if err != nil || strings.Contains(out, "u0065") {
		t.Fatalf("escaped key not stripped: %s %v", out, err)
	}
	// A denied param sent as null is dropped, not refused.
	out, _, err = rewrite(t, rw, chat, chatBody(`"logit_bias":null`))
	if err != nil {
		t.Fatal(err)
	}
	if get(out, "logit_bias").Exists() {
		t.Fatalf("null denied param kept: %s", out)
	}
}

func TestRewriteStrip(t *testing.T) {
	rw := mustRewriter(t, RewriteConfig{StripParams: []string{"seed", "tools", "user", "stream_options"}}, RewriteConfig{})
	out, info, err := rewrite(t, rw, chat, chatBody(`"seed":1,"user":"u","stream":true,"stream_options":{"include_usage":true},"tools":[{"type":"function","function":{"name":"f"}}],"temperature":0.3`))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"seed", "tools", "user", "stream_options"} {
		if get(out, p).Exists() {
			t.Errorf("%s kept: %s", p, out)
		}
	}
	if get(out, "temperature").Raw != "0.3" || get(out, "stream").Raw != "true" {
		t.Errorf("other params changed: %s", out)
	}
	if info.Seed || info.HasTools || info.IncludeUsage || info.StreamOptions || !info.Stream {
		t.Errorf("info not updated: %+v", info)
	}
	out, info, err = rewrite(t, rw, msgs, anthBody(`"tools":[{"name":"f","input_schema":{}}]`))
	if err != nil {
		t.Fatal(err)
	}
	if get(out, "tools").Exists() || info.HasTools {
		t.Errorf("anthropic tools kept: %s %+v", out, info)
	}
}

func TestRewriteClamp(t *testing.T) {
	clamps := []Clamp{{Param: "temperature", Min: 0.1, Max: 1}, {Param: "max_tokens", Min: 1, Max: 1000}, {Param: "repetition_penalty", Min: 1, Max: 1.5}}
	reject := mustRewriter(t, RewriteConfig{Clamps: clamps}, RewriteConfig{})
	clamp := mustRewriter(t, RewriteConfig{Clamps: clamps, ClampMode: ClampClamp}, RewriteConfig{})

	t.Run("reject", func(t *testing.T) {
		for _, tc := range []struct {
			e     wire.Endpoint
			body  string
			param string
			code  string
		}{
			{chat, chatBody(`"temperature":1.7`), "temperature", CodeValueAboveMaximum},
			{chat, chatBody(`"temperature":0`), "temperature", CodeValueBelowMinimum},
			{chat, chatBody(`"max_completion_tokens":4000`), "max_completion_tokens", CodeValueAboveMaximum},
			{chat, chatBody(`"repetition_penalty":2`), "repetition_penalty", CodeValueAboveMaximum},
			{msgs, `{"model":"c","max_tokens":5000,"messages":[{"role":"user","content":"x"}]}`, "max_tokens", CodeValueAboveMaximum},
		} {
			_, _, err := rewrite(t, reject, tc.e, tc.body)
			assertRejected(t, err, http.StatusBadRequest, tc.code, tc.param, "this gateway allows values from")
		}
		_, _, err := rewrite(t, reject, chat, chatBody(`"repetition_penalty":"high"`))
		assertRejected(t, err, http.StatusBadRequest, CodeInvalidType, "repetition_penalty", "")
		if _, _, err := rewrite(t, reject, chat, chatBody(`"temperature":0.5,"max_tokens":1000`)); err != nil {
			t.Fatalf("in-range values rejected: %v", err)
		}
	})
	t.Run("clamp", func(t *testing.T) {
		out, info, err := rewrite(t, clamp, chat, chatBody(`"temperature":1.7,"max_tokens":4000,"max_completion_tokens":5000,"repetition_penalty":0.5`))
		if err != nil {
			t.Fatal(err)
		}
		for path, want := range map[string]string{"temperature": "1", "max_tokens": "1000", "max_completion_tokens": "1000", "repetition_penalty": "1"} {
			if got := get(out, path).Raw; got != want {
				t.Errorf("%s = %s, want %s", path, got, want)
			}
		}
		if info.MaxTokens != 1000 || info.Temperature == nil || *info.Temperature != 1 {
			t.Errorf("info not updated: %+v", info)
		}
		out, info, err = rewrite(t, clamp, msgs, `{"model":"c","max_tokens":5000,"temperature":0,"messages":[{"role":"user","content":"x"}]}`)
		if err != nil {
			t.Fatal(err)
		}
		if get(out, "max_tokens").Raw != "1000" || get(out, "temperature").Raw != "0.1" || info.MaxTokens != 1000 {
			t.Errorf("anthropic not clamped: %s %+v", out, info)
		}
	})
}

func TestRewriteSystemPrompt(t *testing.T) {
	const sp = "Be \"safe\".\nAlways."
	prepend := mustRewriter(t, RewriteConfig{SystemPrompt: sp}, RewriteConfig{})
	replace := mustRewriter(t, RewriteConfig{SystemPrompt: sp, SystemPromptMode: SystemPromptReplace}, RewriteConfig{})
	twoSystems := `{"model":"m","messages":[{"role":"system","content":"client"},{"role":"user","content":"hi"},{"role":"developer","content":"dev"}]}`

	out, _, err := rewrite(t, prepend, chat, twoSystems)
	if err != nil {
		t.Fatal(err)
	}
	roles := get(out, "messages.#.role").Raw
	if roles != `["system","system","user","developer"]` || get(out, "messages.0.content").Str != sp || get(out, "messages.1.content").Str != "client" {
		t.Errorf("chat prepend: %s", out)
	}
	out, _, err = rewrite(t, replace, chat, twoSystems)
	if err != nil {
		t.Fatal(err)
	}
	if get(out, "messages.#.role").Raw != `["system","user"]` || get(out, "messages.0.content").Str != sp {
		t.Errorf("chat replace: %s", out)
	}
	if !strings.Contains(out, `"model":"m"`) {
		t.Errorf("rest of body lost: %s", out)
	}

	for _, tc := range []struct {
		name string
		rw   *Rewriter
		body string
		want string // system as raw JSON
	}{
		{"absent", prepend, anthBody(""), `"Be \"safe\".\nAlways."`},
		{"null", prepend, anthBody(`"system":null`), `"Be \"safe\".\nAlways."`},
		{"string", prepend, anthBody(`"system":"client"`), `"Be \"safe\".\nAlways.\n\nclient"`},
		{"blocks", prepend, anthBody(`"system":[{"type":"text","text":"client"}]`), `[{"type":"text","text":"Be \"safe\".\nAlways."},{"type":"text","text":"client"}]`},
		{"empty blocks", prepend, anthBody(`"system":[]`), `[{"type":"text","text":"Be \"safe\".\nAlways."}]`},
		{"replace string", replace, anthBody(`"system":"client"`), `"Be \"safe\".\nAlways."`},
		{"replace blocks", replace, anthBody(`"system":[{"type":"text","text":"client"}]`), `"Be \"safe\".\nAlways."`},
	} {
		t.Run("anthropic "+tc.name, func(t *testing.T) {
			out, _, err := rewrite(t, tc.rw, msgs, tc.body)
			if err != nil {
				t.Fatal(err)
			}
			if got := get(out, "system").Raw; got != tc.want {
				t.Errorf("system = %s, want %s", got, tc.want)
			}
		})
	}
	// Endpoints without a system prompt are untouched.
	body := []byte(`{"model":"e","input":"x"}`)
	info, _ := Validate(embed, body)
	if out, _ := prepend.Apply(embed, body, &info); string(out) != string(body) {
		t.Errorf("embeddings changed: %s", out)
	}
}

func TestRewriteMaxTokensField(t *testing.T) {
	toMCT := mustRewriter(t, RewriteConfig{MaxTokensField: "max_completion_tokens"}, RewriteConfig{})
	toMT := mustRewriter(t, RewriteConfig{MaxTokensField: "max_tokens"}, RewriteConfig{})
	tests := []struct {
		name     string
		rw       *Rewriter
		e        wire.Endpoint
		body     string
		mt, mct  string
		field    string
		maxToken int
	}{
		{"rename to mct", toMCT, chat, chatBody(`"max_tokens":100`), "", "100", "max_completion_tokens", 100},
		{"rename to mt", toMT, chat, chatBody(`"max_completion_tokens":100`), "100", "", "max_tokens", 100},
		{"already right", toMT, chat, chatBody(`"max_tokens":100`), "100", "", "max_tokens", 100},
		{"both keep larger", toMT, chat, chatBody(`"max_tokens":10,"max_completion_tokens":100`), "100", "", "max_tokens", 100},
		{"absent names field", toMCT, chat, chatBody(""), "", "", "max_completion_tokens", 0},
		{"null other dropped", toMT, chat, chatBody(`"max_completion_tokens":null`), "", "", "max_tokens", 0},
		{"completions untouched", toMCT, compl, `{"model":"m","prompt":"x","max_tokens":5}`, "5", "", "max_tokens", 5},
		{"anthropic untouched", toMCT, msgs, anthBody(""), "64", "", "max_tokens", 64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, info, err := rewrite(t, tt.rw, tt.e, tt.body)
			if err != nil {
				t.Fatal(err)
			}
			if get(out, "max_tokens").Raw != tt.mt || get(out, "max_completion_tokens").Raw != tt.mct {
				t.Errorf("got %s", out)
			}
			if info.MaxTokensField != tt.field || info.MaxTokens != tt.maxToken {
				t.Errorf("info %q %d, want %q %d", info.MaxTokensField, info.MaxTokens, tt.field, tt.maxToken)
			}
		})
	}
}

// TestRewriteInfoMatchesValidate clamps and strips params some endpoints do not record: the
// info Apply reports reads what Validate reads in the output (rewrite checks it).
func TestRewriteInfoMatchesValidate(t *testing.T) {
	rw := mustRewriter(t, RewriteConfig{
		Clamps:      []Clamp{{Param: "temperature", Min: 0.1, Max: 1}, {Param: "max_tokens", Min: 1, Max: 1000}, {Param: "n", Min: 1, Max: 2}},
		ClampMode:   ClampClamp,
		StripParams: []string{"tools", "stream_options"},
	}, RewriteConfig{})
	for _, tc := range []struct {
		name string
		e    wire.Endpoint
		body string
	}{
		{"embeddings", embed, `{"model":"e","input":"x","temperature":5,"max_tokens":5000,"n":4}`},
		{"images", images, `{"model":"i","prompt":"cat","temperature":5,"max_tokens":5000,"n":4}`},
		{"count_tokens", count, `{"model":"c","messages":[{"role":"user","content":"x"}],"max_tokens":5000,"temperature":0}`},
		{"completions tools", compl, `{"model":"m","prompt":"x","tools":[{"type":"function"}],"stream":true,"stream_options":{"include_usage":true}}`},
		{"chat", chat, chatBody(`"temperature":1.5,"max_tokens":10,"max_completion_tokens":5000,"n":4,"functions":[{"name":"f"}],"tools":[{"type":"function","function":{"name":"f"}}]`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := rewrite(t, rw, tc.e, tc.body); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestRewriteOrderAndCombination(t *testing.T) {
	rw := mustRewriter(t, RewriteConfig{
		Defaults:       map[string]string{"temperature": "0.7", "max_tokens": "512"},
		Clamps:         []Clamp{{Param: "max_tokens", Min: 1, Max: 1024}},
		ClampMode:      ClampClamp,
		StripParams:    []string{"user"},
		DenyParams:     []string{"logit_bias"},
		SystemPrompt:   "sys",
		MaxTokensField: "max_completion_tokens",
	}, RewriteConfig{})
	out, info, err := rewrite(t, rw, chat, chatBody(`"user":"u","max_tokens":4096`))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"temperature": "0.7", "max_completion_tokens": "1024", "max_tokens": "", "user": "", "messages.0.content": `"sys"`}
	for p, w := range want {
		if got := get(out, p).Raw; got != w {
			t.Errorf("%s = %q, want %q (%s)", p, got, w, out)
		}
	}
	if info.MaxTokens != 1024 || info.MaxTokensField != "max_completion_tokens" {
		t.Errorf("info %+v", info)
	}
}

func TestCompileRewriteErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  RewriteConfig
		want string
	}{
		{"clamp mode", RewriteConfig{ClampMode: "wrap"}, "clamp_mode"},
		{"system mode", RewriteConfig{SystemPromptMode: "append"}, "system_prompt_mode"},
		{"max field", RewriteConfig{MaxTokensField: "max_new_tokens"}, "max_tokens_field"},
		{"default invalid json", RewriteConfig{Defaults: map[string]string{"temperature": "0.7.1"}}, "not valid JSON"},
		{"default null", RewriteConfig{Defaults: map[string]string{"temperature": "null"}}, "null"},
		{"default model", RewriteConfig{Defaults: map[string]string{"model": `"x"`}}, "cannot have a default"},
		{"default stream", RewriteConfig{Defaults: map[string]string{"stream": `true`}}, "cannot have a default"},
		{"default rejected everywhere", RewriteConfig{Defaults: map[string]string{"temperature": `"hot"`}}, "no endpoint accepts"},
		{"default path chars", RewriteConfig{Defaults: map[string]string{"a.b": `1`}}, "plain top-level"},
		{"default outside clamp", RewriteConfig{Defaults: map[string]string{"temperature": `1.5`}, Clamps: []Clamp{{Param: "temperature", Min: 0, Max: 1}}}, "outside its clamp"},
		{"default denied", RewriteConfig{Defaults: map[string]string{"top_k": `1`}, DenyParams: []string{"top_k"}}, "denied or stripped"},
		{"clamp min above max", RewriteConfig{Clamps: []Clamp{{Param: "temperature", Min: 2, Max: 1}}}, "greater than max"},
		{"clamp twice", RewriteConfig{Clamps: []Clamp{{Param: "max_tokens", Max: 1}, {Param: "max_completion_tokens", Max: 2}}}, "clamped twice"},
		{"clamp integer fraction", RewriteConfig{Clamps: []Clamp{{Param: "n", Min: 1, Max: 2.5}}}, "integer bounds"},
		{"clamp path", RewriteConfig{Clamps: []Clamp{{Param: "x|y", Max: 1}}}, "plain top-level"},
		{"deny model", RewriteConfig{DenyParams: []string{"model"}}, "cannot be denied"},
		{"strip messages", RewriteConfig{StripParams: []string{"messages"}}, "cannot be denied"},
		{"deny twice", RewriteConfig{DenyParams: []string{"a", "a"}}, "listed twice"},
		{"deny and strip", RewriteConfig{DenyParams: []string{"a"}, StripParams: []string{"a"}}, "both denied and stripped"},
		{"empty name", RewriteConfig{StripParams: []string{""}}, "plain top-level"},
		{"wildcard", RewriteConfig{StripParams: []string{"*"}}, "plain top-level"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := CompileRewrite(tt.cfg, RewriteConfig{})
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "compiling rewrite: ") {
				t.Fatalf("error %v, want one mentioning %q", err, tt.want)
			}
		})
	}
	var many []string
	for i := 0; i < 70; i++ {
		many = append(many, "p"+strings.Repeat("x", i))
	}
	if _, err := CompileRewrite(RewriteConfig{StripParams: many}, RewriteConfig{}); err == nil {
		t.Error("70 params accepted")
	}
}

func TestSetMaxTokens(t *testing.T) {
	tests := []struct {
		name    string
		e       wire.Endpoint
		body    string
		mt, mct string
	}{
		{"chat absent", chat, chatBody(""), "300", ""},
		{"chat max_tokens", chat, chatBody(`"max_tokens":4000`), "300", ""},
		{"chat max_completion_tokens", chat, chatBody(`"max_completion_tokens":4000`), "", "300"},
		{"chat both", chat, chatBody(`"max_tokens":10,"max_completion_tokens":4000`), "300", "300"},
		{"chat both, max_tokens larger", chat, chatBody(`"max_tokens":4000,"max_completion_tokens":10`), "300", "300"},
		{"completions", compl, `{"model":"m","prompt":"x","max_tokens":4000}`, "300", ""},
		{"anthropic", msgs, anthBody(""), "300", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info, verr := Validate(tt.e, []byte(tt.body))
			if verr != nil {
				t.Fatal(verr)
			}
			out, err := SetMaxTokens(tt.e, []byte(tt.body), &info, 300)
			if err != nil {
				t.Fatal(err)
			}
			js := string(out)
			if get(js, "max_tokens").Raw != tt.mt || get(js, "max_completion_tokens").Raw != tt.mct {
				t.Fatalf("got %s", js)
			}
			again, verr := Validate(tt.e, out)
			if verr != nil {
				t.Fatal(verr)
			}
			assertInfo(t, info, again)
		})
	}
	// The field a rewriter chose is used when the client sent none.
	info, _ := Validate(chat, []byte(chatBody("")))
	info.MaxTokensField = "max_completion_tokens"
	out, err := SetMaxTokens(chat, []byte(chatBody("")), &info, 5)
	if err != nil || get(string(out), "max_completion_tokens").Raw != "5" {
		t.Fatalf("%s %v", out, err)
	}
	for _, bad := range []struct {
		e wire.Endpoint
		n int
	}{{embed, 5}, {images, 5}, {count, 5}, {chat, 0}, {chat, -1}} {
		if _, err := SetMaxTokens(bad.e, []byte(chatBody("")), &RequestInfo{}, bad.n); err == nil || !strings.HasPrefix(err.Error(), "setting max tokens: ") {
			t.Errorf("%v n=%d: error %v", bad.e, bad.n, err)
		}
	}
}

func TestRewriteDoesNotModifyInput(t *testing.T) {
	rw := mustRewriter(t, RewriteConfig{Clamps: []Clamp{{Param: "temperature", Max: 1}}, ClampMode: ClampClamp, SystemPrompt: "s"}, RewriteConfig{})
	body := []byte(chatBody(`"temperature":1.9`))
	orig := append([]byte(nil), body...)
	info, _ := Validate(chat, body)
	if _, err := rw.Apply(chat, body, &info); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(body, orig) {
		t.Fatalf("input modified: %s", body)
	}
}

func BenchmarkValidateApply(b *testing.B) {
	body, err := os.ReadFile("testdata/chat_1k.json")
	if err != nil {
		b.Fatal(err)
	}
	rw := mustRewriter(b, RewriteConfig{
		Defaults:    map[string]string{"presence_penalty": "0"},
		Clamps:      []Clamp{{Param: "temperature", Min: 0, Max: 1}, {Param: "max_tokens", Min: 1, Max: 4096}},
		DenyParams:  []string{"logit_bias"},
		StripParams: []string{"user"},
	}, RewriteConfig{})
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		info, verr := Validate(chat, body)
		if verr != nil {
			b.Fatal(verr)
		}
		if _, err := rw.Apply(chat, body, &info); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkApplyNothingToDo(b *testing.B) {
	body, err := os.ReadFile("testdata/chat_1k.json")
	if err != nil {
		b.Fatal(err)
	}
	rw := mustRewriter(b, RewriteConfig{DenyParams: []string{"logit_bias"}, Clamps: []Clamp{{Param: "temperature", Max: 1}}}, RewriteConfig{})
	info, _ := Validate(chat, body)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := rw.Apply(chat, body, &info); err != nil {
			b.Fatal(err)
		}
	}
}
