package caddymodule_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/caddyai/gateway/internal/wiretest"
	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/simulator"
)

// The hardening tests run a real Caddy with the gateway against broken upstreams, hostile
// clients and bad input. Each test keeps a tally (faults injected, bad inputs tried, requests
// sent, requests wrongly admitted, panics, leaked secrets) and logs it as a line starting with
// "TALLY" so the totals can be gathered with
//
//	go test -v -run 'TestHardening' ./caddymodule/ | grep TALLY

// tally counts what a hardening test did. Panics are counted from Caddy's own log at the end
// (net/http logs a recovered handler panic as "http: panic serving ...", at ERROR in Caddy).
type tally struct {
	faults, badInputs, requests, wronglyAdmitted, leaked atomic.Int64
}

// hardOpts shapes the Caddyfile of a hardening test.
type hardOpts struct {
	// upstream is the dial address of the model server; empty starts a recording simulator.
	upstream string
	// sim configures the recording simulator.
	sim simulator.Config
	// logLevel is the level of Caddy's default log, written to a file. Default: ERROR.
	logLevel string
	// global is more global options (e.g. servers { timeouts { ... } }).
	global string
	// site is more directives of the site block (e.g. an access log, a metrics route).
	site string
	// key is more lines of the key block of secretAll (id "hard").
	key string
	// gateway is more ai_gateway subdirectives.
	gateway string
	// proxy is more reverse_proxy subdirectives (e.g. a transport block).
	proxy string
}

// hardSetup is a running gateway under test.
type hardSetup struct {
	port     int
	upstream *recordingUpstream // nil when the test brought its own upstream
	logPath  string
	client   *http.Client
	tally    *tally
	opts     hardOpts
}

func hardCaddyfile(port int, logPath, upstream string, o hardOpts) string {
	level := o.logLevel
	if level == "" {
		level = "ERROR"
	}
	return fmt.Sprintf(`{
	admin off
	auto_https off
	grace_period 1s
	log {
		level %s
		output file %s
	}
	%s
}
:%d {
	%s
	handle /metrics {
		metrics
	}
	handle {
		ai_gateway {
			key %s {
				id hard
				%s
			}
			model demo-llama {
				alias llama
				context_window 8192
				upstream %s
			}
			max_body 64KiB
			auth_failures off
			%s
		}
		reverse_proxy {
			dynamic ai_gateway
			%s
		}
	}
}
`, level, logPath, o.global, port, o.site, policy.FormatHash(policy.HashSecret(secretAll)), o.key, upstream, o.gateway, o.proxy)
}

// startHard runs a gateway for the test. At the end it fails the test on any recovered panic in
// Caddy's log and logs the test's tally.
func startHard(t *testing.T, o hardOpts) *hardSetup {
	t.Helper()
	s := &hardSetup{port: freePort(t), logPath: filepath.Join(t.TempDir(), "caddy.log"), tally: new(tally), opts: o}
	s.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 60 * time.Second}
	addr := o.upstream
	if addr == "" {
		s.upstream = newUpstream(t, o.sim)
		addr = s.upstream.addr()
	}
	startCaddy(t, hardCaddyfile(s.port, s.logPath, addr, o))
	t.Cleanup(func() {
		s.client.CloseIdleConnections()
		log, _ := os.ReadFile(s.logPath)
		panics := bytes.Count(log, []byte("panic serving"))
		if panics > 0 {
			t.Errorf("%d handler panics in Caddy's log:\n%s", panics, log)
		}
		tl := s.tally
		t.Logf("TALLY %s faults=%d bad_inputs=%d requests=%d wrongly_admitted=%d panics=%d leaked_secrets=%d",
			t.Name(), tl.faults.Load(), tl.badInputs.Load(), tl.requests.Load(), tl.wronglyAdmitted.Load(), panics, tl.leaked.Load())
	})
	return s
}

// reload loads the setup's Caddyfile again with changed options (a config reload).
func (s *hardSetup) reload(t *testing.T, o hardOpts) {
	t.Helper()
	addr := o.upstream
	if addr == "" && s.upstream != nil {
		addr = s.upstream.addr()
	}
	loadCaddy(t, hardCaddyfile(s.port, s.logPath, addr, o))
}

// upstreamCount is how many requests reached the recording simulator.
func (s *hardSetup) upstreamCount() int {
	if s.upstream == nil {
		return 0
	}
	return len(s.upstream.requests())
}

// send sends one request with the test key (unless headers set another credential) and returns
// the response with its body read. A transport error fails the test.
func (s *hardSetup) send(t *testing.T, path string, headers map[string]string, body string) (*http.Response, []byte) {
	t.Helper()
	resp, b, err := s.trySend(path, headers, body)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return resp, b
}

