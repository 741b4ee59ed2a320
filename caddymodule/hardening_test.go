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

// knownBug skips the rest of a check that fails on a known gateway bug (described in bug), so
// the package's tests stay green while the bug is open. HARDENING_STRICT=1 runs the check.
// Remove the call once the bug is fixed.
func knownBug(t *testing.T, bug string) {
	t.Helper()
	if os.Getenv("HARDENING_STRICT") != "1" {
		t.Skip("BUG: " + bug + " (HARDENING_STRICT=1 runs this check)")
	}
}

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
		{"upstream context error", "/v1/chat/completions", "kind=context;shape=vllm", false, []int{413}, "context_length_exceeded"},
		{"garbage body", "/v1/chat/completions", "kind=garbage", false, []int{502}, "upstream_invalid_response"},
		{"garbage body, stream", "/v1/chat/completions", "kind=garbage", true, []int{502}, "upstream_invalid_response"},
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

// hugeUpstream answers every request with a 20 MB body: one JSON completion, or one SSE event
// followed by [DONE]. Past holdAt bytes it waits until the test says the client received its
// first byte (or gives up after a while): a gateway that buffers the whole body never lets that
// byte through, so the wait records it.
type hugeUpstream struct {
	*httptest.Server
	firstByte chan struct{}
	buffered  atomic.Bool
}

const (
	hugeSize = 20 << 20
	hugeHold = 12 << 20 // past the gateway's largest buffer (8 MiB JSON, 1 MiB SSE event)
)

func newHugeUpstream(t *testing.T) *hugeUpstream {
	t.Helper()
	u := &hugeUpstream{firstByte: make(chan struct{})}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		stream := bytes.Contains(body, []byte(`"stream":true`))
		var head, end string
		if stream {
			w.Header().Set("Content-Type", "text/event-stream")
			head = `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"demo-llama","choices":[{"index":0,"delta":{"role":"assistant","content":"`
			end = `"},"finish_reason":null}]}` + "\n\n" +
				`data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"demo-llama","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}` + "\n\n" +
				"data: [DONE]\n\n"
		} else {
			w.Header().Set("Content-Type", "application/json")
			head = `{"id":"c1","object":"chat.completion","created":1,"model":"demo-llama","choices":[{"index":0,"message":{"role":"assistant","content":"`
			end = `"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}`
		}
		w.WriteHeader(200)
		if _, err := io.WriteString(w, head); err != nil {
			return
		}
		chunk := bytes.Repeat([]byte("a"), 64<<10)
		for sent := 0; sent < hugeSize; sent += len(chunk) {
			if sent == hugeHold {
				_ = http.NewResponseController(w).Flush()
				select {
				case <-u.firstByte:
				case <-time.After(10 * time.Second):
					u.buffered.Store(true)
				case <-r.Context().Done():
					return
				}
			}
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
		_, _ = io.WriteString(w, end)
	}))
	t.Cleanup(u.Close)
	return u
}

// TestHardeningHugeUpstreamBodies: a 20 MB JSON completion and a 20 MB SSE event go through
// without being held whole (the client gets bytes while the upstream is still writing) and
// arrive well-formed.
func TestHardeningHugeUpstreamBodies(t *testing.T) {
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprintf("stream=%t", stream), func(t *testing.T) {
			up := newHugeUpstream(t)
			s := startHard(t, hardOpts{upstream: up.Listener.Addr().String()})
			s.tally.faults.Add(1)
			s.tally.requests.Add(1)
			req, _ := http.NewRequest(http.MethodPost, url(s.port, "/v1/chat/completions"), strings.NewReader(faultBody(stream)))
			req.Header.Set("Authorization", "Bearer "+secretAll)
			resp, err := s.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			first := make([]byte, 1)
			if _, err := io.ReadFull(resp.Body, first); err != nil {
				t.Fatalf("reading the first byte: %v", err)
			}
			close(up.firstByte)
			rest, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("reading the body: %v", err)
			}
			body := append(first, rest...)
			if up.buffered.Load() {
				t.Errorf("the client got no byte before the upstream had sent %d MiB: the gateway holds the whole body", hugeHold>>20)
			}
			if resp.StatusCode != 200 || len(body) < hugeSize {
				t.Fatalf("status %d, %d bytes: %.300s", resp.StatusCode, len(body), body)
			}
			if !stream {
				if !json.Valid(body) {
					t.Fatalf("the 20 MB completion is not valid JSON (tail %q)", tail(body))
				}
				return
			}
			frames := dataFrames(body)
			if len(frames) < 2 || frames[len(frames)-1] != "[DONE]" {
				t.Fatalf("stream tail %q", tail(body))
			}
			if !json.Valid([]byte(frames[0])) || len(frames[0]) < hugeSize {
				t.Errorf("the 20 MB event arrived damaged: %d bytes", len(frames[0]))
			}
		})
	}
}

