package caddymodule_test

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/simulator"
)

// otlpReceiver is an OTLP/HTTP trace receiver on a real socket: it decodes the protobuf export
// requests the OpenTelemetry SDK sends and keeps every span and every raw body.
type otlpReceiver struct {
	*httptest.Server
	mu    sync.Mutex
	spans []*tracepb.Span
	raw   [][]byte
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	rc := new(otlpReceiver)
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/traces" || r.Method != http.MethodPost {
			http.NotFound(w, r)
			return
		}
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = zr
		}
		raw, err := io.ReadAll(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var req coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(raw, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rc.mu.Lock()
		rc.raw = append(rc.raw, raw)
		for _, rs := range req.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				rc.spans = append(rc.spans, ss.GetSpans()...)
			}
		}
		rc.mu.Unlock()
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *otlpReceiver) all() ([]*tracepb.Span, [][]byte) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]*tracepb.Span(nil), rc.spans...), append([][]byte(nil), rc.raw...)
}

// spanAttr returns a span attribute as a string (ints and floats formatted), "" when absent.
func spanAttr(s *tracepb.Span, key string) string {
	for _, kv := range s.GetAttributes() {
		if kv.GetKey() != key {
			continue
		}
		switch v := kv.GetValue().GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			return v.StringValue
		case *commonpb.AnyValue_IntValue:
			return fmt.Sprint(v.IntValue)
		case *commonpb.AnyValue_DoubleValue:
			return fmt.Sprint(v.DoubleValue)
		case *commonpb.AnyValue_BoolValue:
			return fmt.Sprint(v.BoolValue)
		}
	}
	return ""
}

