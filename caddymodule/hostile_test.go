package caddymodule_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/simulator"
)

const hostileUpstreamKey = "sk-upstream-secret-4242"

// hostileUpstream answers as the request's X-Hostile header says, each answer something a model
// server must not get past the gateway.
func hostileUpstream(t *testing.T) *httptest.Server {
	t.Helper()
	chunk := `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"demo-llama","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}` + "\n\n"
	last := `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"demo-llama","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}` + "\n\n"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		sse := func(body string) {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, body)
		}
		switch r.Header.Get("X-Hostile") {
		case "redirect":
			w.Header().Set("Location", "http://10.1.2.3/internal/admin")
			w.WriteHeader(http.StatusFound)
		case "switch":
			conn, buf, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			fmt.Fprint(buf, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\ntunnelled bytes")
			_ = buf.Flush()
		case "json-for-stream":
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"id":"x","object":"chat.completion","created":1,"model":"demo-llama","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}`)
		case "sse-for-json":
			sse(chunk + last + "data: [DONE]\n\n")
		case "after-done":
			sse(chunk + last + "data: [DONE]\n\n" + `data: {"id":"c2","choices":[{"index":0,"delta":{"content":"smuggled"}}]}` + "\n\n")
		case "log-line":
			sse(chunk + "data: INFO generated 1 token\n\n" + last + "data: [DONE]\n\n")
		case "quote-key":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"error":{"message":"key %s is not valid for this deployment","type":"BadRequestError","code":400}}`, r.Header.Get("Authorization")[len("Bearer "):])
		case "quote-key-stream":
			sse(chunk + fmt.Sprintf(`data: {"error":{"message":"token %s expired","type":"server_error","code":500}}`, r.Header.Get("Authorization")[len("Bearer "):]) + "\n\n")
		default:
			w.WriteHeader(http.StatusTeapot)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// hostileConfig is a gateway with one model whose upstream gets upstream_key.
func hostileConfig(port int, upstream string) string {
	return gatewaySite(port, fmt.Sprintf(`key %s {
	id hostile
}
model demo-llama {
	alias llama
	context_window 8192
	upstream %s
	upstream_key %s
}`, policy.FormatHash(policy.HashSecret(secretAll)), upstream, hostileUpstreamKey), "")
}

// TestHardeningHostileUpstreamAnswers: an upstream's redirect, protocol switch, answer of the
// wrong kind, events after the stream's end, unreadable events and quoted credentials never reach
// the client as they are: each becomes a well-formed error (or a stream that ends properly).
func TestHardeningHostileUpstreamAnswers(t *testing.T) {
	up := hostileUpstream(t)
	port := freePort(t)
	startCaddy(t, hostileConfig(port, strings.TrimPrefix(up.URL, "http://")))
	s := &usageSetup{port: port}
	const stream = `{"model":"llama","stream":true,"messages":[{"role":"user","content":"Hi"}],"max_tokens":10}`
	tests := []struct {
		mode, body string
		status     int
		code       string // error code of a JSON answer, or of a stream's error frame
	}{
		{"redirect", chatBody, 502, "upstream_invalid_response"},
		{"switch", chatBody, 502, "upstream_invalid_response"},
		{"json-for-stream", stream, 502, "upstream_invalid_response"},
		{"sse-for-json", chatBody, 502, "upstream_invalid_response"},
		{"quote-key", chatBody, 400, ""},
		{"after-done", stream, 200, ""},
		{"log-line", stream, 200, "upstream_invalid_response"},
		{"quote-key-stream", stream, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			resp, b := s.do(t, "/v1/chat/completions", "", tt.body, "X-Hostile", tt.mode)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, b)
			}
			body := string(b)
			for _, leak := range []string{hostileUpstreamKey, "10.1.2.3", "tunnelled", "smuggled", "INFO generated"} {
				if strings.Contains(body, leak) || strings.Contains(fmt.Sprint(resp.Header), leak) {
					t.Errorf("%q reached the client: %s %v", leak, body, resp.Header)
				}
			}
			if resp.StatusCode != 200 {
				if code := checkOpenAIError(t, b); tt.code != "" && code != tt.code {
					t.Errorf("code %q, want %q: %s", code, tt.code, b)
				}
				return
			}
			if !strings.HasSuffix(body, "data: [DONE]\n\n") || strings.Count(body, "[DONE]") != 1 {
				t.Errorf("the stream does not end with exactly one [DONE]:\n%s", body)
			}
			if tt.code != "" && !strings.Contains(body, `"code":"`+tt.code+`"`) {
				t.Errorf("no %s error frame:\n%s", tt.code, body)
			}
			if tt.mode == "quote-key-stream" && !strings.Contains(body, "[redacted]") {
				t.Errorf("the upstream's error frame was not relayed redacted:\n%s", body)
			}
		})
	}
}

// TestHardeningRequestHeadersForUpstream: a client cannot open a tunnel through the gateway
// (Upgrade is not passed on) nor strip the headers the gateway sets for the upstream by naming
// them in Connection.
func TestHardeningRequestHeadersForUpstream(t *testing.T) {
	up := newUpstream(t, simulator.Config{})
	port := freePort(t)
	startCaddy(t, hostileConfig(port, up.addr()))
	s := &usageSetup{port: port, upstream: up}
	resp, b := s.do(t, "/v1/chat/completions", "", chatBody,
		"Connection", "Upgrade, Authorization, X-Request-Id, Content-Type", "Upgrade", "websocket", "X-Request-Id", "req_hostile1")
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	seen := up.requests()
	if len(seen) != 1 {
		t.Fatalf("%d requests reached the upstream", len(seen))
	}
	h := seen[0].Header
	if h.Get("Upgrade") != "" || strings.Contains(strings.ToLower(h.Get("Connection")), "upgrade") {
		t.Errorf("an upgrade reached the upstream: %v", h)
	}
	if h.Get("Authorization") != "Bearer "+hostileUpstreamKey || h.Get("X-Request-Id") != "req_hostile1" || h.Get("Content-Type") == "" {
		t.Errorf("headers the gateway sets were stripped: %v", h)
	}
}

// TestHardeningRefusalOfUnreadBody: a refusal of a request whose body the gateway never read (a
// wrong key with a declared 100 MB body, with or without Expect: 100-continue) reaches the client
// at once and closes the connection, instead of waiting for a body that will never be wanted.
func TestHardeningRefusalOfUnreadBody(t *testing.T) {
	up := newUpstream(t, simulator.Config{})
	port := freePort(t)
	startCaddy(t, hostileConfig(port, up.addr()))
	for _, expect := range []string{"", "Expect: 100-continue\r\n"} {
		conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second)) // a hang fails instead of blocking
		fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer sk-wrong\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n%s\r\n{\"model\":", expect)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("%q: no answer: %v", expect, err)
		}
		body, _ := io.ReadAll(resp.Body)
		conn.Close()
		if resp.StatusCode != 401 || !resp.Close {
			t.Errorf("%q: %d close=%v %s", expect, resp.StatusCode, resp.Close, body)
		}
	}
}

// TestHardeningClientGoneMidStream: a client that hangs up in the middle of a stream is recorded
// as the client's doing (499 client_closed), not as an upstream stream_incomplete.
func TestHardeningClientGoneMidStream(t *testing.T) {
	up := newUpstream(t, simulator.Config{TokensPerSecond: 20})
	port := freePort(t)
	startCaddy(t, hostileConfig(port, up.addr()))
	req, _ := http.NewRequest(http.MethodPost, url(port, "/v1/chat/completions"),
		strings.NewReader(`{"model":"llama","stream":true,"messages":[{"role":"user","content":"Hi"}],"max_tokens":200}`))
	req.Header.Set("Authorization", "Bearer "+secretAll)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if _, err := resp.Body.Read(buf); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close() // hang up mid-stream
	metric := regexp.MustCompile(`ai_gateway_requests_total\{code="(\d+)",key_id="",model="demo-llama",reject_reason="([a-z_]*)"\} (\d+)`)
	var got string
	waitFor(t, "the request to be recorded", 10*time.Second, func() bool {
		r, err := http.Get(url(port, "/metrics"))
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		for _, m := range metric.FindAllStringSubmatch(string(b), -1) {
			got += m[1] + "/" + m[2] + " "
		}
		return got != ""
	})
	if !strings.Contains(got, "499/client_closed") || strings.Contains(got, "stream_incomplete") {
		t.Errorf("recorded as %s, want 499/client_closed", got)
	}
	if strings.Contains(metricsText(t, port), `ai_gateway_stream_incomplete_total{model="demo-llama"}`) {
		t.Error("counted as an incomplete upstream stream")
	}
}

// TestHardeningEstimatedUsageIsCounted: when the upstream reports no usage and no limit needed an
// exact count, the prompt tokens reported are the tokenizer's count, not the byte upper bound.
func TestHardeningEstimatedUsageIsCounted(t *testing.T) {
	up := newUpstream(t, simulator.Config{})
	port := freePort(t)
	startCaddy(t, hostileConfig(port, up.addr()))
	s := &usageSetup{port: port, upstream: up}
	body := `{"model":"llama","messages":[{"role":"user","content":"` + strings.Repeat("hello ", 200) + `"}],"max_tokens":5}`
	resp, b := s.do(t, "/v1/chat/completions", "", body)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	exact := gjson.GetBytes(b, "usage.prompt_tokens").Int() // the simulator counts as the gateway's tokenizer does
	resp, b = s.do(t, "/v1/chat/completions", "kind=no_usage", body)
	if resp.StatusCode != 200 || resp.Header.Get("X-Usage-Estimated") != "true" {
		t.Fatalf("%d estimated=%q %s", resp.StatusCode, resp.Header.Get("X-Usage-Estimated"), b)
	}
	got, _ := strconv.ParseInt(resp.Header.Get("X-Usage-Prompt-Tokens"), 10, 64)
	if got != exact || gjson.GetBytes(b, "usage.prompt_tokens").Int() != exact {
		t.Errorf("estimated prompt tokens %d (body %d), want the exact %d", got, gjson.GetBytes(b, "usage.prompt_tokens").Int(), exact)
	}
}

func metricsText(t *testing.T, port int) string {
	t.Helper()
	r, err := http.Get(url(port, "/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return string(b)
}
