package wire_test

import (
	"slices"
	"testing"

	"github.com/caddyai/gateway/internal/wire"
)

// TestEndpointTable checks that every row is complete and that Route finds every row by its path.
func TestEndpointTable(t *testing.T) {
	names := map[string]bool{}
	for _, s := range wire.Specs() {
		if s.Name == "" || names[s.Name] {
			t.Errorf("endpoint %d: name %q is empty or repeated", s.Endpoint, s.Name)
		}
		names[s.Name] = true
		if s.Endpoint.String() != s.Name || s.Endpoint.Spec().Endpoint != s.Endpoint {
			t.Errorf("%s: the row's index and name disagree", s.Name)
		}
		if s.Path == "" {
			continue
		}
		if len(s.Methods) == 0 || s.Answer == wire.AnswerNone {
			t.Errorf("%s: a served endpoint needs methods and an answer", s.Name)
		}
		if s.Dialect != wire.DialectNone && (s.ContextParam == "" || len(s.Required) == 0 || s.Required[0] != "model") {
			t.Errorf("%s: a body endpoint needs a context param and model among its required fields", s.Name)
		}
		for _, r := range s.Required {
			if !slices.Contains(s.Params, r) {
				t.Errorf("%s: required field %q is not among its params", s.Name, r)
			}
		}
		path := "/v1/" + s.Path
		want := ""
		if s.Path == "models/{model}" {
			path, want = "/v1/models/org/llama-3.1-8b", "org/llama-3.1-8b"
		}
		if e, param := wire.Route(path); e != s.Endpoint || param != want {
			t.Errorf("Route(%q) = %s, %q; want %s, %q", path, e, param, s.Name, want)
		}
		if e, _ := wire.Route(path + "/"); e != s.Endpoint {
			t.Errorf("Route(%q/) = %s; want %s", path, e, s.Name)
		}
		if s.Surface != wire.SurfaceOf(path) {
			t.Errorf("%s: the row's surface differs from the path's", s.Name)
		}
	}
	if !wire.EndpointChatCompletions.Spec().Allows("POST") || wire.EndpointChatCompletions.Spec().Allows("GET") {
		t.Error("chat completions: POST only")
	}
}
