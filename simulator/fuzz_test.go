package simulator

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func FuzzParseFault(f *testing.F) {
	for _, seed := range []string{"", "kind=cut;after=3", "status=503", "kind=stall;delay=1s;shape=tgi", "kind=", ";;", "after=99999999999999999999"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		fault, err := ParseFault(spec)
		if err != nil {
			return
		}
		again, err := ParseFault(fault.String())
		if err != nil || again != fault {
			t.Fatalf("%q parsed to %+v, whose String %q re-parses to %+v, %v", spec, fault, fault.String(), again, err)
		}
	})
}

func FuzzAppendJSONString(f *testing.F) {
	for _, seed := range []string{"", "plain", "\"\\\n\x00", "\xff\xfe", "\u2028", "漢字"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		b := appendJSONString(nil, in)
		var out string
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("invalid JSON %s for %q: %v", b, in, err)
		}
		if utf8.ValidString(in) && out != in {
			t.Fatalf("round trip of %q gave %q", in, out)
		}
	})
}

// FuzzRequestBody checks that any body on any generation endpoint gets a
// well-formed answer: JSON with the right envelope, or an SSE stream.
func FuzzRequestBody(f *testing.F) {
	f.Add("/v1/chat/completions", helloChat+`}`)
	f.Add("/v1/chat/completions", helloChat+`,"stream":true,"n":2,"max_tokens":3}`)
	f.Add("/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"x"}]}]}`)
	f.Add("/v1/completions", `{"model":"m","prompt":[[1,2],[3]]}`)
	f.Add("/v1/embeddings", `{"model":"m","input":["a"],"encoding_format":"base64","dimensions":3}`)
	f.Add("/v1/messages", `{"model":"m","max_tokens":2,"system":[{"type":"text","text":"s"}],"messages":[{"role":"user","content":"x"}]}`)
	f.Add("/tokenize", `{"messages":[{"role":"user","content":"x","name":"n"}]}`)
	f.Add("/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":null}],"n":129}`)
	f.Add("/tokenize", `{"inputs":"héllo wörld"}`)
	f.Add("/tokenize", `{"content":"x y","add_special":false}`)
	f.Add("/v1/images/generations", `{"model":"m","prompt":"p","n":2,"size":"16x8","response_format":"b64_json"}`)
	paths := []string{"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/messages", "/tokenize", "/v1/images/generations"}
	f.Fuzz(func(t *testing.T, path, body string) {
		if !oneOf(path, paths) {
			path = paths[len(path)%len(paths)]
		}
		if len(body) > 4096 {
			return
		}
		s := newServer(t, Config{ResponseTokens: 4, ContextWindow: 64})
		rec := do(t, s, "POST", path, body)
		out := rec.Body.String()
		if strings.HasPrefix(rec.Header().Get("Content-Type"), "text/event-stream") {
			for _, d := range sseData(t, out) {
				if d != "[DONE]" && !json.Valid([]byte(d)) {
					t.Fatalf("invalid frame %q", d)
				}
			}
			return
		}
		if !json.Valid([]byte(out)) {
			t.Fatalf("invalid JSON body %q for %q", out, body)
		}
		if rec.Code != 200 {
			key := `{"error":`
			if path == "/v1/messages" {
				key = `{"type":"error"`
			}
			if !strings.HasPrefix(out, key) {
				t.Fatalf("status %d with body %q", rec.Code, out)
			}
		}
	})
}
