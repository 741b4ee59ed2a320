package policy

import (
	"errors"
	"net/http"
	"testing"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/caddyai/gateway/policy/tokens"
)

const resp = wire.EndpointResponses

func TestValidateResponses(t *testing.T) {
	ok := []string{
		`{"model":"m"}`,
		`{"model":"m","input":"hi","instructions":"be brief","max_output_tokens":64,"temperature":0.2,"top_p":1,"store":false,"stream":true,"metadata":{"a":"b"},"truncation":"auto","reasoning":{"effort":"low"},"previous_response_id":"resp_1"}`,
		`{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"a"},{"type":"input_image","image_url":"https://x/y.png","detail":"low"}]},` +
			`{"type":"message","role":"assistant","content":[{"type":"output_text","text":"b"}]},` +
			`{"type":"function_call","call_id":"c1","name":"f","arguments":"{}"},{"type":"function_call_output","call_id":"c1","output":"r"},` +
			`{"type":"item_reference","id":"msg_1"},{"type":"reasoning","summary":[]},{"type":"web_search_call","id":"ws"}]}`,
		`{"model":"m","input":"x","tools":[{"type":"function","name":"f","parameters":{"type":"object"},"strict":true},{"type":"web_search"}],"tool_choice":{"type":"function","name":"f"}}`,
		`{"model":"m","input":"x","text":{"format":{"type":"json_schema","name":"s","schema":{"type":"object"},"strict":true},"verbosity":"low"}}`,
		`{"model":"m","input":"x","text":{"format":{"type":"json_object"}},"tool_choice":"required","include":["reasoning.encrypted_content"],"unknown_param":1}`,
	}
	for _, b := range ok {
		if _, err := Validate(resp, []byte(b)); err != nil {
			t.Errorf("rejected %s: %v", b, err)
		}
	}
	info, _ := Validate(resp, []byte(ok[1]))
	if info.MaxTokens != 64 || info.MaxTokensField != "max_output_tokens" || !info.NoStore || !info.Stream || info.PreviousResponseID != "resp_1" {
		t.Errorf("info %+v", info)
	}
	for _, tc := range []struct{ body, param, code string }{
		{`{"input":"x"}`, "model", CodeMissingParam},
		{`{"model":"m","input":5}`, "input", CodeInvalidType},
		{`{"model":"m","input":[1]}`, "input[0]", CodeInvalidType},
		{`{"model":"m","input":[{"role":"user","content":"a"},{"role":"user","content":"b"},{"role":"user","content":[{"type":"text","text":"x"}]}]}`, "input[2].content[0].type", CodeInvalidValue},
		{`{"model":"m","input":[{"role":"robot","content":"a"}]}`, "input[0].role", CodeInvalidValue},
		{`{"model":"m","input":[{"role":"user","content":[{"type":"input_text"}]}]}`, "input[0].content[0].text", CodeMissingParam},
		{`{"model":"m","input":[{"role":"user","content":[{"type":"input_image"}]}]}`, "input[0].content[0].image_url", CodeMissingParam},
		{`{"model":"m","input":[{"role":"user","content":[{"type":"input_image","image_url":"u","detail":"max"}]}]}`, "input[0].content[0].detail", CodeInvalidValue},
		{`{"model":"m","input":[{"type":"function_call","call_id":"c","name":"f"}]}`, "input[0].arguments", CodeMissingParam},
		{`{"model":"m","input":[{"type":"function_call_output","call_id":"c","output":7}]}`, "input[0].output", CodeInvalidType},
		{`{"model":"m","input":[{"type":"teleport"}]}`, "input[0].type", CodeInvalidValue},
		{`{"model":"m","input":[{"role":"user","role":"user","content":"a"}]}`, "input[0].role", CodeDuplicateKey},
		{`{"model":"m","max_output_tokens":0}`, "max_output_tokens", "integer_below_min_value"},
		{`{"model":"m","temperature":3}`, "temperature", "decimal_above_max_value"},
		{`{"model":"m","store":"yes"}`, "store", CodeInvalidType},
		{`{"model":"m","previous_response_id":""}`, "previous_response_id", CodeEmptyString},
		{`{"model":"m","tools":[{"type":"function"}]}`, "tools[0].name", CodeMissingParam},
		{`{"model":"m","tools":[{"type":"function","name":"f","parameters":[]}]}`, "tools[0].parameters", CodeInvalidType},
		{`{"model":"m","tools":[{"type":"laser"}]}`, "tools[0].type", CodeInvalidValue},
		{`{"model":"m","tool_choice":"sometimes"}`, "tool_choice", CodeInvalidValue},
		{`{"model":"m","tool_choice":{"type":"function"}}`, "tool_choice.name", CodeMissingParam},
		{`{"model":"m","text":{"format":{"type":"yaml"}}}`, "text.format.type", CodeInvalidValue},
		{`{"model":"m","text":{"format":{"type":"json_schema","schema":{}}}}`, "text.format.name", CodeMissingParam},
		{`{"model":"m","truncation":"middle"}`, "truncation", CodeInvalidValue},
		{`{"model":"m","reasoning":{"effort":"huge"}}`, "reasoning.effort", CodeInvalidValue},
	} {
		_, err := Validate(resp, []byte(tc.body))
		if err == nil || err.Param != tc.param || err.Code != tc.code || err.Status != http.StatusBadRequest {
			t.Errorf("%s: got %+v, want %s %s", tc.body, err, tc.param, tc.code)
		}
	}
}

