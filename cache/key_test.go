package cache

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"sort"
	"testing"
	"unicode/utf8"

	"github.com/caddyai/gateway/internal/wire"
)

const baseChat = `{"model":"llama","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Hi"}],"temperature":0,"max_tokens":64,"top_p":1,"tool_choice":"auto","response_format":{"type":"json_schema","json_schema":{"name":"a","schema":{"type":"object","properties":{"x":{"type":"string"},"y":{"type":"number"}}}}}}`

func baseInput() KeyInput {
	return KeyInput{
		Endpoint:   wire.EndpointChatCompletions,
		Surface:    wire.OpenAI,
		Model:      "llama-3.1-8b-2024-07-23",
		APIVersion: "",
		Scope:      "k:team-a",
		Body:       []byte(baseChat),
	}
}

func mustKey(t *testing.T, in KeyInput) [32]byte {
	t.Helper()
	k, err := Key(in)
	if err != nil {
		t.Fatalf("Key(%s): %v", in.Body, err)
	}
	return k
}

func TestKeyDiffers(t *testing.T) {
	base := mustKey(t, baseInput())
	body := func(s string) func(*KeyInput) { return func(in *KeyInput) { in.Body = []byte(s) } }
	tests := []struct {
		name   string
		change func(*KeyInput)
	}{
		{"max_tokens", body(`{"model":"llama","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Hi"}],"temperature":0,"max_tokens":65,"top_p":1,"tool_choice":"auto","response_format":{"type":"json_schema","json_schema":{"name":"a","schema":{"type":"object","properties":{"x":{"type":"string"},"y":{"type":"number"}}}}}}`)},
		{"top_p", body(`{"model":"llama","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Hi"}],"temperature":0,"max_tokens":64,"top_p":0.9,"tool_choice":"auto","response_format":{"type":"json_schema","json_schema":{"name":"a","schema":{"type":"object","properties":{"x":{"type":"string"},"y":{"type":"number"}}}}}}`)},
		{"system prompt", body(`{"model":"llama","messages":[{"role":"system","content":"You are verbose."},{"role":"user","content":"Hi"}],"temperature":0,"max_tokens":64,"top_p":1,"tool_choice":"auto","response_format":{"type":"json_schema","json_schema":{"name":"a","schema":{"type":"object","properties":{"x":{"type":"string"},"y":{"type":"number"}}}}}}`)},
		{"no system prompt", body(`{"model":"llama","messages":[{"role":"user","content":"Hi"}],"temperature":0,"max_tokens":64,"top_p":1,"tool_choice":"auto","response_format":{"type":"json_schema","json_schema":{"name":"a","schema":{"type":"object","properties":{"x":{"type":"string"},"y":{"type":"number"}}}}}}`)},
		{"tool_choice", body(`{"model":"llama","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Hi"}],"temperature":0,"max_tokens":64,"top_p":1,"tool_choice":"none","response_format":{"type":"json_schema","json_schema":{"name":"a","schema":{"type":"object","properties":{"x":{"type":"string"},"y":{"type":"number"}}}}}}`)},
		{"nested schema", body(`{"model":"llama","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Hi"}],"temperature":0,"max_tokens":64,"top_p":1,"tool_choice":"auto","response_format":{"type":"json_schema","json_schema":{"name":"a","schema":{"type":"object","properties":{"x":{"type":"string"},"y":{"type":"integer"}}}}}}`)},
		{"message order", body(`{"model":"llama","messages":[{"role":"user","content":"Hi"},{"role":"system","content":"You are terse."}],"temperature":0,"max_tokens":64,"top_p":1,"tool_choice":"auto","response_format":{"type":"json_schema","json_schema":{"name":"a","schema":{"type":"object","properties":{"x":{"type":"string"},"y":{"type":"number"}}}}}}`)},
		{"number as written", body(`{"model":"llama","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Hi"}],"temperature":0.0,"max_tokens":64,"top_p":1,"tool_choice":"auto","response_format":{"type":"json_schema","json_schema":{"name":"a","schema":{"type":"object","properties":{"x":{"type":"string"},"y":{"type":"number"}}}}}}`)},
		{"extra parameter", body(`{"model":"llama","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Hi"}],"temperature":0,"max_tokens":64,"top_p":1,"tool_choice":"auto","stop":["\n"],"response_format":{"type":"json_schema","json_schema":{"name":"a","schema":{"type":"object","properties":{"x":{"type":"string"},"y":{"type":"number"}}}}}}`)},
		{"nested user field counts", body(`{"model":"llama","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Hi","user":"x"}],"temperature":0,"max_tokens":64,"top_p":1,"tool_choice":"auto","response_format":{"type":"json_schema","json_schema":{"name":"a","schema":{"type":"object","properties":{"x":{"type":"string"},"y":{"type":"number"}}}}}}`)},
		{"model snapshot", func(in *KeyInput) { in.Model = "llama-3.1-8b-2024-09-01" }},
		{"api version", func(in *KeyInput) { in.APIVersion = "2023-06-01" }},
		{"scope", func(in *KeyInput) { in.Scope = "k:team-b" }},
		{"global scope", func(in *KeyInput) { in.Scope = Policy{Scope: ScopeGlobal}.ScopeID("team-a") }},
		{"endpoint", func(in *KeyInput) { in.Endpoint = wire.EndpointCompletions }},
		{"surface", func(in *KeyInput) { in.Surface = wire.Anthropic }},
		// Length prefixes keep fields from running into each other.
		{"field boundary", func(in *KeyInput) { in.Model, in.APIVersion = "llama-3.1-8b-2024-07-2", "3" }},
	}
	seen := map[[32]byte]string{base: "base"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := baseInput()
			tt.change(&in)
			k := mustKey(t, in)
			if prev, ok := seen[k]; ok {
				t.Fatalf("key equals the key of %q", prev)
			}
			seen[k] = tt.name
		})
	}
}

