package wire_test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/caddyai/gateway/internal/wiretest"
)

// readFixture returns a file under testdata/fixtures.
func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "fixtures", name))
	if err != nil {
		t.Fatalf("reading fixture: %v", err)
	}
	return b
}

// errorFixture reads "<dir>/<name>.<status>.<ext>" and returns its status, content type and body.
func errorFixture(t testing.TB, name string) (int, string, []byte) {
	t.Helper()
	parts := strings.Split(filepath.Base(name), ".")
	if len(parts) < 3 {
		t.Fatalf("fixture %s is not <name>.<status>.<ext>", name)
	}
	status, err := strconv.Atoi(parts[len(parts)-2])
	if err != nil {
		t.Fatalf("fixture %s: %v", name, err)
	}
	ct := map[string]string{"json": "application/json", "txt": "text/plain; charset=utf-8", "html": "text/html", "bin": "application/octet-stream"}[parts[len(parts)-1]]
	return status, ct, readFixture(t, name)
}

// checkRendered asserts the OpenAI rendering of e is a spec-valid ErrorResponse with a string or
// null code.
func checkRendered(t *testing.T, e *wire.Error) {
	t.Helper()
	body := wire.AppendOpenAI(nil, e)
	wiretest.Validate(t, "ErrorResponse", body)
	var env struct {
		Error map[string]any `json:"error"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatal(err)
	}
	switch env.Error["code"].(type) {
	case nil, string:
	default:
		t.Errorf("code is %T in %s", env.Error["code"], body)
	}
}

func TestNormalizeUpstreamErrorFixtures(t *testing.T) {
	tests := []struct {
		fixture    string
		status     int
		typ        string
		code       string
		param      string
		retryAfter time.Duration
		msgHas     string // a substring the message must keep ("" = any)
	}{
		{"vllm/context_overflow.400.json", 400, "invalid_request_error", "context_length_exceeded", "messages", 0, "8192 tokens"},
		{"vllm/context_overflow_flat.400.json", 400, "invalid_request_error", "context_length_exceeded", "messages", 0, "5120 tokens"},
		{"vllm/bad_request.400.json", 400, "invalid_request_error", "", "temperature", 0, "non-negative"},
		{"vllm/not_found.404.json", 404, "invalid_request_error", "model_not_found", "model", 0, "llama-9"},
		{"vllm/overloaded.503.json", 503, "server_error", "model_overloaded", "", time.Second, ""},
		{"tgi/context_overflow.422.json", 400, "invalid_request_error", "context_length_exceeded", "messages", 0, "must be <= 4096"},
		{"tgi/validation.422.json", 400, "invalid_request_error", "", "", 0, "strictly positive"},
		{"tgi/overloaded.429.json", 503, "server_error", "model_overloaded", "", time.Second, ""},
		{"tgi/unhealthy.503.json", 503, "server_error", "model_overloaded", "", time.Second, ""},
		{"tgi/generation.424.json", 502, "server_error", "", "", 0, "CUDA out of memory"},
		{"llamacpp/context_overflow.400.json", 400, "invalid_request_error", "context_length_exceeded", "messages", 0, "maximum context length is 4096 tokens. However, your messages resulted in 5000 tokens"},
		{"llamacpp/loading.503.json", 503, "server_error", "model_loading", "", 5 * time.Second, ""},
		{"ollama/api_not_found.404.json", 404, "invalid_request_error", "model_not_found", "model", 0, `"llama9" not found`},
		{"ollama/api_busy.503.json", 503, "server_error", "model_overloaded", "", time.Second, ""},
		{"ollama/v1_busy.503.json", 503, "server_error", "model_overloaded", "", time.Second, ""},
		{"ollama/context_overflow.400.json", 400, "invalid_request_error", "context_length_exceeded", "messages", 0, "4170 tokens"},
		{"ollama/input_exceeds_context.400.json", 400, "invalid_request_error", "context_length_exceeded", "messages", 0, "exceeds the context length"},
		{"ollama/v1_input_exceeds_context.400.json", 400, "invalid_request_error", "context_length_exceeded", "messages", 0, "exceeds the context length"},
		{"generic/openai_rate_limit.429.json", 429, "tokens", "rate_limit_exceeded", "", time.Second, "Please try again in 2s"},
		{"generic/openai_invalid_key.401.json", 502, "server_error", "", "", 0, "upstream rejected the gateway's credential"},
		{"generic/openai_context.400.json", 400, "invalid_request_error", "context_length_exceeded", "messages", 0, "128000"},
		{"generic/anthropic_overloaded.529.json", 503, "server_error", "model_overloaded", "", time.Second, ""},
		{"generic/anthropic_invalid.400.json", 400, "invalid_request_error", "", "", 0, "max_tokens: Field required"},
		{"generic/forbidden.403.txt", 502, "server_error", "", "", 0, "credential"},
		{"generic/nginx.502.html", 502, "server_error", "", "", 0, "HTTP 502"},
		{"generic/proxy.503.txt", 503, "server_error", "model_overloaded", "", time.Second, ""},
		{"generic/starting.503.txt", 503, "server_error", "model_loading", "", 5 * time.Second, ""},
		{"generic/empty.500.empty", 502, "server_error", "", "", 0, "HTTP 500"},
		{"generic/garbage.500.bin", 502, "server_error", "", "", 0, "HTTP 500"},
		{"generic/fastapi.404.json", 404, "invalid_request_error", "", "", 0, "Not Found"},
		{"generic/long.500.txt", 502, "server_error", "", "", 0, "xxxx"},
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			status, ct, body := errorFixture(t, tt.fixture)
			e := wire.NormalizeUpstreamError(status, ct, body)
			if e.Status != tt.status || e.Type != tt.typ || e.Code != tt.code || e.Param != tt.param {
				t.Errorf("got status %d type %q code %q param %q; want %d %q %q %q (message %q)",
					e.Status, e.Type, e.Code, e.Param, tt.status, tt.typ, tt.code, tt.param, e.Message)
			}
			if e.RetryAfter != tt.retryAfter {
				t.Errorf("RetryAfter %v, want %v", e.RetryAfter, tt.retryAfter)
			}
			if !strings.Contains(e.Message, tt.msgHas) {
				t.Errorf("message %q lacks %q", e.Message, tt.msgHas)
			}
			if e.Message == "" || len(e.Message) > wire.MaxUpstreamMessage || !utf8.ValidString(e.Message) {
				t.Errorf("bad message %q (%d bytes)", e.Message, len(e.Message))
			}
			if strings.Contains(e.Message, "sk-proj") || strings.Contains(e.Message, "<html>") {
				t.Errorf("message leaks upstream detail: %q", e.Message)
			}
			checkRendered(t, e)
		})
	}
}

func TestNormalizeUpstreamErrorDoesNotAlias(t *testing.T) {
	body := []byte(`{"error":{"message":"bad things","type":"invalid_request_error","param":"p","code":"some_code"}}`)
	e := wire.NormalizeUpstreamError(400, "application/json", body)
	for i := range body {
		body[i] = 'x'
	}
	if e.Message != "bad things" || e.Param != "p" || e.Code != "some_code" {
		t.Errorf("error changed with the body: %+v", e)
	}
}

func TestNormalizeStreamError(t *testing.T) {
	tests := []struct {
		name, data string
		status     int
		typ, code  string
	}{
		{"vllm nested", `{"error": {"object": "error", "message": "boom", "type": "InternalServerError", "param": null, "code": 500}}`, 502, "server_error", ""},
		{"vllm context", `{"error":{"message":"This model's maximum context length is 10 tokens.","type":"BadRequestError","code":400}}`, 400, "invalid_request_error", "context_length_exceeded"},
		{"tgi generation", `{"error":"Request failed during generation: oom","error_type":"generation"}`, 502, "server_error", ""},
		{"tgi overloaded", `{"error":"Model is overloaded","error_type":"overloaded"}`, 503, "server_error", "model_overloaded"},
		{"llama.cpp", `{"error":{"code":500,"message":"KV cache is full","type":"server_error"}}`, 502, "server_error", ""},
		{"llama.cpp legacy bare", `{"code":503,"message":"Loading model","type":"unavailable_error"}`, 503, "server_error", "model_loading"},
		{"anthropic input and max_tokens", `{"type":"error","error":{"type":"invalid_request_error","message":"input length and ` + "`max_tokens`" + ` exceed context limit: 8 + 5 > 12, decrease input length or ` + "`max_tokens`" + ` and try again"}}`, 400, "invalid_request_error", "context_length_exceeded"},
		{"anthropic prompt too long", `{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}`, 400, "invalid_request_error", "context_length_exceeded"},
		{"ollama", `{"error":{"message":"unexpected EOF","type":"api_error","param":null,"code":null}}`, 502, "server_error", ""},
		{"anthropic overloaded", `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`, 503, "server_error", "model_overloaded"},
		{"anthropic invalid", `{"type":"error","error":{"type":"invalid_request_error","message":"bad"}}`, 400, "invalid_request_error", ""},
		{"not json", `oops`, 502, "server_error", ""},
		{"empty", ``, 502, "server_error", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := wire.NormalizeStreamError([]byte(tt.data))
			if e.Status != tt.status || e.Type != tt.typ || e.Code != tt.code {
				t.Errorf("got %d %q %q (%q); want %d %q %q", e.Status, e.Type, e.Code, e.Message, tt.status, tt.typ, tt.code)
			}
			checkRendered(t, e)
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"3", 3 * time.Second, true},
		{" 20 ", 20 * time.Second, true},
		{"0", 0, false},
		{"-1", 0, false},
		{"", 0, false},
		{"soon", 0, false},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, ok := wire.ParseRetryAfter(tt.in, now)
			if got != tt.want || ok != tt.ok {
				t.Errorf("ParseRetryAfter(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestUpstreamMessageTruncation(t *testing.T) {
	long := strings.Repeat("é", 400) // 800 bytes
	e := wire.NormalizeUpstreamError(500, "text/plain", []byte(long))
	if len(e.Message) > wire.MaxUpstreamMessage || !utf8.ValidString(e.Message) || !strings.HasPrefix(e.Message, "éé") {
		t.Errorf("message %q (%d bytes)", e.Message, len(e.Message))
	}
	e = wire.NormalizeUpstreamError(400, "application/json", []byte(`{"error":{"message":"bad \xff byte","code":"x y"}}`))
	if !utf8.ValidString(e.Message) || e.Code != "" {
		t.Errorf("got %+v", e)
	}
}

func FuzzNormalizeUpstreamError(f *testing.F) {
	for _, name := range []string{
		"vllm/context_overflow.400.json", "vllm/context_overflow_flat.400.json", "tgi/context_overflow.422.json",
		"tgi/overloaded.429.json", "llamacpp/context_overflow.400.json", "llamacpp/loading.503.json",
		"ollama/api_busy.503.json", "generic/anthropic_overloaded.529.json", "generic/nginx.502.html",
		"generic/garbage.500.bin",
	} {
		status, ct, body := errorFixture(f, name)
		f.Add(status, ct, body)
	}
	f.Add(200, "", []byte(`data: {"error":{"code":7}}`))
	f.Add(0, "text/html", []byte(`{"error":{"code":"4\u0030\u0030","message":null}}`))
	f.Fuzz(func(t *testing.T, status int, contentType string, body []byte) {
		for _, e := range []*wire.Error{wire.NormalizeUpstreamError(status, contentType, body), wire.NormalizeStreamError(body)} {
			if e.Status < 400 || e.Status > 599 || e.Type == "" || e.Message == "" {
				t.Fatalf("bad error %+v", e)
			}
			if len(e.Message) > wire.MaxUpstreamMessage || !utf8.ValidString(e.Message) {
				t.Fatalf("bad message %q", e.Message)
			}
			body := wire.AppendOpenAI(nil, e)
			var env struct {
				Error struct {
					Message *string `json:"message"`
					Type    *string `json:"type"`
					Code    any     `json:"code"`
					Param   any     `json:"param"`
				} `json:"error"`
			}
			if err := json.Unmarshal(body, &env); err != nil {
				t.Fatalf("%v: %s", err, body)
			}
			if env.Error.Message == nil || env.Error.Type == nil {
				t.Fatalf("missing keys: %s", body)
			}
			for _, v := range []any{env.Error.Code, env.Error.Param} {
				if _, isString := v.(string); v != nil && !isString {
					t.Fatalf("code/param not string or null: %s", body)
				}
			}
			var anth map[string]any
			if err := json.Unmarshal(wire.AppendAnthropic(nil, e, "req_1"), &anth); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func BenchmarkNormalizeUpstreamError(b *testing.B) {
	body := []byte(`{"error":{"message":"This model's maximum context length is 8192 tokens. However, your request has 9000 input tokens. Please reduce the length of the input messages.","type":"BadRequestError","param":null,"code":400}}`)
	b.ReportAllocs()
	for b.Loop() {
		if e := wire.NormalizeUpstreamError(400, "application/json", body); e.Code != "context_length_exceeded" {
			b.Fatal(e)
		}
	}
}