// TestBinaryTracing runs the built binary with Caddy's tracing directive and an OTLP/HTTP
// exporter pointed at a receiver in the test: the request spans carry the GenAI attributes, the
// gateway's stages are child spans of them, and no prompt text or key is in any span.
func TestBinaryTracing(t *testing.T) {
	bin := binaryOrSkip(t)
	rc := newOTLPReceiver(t)
	up := newUpstream(t, simulator.Config{})
	port := freePort(t)
	const wrongKey = "sk-wrong-key-never-in-a-span"
	const promptText = "PROMPT-TEXT-never-in-a-span"
	cf := fmt.Sprintf(`{
	admin off
	auto_https off
}
:%d {
	tracing {
		span ai
	}
	ai_gateway {
		key %s {
			id tracing-team
		}
		model demo-llama {
			alias llama
			upstream %s
		}
		cache
	}
	reverse_proxy {
		dynamic ai_gateway
	}
}
`, port, policy.FormatHash(policy.HashSecret(secretAll)), up.addr())
	path := writeCaddyfile(t, t.TempDir(), "Caddyfile", cf)
	startBinaryEnv(t, bin, path, "OTEL_TRACES_EXPORTER=otlp", "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="+rc.URL+"/v1/traces", "OTEL_BSP_SCHEDULE_DELAY=50", "OTEL_SERVICE_NAME=ai-gateway-test")
	send := func(path, key, body string) int {
		req, _ := http.NewRequest(http.MethodPost, url(port, path), strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if strings.HasPrefix(path, "/v1/messages") {
			req.Header.Set("X-Api-Key", key)
			req.Header.Set("Anthropic-Version", "2023-06-01")
		} else {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	chat := `{"model":"llama","temperature":0,"max_tokens":7,"messages":[{"role":"user","content":"` + promptText + `"}]}`
	waitFor(t, "the gateway to answer", 30*time.Second, func() bool { return send("/v1/chat/completions", secretAll, chat) == 200 })
	if code := send("/v1/chat/completions", secretAll, chat); code != 200 { // a cache hit
		t.Fatalf("second chat: %d", code)
	}
	stream := `{"model":"llama","stream":true,"max_tokens":5,"messages":[{"role":"user","content":"` + promptText + ` stream"}]}`
	if code := send("/v1/chat/completions", secretAll, stream); code != 200 {
		t.Fatalf("stream: %d", code)
	}
	msg := `{"model":"llama","max_tokens":6,"temperature":0.5,"messages":[{"role":"user","content":"` + promptText + ` message"}]}`
	if code := send("/v1/messages", secretAll, msg); code != 200 {
		t.Fatalf("messages: %d", code)
	}
	if code := send("/v1/chat/completions", wrongKey, chat); code != 401 {
		t.Fatalf("wrong key: %d", code)
	}

	byName := func(spans []*tracepb.Span, name string) []*tracepb.Span {
		var out []*tracepb.Span
		for _, s := range spans {
			if s.GetName() == name {
				out = append(out, s)
			}
		}
		return out
	}
	var spans []*tracepb.Span
	var raw [][]byte
	waitFor(t, "the spans of 5 requests at the receiver", 20*time.Second, func() bool {
		spans, raw = rc.all()
		return len(byName(spans, "ai")) >= 5 && len(byName(spans, "ai_gateway.upstream_first_token")) >= 3
	})

	requests := byName(spans, "ai")
	find := func(what string, match func(*tracepb.Span) bool) *tracepb.Span {
		t.Helper()
		for _, s := range requests {
			if match(s) {
				return s
			}
		}
		t.Fatalf("no request span for %s", what)
		return nil
	}
	children := func(parent *tracepb.Span) map[string]*tracepb.Span {
		out := map[string]*tracepb.Span{}
		for _, s := range spans {
			if bytes.Equal(s.GetParentSpanId(), parent.GetSpanId()) && bytes.Equal(s.GetTraceId(), parent.GetTraceId()) {
				out[s.GetName()] = s
			}
		}
		return out
	}
	want := func(s *tracepb.Span, attrs map[string]string) {
		t.Helper()
		for k, v := range attrs {
			if got := spanAttr(s, k); got != v {
				t.Errorf("span %s: %s = %q, want %q", spanAttr(s, "ai_gateway.request_id"), k, got, v)
			}
		}
	}

	miss := find("the chat miss", func(s *tracepb.Span) bool {
		return spanAttr(s, "ai_gateway.cache") == "MISS" && spanAttr(s, "ai_gateway.endpoint") == "chat_completions" && spanAttr(s, "gen_ai.request.max_tokens") == "7"
	})
	want(miss, map[string]string{"gen_ai.operation.name": "chat", "gen_ai.request.model": "llama", "gen_ai.response.model": "demo-llama",
		"gen_ai.request.max_tokens": "7", "gen_ai.request.temperature": "0", "ai_gateway.key_id": "tracing-team", "ai_gateway.stream": "false"})
	if spanAttr(miss, "gen_ai.usage.input_tokens") == "" || spanAttr(miss, "gen_ai.usage.output_tokens") != "7" {
		t.Errorf("usage attributes: input %q output %q", spanAttr(miss, "gen_ai.usage.input_tokens"), spanAttr(miss, "gen_ai.usage.output_tokens"))
	}
	kids := children(miss)
	for _, name := range []string{"ai_gateway.count_tokens", "ai_gateway.cache_lookup", "ai_gateway.admission", "ai_gateway.upstream_first_token"} {
		if kids[name] == nil {
			t.Errorf("the chat's span has no child %s (children: %v)", name, kids)
		}
	}
	if up := kids["ai_gateway.upstream_first_token"]; up != nil && up.GetEndTimeUnixNano() < up.GetStartTimeUnixNano() {
		t.Error("the upstream span ends before it starts")
	}

	hit := find("the cache hit", func(s *tracepb.Span) bool { return spanAttr(s, "ai_gateway.cache") == "HIT" })
	want(hit, map[string]string{"gen_ai.response.model": "demo-llama", "ai_gateway.usage.cached_tokens": spanAttr(hit, "gen_ai.usage.input_tokens")})
	if children(hit)["ai_gateway.upstream_first_token"] != nil {
		t.Error("a cache hit has an upstream span")
	}

	streamed := find("the stream", func(s *tracepb.Span) bool { return spanAttr(s, "ai_gateway.stream") == "true" })
	want(streamed, map[string]string{"gen_ai.operation.name": "chat", "gen_ai.usage.output_tokens": "5"})
	if children(streamed)["ai_gateway.upstream_first_token"] == nil {
		t.Error("the stream has no upstream span")
	}

	message := find("the Anthropic message", func(s *tracepb.Span) bool { return spanAttr(s, "ai_gateway.endpoint") == "messages" })
	want(message, map[string]string{"gen_ai.operation.name": "chat", "gen_ai.request.temperature": "0.5", "gen_ai.usage.output_tokens": "6",
		"ai_gateway.key_id": "tracing-team"})

	refused := find("the refusal", func(s *tracepb.Span) bool { return spanAttr(s, "ai_gateway.reject_reason") != "" })
	if r := spanAttr(refused, "ai_gateway.reject_reason"); r != "invalid_api_key" || spanAttr(refused, "error.type") != r ||
		spanAttr(refused, "ai_gateway.key_id") != "" || spanAttr(refused, "gen_ai.usage.input_tokens") != "" {
		t.Errorf("refusal span: reason %q error.type %q key %q", r, spanAttr(refused, "error.type"), spanAttr(refused, "ai_gateway.key_id"))
	}

	// nothing secret in any byte the receiver got
	for _, b := range raw {
		for _, secret := range []string{promptText, secretAll, wrongKey, "Bearer "} {
			if bytes.Contains(b, []byte(secret)) {
				t.Errorf("an exported span batch contains %q", secret)
			}
		}
	}
	t.Logf("%d spans received in %d batches", len(spans), len(raw))
}

// startBinaryEnv is startBinary with extra environment variables.
func startBinaryEnv(t *testing.T, bin, caddyfile string, env ...string) {
	t.Helper()
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	startBinary(t, bin, caddyfile)
}
