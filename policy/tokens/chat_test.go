package tokens

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/caddyai/gateway/internal/wire"
)

// lenCounter counts one token per byte, so formula results can be worked
// out by hand, and records how many texts it was asked to count.
type lenCounter struct{ calls atomic.Int64 }

func (l *lenCounter) Count(text string) int { l.calls.Add(1); return len(text) }
func (l *lenCounter) Name() string          { return "len" }

func TestCountChat(t *testing.T) {
	tests := []struct {
		name string
		body string
		want int
	}{
		// 3 + 4 ("user") + 2 ("hi") + 3 primer.
		{"one message", `{"messages":[{"role":"user","content":"hi"}]}`, 12},
		// (3+6+5) + (3+4+2+ (3+1)) + 3: system, then user with name "bob".
		{"name", `{"messages":[{"role":"system","content":"be ok"},{"role":"user","name":"bob","content":"hi"}]}`, 30},
		// Parts concatenated: "ab"+"cd" = 4; image 85; unknown part type ignored.
		{"parts", `{"messages":[{"role":"user","content":[{"type":"text","text":"ab"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"cd"},{"type":"input_audio","input_audio":{}}]}]}`, 3 + 4 + 4 + 85 + 3},
		// Escapes decode before counting: "a\nb" is 3 bytes.
		{"escapes", `{"messages":[{"role":"user","content":"a\nb"}]}`, 3 + 4 + 3 + 3},
		// null content with tool calls: names and arguments count.
		{"tool calls", `{"messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"get","arguments":"{\"a\":1}"}},{"id":"c2","type":"function","function":{"name":"put","arguments":"{}"}}]}]}`, 3 + 9 + (3 + 7) + (3 + 2) + 3},
		{"function_call", `{"messages":[{"role":"assistant","function_call":{"name":"f","arguments":"xy"}}]}`, 3 + 9 + 1 + 2 + 3},
		// tools count as their raw JSON, whitespace included.
		{"tools", `{"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function"}]}`, 12 + len(`[{"type":"function"}]`)},
		{"functions", `{"messages":[],"functions":[ {"name":"f"} ]}`, 3 + len(`[ {"name":"f"} ]`)},
		{"empty messages", `{"messages":[]}`, 3},
		{"null name and tools", `{"messages":[{"role":"user","content":"","name":null}],"tools":null}`, 3 + 4 + 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewChatCounter(&lenCounter{}, nil)
			got, err := c.CountChat([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("CountChat = %d, want %d", got, tt.want)
			}
			if ub := UpperBound([]byte(tt.body)); ub < got {
				t.Errorf("UpperBound = %d < %d", ub, got)
			}
		})
	}
}

// TestCountChatOpenAIExample checks the formula with the real vocabularies
// on the example conversation of OpenAI's cookbook "How to count tokens with
// tiktoken", for which the API itself reported 129 prompt tokens
// (gpt-3.5-turbo-0613, gpt-4-0613: cl100k_base) and 124 (gpt-4o:
// o200k_base).
func TestCountChatOpenAIExample(t *testing.T) {
	body := []byte(`{"model":"gpt-4","messages":[
{"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
{"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
{"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
{"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
{"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."},
{"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."}]}`)
	for spec, want := range map[string]int{"cl100k_base": 129, "o200k_base": 124} {
		c := NewChatCounter(mustCounter(t, spec), NewMemo(100))
		for range 2 { // cold, then from the memo
			got, err := c.CountChat(body)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("%s: CountChat = %d, want %d", spec, got, want)
			}
		}
	}
}

func TestCountAnthropic(t *testing.T) {
	tests := []struct {
		name string
		body string
		want int
	}{
		{"string content", `{"messages":[{"role":"user","content":"hello"}]}`, 3 + 4 + 5 + 3},
		{"system string", `{"system":"sys","messages":[{"role":"user","content":"hi"}]}`, (3 + 3) + (3 + 4 + 2) + 3},
		{"system blocks", `{"system":[{"type":"text","text":"ab"},{"type":"text","text":"c"}],"messages":[]}`, (3 + 3) + 3},
		{"blocks", `{"messages":[{"role":"user","content":[{"type":"text","text":"ab"},{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AAAA"}},{"type":"text","text":"c"}]}]}`, 3 + 4 + 3 + 85 + 3},
		{"tool_use", `{"messages":[{"role":"assistant","content":[{"type":"text","text":"ok"},{"type":"tool_use","id":"t1","name":"get","input":{"city": "Paris"}}]}]}`, 3 + 9 + 2 + len(`{"city": "Paris"}`) + 3},
		{"tool_result string", `{"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"15C"}]}]}`, 3 + 4 + 3 + 3},
		{"tool_result blocks", `{"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":[{"type":"text","text":"a"},{"type":"text","text":"bc"},{"type":"image","source":{}}]}]}]}`, 3 + 4 + 3 + 85 + 3},
		{"tools", `{"messages":[],"tools":[{"name":"get","input_schema":{"type":"object"}}]}`, 3 + len(`[{"name":"get","input_schema":{"type":"object"}}]`)},
		{"null system", `{"system":null,"messages":[]}`, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewChatCounter(&lenCounter{}, nil)
			got, err := c.CountAnthropic([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("CountAnthropic = %d, want %d", got, tt.want)
			}
			if ub := UpperBound([]byte(tt.body)); ub < got {
				t.Errorf("UpperBound = %d < %d", ub, got)
			}
		})
	}
}