func TestCountResponses(t *testing.T) {
	c, err := tokens.New("cl100k_base")
	if err != nil {
		t.Fatal(err)
	}
	cc := tokens.NewChatCounter(c, nil)
	n := c.Count
	// the chat formula over the messages the request stands for
	for _, tc := range []struct {
		body string
		want int
	}{
		{`{"model":"m","input":"hello there","instructions":"be brief"}`, 3 + 3 + n("system") + n("be brief") + 3 + n("user") + n("hello there")},
		{`{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"a b"},{"type":"input_image","image_url":"u"}]},` +
			`{"type":"function_call","call_id":"c","name":"get","arguments":"{\"x\":1}"},{"type":"function_call_output","call_id":"c","output":"sunny"}],` +
			`"tools":[{"type":"function","name":"get"}]}`,
			3 + 3 + n("user") + n("a b") + tokens.ImageTokens + 3 + n("assistant") + n("get") + n(`{"x":1}`) + 3 + n("tool") + n("sunny") +
				n(`[{"type":"function","name":"get"}]`)},
	} {
		got, err := cc.Count(wire.DialectResponses, []byte(tc.body))
		if err != nil || got != tc.want {
			t.Errorf("%s: %d %v, want %d", tc.body, got, err, tc.want)
		}
		lower, err := cc.LowerBound(wire.DialectResponses, []byte(tc.body))
		if err != nil || lower > got {
			t.Errorf("lower bound %d > %d (%v)", lower, got, err)
		}
	}
}

func TestRewriteResponses(t *testing.T) {
	rw := mustRewriter(t, RewriteConfig{Defaults: map[string]string{"max_tokens": "100"}, SystemPrompt: "Policy.",
		Clamps: []Clamp{{Param: "max_tokens", Min: 1, Max: 500}}}, RewriteConfig{})
	out, info, werr := rewrite(t, rw, resp, `{"model":"m","input":"x","instructions":"Mine."}`)
	if werr != nil || get(out, "max_output_tokens").Int() != 100 || get(out, "max_tokens").Exists() || info.MaxTokens != 100 ||
		get(out, "instructions").Str != "Policy.\n\nMine." {
		t.Errorf("%s %+v %v", out, info, werr)
	}
	if _, _, werr = rewrite(t, rw, resp, `{"model":"m","input":"x","max_output_tokens":900}`); werr == nil || werr.Param != "max_output_tokens" {
		t.Errorf("clamp on max_tokens did not bound max_output_tokens: %v", werr)
	}
	b, err := SetMaxTokens(resp, []byte(`{"model":"m","input":"x","max_output_tokens":900}`), &info, 50)
	if err != nil || get(string(b), "max_output_tokens").Int() != 50 || get(string(b), "max_tokens").Exists() {
		t.Errorf("SetMaxTokens: %s %v", b, err)
	}
}

func TestContentResponses(t *testing.T) {
	p, err := CompileContentPolicy([]ContentRule{{ID: "secret", Pattern: "(?i)forbidden"}})
	if err != nil {
		t.Fatal(err)
	}
	for body, param := range map[string]string{
		`{"model":"m","instructions":"forbidden"}`:                                                          "instructions",
		`{"model":"m","input":"forbidden"}`:                                                                 "input",
		`{"model":"m","input":[{"role":"user","content":"ok"},{"role":"user","content":"FORBIDDEN"}]}`:      "input[1].content",
		`{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"forbidden"}]}]}`:      "input[0].content[0].text",
		`{"model":"m","input":[{"type":"function_call_output","call_id":"c","output":"forbidden"}]}`:        "input[0].output",
		`{"model":"m","input":[{"type":"function_call","call_id":"c","name":"f","arguments":"forbidden"}]}`: "input[0].arguments",
	} {
		werr := p.Check(resp, []byte(body))
		if werr == nil || werr.Param != param || werr.Status != http.StatusUnprocessableEntity {
			t.Errorf("%s: %+v", body, werr)
		}
	}
}

func FuzzValidateResponses(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","input":"hi","instructions":"x","tools":[{"type":"function","name":"f"}],"text":{"format":{"type":"json_schema","name":"a","schema":{}}}}`,
		`{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"a"},{"type":"input_image","file_id":"f"}]},{"type":"function_call","call_id":"c","name":"f","arguments":"{}"},{"type":"function_call_output","call_id":"c","output":[{"type":"input_text","text":"r"}]}]}`,
		`{"model":"m","input":[{"type":"reasoning","summary":[{"type":"summary_text","text":"t"}]}],"max_output_tokens":5}`,
	} {
		f.Add([]byte(s))
	}
	c, err := tokens.New("cl100k_base")
	if err != nil {
		f.Fatal(err)
	}
	cc := tokens.NewChatCounter(c, nil)
	f.Fuzz(func(t *testing.T, body []byte) {
		info, werr := Validate(resp, body)
		if werr != nil {
			if werr.Status != http.StatusBadRequest || werr.Code == "" || werr.Message == "" {
				t.Fatalf("malformed rejection %+v", werr)
			}
			return
		}
		if info.Model == "" || info.MaxTokens > 0 && info.MaxTokensField != fieldMaxOutputTokens {
			t.Fatalf("info %+v", info)
		}
		// what validation accepts, the counter reads
		n, err := cc.Count(wire.DialectResponses, body)
		if errors.Is(err, tokens.ErrMalformed) {
			t.Fatalf("accepted a body the counter cannot read: %v\n%s", err, body)
		}
		if lower, _ := cc.LowerBound(wire.DialectResponses, body); lower > n {
			t.Fatalf("lower bound %d above the count %d", lower, n)
		}
	})
}
