package simulator

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

const specPath = "../testdata/spec/openai-openapi.json"

// nullableToAnyOf rewrites the OpenAPI 3.0 keyword `nullable: true`, which
// Draft 2020 ignores, into anyOf [schema, null] so that the spec means what
// its authors intended.
func nullableToAnyOf(v any) any {
	switch n := v.(type) {
	case map[string]any:
		for k, c := range n {
			n[k] = nullableToAnyOf(c)
		}
		if nb, ok := n["nullable"].(bool); ok {
			delete(n, "nullable")
			if nb {
				return map[string]any{"anyOf": []any{n, map[string]any{"type": "null"}}}
			}
		}
		return n
	case []any:
		for i, c := range n {
			n[i] = nullableToAnyOf(c)
		}
	}
	return v
}

func compileSchemas(t *testing.T, names ...string) map[string]*jsonschema.Schema {
	t.Helper()
	raw, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatalf("reading spec: %v", err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("parsing spec: %v", err)
	}
	const url = "https://example.com/openai-openapi.json"
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	if err := c.AddResource(url, nullableToAnyOf(doc)); err != nil {
		t.Fatal(err)
	}
	out := map[string]*jsonschema.Schema{}
	for _, n := range names {
		sch, err := c.Compile(url + "#/components/schemas/" + n)
		if err != nil {
			t.Fatalf("compiling %s: %v", n, err)
		}
		out[n] = sch
	}
	return out
}

func validate(t *testing.T, sch *jsonschema.Schema, doc string) {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(strings.NewReader(doc))
	if err != nil {
		t.Fatalf("parsing %s: %v", doc, err)
	}
	if err := sch.Validate(v); err != nil {
		t.Errorf("%s\ndoes not validate: %v", doc, err)
	}
}

func TestChatAgainstOpenAISpec(t *testing.T) {
	schemas := compileSchemas(t, "CreateChatCompletionResponse", "CreateChatCompletionStreamResponse",
		"ErrorResponse", "CreateCompletionResponse", "CreateEmbeddingResponse", "ListModelsResponse")
	// The schemas must reject what is wrong, or the checks below prove nothing.
	for name, bad := range map[string]string{
		"CreateChatCompletionResponse":       `{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"logprobs":null,"finish_reason":"stop"}]}`,
		"CreateChatCompletionStreamResponse": `{"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"done"}]}`,
	} {
		v, _ := jsonschema.UnmarshalJSON(strings.NewReader(bad))
		if schemas[name].Validate(v) == nil {
			t.Errorf("%s accepted %s", name, bad)
		}
	}
	s := newServer(t, Config{})
	for _, body := range []string{
		helloChat + `}`,
		helloChat + `,"max_tokens":3,"n":2}`,
		helloChat + `,"max_tokens":3}`,
	} {
		validate(t, schemas["CreateChatCompletionResponse"], do(t, s, "POST", "/v1/chat/completions", body).Body.String())
	}
	// The no_usage fault is still a valid response (usage is optional).
	validate(t, schemas["CreateChatCompletionResponse"],
		do(t, s, "POST", "/v1/chat/completions", helloChat+`}`, FaultHeader, "kind=no_usage").Body.String())

	for _, body := range []string{
		helloChat + `,"stream":true,"max_tokens":3}`,
		helloChat + `,"stream":true,"max_tokens":3,"n":2,"stream_options":{"include_usage":true}}`,
	} {
		data := sseData(t, do(t, s, "POST", "/v1/chat/completions", body).Body.String())
		for _, d := range data[:len(data)-1] {
			validate(t, schemas["CreateChatCompletionStreamResponse"], d)
		}
	}
	validate(t, schemas["CreateCompletionResponse"],
		do(t, s, "POST", "/v1/completions", `{"model":"m","prompt":"hi","max_tokens":2}`).Body.String())
	validate(t, schemas["CreateEmbeddingResponse"],
		do(t, s, "POST", "/v1/embeddings", `{"model":"m","input":["a","b"]}`).Body.String())
	validate(t, schemas["ListModelsResponse"], do(t, s, "GET", "/v1/models", "").Body.String())
	for _, rec := range []string{
		do(t, s, "POST", "/v1/chat/completions", `{"model":`).Body.String(),
		do(t, s, "POST", "/v1/chat/completions", helloChat+`}`, FaultHeader, "kind=overloaded").Body.String(),
		do(t, newServer(t, Config{ContextWindow: 5}), "POST", "/v1/chat/completions", helloChat+`}`).Body.String(),
		do(t, s, "GET", "/v1/models/none", "").Body.String(),
	} {
		validate(t, schemas["ErrorResponse"], rec)
	}
}
