package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddyai/gateway/policy"
)

// newBenchGateway provisions a gateway with every hot-path feature on: a key with rpm and tpm
// limits, a model with a context window and exact (cl100k) counting, validation and usage
// extraction.
func newBenchGateway(b testing.TB) *Gateway {
	return newBenchGatewayWindow(b, 8192)
}

// newBenchGatewayWindow is newBenchGateway with the model's context window set to window.
func newBenchGatewayWindow(b testing.TB, window int) *Gateway {
	b.Helper()
	raw := fmt.Sprintf(`{
		"keys": [{"secret": %q, "id": "bench", "rpm": 1000000000, "tpm": 10000000000}],
		"models": [{"name": "demo-llama", "aliases": ["llama"], "context_window": %d, "tokenizer": "cl100k_base"}]
	}`, policy.FormatHash(policy.HashSecret("sk-bench")), window)
	g := new(Gateway)
	if err := json.Unmarshal([]byte(raw), g); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	b.Cleanup(cancel)
	if err := g.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	if err := g.Validate(); err != nil {
		b.Fatal(err)
	}
	g.logger = zap.NewNop() // measure the pipeline, not the default logger's debug output
	b.Cleanup(func() { _ = g.Cleanup() })
	return g
}

// benchChatBody is a ~1 KB chat request.
var benchChatBody = `{"model":"llama","max_tokens":64,"temperature":0.7,"messages":[` +
	`{"role":"system","content":"You are a helpful assistant that answers questions about the company's internal developer platform. Be concise."},` +
	`{"role":"user","content":"` + strings.Repeat("How do I deploy a service to the staging cluster with the new pipeline? ", 10) + `"}]}`

const benchCompletion = `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"demo-llama","choices":[{"index":0,"message":{"role":"assistant","content":"Use the deploy command with the staging flag."},"finish_reason":"stop"}],"usage":{"prompt_tokens":180,"completion_tokens":10,"total_tokens":190}}`

func benchRequest(body string) *http.Request {
	req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer sk-bench")
	req.Header.Set("Content-Type", "application/json")
	repl := caddy.NewReplacer()
	ctx := context.WithValue(req.Context(), caddy.ReplacerCtxKey, repl)
	ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, map[string]any{})
	return req.WithContext(ctx)
}

// BenchmarkGatewayJSON: the whole handler for a 1 KB chat request with a no-op upstream that
// answers a JSON completion.
func BenchmarkGatewayJSON(b *testing.B) {
	benchJSON(b, newBenchGateway(b))
}

// benchJSON runs the gateway g on the 1 KB chat request, in front of a no-op upstream that
// answers a JSON completion, once per benchmark iteration.
func benchJSON(b *testing.B, g *Gateway) {
	benchJSONBody(b, g, benchChatBody)
}

// benchJSONBody is benchJSON with the request body body.
func benchJSONBody(b *testing.B, g *Gateway, body string) {
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, err := w.Write([]byte(benchCompletion))
		return err
	})
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		rec := httptest.NewRecorder()
		if err := g.ServeHTTP(rec, benchRequest(body), next); err != nil || rec.Code != 200 {
			b.Fatalf("%v %d %s", err, rec.Code, rec.Body)
		}
	}
}

// BenchmarkGatewayStream: the whole handler for a streamed request; the no-op upstream sends a
// 20-chunk SSE stream with a usage chunk.
func BenchmarkGatewayStream(b *testing.B) {
	g := newBenchGateway(b)
	var stream strings.Builder
	for i := 0; i < 20; i++ {
		fmt.Fprintf(&stream, `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"demo-llama","choices":[{"index":0,"delta":{"content":" tok"},"finish_reason":null}],"usage":null}`+"\n\n")
	}
	stream.WriteString(`data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"demo-llama","choices":[],"usage":{"prompt_tokens":180,"completion_tokens":20,"total_tokens":200}}` + "\n\ndata: [DONE]\n\n")
	chunks := strings.SplitAfter(stream.String(), "\n\n")
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		for _, c := range chunks {
			if _, err := w.Write([]byte(c)); err != nil {
				return err
			}
		}
		return nil
	})
	body := strings.Replace(benchChatBody, `"max_tokens":64`, `"max_tokens":64,"stream":true`, 1)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		if err := g.ServeHTTP(rec, benchRequest(body), next); err != nil || rec.Code != 200 {
			b.Fatalf("%v %d", err, rec.Code)
		}
	}
}

// BenchmarkGatewayRefusal: an unknown key is refused (the cheapest path, and a flood's cost).
func BenchmarkGatewayRefusal(b *testing.B) {
	g := newBenchGateway(b)
	g.guard = nil // measure the key check, not the per-IP guard refusing after 30 failures
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		req := benchRequest(benchChatBody)
		req.Header.Set("Authorization", "Bearer sk-wrong")
		_ = g.ServeHTTP(rec, req, next)
		if rec.Code != 401 {
			b.Fatal(rec.Code)
		}
	}
}

// BenchmarkGatewayMultiTurn: the whole handler for the 20th turn of a conversation (a 1.5 KB
// system prompt and 19 earlier turns resent, about 9 KB), as scenario d of `make bench` sends,
// to a model with a 128K window: the prompt is reserved at its byte bound, not counted.
func BenchmarkGatewayMultiTurn(b *testing.B) {
	var body strings.Builder
	body.WriteString(`{"model":"llama","max_tokens":20,"messages":[{"role":"system","content":"` + strings.Repeat("Answer in the house style. ", 58) + `"}`)
	for t := 1; t < 20; t++ {
		fmt.Fprintf(&body, `,{"role":"user","content":"Question %d: %s"},{"role":"assistant","content":"Answer %d: %s"}`,
			t, strings.Repeat("what about it? ", 10), t, strings.Repeat("it is fine. ", 20))
	}
	body.WriteString(`,{"role":"user","content":"New question 20: and then?"}]}`)
	benchJSONBody(b, newBenchGatewayWindow(b, 131072), body.String())
}
