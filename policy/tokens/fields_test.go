package tokens

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/caddyai/gateway/internal/wire"
)

// TestPromptBearingFields checks the fields servers render into the prompt
// besides messages (issue 14 item 15), with one token per byte so the
// formula can be worked out by hand.
func TestPromptBearingFields(t *testing.T) {
	audio := strings.Repeat("A", 64) // 48 bytes of audio: 3 tokens
	tests := []struct {
		name string
		d    wire.Dialect
		body string
		want int
	}{
		// vLLM: documents count as their raw JSON, like tools.
		{"documents", wire.DialectChat, `{"messages":[],"documents":[{"title":"t","text":"abc"}]}`, 3 + len(`[{"title":"t","text":"abc"}]`)},
		{"chat_template", wire.DialectChat, `{"messages":[],"chat_template":"{{x}}"}`, 3 + 5},
		{"chat_template_kwargs", wire.DialectChat, `{"messages":[],"chat_template_kwargs":{"a":1}}`, 3 + len(`{"a":1}`)},
		{"json_schema", wire.DialectChat, `{"messages":[],"response_format":{"type":"json_schema","json_schema":{"name":"n","schema":{"type":"object"}}}}`, 3 + len(`{"name":"n","schema":{"type":"object"}}`)},
		{"json_object", wire.DialectChat, `{"messages":[],"response_format":{"type":"json_object"}}`, 3},
		{"prediction string", wire.DialectChat, `{"messages":[],"prediction":{"type":"content","content":"abc"}}`, 3 + 3},
		{"prediction parts", wire.DialectChat, `{"messages":[],"prediction":{"type":"content","content":[{"type":"text","text":"ab"},{"type":"text","text":"c"}]}}`, 3 + 3},
		// 3 + (3 + "assistant" + "no") for the refusal field.
		{"refusal", wire.DialectChat, `{"messages":[{"role":"assistant","content":null,"refusal":"no"}]}`, 3 + 3 + 9 + 2},
		// A refusal part joins the text of the content.
		{"refusal part", wire.DialectChat, `{"messages":[{"role":"assistant","content":[{"type":"refusal","refusal":"no"},{"type":"text","text":"!"}]}]}`, 3 + 3 + 9 + 3},
		// Inline file data: one token per byte of the data string.
		{"file data", wire.DialectChat, `{"messages":[{"role":"user","content":[{"type":"file","file":{"filename":"a.pdf","file_data":"data:application/pdf;base64,QUJD"}}]}]}`, 3 + 3 + 4 + len("data:application/pdf;base64,QUJD")},
		{"file id", wire.DialectChat, `{"messages":[{"role":"user","content":[{"type":"file","file":{"file_id":"file-1"}}]}]}`, 3 + 3 + 4},
		{"input_audio", wire.DialectChat, `{"messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"` + audio + `","format":"wav"}}]}]}`, 3 + 3 + 4 + 3},
		{"tools", wire.DialectChat, `{"messages":[],"tools":[{"type":"function"}]}`, 3 + len(`[{"type":"function"}]`)},
		// Anthropic documents: plain text, base64 (a PDF) or nested content,
		// plus title and context.
		{"document text", wire.DialectMessages, `{"messages":[{"role":"user","content":[{"type":"document","source":{"type":"text","media_type":"text/plain","data":"hello"},"title":"T","context":"cx"}]}]}`, 3 + 3 + 4 + 5 + 1 + 2},
		{"document base64", wire.DialectMessages, `{"messages":[{"role":"user","content":[{"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"QUJDRA=="}}]}]}`, 3 + 3 + 4 + 8},
		{"document content", wire.DialectMessages, `{"messages":[{"role":"user","content":[{"type":"document","source":{"type":"content","content":[{"type":"text","text":"ab"},{"type":"image","source":{}}]}}]}]}`, 3 + 3 + 4 + 2 + ImageTokens},
		{"document url", wire.DialectMessages, `{"messages":[{"role":"user","content":[{"type":"document","source":{"type":"url","url":"https://x/y.pdf"}}]}]}`, 3 + 3 + 4},
		{"document in tool_result", wire.DialectMessages, `{"messages":[{"role":"user","content":[{"type":"tool_result","content":[{"type":"document","source":{"type":"text","data":"abc"}}]}]}]}`, 3 + 3 + 4 + 3},
		{"suffix", wire.DialectCompletion, `{"prompt":"ab","suffix":"cd"}`, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewChatCounter(&lenCounter{}, nil)
			body := []byte(tt.body)
			got, err := c.Count(tt.d, body)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("Count = %d, want %d", got, tt.want)
			}
			if ub := UpperBound(body); ub < got {
				t.Errorf("UpperBound = %d < %d", ub, got)
			}
			for _, rc := range boundCounters(t) {
				cc := NewChatCounter(rc, nil)
				n, err := cc.Count(tt.d, body)
				if err != nil {
					t.Fatal(err)
				}
				if lb, _ := cc.LowerBound(tt.d, body); lb > n || n > UpperBound(body) {
					t.Errorf("%s: LowerBound %d, Count %d, UpperBound %d", rc.Name(), lb, n, UpperBound(body))
				}
			}
		})
	}
}

