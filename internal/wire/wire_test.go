package wire_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/caddyai/gateway/internal/wiretest"
)

func TestRoute(t *testing.T) {
	tests := []struct {
		path  string
		want  wire.Endpoint
		model string
	}{
		{"/v1/chat/completions", wire.EndpointChatCompletions, ""},
		{"/v1/chat/completions/", wire.EndpointChatCompletions, ""},
		{"/v1/completions", wire.EndpointCompletions, ""},
		{"/v1/embeddings", wire.EndpointEmbeddings, ""},
		{"/v1/images/generations", wire.EndpointImagesGenerations, ""},
		{"/v1/messages", wire.EndpointMessages, ""},
		{"/v1/messages/count_tokens", wire.EndpointMessagesCountTokens, ""},
		{"/v1/models", wire.EndpointModels, ""},
		{"/v1/models/demo-llama", wire.EndpointModel, "demo-llama"},
		{"/v1/models/org/model", wire.EndpointModel, "org/model"},
		{"/v2/chat/completions", wire.EndpointBadVersion, ""},
		{"/v0", wire.EndpointBadVersion, ""},
		{"/v1/nope", wire.EndpointUnknown, ""},
		{"/video", wire.EndpointUnknown, ""},
		{"/", wire.EndpointUnknown, ""},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			got, model := wire.Route(tt.path)
			if got != tt.want || model != tt.model {
				t.Errorf("Route(%q) = %v, %q; want %v, %q", tt.path, got, model, tt.want, tt.model)
			}
		})
	}
	if wire.SurfaceOf("/v1/messages/count_tokens") != wire.Anthropic || wire.SurfaceOf("/v1/messagesx") != wire.OpenAI {
		t.Error("SurfaceOf misclassifies")
	}
}

func sampleErrors() []*wire.Error {
	return []*wire.Error{
		wire.InvalidAPIKey("Incorrect API key provided."),
		wire.ModelNotFound("gpt-\"x\"\n"),
		wire.ModelNotAllowed("llama"),
		wire.RequestTooLarge(4 << 20),
		wire.InvalidRequest("messages[2].role", "Invalid value: 'robot'. Supported values are: 'system', 'user', 'assistant', 'tool'."),
		wire.InvalidURL("POST", "/v1/nope"),
		wire.Internal(),
		{Status: 429, Type: wire.TypeTokens, Code: "rate_limit_exceeded", Message: "Please try again in 1.5s.", RetryAfter: 1500 * time.Millisecond},
		{Status: 503, Type: wire.TypeServer, Code: "model_overloaded", Message: "busy", RetryAfter: 2 * time.Second},
	}
}

func TestOpenAIEnvelopeMatchesSpec(t *testing.T) {
	for _, e := range sampleErrors() {
		body := wire.AppendOpenAI(nil, e)
		wiretest.Validate(t, "ErrorResponse", body)
		var env struct {
			Error map[string]any `json:"error"`
		}
		if err := json.Unmarshal(body, &env); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"message", "type", "param", "code"} {
			if _, ok := env.Error[k]; !ok {
				t.Errorf("%s: key %q missing in %s", e.ReasonOrCode(), k, body)
			}
		}
		if e.Code == "" && env.Error["code"] != nil {
			t.Errorf("code should be null: %s", body)
		}
		if env.Error["message"] != e.Message {
			t.Errorf("message round trip: got %q want %q", env.Error["message"], e.Message)
		}
	}
}

func TestAnthropicEnvelope(t *testing.T) {
	tests := []struct {
		err        *wire.Error
		wantType   string
		wantStatus int
	}{
		{wire.InvalidAPIKey("x"), "authentication_error", 401},
		{wire.ModelNotAllowed("m"), "permission_error", 403},
		{wire.ModelNotFound("m"), "not_found_error", 404},
		{wire.RequestTooLarge(1), "request_too_large", 413},
		{&wire.Error{Status: 429, Message: "slow down"}, "rate_limit_error", 429},
		{&wire.Error{Status: 503, Message: "busy"}, "overloaded_error", 529},
		{wire.Internal(), "api_error", 500},
		{wire.InvalidRequest("max_tokens", "bad"), "invalid_request_error", 400},
	}
	for _, tt := range tests {
		t.Run(tt.wantType, func(t *testing.T) {
			body := wire.AppendAnthropic(nil, tt.err, "req_1")
			var env struct {
				Type  string `json:"type"`
				Error struct {
					Type    string `json:"type"`
					Message string `json:"message"`
				} `json:"error"`
				RequestID string `json:"request_id"`
			}
			if err := json.Unmarshal(body, &env); err != nil {
				t.Fatalf("%v: %s", err, body)
			}
			if env.Type != "error" || env.Error.Type != tt.wantType || env.RequestID != "req_1" || env.Error.Message != tt.err.Message {
				t.Errorf("envelope %s", body)
			}
			if got := tt.err.StatusFor(wire.Anthropic); got != tt.wantStatus {
				t.Errorf("status %d, want %d", got, tt.wantStatus)
			}
		})
	}
}

