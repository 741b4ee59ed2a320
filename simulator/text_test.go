package simulator

import (
	"encoding/json"
	"testing"

	"github.com/tiktoken-go/tokenizer"
)

func cl100k(t testing.TB) tokenizer.Codec {
	t.Helper()
	c, err := tokenizer.Get(tokenizer.Cl100kBase)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func countOf(t testing.TB, c tokenizer.Codec, s string) int {
	t.Helper()
	n, err := c.Count(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestWordsAreSingleTokens(t *testing.T) {
	c := cl100k(t)
	for _, w := range words {
		if n := countOf(t, c, w); n != 1 {
			t.Errorf("%q is %d tokens, want 1", w, n)
		}
		if n := countOf(t, c, " "+w); n != 1 {
			t.Errorf("%q is %d tokens, want 1", " "+w, n)
		}
	}
	for choice := range 4 {
		for n := range 100 {
			if got := countOf(t, c, completionText(choice, n)); got != n {
				t.Fatalf("completion of choice %d with %d tokens counts %d tokens: %q", choice, n, got, completionText(choice, n))
			}
		}
	}
}

func TestChatPromptFormula(t *testing.T) {
	c := cl100k(t)
	s := newServer(t, Config{})
	cnt := func(s string) int { return countOf(t, c, s) }
	tests := []struct {
		name string
		msgs string
		want int
	}{
		{"one user message", `[{"role":"user","content":"Hello there, model!"}]`,
			3 + cnt("user") + cnt("Hello there, model!") + 3},
		{"system and user", `[{"role":"system","content":"Be brief."},{"role":"user","content":"Why is the sky blue?"}]`,
			3 + cnt("system") + cnt("Be brief.") + 3 + cnt("user") + cnt("Why is the sky blue?") + 3},
		{"name adds count plus one", `[{"role":"user","name":"alice_42","content":"hi"}]`,
			3 + cnt("user") + cnt("hi") + cnt("alice_42") + 1 + 3},
		{"content parts concatenated, images 85",
			`[{"role":"user","content":[{"type":"text","text":"Look at "},{"type":"image_url","image_url":{"url":"https://x/y.png"}},{"type":"text","text":"this picture."}]}]`,
			3 + cnt("user") + cnt("Look at this picture.") + 85 + 3},
		{"empty name", `[{"role":"user","name":"","content":"hi"}]`, 3 + cnt("user") + cnt("hi") + 1 + 3},
		{"tool calls count name and arguments",
			`[{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},{"role":"tool","tool_call_id":"call_1","content":"22C and sunny"}]`,
			3 + cnt("assistant") + cnt("get_weather") + cnt(`{"city":"Paris"}`) + 3 + cnt("tool") + cnt("22C and sunny") + 3},
		{"empty content", `[{"role":"user","content":""}]`, 3 + cnt("user") + 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var msgs []chatMessage
			if err := json.Unmarshal([]byte(tt.msgs), &msgs); err != nil {
				t.Fatal(err)
			}
			got, e := s.chatPromptTokens(msgs)
			if e != nil {
				t.Fatalf("error: %+v", e)
			}
			if got != tt.want {
				t.Errorf("prompt tokens = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestMessagesPromptFormula(t *testing.T) {
	c := cl100k(t)
	s := newServer(t, Config{})
	cnt := func(s string) int { return countOf(t, c, s) }
	base := 3 + cnt("user") + cnt("Tell me a story.") + 3
	tests := []struct {
		name string
		body string
		want int
	}{
		{"no system", `{"messages":[{"role":"user","content":"Tell me a story."}]}`, base},
		{"string system", `{"system":"You are a poet.","messages":[{"role":"user","content":"Tell me a story."}]}`,
			base + cnt("You are a poet.") + 3},
		{"block system", `{"system":[{"type":"text","text":"You are "},{"type":"text","text":"a poet."}],"messages":[{"role":"user","content":[{"type":"text","text":"Tell me a story."}]}]}`,
			base + cnt("You are a poet.") + 3},
		{"null system", `{"system":null,"messages":[{"role":"user","content":"Tell me a story."}]}`, base},
		{"tools, tool_use, tool_result and image",
			`{"tools":[{"name":"w","input_schema":{"type":"object"}}],"messages":[{"role":"user","content":"Tell me a story."},` +
				`{"role":"assistant","content":[{"type":"text","text":"ok"},{"type":"tool_use","id":"t1","name":"w","input":{"city": "Paris"}}]},` +
				`{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":[{"type":"text","text":"sunny"},{"type":"image","source":{}}]}]}]}`,
			base + 3 + cnt("assistant") + cnt("ok") + cnt(`{"city": "Paris"}`) + 3 + cnt("user") + cnt("sunny") + 85 +
				cnt(`[{"name":"w","input_schema":{"type":"object"}}]`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var req messagesRequest
			if err := json.Unmarshal([]byte(tt.body), &req); err != nil {
				t.Fatal(err)
			}
			got, e := s.messagesPromptTokens(&req)
			if e != nil {
				t.Fatalf("error: %+v", e)
			}
			if got != tt.want {
				t.Errorf("prompt tokens = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestContentTextRejectsOtherTypes(t *testing.T) {
	for _, raw := range []string{`5`, `{"text":"x"}`, `true`, `[1,2]`} {
		if _, err := contentText(json.RawMessage(raw)); err == nil {
			t.Errorf("contentText(%s) accepted", raw)
		}
	}
}

func TestAppendJSONString(t *testing.T) {
	tests := []string{"", "plain", "quote\" back\\slash", "ctl\x00\x01\x1f\n\r\t", "utf8 é 漢字 🙂", "bad \xff\xfe utf8", "sep \u2028 \u2029"}
	for _, in := range tests {
		b := appendJSONString(nil, in)
		var out string
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("appendJSONString(%q) = %s: invalid JSON: %v", in, b, err)
		}
		want := in
		if in == "bad \xff\xfe utf8" {
			want = "bad \ufffd\ufffd utf8"
		}
		if out != want {
			t.Errorf("round trip of %q gave %q", in, out)
		}
	}
}

func TestChatToolsCounted(t *testing.T) {
	c := cl100k(t)
	tools := `[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]`
	s := newServer(t, Config{})
	rec := do(t, s, "POST", "/v1/chat/completions", helloChat+`,"tools":`+tools+`}`)
	var r struct {
		Usage struct {
			PromptTokens int `json:"prompt_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	if want := 8 + countOf(t, c, tools); r.Usage.PromptTokens != want {
		t.Errorf("prompt tokens %d, want %d", r.Usage.PromptTokens, want)
	}
}
