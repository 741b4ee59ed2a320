package policy

import (
	"encoding/json"
	"net/http"
	"os"
	"slices"
	"testing"

	"github.com/caddyai/gateway/internal/jsonscan"

	"github.com/caddyai/gateway/internal/wire"
)

// fuzzSeeds are bodies for every endpoint, valid and not, shared by the fuzz targets.
func fuzzSeeds(f *testing.F) {
	f.Helper()
	sample, err := os.ReadFile("testdata/chat_1k.json")
	if err != nil {
		f.Fatal(err)
	}
	seeds := []struct {
		e    wire.Endpoint
		body string
	}{
		{chat, string(sample)},
		{chat, chatBody(`"temperature":1.9,"max_tokens":5000,"max_completion_tokens":3,"user":"u","logit_bias":null,"top_k":5`)},
		{chat, `{"model":"m","messages":[{"role":"system","content":"s"},{"role":"developer","content":"d"},{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]}]}`},
		{chat, `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"u"}}]}],"stream":true,"stream_options":{"include_usage":true}}`},
		{chat, `{"model":"m","model":"n"}`},
		{chat, `{"a":[[[[[[[[[[]]]]]]]]]]}`},
		{compl, `{"model":"m","prompt":[[1,2],[3]],"max_tokens":0,"echo":true}`},
		{embed, `{"model":"e","input":["a","b"],"dimensions":3}`},
		{images, `{"model":"i","prompt":"cat","n":2}`},
		{msgs, anthBody(`"system":[{"type":"text","text":"s"}],"temperature":0.5,"tools":[{"name":"f","input_schema":{}}]`)},
		{msgs, `{"model":"c","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"x"}]}]}]}`},
		{count, `{"model":"c","messages":[{"role":"user","content":"x"}],"system":"s"}`},
		{chat, `{"model":"m","messages":[{"role":"user","content":"\u00e9\ud83d\ude00"}],"stop":["\n"]}`},
		{chat, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\"}]}"},
	}
	for _, s := range seeds {
		f.Add(uint8(s.e), []byte(s.body))
	}
}

// fuzzEndpoint maps a fuzzed byte to a body endpoint: the endpoint with that value, or one
// picked by it.
func fuzzEndpoint(b uint8) wire.Endpoint {
	if e := wire.Endpoint(b); e.HasBody() {
		return e
	}
	return bodyEndpoints[int(b)%len(bodyEndpoints)]
}

func FuzzValidate(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, ep uint8, body []byte) {
		e := fuzzEndpoint(ep)
		info, err := Validate(e, body)
		if err != nil {
			if err.Status != http.StatusBadRequest || err.Type != wire.TypeInvalidRequest || err.Code == "" || err.Message == "" {
				t.Fatalf("malformed rejection %+v", err)
			}
			return
		}
		if !json.Valid(body) {
			t.Fatalf("accepted invalid JSON %q", body)
		}
		var top map[string]any
		if jerr := json.Unmarshal(body, &top); jerr != nil {
			t.Fatalf("accepted a body encoding/json cannot read as an object: %v", jerr)
		}
		// the model is the body's where the endpoint requires it there (a predict model's path
		// names it otherwise)
		if m, _ := top["model"].(string); slices.Contains(e.Spec().Required, "model") && (m != info.Model || m == "") {
			t.Fatalf("model %q, encoding/json reads %q", info.Model, m)
		}
		if info.N < 1 || info.MaxTokens < 0 || info.MaxTokens > 0 && info.MaxTokensField == "" {
			t.Fatalf("inconsistent info %+v", info)
		}
		if jsonscan.NestedTooDeep(body, MaxDepth) {
			t.Fatal("accepted a body nested too deep")
		}
	})
}