func TestCountCompletionAndEmbedding(t *testing.T) {
	tests := []struct {
		name string
		body string
		want int
	}{
		{"string", `{"X":"hello"}`, 5},
		{"strings", `{"X":["ab","cde"]}`, 5},
		{"token array", `{"X":[1,2,3,100257]}`, 4},
		{"token arrays", `{"X":[[1,2],[3],[]]}`, 3},
		{"empty", `{"X":""}`, 0},
		{"empty array", `{"X":[]}`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewChatCounter(&lenCounter{}, nil)
			for _, f := range []struct {
				key   string
				count func([]byte) (int, error)
			}{{"prompt", c.CountCompletion}, {"input", c.CountEmbedding}} {
				body := []byte(strings.Replace(tt.body, "X", f.key, 1))
				got, err := f.count(body)
				if err != nil {
					t.Fatalf("%s: %v", f.key, err)
				}
				if got != tt.want {
					t.Errorf("%s: count = %d, want %d", f.key, got, tt.want)
				}
				if ub := UpperBound(body); ub < got {
					t.Errorf("%s: UpperBound = %d < %d", f.key, ub, got)
				}
			}
		})
	}
}

func TestMalformedBodies(t *testing.T) {
	chat := []string{
		``, `not json`, `[]`, `"x"`, `{"messages":{}}`, `{}`, `{"messages":[1]}`,
		`{"messages":[{"content":"x"}]}`, `{"messages":[{"role":1}]}`,
		`{"messages":[{"role":"user","content":5}]}`, `{"messages":[{"role":"user","content":[1]}]}`,
		`{"messages":[{"role":"user","content":[{"type":"text"}]}]}`,
		`{"messages":[{"role":"user","content":[{"type":"text","text":7}]}]}`,
		`{"messages":[{"role":"user","content":[{"type":3}]}]}`,
		`{"messages":[{"role":"user","name":2}]}`,
		`{"messages":[{"role":"assistant","tool_calls":{}}]}`,
		`{"messages":[{"role":"assistant","tool_calls":[{"function":"x"}]}]}`,
		`{"messages":[{"role":"assistant","tool_calls":[{"function":{"name":1}}]}]}`,
		`{"messages":[{"role":"assistant","function_call":"x"}]}`,
		`{"messages":[],"tools":{}}`, `{"messages":[{"role":"user","content":"x"}]`,
	}
	anthropic := []string{
		`{"messages":[]`, `{"system":1,"messages":[]}`, `{"system":[{"type":"text","text":1}],"messages":[]}`,
		`{"messages":[{"role":"user","content":[{"type":"tool_result","content":5}]}]}`,
		`{"messages":[{"role":"user","content":[{"type":"tool_result","content":[{"type":"text"}]}]}]}`,
		`{"messages":[],"tools":"x"}`,
	}
	inputs := []string{
		`{}`, `{"X":null}`, `{"X":5}`, `{"X":{}}`, `{"X":[1.5]}`, `{"X":[-1]}`, `{"X":[[1,"a"]]}`, `{"X":[true]}`, `{"X":[null]}`, `{"X":"a"`,
	}
	c := NewChatCounter(&lenCounter{}, NewMemo(16))
	check := func(t *testing.T, name string, body string, f func([]byte) (int, error)) {
		t.Helper()
		n, err := f([]byte(body))
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s(%s) = %d, %v; want ErrMalformed", name, body, n, err)
		}
	}
	for _, b := range chat {
		check(t, "CountChat", b, c.CountChat)
	}
	for _, b := range append(anthropic, chat[:9]...) {
		check(t, "CountAnthropic", b, c.CountAnthropic)
	}
	for _, b := range inputs {
		check(t, "CountCompletion", strings.Replace(b, "X", "prompt", 1), c.CountCompletion)
		check(t, "CountEmbedding", strings.Replace(b, "X", "input", 1), c.CountEmbedding)
	}
}