func TestKeySame(t *testing.T) {
	base := mustKey(t, baseInput())
	tests := []struct {
		name string
		body string
	}{
		{"reordered top level", `{"temperature":0,"tool_choice":"auto","max_tokens":64,"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Hi"}],"top_p":1,"model":"llama","response_format":{"type":"json_schema","json_schema":{"name":"a","schema":{"type":"object","properties":{"x":{"type":"string"},"y":{"type":"number"}}}}}}`},
		{"reordered at every depth", `{"response_format":{"json_schema":{"schema":{"properties":{"y":{"type":"number"},"x":{"type":"string"}},"type":"object"},"name":"a"},"type":"json_schema"},"messages":[{"content":"You are terse.","role":"system"},{"content":"Hi","role":"user"}],"model":"llama","temperature":0,"max_tokens":64,"top_p":1,"tool_choice":"auto"}`},
		{"whitespace", "{\n  \"model\": \"llama\",\n  \"messages\": [ {\"role\": \"system\", \"content\": \"You are terse.\"} ,\r\n {\"role\":\"user\",\"content\":\"Hi\"} ],\t\"temperature\": 0, \"max_tokens\" : 64, \"top_p\": 1, \"tool_choice\": \"auto\", \"response_format\": {\"type\": \"json_schema\", \"json_schema\": {\"name\": \"a\", \"schema\": {\"type\": \"object\", \"properties\": {\"x\": {\"type\": \"string\"}, \"y\": {\"type\": \"number\"}}}}}}\n"},
		{"stream and stream_options", `{"stream":true,"stream_options":{"include_usage":true},"model":"llama","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Hi"}],"temperature":0,"max_tokens":64,"top_p":1,"tool_choice":"auto","response_format":{"type":"json_schema","json_schema":{"name":"a","schema":{"type":"object","properties":{"x":{"type":"string"},"y":{"type":"number"}}}}}}`},
		{"stream false", `{"stream":false,"model":"llama","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Hi"}],"temperature":0,"max_tokens":64,"top_p":1,"tool_choice":"auto","response_format":{"type":"json_schema","json_schema":{"name":"a","schema":{"type":"object","properties":{"x":{"type":"string"},"y":{"type":"number"}}}}}}`},
		{"user", `{"user":"end-user-42","model":"llama","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Hi"}],"temperature":0,"max_tokens":64,"top_p":1,"tool_choice":"auto","response_format":{"type":"json_schema","json_schema":{"name":"a","schema":{"type":"object","properties":{"x":{"type":"string"},"y":{"type":"number"}}}}}}`},
		{"model alias in body", `{"model":"my-alias","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Hi"}],"temperature":0,"max_tokens":64,"top_p":1,"tool_choice":"auto","response_format":{"type":"json_schema","json_schema":{"name":"a","schema":{"type":"object","properties":{"x":{"type":"string"},"y":{"type":"number"}}}}}}`},
		{"escaped characters", `{"model":"llama","messages":[{"role":"\u0073ystem","content":"You are terse\u002e"},{"role":"user","content":"H\u0069"}],"temperature":0,"max_tokens":64,"top_p":1,"tool_choice":"auto","response_format":{"type":"json_schema","json_schema":{"name":"a","schema":{"type":"object","properties":{"x":{"type":"string"},"y":{"type":"number"}}}}}}`},
		{"escaped key", `{"mod\u0065l":"llama","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Hi"}],"temperature":0,"max_tokens":64,"top_p":1,"tool_choice":"auto","response_format":{"type":"json_schema","json_schema":{"name":"a","schema":{"type":"object","properties":{"x":{"type":"string"},"y":{"type":"number"}}}}}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := baseInput()
			in.Body = []byte(tt.body)
			if k := mustKey(t, in); k != base {
				t.Fatal("key differs from the base request's")
			}
		})
	}
}

func TestKeyRejects(t *testing.T) {
	tests := []struct {
		name string
		body string
		want error
	}{
		{"empty", ``, errNotObj},
		{"array", `[1]`, errNotObj},
		{"truncated", `{"a":`, errSyntax},
		{"trailing", `{"a":1} {}`, errTrailing},
		{"bad number", `{"a":01}`, errSyntax},
		{"bad escape", `{"a":"\x"}`, errSyntax},
		{"raw control", "{\"a\":\"\x01\"}", errSyntax},
		{"too deep", `{"a":` + string(bytes.Repeat([]byte("["), maxDepth+1)) + string(bytes.Repeat([]byte("]"), maxDepth+1)) + `}`, errDepth},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := baseInput()
			in.Body = []byte(tt.body)
			_, err := Key(in)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Key error = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestCanonical(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"b":1,"a":[{"d":true,"c":null}],"c":"x"}`, `{"a":[{"c":null,"d":true}],"b":1,"c":"x"}`},
		{` { "a" : 1.50e+3 , "b" : -0 } `, `{"a":1.50e+3,"b":-0}`},
		{`"\u00e9\/\n\u0001\ud83d\ude00"`, "\"é/\\n\\u0001😀\""},
		{`"\ud800x\uDC00"`, `"\ud800x\udc00"`},
		{`{"a":2,"a":1}`, `{"a":2,"a":1}`},
		{`{"b":1,"a":2,"a":1}`, `{"a":2,"a":1,"b":1}`},
		{`[]`, `[]`},
		{`{}`, `{}`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := appendCanonical(nil, []byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
		})
	}
}

// FuzzCanonical checks that canonicalisation keeps the value, is idempotent, and does not depend
// on key order or whitespace: the value re-encoded with every object's keys in reverse order and
// different spacing has the same canonical form.
func FuzzCanonical(f *testing.F) {
	for _, s := range []string{baseChat, `{"b":{"y":1,"x":[1,2,{"q":"\u00e9<"}]},"a":null}`, `[1,"a",true]`, `"\ud800"`, `{"a":1,"a":2}`, `-1.5e-3`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c1, err := appendCanonical(nil, data)
		if err != nil {
			return
		}
		c2, err := appendCanonical(nil, c1)
		if err != nil {
			t.Fatalf("canonical form %q does not canonicalise: %v", c1, err)
		}
		if !bytes.Equal(c1, c2) {
			t.Fatalf("not idempotent:\n%q\n%q", c1, c2)
		}
		v, err := decodeNumbers(data)
		if err != nil || hasDuplicateKeys(data) || !utf8.Valid(data) || bytes.Contains(bytes.ToLower(data), []byte(`\ud`)) {
			return // outside what encoding/json round-trips exactly
		}
		w, err := decodeNumbers(c1)
		if err != nil {
			t.Fatalf("canonical form %q is not JSON: %v", c1, err)
		}
		if !reflect.DeepEqual(v, w) {
			t.Fatalf("value changed:\n%#v\n%#v", v, w)
		}
		c3, err := appendCanonical(nil, encodeReversed(nil, v))
		if err != nil {
			t.Fatalf("re-encoded value does not canonicalise: %v", err)
		}
		if !bytes.Equal(c1, c3) {
			t.Fatalf("key order or spacing changed the canonical form:\n%q\n%q", c1, c3)
		}
	})
}

