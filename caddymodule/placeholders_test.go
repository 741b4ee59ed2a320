package caddymodule

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// The gateway's placeholders: the request's while the request is proxied (for header_up), the
// outcome's once the request is recorded (for log formats), each of its own type.
func TestPlaceholders(t *testing.T) {
	g := newBenchGateway(t)
	req := benchRequest(benchChatBody)
	repl := req.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	during := map[string]any{}
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		for _, k := range []string{phKeyID, phModel, phRequested, phRequestID, phPrompt, phSurface} {
			if v, ok := repl.Get(k); ok {
				during[k] = v
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_, err := w.Write([]byte(benchCompletion))
		return err
	})
	rec := httptest.NewRecorder()
	if err := g.ServeHTTP(rec, req, next); err != nil || rec.Code != 200 {
		t.Fatalf("%v %d %s", err, rec.Code, rec.Body)
	}
	if during[phKeyID] != "bench" || during[phModel] != "demo-llama" || during[phRequested] != "llama" || during[phRequestID] == "" {
		t.Errorf("while proxied: %v", during)
	}
	if _, ok := during[phPrompt]; ok {
		t.Errorf("the outcome's placeholders were answered before the outcome: %v", during)
	}
	for k, want := range map[string]any{phModel: "demo-llama", phStream: false, phPrompt: int64(180), phCompletion: int64(10),
		phTotal: int64(190), phSurface: "openai", phRejectReason: "", phEstimated: false} {
		if v, ok := repl.Get(k); !ok || v != want {
			t.Errorf("%s = %v (%T) %v, want %v (%T)", k, v, v, ok, want, want)
		}
	}
	if v := repl.ReplaceAll("{http.ai_gateway.key_id} {http.ai_gateway.total_tokens}", ""); v != "bench 190" {
		t.Errorf("replaced %q", v)
	}
	if _, ok := repl.Get("http.ai_gateway.nope"); ok {
		t.Error("an unknown placeholder was answered")
	}
}