// TestConversationMemo checks that a conversation whose earlier turns were
// counted before only counts its new message.
func TestConversationMemo(t *testing.T) {
	lc := &lenCounter{}
	c := NewChatCounter(lc, NewMemo(1000))
	nineteen := conversation(19, "")
	want, err := NewChatCounter(&lenCounter{}, nil).CountChat(nineteen)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.CountChat(nineteen)
	if err != nil || got != want {
		t.Fatalf("first count = %d, %v; want %d", got, err, want)
	}
	before := lc.calls.Load()
	twenty := conversation(20, "")
	want, _ = NewChatCounter(&lenCounter{}, nil).CountChat(twenty)
	got, err = c.CountChat(twenty)
	if err != nil || got != want {
		t.Fatalf("second count = %d, %v; want %d", got, err, want)
	}
	if n := lc.calls.Load() - before; n != 1 {
		t.Errorf("counted %d texts for one new message, want 1", n)
	}
}

// TestMessageMemo checks the memo of whole messages: a message counted before adds its memoised
// count (the same as a walk of it, with each API's formula), a text spelling a message's JSON is
// not taken for it, and a count stopped inside a message does not memoise a part of it.
func TestMessageMemo(t *testing.T) {
	msg := `{"role":"assistant","content":"ab","name":"bo","refusal":"no","tool_calls":[{"function":{"name":"f","arguments":"{}"}}]}`
	bodies := []struct {
		d    wire.Dialect
		body string
	}{
		{wire.DialectChat, `{"messages":[` + msg + `]}`},
		// the same bytes under the other API: refusal and tool_calls do not count there
		{wire.DialectMessages, `{"messages":[` + msg + `]}`},
		// a text that spells the message's JSON is a text
		{wire.DialectChat, `{"messages":[{"role":"user","content":` + strconv.Quote(msg) + `}]}`},
		{wire.DialectChat, `{"messages":[{"role":"user","content":[{"type":"text","text":"x"},{"type":"image_url","image_url":{"url":"u"}}]},` + msg + `,` + msg + `]}`},
		{wire.DialectMessages, `{"system":"s","messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":"15C"}]},` + msg + `]}`},
		{wire.DialectChat, string(conversation(6, ""))},
		{wire.DialectChat, string(conversation(7, " and one more"))},
	}
	lc := &lenCounter{}
	memo := NewMemo(1000)
	c := NewChatCounter(lc, memo)
	fresh := NewChatCounter(&lenCounter{}, nil)
	for round := range 2 { // the second round from the memo
		for i, b := range bodies {
			want, err := fresh.Count(b.d, []byte(b.body))
			if err != nil {
				t.Fatal(err)
			}
			// a count stopped early first, at every limit below the total
			for limit := 0; limit < want; limit += 7 {
				n, exceeded, err := c.CountLimit(context.Background(), b.d, []byte(b.body), limit)
				if err != nil || !exceeded || n <= limit || n > want {
					t.Fatalf("round %d body %d: CountLimit(%d) = %d, %v, %v; want more than the limit, at most %d", round, i, limit, n, exceeded, err, want)
				}
			}
			if got, err := c.Count(b.d, []byte(b.body)); err != nil || got != want {
				t.Errorf("round %d body %d: Count = %d, %v; want %d", round, i, got, err, want)
			}
		}
	}
	calls := lc.calls.Load()
	if _, err := c.Count(wire.DialectChat, []byte(bodies[3].body)); err != nil || lc.calls.Load() != calls {
		t.Errorf("a body counted before counted %d texts again (%v)", lc.calls.Load()-calls, err)
	}
	// the message itself is memoised whole, under each API's formula
	for _, anthropic := range []bool{false, true} {
		want := 3 + len("assistant") + 2 + (len("bo") + 1) // framing, role, content, name
		if !anthropic {
			want += len("no") + 1 + 2 // the refusal, the call's name and arguments
		}
		if n, ok := memo.Get(memo.MessageKey("len", anthropic, msg)); !ok || n != want {
			t.Errorf("anthropic %v: the message's memoised count = %d, %v; want %d", anthropic, n, ok, want)
		}
	}
}

// conversation returns a chat body of n alternating turns of about 300 bytes;
// suffix is appended to the last message.
func conversation(n int, suffix string) []byte {
	var b strings.Builder
	b.WriteString(`{"model":"gpt-4o","messages":[{"role":"system","content":"You are a helpful assistant."}`)
	for i := range n {
		role := "user"
		if i%2 == 1 {
			role = "assistant"
		}
		b.WriteString(`,{"role":"` + role + `","content":"Turn ` + strconv.Itoa(i) + `: `)
		b.WriteString(strings.Repeat("Tell me more about the history of tokenizers and why byte pair encoding won. ", 4))
		if i == n-1 {
			b.WriteString(suffix)
		}
		b.WriteString(`"}`)
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}