func TestWriteSetsRetryHeaders(t *testing.T) {
	rec := httptest.NewRecorder()
	e := &wire.Error{Status: 429, Type: wire.TypeRequests, Code: "rate_limit_exceeded", Message: "wait", RetryAfter: 1200 * time.Millisecond, NoRetry: true}
	if err := wire.Write(rec, wire.OpenAI, e, "req_x"); err != nil {
		t.Fatal(err)
	}
	if rec.Code != 429 {
		t.Errorf("status %d", rec.Code)
	}
	for k, want := range map[string]string{"Retry-After": "2", "Retry-After-Ms": "1200", "X-Should-Retry": "false", "Content-Type": "application/json"} {
		if got := rec.Header().Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	rec = httptest.NewRecorder()
	e = &wire.Error{Status: 429, Message: "wait", RetryAfter: time.Millisecond}
	_ = wire.Write(rec, wire.Anthropic, e, "")
	if rec.Header().Get("Retry-After") != "1" || rec.Header().Get("X-Should-Retry") != "" {
		t.Errorf("headers %v", rec.Header())
	}
}

func TestAppendStringIsValidJSON(t *testing.T) {
	for _, s := range []string{"", "plain", "quote\" back\\ nl\n tab\t cr\r", "\x00\x1f", "bad \xff utf8", "emoji 😀", "sep \u2028\u2029", "<html>&"} {
		b := wire.AppendString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%q -> %s: %v", s, b, err)
		}
		want := strings.ToValidUTF8(s, "\ufffd")
		if got != want {
			t.Errorf("%q round-tripped to %q", s, got)
		}
	}
}

func FuzzAppendString(f *testing.F) {
	f.Add("hello")
	f.Add("\xff\xfe\"\\\n")
	f.Fuzz(func(t *testing.T, s string) {
		b := wire.AppendString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%q -> %s: %v", s, b, err)
		}
		if got != strings.ToValidUTF8(s, "\ufffd") {
			// ToValidUTF8 folds runs of invalid bytes into one replacement; compare rune-wise instead.
			if strings.ReplaceAll(got, "\ufffd", "") != strings.ReplaceAll(strings.ToValidUTF8(s, ""), "\ufffd", "") {
				t.Errorf("%q round-tripped to %q", s, got)
			}
		}
	})
}

func TestRequestID(t *testing.T) {
	id := wire.NewRequestID()
	if !wire.ValidRequestID(id) || len(id) != 28 || !strings.HasPrefix(id, "req_") {
		t.Errorf("NewRequestID() = %q", id)
	}
	if id == wire.NewRequestID() {
		t.Error("two request ids are equal")
	}
	for _, bad := range []string{"", "a b", "x\r\nSet-Cookie: y", strings.Repeat("a", 129), "ü"} {
		if wire.ValidRequestID(bad) {
			t.Errorf("ValidRequestID(%q) = true", bad)
		}
	}
}

func TestModelNamesEchoedBounded(t *testing.T) {
	long := strings.Repeat("é", 40000)
	for _, e := range []*wire.Error{wire.ModelNotFound(long), wire.ModelNotAllowed(long)} {
		if len(e.Message) > 600 || !utf8.ValidString(e.Message) {
			t.Errorf("message of %d bytes", len(e.Message))
		}
	}
}

// TestRetryAfterInBody: an OpenAI error with a retry hint carries retry_after, the Retry-After
// header's whole seconds; one without carries none.
func TestRetryAfterInBody(t *testing.T) {
	for _, tt := range []struct {
		wait time.Duration
		want string
	}{{1200 * time.Millisecond, `"retry_after":2}`}, {20 * time.Millisecond, `"retry_after":1}`}, {0, `"code":"c"}`}} {
		e := &wire.Error{Status: 429, Type: "requests", Code: "c", Message: "m", RetryAfter: tt.wait}
		body := string(wire.AppendOpenAI(nil, e))
		h := http.Header{}
		wire.SetRetryHeaders(h, e)
		if !strings.HasSuffix(body, tt.want+"}") || tt.wait > 0 && !strings.Contains(body, `"retry_after":`+h.Get("Retry-After")+"}") {
			t.Errorf("wait %s: %s (Retry-After %q)", tt.wait, body, h.Get("Retry-After"))
		}
	}
}