// TestHardeningKeysFileGarbage replaces the keys file with one broken file after another: the
// last good key set stays in service each time (file key and inline key), and a good file is
// picked up again afterwards.
func TestHardeningKeysFileGarbage(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keys.json")
	write := func(content []byte) {
		t.Helper()
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, content, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	hash := func(secret string) string { return policy.FormatHash(policy.HashSecret(secret)) }
	write([]byte(fmt.Sprintf(`{"keys":[{"id":"file-a","secret":%q}]}`, hash("sk-file-a"))))
	s := startHard(t, hardOpts{gateway: "keys_file " + path + "\n\t\t\tkeys_file_interval 20ms"})
	m := &usageSetup{port: s.port}
	status := func(secret string) int {
		resp, _ := s.send(t, "/v1/chat/completions", map[string]string{"Authorization": "Bearer " + secret}, chatBody)
		return resp.StatusCode
	}
	if status("sk-file-a") != 200 || status(secretAll) != 200 {
		t.Fatal("keys refused before any garbage")
	}
	garbage := []struct {
		name    string
		content []byte // nil removes the file
	}{
		{"truncated JSON", []byte(`{"keys":[{"id":"file-a","sha2`)},
		{"empty file", []byte{}},
		{"binary", []byte{0x00, 0xff, 0xfe, 0x1f, 0x8b, 0x08, 0x00, 0x7f}},
		{"HTML", []byte("<html><body>502 Bad Gateway</body></html>")},
		{"not an object", []byte(`[1,2,3]`)},
		{"bad hash", []byte(`{"keys":[{"id":"x","secret":"sha256:zz"}]}`)},
		{"unknown field", []byte(fmt.Sprintf(`{"keys":[{"id":"x","secret":%q,"tmp":1}]}`, hash("sk-x")))},
		{"duplicate ids", []byte(fmt.Sprintf(`{"keys":[{"id":"d","secret":%q},{"id":"d","secret":%q}]}`, hash("sk-d1"), hash("sk-d2")))},
		{"id clashing with an inline key", []byte(fmt.Sprintf(`{"keys":[{"id":"hard","secret":%q}]}`, hash("sk-clash")))},
		{"bad expiry", []byte(fmt.Sprintf(`{"keys":[{"id":"x","secret":%q,"expires_at":"soon"}]}`, hash("sk-x")))},
		{"huge garbage", bytes.Repeat([]byte("{[\"\\"), 1<<20)},
		{"deleted", nil},
	}
	for _, g := range garbage {
		t.Run(g.name, func(t *testing.T) {
			s.tally.faults.Add(1)
			errorsBefore := m.metric(t, "caddy_ai_gateway_keys_file_reloads_total", map[string]string{"result": "error"})
			if g.content == nil {
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
			} else {
				write(g.content)
			}
			waitFor(t, "the broken keys file to be read", 5*time.Second, func() bool {
				return m.metric(t, "caddy_ai_gateway_keys_file_reloads_total", map[string]string{"result": "error"}) > errorsBefore
			})
			if got := status("sk-file-a"); got != 200 {
				t.Errorf("file key after %s: %d", g.name, got)
			}
			if got := status(secretAll); got != 200 {
				t.Errorf("inline key after %s: %d", g.name, got)
			}
			for _, k := range []string{"sk-x", "sk-d1", "sk-clash"} {
				if got := status(k); got != 401 {
					t.Errorf("a key of the broken file works (%s): %d", k, got)
				}
			}
		})
	}
	write([]byte(fmt.Sprintf(`{"keys":[{"id":"file-b","secret":%q}]}`, hash("sk-file-b"))))
	waitFor(t, "a good file after the garbage", 5*time.Second, func() bool { return status("sk-file-b") == 200 })
	if status("sk-file-a") != 401 {
		t.Error("a key removed from the recovered file still works")
	}
}

// TestHardeningReloadUnderLoad: 8 clients (the OpenAI SDK with its default retries, half of
// them streaming) send for about 2 s while the config is reloaded 5 times. No request fails, and
// the key's daily request budget is not reset by the reloads.
func TestHardeningReloadUnderLoad(t *testing.T) {
	const rpd = 1000000
	opts := func(gen int) hardOpts {
		return hardOpts{key: fmt.Sprintf("rpd %d\n\t\t\t\tlabel generation g%d", rpd, gen)}
	}
	s := startHard(t, opts(0))
	var served atomic.Int64
	client := openai.NewClient(option.WithBaseURL(url(s.port, "/v1/")), option.WithAPIKey(secretAll), option.WithHTTPClient(s.client),
		option.WithMiddleware(func(r *http.Request, next option.MiddlewareNext) (*http.Response, error) {
			s.tally.requests.Add(1)
			resp, err := next(r)
			if err == nil && resp.StatusCode == 200 {
				served.Add(1)
			}
			return resp, err
		}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var failures atomic.Int64
	var firstErr atomic.Value
	fail := func(err error) {
		if failures.Add(1) == 1 {
			firstErr.Store(err)
		}
	}
	params := openai.ChatCompletionNewParams{Model: "llama", MaxTokens: openai.Int(8),
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Tell me about reloads")}}
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(stream bool) {
			defer wg.Done()
			for ctx.Err() == nil {
				// the request itself must not be cut by the test's deadline
				reqCtx := context.WithoutCancel(ctx)
				if stream {
					st := client.Chat.Completions.NewStreaming(reqCtx, params)
					n := 0
					for st.Next() {
						n++
					}
					if err := st.Err(); err != nil {
						fail(fmt.Errorf("stream: %w", err))
					} else if n == 0 {
						fail(errors.New("stream: no chunk"))
					}
					continue
				}
				resp, err := client.Chat.Completions.New(reqCtx, params)
				if err != nil {
					fail(err)
				} else if resp.Choices[0].Message.Content == "" {
					fail(errors.New("empty completion"))
				}
			}
		}(i%2 == 1)
	}
	for gen := 1; gen <= 5; gen++ {
		time.Sleep(300 * time.Millisecond) // spread the reloads over the load
		s.tally.faults.Add(1)
		s.reload(t, opts(gen))
	}
	wg.Wait()
	if n := failures.Load(); n > 0 {
		t.Errorf("%d requests failed across reloads; first: %v", n, firstErr.Load())
	}
	resp, body := s.send(t, "/v1/chat/completions", nil, chatBody)
	if resp.StatusCode != 200 {
		t.Fatalf("after the load: %d %s", resp.StatusCode, body)
	}
	remaining, err := strconv.ParseInt(resp.Header.Get("X-Ratelimit-Remaining-Requests"), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	n := served.Load() + 1
	t.Logf("%d requests served during 5 reloads; remaining daily requests %d", n, remaining)
	// every served request took one; a few refill meanwhile (rpd 1e6 is ~12 per second)
	if remaining > rpd-n+100 {
		t.Errorf("remaining %d after %d requests: the reloads reset the key's budget", remaining, n)
	}
	if n < 50 {
		t.Errorf("only %d requests served: the load did not run", n)
	}
}

// rawRequest is an HTTP/1.1 request written by hand on a fresh connection, for what net/http's
// client refuses to send.
func rawRequest(t *testing.T, port int, head string, body string) (*http.Response, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, head+fmt.Sprintf("Content-Length: %d\r\nConnection: close\r\n\r\n", len(body))+body); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

const slowTimeouts = `servers {
		timeouts {
			read_header 1s
			read_body 2s
		}
	}`

// dribble writes p one byte every interval until the connection fails or stop closes, and
// reports how many bytes went out.
func dribble(conn net.Conn, p []byte, interval time.Duration, stop <-chan struct{}) (sent int) {
	for {
		b := p[sent%len(p) : sent%len(p)+1]
		if _, err := conn.Write(b); err != nil {
			return sent
		}
		sent++
		select {
		case <-stop:
			return sent
		case <-time.After(interval):
		}
	}
}

// TestHardeningSlowClients: clients that dribble their headers or their body (slowloris) are cut
// off by the server timeouts (read_header 1s, read_body 2s) while other clients are served, and
// nothing of theirs reaches the upstream.
func TestHardeningSlowClients(t *testing.T) {
	s := startHard(t, hardOpts{global: slowTimeouts})
	checkSlowClientsCutOff(t, s.port, secretAll, 10*time.Second, func() {
		for i := 0; i < 5; i++ {
			if resp, body := s.send(t, "/v1/chat/completions", nil, chatBody); resp.StatusCode != 200 {
				t.Errorf("a normal client was not served while slow clients hang on: %d %s", resp.StatusCode, body)
			}
		}
	}, func() int { return s.upstreamCount() }, 5)
}

// checkSlowClientsCutOff opens 10 connections that dribble their headers and 10 that dribble
// their body (one byte every 100ms) against the gateway on port, runs normal (which sends
// normalCount requests that must be served meanwhile), and checks that the server closes every
// slow connection within cutOff with nothing or a 4xx, and that only the normal requests reached
// the upstream (count reports the upstream's requests).
func checkSlowClientsCutOff(t *testing.T, port int, secret string, cutOff time.Duration, normal func(), count func() int, normalCount int) {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cases := []struct {
		name   string
		prefix string // sent at once
		slow   string // then dribbled, one byte every 100ms, cycling
	}{
		{"headers", "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + secret + "\r\n", "X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
		{"body", "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + secret + "\r\nContent-Type: application/json\r\nContent-Length: 10000\r\n\r\n" +
			`{"model":"llama","messages":[{"role":"user","content":"`, "aaaaaaaaaaaaaaaaaaaaaaaa"},
	}
	type result struct {
		name    string
		err     error
		elapsed time.Duration
		resp    string
	}
	const slowClients = 10
	results := make(chan result, slowClients*len(cases))
	before := count()
	for _, tc := range cases {
		for i := 0; i < slowClients; i++ {
			go func() {
				conn, err := net.Dial("tcp", addr)
				if err != nil {
					results <- result{name: tc.name, err: err}
					return
				}
				defer conn.Close()
				start := time.Now()
				if _, err := io.WriteString(conn, tc.prefix); err != nil {
					results <- result{name: tc.name, err: err}
					return
				}
				stop := make(chan struct{})
				go dribble(conn, []byte(tc.slow), 100*time.Millisecond, stop)
				defer close(stop)
				// the server must close the connection before this deadline
				_ = conn.SetReadDeadline(time.Now().Add(cutOff))
				got, err := io.ReadAll(conn)
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					results <- result{name: tc.name, err: fmt.Errorf("still connected after %s", time.Since(start).Round(time.Millisecond))}
					return
				}
				results <- result{name: tc.name, elapsed: time.Since(start), resp: string(got)}
			}()
		}
	}
	// meanwhile, well-behaved clients are served
	time.Sleep(300 * time.Millisecond)
	normal()
	logged := map[string]bool{}
	for i := 0; i < slowClients*len(cases); i++ {
		r := <-results
		if r.err != nil {
			t.Errorf("slow %s: %v", r.name, r.err)
			continue
		}
		if r.resp != "" && !strings.HasPrefix(r.resp, "HTTP/1.1 4") {
			t.Errorf("slow %s got a non-4xx answer after %s: %.200q", r.name, r.elapsed, r.resp)
		}
		if !logged[r.name] {
			logged[r.name] = true
			t.Logf("slow %s cut off after %s with %q", r.name, r.elapsed.Round(time.Millisecond), firstLine(r.resp))
		}
	}
	if got := count() - before; got != normalCount {
		t.Errorf("upstream saw %d requests, want only the %d normal ones", got, normalCount)
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\r\n")
	return line
}

// TestHardeningEndlessBody: a chunked body that never ends gets 413 request_too_large at
// max_body, the server stops reading (the sender sees the connection closed after a bounded
// number of bytes), and nothing reaches the upstream.
func TestHardeningEndlessBody(t *testing.T) {
	s := startHard(t, hardOpts{})
	for _, path := range []string{"/v1/chat/completions", "/v1/messages"} {
		t.Run(path, func(t *testing.T) {
			s.tally.badInputs.Add(1)
			s.tally.requests.Add(1)
			before := s.upstreamCount()
			conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", s.port))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
			head := "POST " + path + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + secretAll +
				"\r\nAnthropic-Version: 2023-06-01\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
			if _, err := io.WriteString(conn, head); err != nil {
				t.Fatal(err)
			}
			var written atomic.Int64
			writerDone := make(chan error, 1)
			go func() {
				chunk := []byte(fmt.Sprintf("%x\r\n%s\r\n", 32<<10, bytes.Repeat([]byte("a"), 32<<10)))
				_, _ = io.WriteString(conn, "d\r\n{\"model\":\"lla\r\n")
				for {
					n, err := conn.Write(chunk)
					written.Add(int64(n))
					if err != nil {
						writerDone <- err
						return
					}
				}
			}()
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("no response to the endless body: %v (%d bytes sent)", err, written.Load())
			}
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			if resp.StatusCode != 413 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			if path == "/v1/chat/completions" {
				if code := checkOpenAIError(t, body); code != "request_too_large" {
					t.Errorf("code %q", code)
				}
			} else if !strings.Contains(string(body), `"request_too_large"`) {
				t.Errorf("anthropic body %s", body)
			}
			select {
			case err := <-writerDone:
				t.Logf("the sender saw %v after %d KiB", err, written.Load()>>10)
			case <-time.After(10 * time.Second):
				t.Fatalf("the server still reads the endless body: %d MiB taken", written.Load()>>20)
			}
			if n := written.Load(); n > 64<<20 {
				t.Errorf("the server read %d MiB of a body limited to 64 KiB", n>>20)
			}
			if s.upstreamCount() != before {
				s.tally.wronglyAdmitted.Add(1)
				t.Error("the endless body reached the upstream")
			}
		})
	}
}

// TestHardeningBadInputs sends malformed and hostile bodies. Each gets the answer in the table,
// in a valid envelope, and a refused one never reaches the upstream. "ok" lists the statuses
// accepted where the gateway may pass the body on (documented in the test's log).
func TestHardeningBadInputs(t *testing.T) {
	s := startHard(t, hardOpts{})
	msgs := `"messages":[{"role":"user","content":"hi"}]`
	nest := func(depth int, open, close string) string {
		return strings.Repeat(open, depth) + strings.Repeat(close, depth)
	}
	tests := []struct {
		name string
		path string
		body string
		ok   []int  // accepted statuses
		code string // OpenAI code, or Anthropic error type, when refused
		bug  string // a known gateway bug makes this case fail
	}{
		{"nested arrays 10000 deep", "", `{"model":"llama",` + msgs + `,"metadata":` + nest(10000, "[", "]") + `}`, []int{400}, "nesting_too_deep", ""},
		{"nested objects 5000 deep", "", `{"model":"llama",` + msgs + `,"metadata":` + nest(5000, `{"a":`, "}") + `}`, []int{400}, "nesting_too_deep", ""},
		{"nested in a message", "", `{"model":"llama","messages":[{"role":"user","content":` + nest(200, "[", "]") + `}]}`, []int{400}, "nesting_too_deep", ""},
		{"nested arrays unclosed", "", `{"model":"llama","x":` + strings.Repeat("[", 30000), []int{400}, "", ""},
		{"anthropic nested", "/v1/messages", `{"model":"llama","max_tokens":5,` + msgs + `,"metadata":` + nest(10000, "[", "]") + `}`, []int{400}, "invalid_request_error", ""},
		{"string over max_body", "", `{"model":"llama","messages":[{"role":"user","content":"` + strings.Repeat("a", 70<<10) + `"}]}`, []int{413}, "request_too_large", ""},
		{"string just under max_body", "", `{"model":"llama","messages":[{"role":"user","content":"` + strings.Repeat("ab c", 15<<10) + `"}]}`, []int{200, 400, 413}, "", ""},
		{"escaped string over max_body", "", `{"model":"llama","messages":[{"role":"user","content":"` + strings.Repeat(`\u0061`, 15<<10) + `"}]}`, []int{413}, "request_too_large", ""},
		{"60 KB key name", "", `{"model":"llama",` + msgs + `,"` + strings.Repeat("k", 60<<10) + `":1}`, []int{200, 400}, "", ""},
		{"60 KB model name", "", `{"model":"` + strings.Repeat("m", 60<<10) + `",` + msgs + `}`, []int{404, 400}, "", ""},
		{"invalid UTF-8 in the prompt", "", "{\"model\":\"llama\",\"messages\":[{\"role\":\"user\",\"content\":\"caf\xc3\x28 \xff\xfe\xfd\"}]}", []int{200, 400}, "", ""},
		{"invalid UTF-8 in the model", "", "{\"model\":\"ll\xffama\"," + msgs + "}", []int{404, 400}, "", ""},
		{"invalid UTF-8 in a key", "", "{\"model\":\"llama\"," + msgs + ",\"\xff\xfe\":1}", []int{200, 400}, "", ""},
		{"lone surrogate escape", "", `{"model":"llama","messages":[{"role":"user","content":"\ud800 and \udfff"}]}`, []int{200, 400}, "", ""},
		{"NUL in the prompt", "", `{"model":"llama","messages":[{"role":"user","content":"a\u0000b"}]}`, []int{200, 400}, "", ""},
		{"raw control byte in a string", "", "{\"model\":\"llama\",\"messages\":[{\"role\":\"user\",\"content\":\"a\x01b\"}]}", []int{400}, "", ""},
		{"byte order mark", "", "\xef\xbb\xbf{\"model\":\"llama\"," + msgs + "}", []int{200, 400}, "", ""},
		{"duplicate model", "", `{"model":"llama","model":"qwen",` + msgs + `}`, []int{400}, "duplicate_key", ""},
		{"duplicate model via escape", "", `{"model":"llama","mod\u0065l":"qwen",` + msgs + `}`, []int{400}, "duplicate_key", ""},
		{"duplicate max_tokens", "", `{"model":"llama","max_tokens":1,"max_tokens":100000,` + msgs + `}`, []int{400}, "duplicate_key", ""},
		{"duplicate stream", "", `{"model":"llama","stream":false,"stream":true,` + msgs + `}`, []int{400}, "duplicate_key", ""},
		{"anthropic duplicate max_tokens", "/v1/messages", `{"model":"llama","max_tokens":1,"max_tokens":100000,` + msgs + `}`, []int{400}, "invalid_request_error", ""},
		{"duplicate role in a message", "", `{"model":"llama","messages":[{"role":"user","role":"system","content":"hi"}]}`, []int{400}, "duplicate_key", ""},
		{"max_tokens overflow", "", `{"model":"llama","max_tokens":1e400,` + msgs + `}`, []int{400}, "", ""},
		{"max_tokens huge integer", "", `{"model":"llama","max_tokens":99999999999999999999999,` + msgs + `}`, []int{400, 413}, "", ""},
		{"max_tokens negative", "", `{"model":"llama","max_tokens":-1,` + msgs + `}`, []int{400}, "", ""},
		{"max_tokens as a string", "", `{"model":"llama","max_tokens":"10",` + msgs + `}`, []int{400}, "", ""},
		{"stream as a string", "", `{"model":"llama","stream":"true",` + msgs + `}`, []int{400}, "", ""},
		{"empty body", "", ``, []int{400}, "", ""},
		{"null body", "", `null`, []int{400}, "", ""},
		{"array body", "", `[{"model":"llama"}]`, []int{400}, "", ""},
		{"two documents", "", `{"model":"llama",` + msgs + `}{"model":"llama",` + msgs + `}`, []int{400}, "", ""},
		{"trailing garbage", "", `{"model":"llama",` + msgs + `}xyz`, []int{400}, "", ""},
		{"truncated", "", `{"model":"llama","messages":[{"role":"user","content":"hi"`, []int{400}, "", ""},
		{"model null", "", `{"model":null,` + msgs + `}`, []int{400}, "", ""},
		{"messages not an array", "", `{"model":"llama","messages":"hi"}`, []int{400}, "", ""},
		{"2000 empty messages", "", `{"model":"llama","messages":[` + strings.TrimSuffix(strings.Repeat(`{"role":"user","content":""},`, 2000), ",") + `]}`, []int{200, 400}, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.path
			if path == "" {
				path = "/v1/chat/completions"
			}
			s.tally.badInputs.Add(1)
			before := s.upstreamCount()
			resp, body := s.send(t, path, nil, tc.body)
			ok := false
			for _, st := range tc.ok {
				ok = ok || resp.StatusCode == st
			}
			if !ok {
				t.Fatalf("status %d, want one of %v: %.300s", resp.StatusCode, tc.ok, body)
			}
			reached := s.upstreamCount() != before
			if resp.StatusCode != 200 {
				if reached {
					s.tally.wronglyAdmitted.Add(1)
					t.Errorf("refused with %d but reached the upstream", resp.StatusCode)
				}
				if path == "/v1/messages" {
					env := decodeJSON(t, body)
					if env["type"] != "error" || tc.code != "" && env["error"].(map[string]any)["type"] != tc.code {
						t.Errorf("anthropic envelope %.300s", body)
					}
				} else if code := checkOpenAIError(t, body); tc.code != "" && code != tc.code {
					t.Errorf("code %q, want %q: %.300s", code, tc.code, body)
				}
				if len(body) > 4<<10 {
					if tc.bug != "" {
						knownBug(t, tc.bug)
					}
					t.Errorf("a %d-byte error body for a %d-byte request: the error echoes the input", len(body), len(tc.body))
				}
			} else if !json.Valid(body) {
				t.Errorf("200 with a body that is not JSON: %.300s", body)
			}
			msg := ""
			if resp.StatusCode != 200 {
				var env struct {
					Error struct{ Message string } `json:"error"`
				}
				_ = json.Unmarshal(body, &env)
				msg = env.Error.Message
				if len(msg) > 120 {
					msg = msg[:120] + "..."
				}
			}
			t.Logf("%s -> %d %s", tc.name, resp.StatusCode, msg)
		})
	}
}

// TestHardeningHeaderInjection: hostile x-request-id values and model names with CR/LF or quotes
// never reach a response header; the error JSON stays valid.
func TestHardeningHeaderInjection(t *testing.T) {
	s := startHard(t, hardOpts{})
	chatHead := "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + secretAll + "\r\nContent-Type: application/json\r\n"
	checkID := func(t *testing.T, resp *http.Response, body []byte) {
		t.Helper()
		ids := resp.Header.Values("X-Request-Id")
		if len(ids) != 1 || !strings.HasPrefix(ids[0], "req_") || len(ids[0]) != 28 {
			t.Errorf("x-request-id %q not replaced by a generated one (status %d %.200s)", ids, resp.StatusCode, body)
		}
		for k := range resp.Header {
			if strings.EqualFold(k, "Injected") || strings.EqualFold(k, "Set-Cookie") {
				t.Errorf("header injected: %s: %v", k, resp.Header[k])
			}
		}
	}
	t.Run("request ids", func(t *testing.T) {
		ids := map[string]string{
			"very long":           strings.Repeat("a", 8000),
			"just over the limit": strings.Repeat("b", 300),
			"quotes and markup":   `"><script>alert(1)</script>`,
			"spaces":              "id with spaces",
			"unicode":             "req_\u00e9\u4e16",
			"percent-encoded LF":  "abc%0d%0aInjected:%20yes",
			"semicolon":           "a;b=c",
		}
		for name, id := range ids {
			s.tally.badInputs.Add(1)
			resp, body := s.send(t, "/v1/chat/completions", map[string]string{"X-Request-Id": id}, chatBody)
			if resp.StatusCode != 200 {
				t.Errorf("%s: %d %s", name, resp.StatusCode, body)
			}
			checkID(t, resp, body)
			seen := s.upstream.requests()
			if got := seen[len(seen)-1].Header.Get("X-Request-Id"); got != resp.Header.Get("X-Request-Id") {
				t.Errorf("%s: upstream got request id %.80q, client %q", name, got, resp.Header.Get("X-Request-Id"))
			}
		}
		// CR/LF cannot be sent through net/http: write the request by hand
		raw := map[string]string{
			"bare CR":          "X-Request-Id: abc\rInjected: yes\r\n",
			"obs-fold":         "X-Request-Id: abc\r\n Injected: yes\r\n",
			"NUL":              "X-Request-Id: abc\x00def\r\n",
			"two request ids":  "X-Request-Id: first\r\nX-Request-Id: second\r\n",
			"empty request id": "X-Request-Id: \r\n",
		}
		for name, line := range raw {
			s.tally.badInputs.Add(1)
			s.tally.requests.Add(1)
			resp, body := rawRequest(t, s.port, chatHead+line, chatBody)
			switch {
			case resp.StatusCode == 200 && name == "two request ids":
				// the first is valid and kept; the upstream must see the same single id
				if ids := resp.Header.Values("X-Request-Id"); len(ids) != 1 || ids[0] != "first" {
					t.Errorf("%s: x-request-id %q", name, ids)
				}
				seen := s.upstream.requests()
				if got := seen[len(seen)-1].Header.Values("X-Request-Id"); len(got) != 1 || got[0] != "first" {
					t.Errorf("the upstream got x-request-id %q, the client %q", got, resp.Header.Values("X-Request-Id"))
				}
			case resp.StatusCode == 200:
				checkID(t, resp, body)
			case resp.StatusCode == 400 && resp.Header.Get("X-Request-Id") == "":
				// refused by net/http itself before any handler ran
				if resp.Header.Get("Injected") != "" {
					t.Errorf("%s: header injected", name)
				}
			default:
				t.Errorf("%s: %d %v %s", name, resp.StatusCode, resp.Header, body)
			}
			t.Logf("x-request-id %s -> %d", name, resp.StatusCode)
		}
	})
	t.Run("model names", func(t *testing.T) {
		models := []string{
			"evil\r\nSet-Cookie: a=b",
			`evil"},"injected":{"x":"`,
			"evil\u2028\u2029</script>",
			"evil\\\"\\n",
			"`evil` with backticks",
		}
		for _, model := range models {
			for _, path := range []string{"/v1/chat/completions", "/v1/messages", "/v1/embeddings"} {
				s.tally.badInputs.Add(1)
				b, _ := json.Marshal(map[string]any{"model": model, "max_tokens": 5, "input": "x",
					"messages": []map[string]string{{"role": "user", "content": "hi"}}})
				resp, body := s.send(t, path, nil, string(b))
				if resp.StatusCode != 404 {
					t.Errorf("%s %q: %d %s", path, model, resp.StatusCode, body)
					continue
				}
				checkID(t, resp, body)
				var env struct {
					Error struct {
						Message string `json:"message"`
						Type    string `json:"type"`
					} `json:"error"`
					Injected any `json:"injected"`
				}
				if err := json.Unmarshal(body, &env); err != nil {
					t.Errorf("%s %q: error body is not JSON: %v %s", path, model, err, body)
					continue
				}
				if env.Injected != nil {
					t.Errorf("%s %q: the model name broke out of its string: %s", path, model, body)
				}
				if !strings.Contains(env.Error.Message, model) {
					t.Errorf("%s %q: message %q does not name the model as sent", path, model, env.Error.Message)
				}
				if path != "/v1/messages" {
					wiretest.Validate(t, "ErrorResponse", body)
				}
				if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
					t.Errorf("content-type %q", ct)
				}
			}
		}
	})
}

// TestHardeningSecretsStayOut runs a scripted session (successes, streams, both API surfaces,
// 401s with wrong keys in every credential header, a 429, upstream errors, refusals) with
// Caddy's log at DEBUG and an access log, both in files. Neither log holds a client key, the
// upstream key or any prompt text; no response echoes a secret; the upstream never receives a
// client credential.
func TestHardeningSecretsStayOut(t *testing.T) {
	const (
		limitedSecret = "sk-limited-SECRET-4be1c0"
		fileSecret    = "sk-file-SECRET-93d2aa"
		upSecret      = "upstream-SECRET-77f0e1"
		marker        = "PROMPTMARKER-c2f91d"
	)
	wrongSecrets := []string{"sk-wrong-SECRET-0a1", "sk-wrong-SECRET-0a2", "sk-wrong-SECRET-0a3", "sk-wrong-SECRET-0a4"}
	secrets := append([]string{secretAll, limitedSecret, fileSecret, upSecret}, wrongSecrets...)

	dir := t.TempDir()
	keysPath := filepath.Join(dir, "keys.json")
	if err := os.WriteFile(keysPath, []byte(fmt.Sprintf(`{"keys":[{"id":"file-key","secret":%q}]}`, policy.FormatHash(policy.HashSecret(fileSecret)))), 0o600); err != nil {
		t.Fatal(err)
	}
	accessPath := filepath.Join(dir, "access.log")
	t.Setenv("HARD_LIMITED_KEY", limitedSecret)
	t.Setenv("HARD_UPSTREAM_KEY", upSecret)
	up := newUpstream(t, simulator.Config{})
	s := startHard(t, hardOpts{
		upstream: up.addr(),
		logLevel: "DEBUG",
		// a plain access log, no filter: Caddy redacts Authorization itself, and the gateway
		// serves requests keyed in X-Api-Key or Api-Key again without the header
		site: "log {\n\t\toutput file " + accessPath + "\n\t}",
		gateway: fmt.Sprintf(`key {env.HARD_LIMITED_KEY} {
				id limited
				rpm 2
			}
			keys_file %s
			model secret-model {
				upstream %s
				upstream_key {env.HARD_UPSTREAM_KEY}
			}`, keysPath, up.addr()),
	})
	s.upstream = up

	prompt := func(extra string) string {
		return `{"model":"llama","max_tokens":8,"messages":[{"role":"user","content":"` + marker + ` tell me a secret"}]` + extra + `}`
	}
	anthropicBody := `{"model":"llama","max_tokens":8,"messages":[{"role":"user","content":"` + marker + ` hello"}]}`
	bearer := func(k string) map[string]string { return map[string]string{"Authorization": "Bearer " + k} }
	type step struct {
		name    string
		path    string
		headers map[string]string
		body    string
		status  int
	}
	steps := []step{
		{"json", "/v1/chat/completions", nil, prompt(""), 200},
		{"stream", "/v1/chat/completions", nil, prompt(`,"stream":true`), 200},
		{"stream with usage", "/v1/chat/completions", nil, prompt(`,"stream":true,"stream_options":{"include_usage":true}`), 200},
		{"model with upstream key", "/v1/chat/completions", nil, strings.Replace(prompt(""), `"llama"`, `"secret-model"`, 1), 200},
		{"stream with upstream key", "/v1/chat/completions", nil, strings.Replace(prompt(`,"stream":true`), `"llama"`, `"secret-model"`, 1), 200},
		{"completions", "/v1/completions", nil, `{"model":"llama","max_tokens":5,"prompt":"` + marker + ` once upon"}`, 200},
		{"embeddings", "/v1/embeddings", nil, `{"model":"llama","input":"` + marker + ` embed me"}`, 200},
		{"anthropic", "/v1/messages", map[string]string{"Authorization": "", "X-Api-Key": secretAll}, anthropicBody, 200},
		{"anthropic stream", "/v1/messages", map[string]string{"Authorization": "", "X-Api-Key": secretAll}, strings.Replace(anthropicBody, `{"model"`, `{"stream":true,"model"`, 1), 200},
		{"file key in api-key", "/v1/chat/completions", map[string]string{"Authorization": "", "Api-Key": fileSecret}, prompt(""), 200},
		{"wrong bearer", "/v1/chat/completions", bearer(wrongSecrets[0]), prompt(""), 401},
		{"wrong x-api-key", "/v1/chat/completions", map[string]string{"Authorization": "", "X-Api-Key": wrongSecrets[1]}, prompt(""), 401},
		{"wrong api-key", "/v1/chat/completions", map[string]string{"Authorization": "", "Api-Key": wrongSecrets[2]}, prompt(""), 401},
		{"wrong anthropic key", "/v1/messages", map[string]string{"Authorization": "", "X-Api-Key": wrongSecrets[3]}, anthropicBody, 401},
		{"lowercase bearer with secret", "/v1/chat/completions", map[string]string{"Authorization": "bearer " + wrongSecrets[0]}, prompt(""), 401},
		{"basic auth", "/v1/chat/completions", map[string]string{"Authorization": "Basic " + wrongSecrets[1]}, prompt(""), 401},
		{"limited 1", "/v1/chat/completions", bearer(limitedSecret), prompt(""), 200},
		{"limited 2", "/v1/chat/completions", bearer(limitedSecret), prompt(""), 200},
		{"limited 3: rate-limited", "/v1/chat/completions", bearer(limitedSecret), prompt(""), 429},
		{"upstream 500", "/v1/chat/completions", map[string]string{"X-Sim-Fault": "kind=error;status=500;shape=vllm"}, prompt(""), 502},
		{"upstream 400 tgi", "/v1/chat/completions", map[string]string{"X-Sim-Fault": "kind=error;status=400;shape=tgi"}, prompt(""), 400},
		{"upstream overloaded", "/v1/chat/completions", map[string]string{"X-Sim-Fault": "kind=overloaded"}, prompt(""), 503},
		{"upstream context error", "/v1/chat/completions", map[string]string{"X-Sim-Fault": "kind=context;shape=llamacpp"}, prompt(""), 413}, // as the gateway's own overflow (context_status)
		{"upstream mid-stream error", "/v1/chat/completions", map[string]string{"X-Sim-Fault": "kind=midstream_error;after=1"}, prompt(`,"stream":true`), 200},
		{"upstream cut", "/v1/chat/completions", map[string]string{"X-Sim-Fault": "kind=cut;after=2"}, prompt(`,"stream":true`), 200},
		{"upstream closes", "/v1/chat/completions", map[string]string{"X-Sim-Fault": "kind=close"}, prompt(""), 502},
		{"upstream rejects its key", "/v1/chat/completions", map[string]string{"X-Sim-Fault": "kind=error;status=401"}, strings.Replace(prompt(""), `"llama"`, `"secret-model"`, 1), 502},
		{"unknown model", "/v1/chat/completions", nil, strings.Replace(prompt(""), `"llama"`, `"nope"`, 1), 404},
		{"context overflow", "/v1/chat/completions", nil, `{"model":"llama","max_tokens":8190,"messages":[{"role":"user","content":"` + marker + strings.Repeat(" word", 100) + `"}]}`, 413},
		{"bad json", "/v1/chat/completions", nil, `{"model":"llama","messages":[{"role":"user","content":"` + marker, 400},
		{"bad type", "/v1/chat/completions", nil, `{"model":"llama","temperature":"` + marker + `","messages":[]}`, 400},
		{"too large", "/v1/chat/completions", nil, `{"model":"llama","messages":[{"role":"user","content":"` + marker + strings.Repeat("x", 70<<10) + `"}]}`, 413},
	}
	leak := func(where, text string) {
		for _, sec := range secrets {
			if strings.Contains(text, sec) {
				s.tally.leaked.Add(1)
				t.Errorf("%s holds the secret %.12s...", where, sec)
			}
		}
	}
	for _, st := range steps {
		s.tally.requests.Add(0)
		resp, body := s.send(t, st.path, st.headers, st.body)
		if resp.StatusCode != st.status && !(st.status == 502 && resp.StatusCode == 503) {
			t.Errorf("%s: status %d, want %d: %.300s", st.name, resp.StatusCode, st.status, body)
		}
		leak("the response to "+st.name, string(body))
		for k, vs := range resp.Header {
			leak("the response header "+k+" of "+st.name, strings.Join(vs, " "))
		}
		for k, vs := range resp.Trailer {
			leak("the response trailer "+k+" of "+st.name, strings.Join(vs, " "))
		}
		if st.status != 200 && strings.Contains(string(body), marker) && st.name != "upstream 400 tgi" {
			t.Logf("note: the %d answer to %q quotes the prompt: %.200s", resp.StatusCode, st.name, body)
		}
	}

	for _, r := range up.requests() {
		for k, vs := range r.Header {
			for _, v := range vs {
				for _, sec := range secrets {
					if sec != upSecret && strings.Contains(v, sec) {
						s.tally.leaked.Add(1)
						t.Errorf("the upstream received the client credential in %s", k)
					}
				}
			}
		}
		if leakedInBody := bytes.Contains(r.Body, []byte("sk-")); leakedInBody {
			t.Errorf("the upstream body holds something like a key: %.200s", r.Body)
		}
		auth := r.Header.Get("Authorization")
		model := gjsonModel(r.Body)
		if model == "secret-model" && auth != "Bearer "+upSecret || model != "secret-model" && auth != "" {
			t.Errorf("model %s reached the upstream with Authorization %.20q", model, auth)
		}
	}

	// let the access log entries of the last requests land, then read both logs
	s.client.CloseIdleConnections()
	var mainLog, accessLog []byte
	waitFor(t, "the access log", 5*time.Second, func() bool {
		accessLog, _ = os.ReadFile(accessPath)
		return bytes.Count(accessLog, []byte("\n")) >= len(steps)
	})
	mainLog, _ = os.ReadFile(s.logPath)
	if !bytes.Contains(mainLog, []byte(`"level":"debug"`)) || !bytes.Contains(mainLog, []byte("upstream roundtrip")) {
		t.Fatalf("the main log is not at DEBUG (nothing to check):\n%.2000s", mainLog)
	}
	if !bytes.Contains(accessLog, []byte(`"ai_key_id":"limited"`)) || !bytes.Contains(accessLog, []byte(`"status":429`)) {
		t.Fatalf("the access log lacks the session:\n%.2000s", accessLog)
	}
	scan := func(name string, log []byte, clean func(string) string) {
		for i, line := range strings.Split(string(log), "\n") {
			line = clean(line)
			leak(fmt.Sprintf("%s, line %d", name, i+1), line)
			if strings.Contains(line, marker) {
				s.tally.leaked.Add(1)
				t.Errorf("%s, line %d, holds prompt text: %.300s", name, i+1, line)
			}
		}
	}
	scan("the DEBUG log", mainLog, func(line string) string { return line })
	// Caddy's access log records the request headers as they arrived, before any handler ran:
	// the X-Api-Key and Api-Key headers are checked on their own below
	scan("the access log", accessLog, withoutCredentialHeaders)
	t.Run("credential headers in the access log", func(t *testing.T) {
		for i, line := range strings.Split(string(accessLog), "\n") {
			for _, sec := range secrets {
				if strings.Contains(line, sec) {
					s.tally.leaked.Add(1)
					t.Errorf("access log line %d holds the secret %.12s...", i+1, sec)
				}
			}
		}
	})
	if os.Getenv("HARD_DUMP") != "" {
		t.Logf("%s", accessLog)
	}
	t.Logf("checked %d lines of DEBUG log and %d access log entries", bytes.Count(mainLog, []byte("\n")), bytes.Count(accessLog, []byte("\n")))
}

// withoutCredentialHeaders drops the X-Api-Key and Api-Key request headers from an access log
// line.
func withoutCredentialHeaders(line string) string {
	var entry map[string]any
	if json.Unmarshal([]byte(line), &entry) != nil {
		return line
	}
	if req, ok := entry["request"].(map[string]any); ok {
		if h, ok := req["headers"].(map[string]any); ok {
			delete(h, "X-Api-Key")
			delete(h, "Api-Key")
		}
	}
	b, _ := json.Marshal(entry)
	return string(b)
}

// gjsonModel returns the "model" of a JSON body.
func gjsonModel(body []byte) string {
	var v struct {
		Model string `json:"model"`
	}
	_ = json.Unmarshal(body, &v)
	return v.Model
}

// TestHardeningReloadReleasesOldConfigs: ten config reloads, each followed by one request, leave
// no old config behind in memory.
func TestHardeningReloadReleasesOldConfigs(t *testing.T) {
	opts := func(gen int) hardOpts { return hardOpts{key: fmt.Sprintf("label generation g%d", gen)} }
	s := startHard(t, opts(0))
	s.send(t, "/v1/chat/completions", nil, chatBody)
	s.reload(t, opts(1))
	s.client.CloseIdleConnections()
	s.send(t, "/v1/chat/completions", nil, chatBody)
	s.client.CloseIdleConnections()
	before := takeSnapshot()
	const reloads = 10
	for gen := 2; gen < 2+reloads; gen++ {
		s.tally.faults.Add(1)
		s.reload(t, opts(gen))
		s.client.CloseIdleConnections() // the old server closes them; net/http does not retry a POST
		if resp, body := s.send(t, "/v1/chat/completions", nil, chatBody); resp.StatusCode != 200 {
			t.Fatalf("after reload %d: %d %s", gen, resp.StatusCode, body)
		}
	}
	s.client.CloseIdleConnections()
	after := takeSnapshot()
	t.Logf("%d reloads: goroutines %d -> %d, heap %.1f -> %.1f MiB", reloads, before.goroutines, after.goroutines,
		float64(before.heap)/(1<<20), float64(after.heap)/(1<<20))
	if growth := int64(after.heap) - int64(before.heap); growth > 8<<20 {
		t.Errorf("heap grew by %.1f MiB over %d reloads", float64(growth)/(1<<20), reloads)
	}
}

// TestHardeningKeysFileDeletedLogsOnce: a deleted keys file keeps the last good key set in
// service (to revoke them, write an empty list) and is logged once when it goes and once when it
// comes back, not at every check.
func TestHardeningKeysFileDeletedLogsOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.json")
	good := fmt.Sprintf(`{"keys":[{"id":"file-a","secret":%q}]}`, policy.FormatHash(policy.HashSecret("sk-file-a")))
	if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startHard(t, hardOpts{logLevel: "INFO", gateway: "keys_file " + path + "\n\t\t\tkeys_file_interval 10ms"})
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // about 50 checks of the missing file
	if resp, _ := s.send(t, "/v1/chat/completions", map[string]string{"Authorization": "Bearer sk-file-a"}, chatBody); resp.StatusCode != 200 {
		t.Errorf("a key of the deleted file: %d, want the last good set kept", resp.StatusCode)
	}
	if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the file to be readable again", 5*time.Second, func() bool {
		log, _ := os.ReadFile(s.logPath)
		return bytes.Contains(log, []byte("keys file readable again"))
	})
	log, _ := os.ReadFile(s.logPath)
	if n := bytes.Count(log, []byte("keys file not reloaded")); n != 1 {
		t.Errorf("the missing keys file was logged %d times, want once", n)
	}
	if resp, _ := s.send(t, "/v1/chat/completions", map[string]string{"Authorization": "Bearer sk-file-a"}, chatBody); resp.StatusCode != 200 {
		t.Errorf("after the file came back: %d", resp.StatusCode)
	}
}

// TestHardeningLongStreamOutlivesReadTimeout: the server timeouts that cut slow clients off
// (read_body 2s here) do not cut a stream that takes longer: the answer is not a request read.
func TestHardeningLongStreamOutlivesReadTimeout(t *testing.T) {
	s := startHard(t, hardOpts{global: slowTimeouts, sim: simulator.Config{TTFT: 2500 * time.Millisecond}})
	start := time.Now()
	resp, body := s.send(t, "/v1/chat/completions", nil, `{"model":"llama","stream":true,"max_tokens":20,"messages":[{"role":"user","content":"Hi"}]}`)
	if resp.StatusCode != 200 || !strings.HasSuffix(string(body), "data: [DONE]\n\n") || strings.Contains(string(body), `"error"`) {
		t.Fatalf("a %s stream under read_body 2s: %d %s", time.Since(start).Round(time.Millisecond), resp.StatusCode, tail(body))
	}
	if time.Since(start) < 2*time.Second {
		t.Fatalf("the stream took %s, not longer than read_body", time.Since(start))
	}
}