func (s *hardSetup) trySend(path string, headers map[string]string, body string) (*http.Response, []byte, error) {
	s.tally.requests.Add(1)
	req, err := http.NewRequest(http.MethodPost, url(s.port, path), strings.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+secretAll)
	if strings.HasPrefix(path, "/v1/messages") {
		req.Header.Set("Anthropic-Version", "2023-06-01")
	}
	for k, v := range headers {
		if v == "" {
			req.Header.Del(k)
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// remainingTokens sends a small request and returns its x-ratelimit-remaining-tokens.
func (s *hardSetup) remainingTokens(t *testing.T) int64 {
	t.Helper()
	resp, body := s.send(t, "/v1/chat/completions", nil, chatBody)
	if resp.StatusCode != 200 {
		t.Fatalf("probe request: %d %s", resp.StatusCode, body)
	}
	n, err := strconv.ParseInt(resp.Header.Get("X-Ratelimit-Remaining-Tokens"), 10, 64)
	if err != nil {
		t.Fatalf("x-ratelimit-remaining-tokens %q: %v", resp.Header.Get("X-Ratelimit-Remaining-Tokens"), err)
	}
	return n
}

// checkOpenAIError asserts body is a valid OpenAI error envelope and returns its code.
func checkOpenAIError(t *testing.T, body []byte) string {
	t.Helper()
	wiretest.Validate(t, "ErrorResponse", body)
	var env struct {
		Error struct {
			Code *string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatalf("error body is not JSON: %v\n%s", err, body)
	}
	if env.Error.Code == nil {
		return ""
	}
	return *env.Error.Code
}

// checkStreamEnd asserts an OpenAI SSE body ends with an error frame carrying code (any error
// frame when code is "") and then [DONE], every frame being JSON.
func checkStreamEnd(t *testing.T, body []byte, code string) {
	t.Helper()
	frames := dataFrames(body)
	if len(frames) < 2 || frames[len(frames)-1] != "[DONE]" {
		t.Fatalf("stream does not end with [DONE]: %q", tail(body))
	}
	last := frames[len(frames)-2]
	if !strings.HasPrefix(last, `{"error":{`) {
		t.Fatalf("stream does not end with an error frame: %q", tail(body))
	}
	if got := checkOpenAIError(t, []byte(last)); code != "" && got != code {
		t.Errorf("error frame code %q, want %q: %s", got, code, last)
	}
	for _, f := range frames[:len(frames)-1] {
		if !json.Valid([]byte(f)) {
			t.Errorf("frame is not JSON: %.200q", f)
		}
	}
}

func tail(b []byte) []byte {
	if len(b) > 400 {
		return b[len(b)-400:]
	}
	return b
}

const faultMaxTokens = 5000

// faultBody asks for faultMaxTokens output tokens, so a reservation that is never settled takes
// 5000 tokens from the key's budget.
func faultBody(stream bool) string {
	return fmt.Sprintf(`{"model":"llama","stream":%t,"max_tokens":%d,"messages":[{"role":"user","content":"Tell me about gateways"}]}`, stream, faultMaxTokens)
}

// TestHardeningUpstreamFaults injects every simulator fault through a real Caddy, and some of
// our own (stalls after the header, mid-body), with a token-limited key: each broken exchange
// gives the client a well-formed error (an envelope, or an error frame then [DONE] on a stream)
// and settles its reservation (the 5000 reserved output tokens come back).
func TestHardeningUpstreamFaults(t *testing.T) {
	// an upstream that sends a header and part of the body, then goes silent until the gateway
	// gives up (read_timeout)
	stalls := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc := http.NewResponseController(w)
		if bytes.Contains(body, []byte(`"stream":true`)) {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(200)
			_, _ = io.WriteString(w, `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"demo-llama","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"},"finish_reason":null}]}`+"\n\n")
		} else {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(200)
			_, _ = io.WriteString(w, `{"id":"c1","object":"chat.completion","created":1,"model":"demo-llama","choices":[{"index":0,"message":{"role":"assistant","content":"Hel`)
		}
		_ = rc.Flush()
		<-r.Context().Done()
	}))
	t.Cleanup(stalls.Close)

	sim := newUpstream(t, simulator.Config{})
	s := startHard(t, hardOpts{
		upstream: sim.addr(),
		key:      "tpd 1000000",
		proxy:    "transport http {\n\t\t\t\tresponse_header_timeout 300ms\n\t\t\t\tread_timeout 1s\n\t\t\t}",
	})
	s.upstream = sim

	tests := []struct {
		name   string
		path   string
		fault  string
		stream bool
		// status is the status the client must get (0: 200 with a stream error frame)
		status []int
		code   string
	}{
		{"json cut mid-body", "/v1/chat/completions", "kind=cut;after=1", false, []int{502}, ""},
		{"stream cut mid-stream", "/v1/chat/completions", "kind=cut;after=3", true, nil, "stream_incomplete"},
		{"stream cut before the first chunk", "/v1/chat/completions", "kind=cut;after=0", true, nil, "stream_incomplete"},
		{"connection closed before headers", "/v1/chat/completions", "kind=close", false, []int{502, 503}, ""},
		{"connection closed before headers, stream", "/v1/chat/completions", "kind=close", true, []int{502, 503}, ""},
		{"stall before headers", "/v1/chat/completions", "kind=stall;delay=5s", false, []int{504}, "upstream_timeout"},
		{"stall before headers, stream", "/v1/chat/completions", "kind=stall;delay=5s", true, []int{504}, "upstream_timeout"},
		{"mid-stream error", "/v1/chat/completions", "kind=midstream_error;after=2;shape=vllm", true, nil, ""},
		{"error 500 in text", "/v1/chat/completions", "kind=error;status=500;shape=text", false, []int{502}, ""},
		{"error 500 in text, stream", "/v1/chat/completions", "kind=error;status=500;shape=text", true, []int{502}, ""},
		{"overloaded", "/v1/chat/completions", "kind=overloaded;shape=tgi", false, []int{503}, "model_overloaded"},
		{"loading", "/v1/chat/completions", "kind=loading;shape=llamacpp", false, []int{503}, "model_loading"},
		{"upstream context error", "/v1/chat/completions", "kind=context;shape=vllm", false, []int{400}, "context_length_exceeded"},
		{"garbage body", "/v1/chat/completions", "kind=garbage", false, []int{502}, ""},
		{"garbage body, stream", "/v1/chat/completions", "kind=garbage", true, []int{502}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := s.remainingTokens(t)
			s.tally.faults.Add(1)
			resp, body := s.send(t, tc.path, map[string]string{"X-Sim-Fault": tc.fault}, faultBody(tc.stream))
			switch {
			case tc.status == nil:
				if resp.StatusCode != 200 {
					t.Fatalf("status %d: %s", resp.StatusCode, body)
				}
				checkStreamEnd(t, body, tc.code)
			default:
				ok := false
				for _, st := range tc.status {
					ok = ok || resp.StatusCode == st
				}
				if !ok {
					t.Fatalf("status %d, want one of %v: %.300s", resp.StatusCode, tc.status, body)
				}
				if got := checkOpenAIError(t, body); tc.code != "" && got != tc.code {
					t.Errorf("code %q, want %q: %s", got, tc.code, body)
				}
				if resp.Header.Get("X-Request-Id") == "" {
					t.Error("no x-request-id on the error")
				}
			}
			after := s.remainingTokens(t)
			// the probe itself reserves about 25 tokens; an unsettled fault would keep 5000
			if spent := before - after; spent > 1000 {
				t.Errorf("the broken request kept %d tokens of the key's budget (remaining %d -> %d): reservation not settled", spent, before, after)
			}
		})
	}

	// our own stalling upstream: the header and a part of the body arrive, then nothing
	s.reload(t, hardOpts{
		upstream: stalls.Listener.Addr().String(),
		key:      "tpd 1000000",
		proxy:    "transport http {\n\t\t\t\tresponse_header_timeout 300ms\n\t\t\t\tread_timeout 500ms\n\t\t\t}",
	})
	s.client.CloseIdleConnections()
	stallProbe := func(t *testing.T) int64 {
		t.Helper()
		// the stalling upstream cannot answer a probe: read the budget from a refusal-free
		// request's header instead, the models list does not carry it, so use a 0-token count
		resp, body := s.send(t, "/v1/chat/completions", map[string]string{"X-Probe": "1"}, `{"model":"llama","max_tokens":1,"stream":true,"messages":[{"role":"user","content":"x"}]}`)
		n, err := strconv.ParseInt(resp.Header.Get("X-Ratelimit-Remaining-Tokens"), 10, 64)
		if err != nil {
			t.Fatalf("probe: %d %v %s", resp.StatusCode, err, body)
		}
		return n
	}
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprintf("stall after the header, stream=%t", stream), func(t *testing.T) {
			before := stallProbe(t)
			s.tally.faults.Add(1)
			resp, body := s.send(t, "/v1/chat/completions", nil, faultBody(stream))
			if stream {
				if resp.StatusCode != 200 {
					t.Fatalf("status %d: %s", resp.StatusCode, body)
				}
				checkStreamEnd(t, body, "stream_incomplete")
				if !bytes.Contains(body, []byte("Hel")) {
					t.Errorf("the part sent before the stall was lost: %s", body)
				}
			} else {
				if resp.StatusCode < 500 {
					t.Fatalf("status %d: %s", resp.StatusCode, body)
				}
				checkOpenAIError(t, body)
			}
			after := stallProbe(t)
			if spent := before - after; spent > 1000 {
				t.Errorf("the stalled request kept %d tokens (remaining %d -> %d): reservation not settled", spent, before, after)
			}
		})
	}
}

var _ = []any{bufio.NewReader, context.Background, errors.New, net.Dial, sync.NewCond, openai.NewClient, option.WithAPIKey}