func TestPromptBearingFieldsMalformed(t *testing.T) {
	for _, tt := range []struct {
		d    wire.Dialect
		body string
	}{
		{wire.DialectChat, `{"messages":[],"documents":{}}`},
		{wire.DialectChat, `{"messages":[],"chat_template":1}`},
		{wire.DialectChat, `{"messages":[],"chat_template_kwargs":[]}`},
		{wire.DialectChat, `{"messages":[],"response_format":"json"}`},
		{wire.DialectChat, `{"messages":[],"response_format":{"json_schema":[]}}`},
		{wire.DialectChat, `{"messages":[],"prediction":"x"}`},
		{wire.DialectChat, `{"messages":[],"prediction":{"content":5}}`},
		{wire.DialectChat, `{"messages":[{"role":"assistant","refusal":1}]}`},
		{wire.DialectChat, `{"messages":[{"role":"assistant","content":[{"type":"refusal","refusal":1}]}]}`},
		{wire.DialectCompletion, `{"prompt":"a","suffix":1}`},
		{wire.DialectMessages, `{"messages":[{"role":"user","content":[{"type":"document","title":1}]}]}`},
	} {
		c := NewChatCounter(&lenCounter{}, nil)
		if n, err := c.Count(tt.d, []byte(tt.body)); !errors.Is(err, ErrMalformed) {
			t.Errorf("Count(%s) = %d, %v; want ErrMalformed", tt.body, n, err)
		}
	}
}

// TestDocumentsFillTheWindow is the attack of item 15: 40k tokens in vLLM's
// documents must not pass an 8192-token window as a small prompt.
func TestDocumentsFillTheWindow(t *testing.T) {
	var docs []string
	for i := 0; len(strings.Join(docs, ",")) < 200<<10; i++ {
		docs = append(docs, `{"title":"doc","text":`+jsonString(realisticText(4<<10))+`}`)
	}
	body := []byte(`{"model":"m","max_tokens":100,"messages":[{"role":"user","content":"Summarise the documents."}],"documents":[` + strings.Join(docs, ",") + `]}`)
	cc := NewChatCounter(cl100k(), nil)
	n, err := cc.CountChat(body)
	if err != nil {
		t.Fatal(err)
	}
	if n < 40000 {
		t.Fatalf("Count = %d, want at least 40000", n)
	}
	got, exceeded, err := cc.CountLimit(context.Background(), wire.DialectChat, body, 8192-100)
	if err != nil || !exceeded || got <= 8092 {
		t.Errorf("CountLimit = %d, %v, %v; want exceeded", got, exceeded, err)
	}
}