// decodeNumbers decodes JSON keeping numbers as written.
func decodeNumbers(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data")
	}
	return v, nil
}

// encodeReversed encodes v with object keys in descending order and extra spacing.
func encodeReversed(dst []byte, v any) []byte {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Sort(sort.Reverse(sort.StringSlice(keys)))
		dst = append(dst, "{ "...)
		for i, k := range keys {
			if i > 0 {
				dst = append(dst, " ,\n"...)
			}
			kb, _ := json.Marshal(k)
			dst = append(dst, kb...)
			dst = append(dst, " :\t"...)
			dst = encodeReversed(dst, x[k])
		}
		return append(dst, " }"...)
	case []any:
		dst = append(dst, "[ "...)
		for i, e := range x {
			if i > 0 {
				dst = append(dst, ", "...)
			}
			dst = encodeReversed(dst, e)
		}
		return append(dst, "\r\n]"...)
	default:
		b, _ := json.Marshal(x)
		return append(dst, b...)
	}
}

// hasDuplicateKeys reports whether some object of the JSON text repeats a key.
func hasDuplicateKeys(data []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(data))
	type frame struct {
		obj  bool
		keys map[string]bool
		key  bool // the next string token is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		isKey := top != nil && top.obj && top.key
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{':
				stack = append(stack, &frame{obj: true, keys: map[string]bool{}, key: true})
				continue
			case '[':
				stack = append(stack, &frame{})
				continue
			default:
				stack = stack[:len(stack)-1]
			}
		case string:
			if isKey {
				if top.keys[v] {
					return true
				}
				top.keys[v] = true
				top.key = false
				continue
			}
		}
		if len(stack) > 0 && stack[len(stack)-1].obj {
			stack[len(stack)-1].key = true
		}
	}
}
