package caddymodule_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/caddyai/gateway/internal/wiretest"
	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/simulator"
)

// switchUpstream is a model server that can be switched between serving and loading its model
// (a llama.cpp server restarting: /health 503 "Loading model"), counting the requests that
// reached it other than probes.
type switchUpstream struct {
	*httptest.Server
	loading atomic.Bool
	stalled atomic.Bool // /health never answers
	served  atomic.Int64
}

func newSwitchUpstream(t testing.TB) *switchUpstream {
	t.Helper()
	ok, err := simulator.New(simulator.Config{})
	if err != nil {
		t.Fatal(err)
	}
	loading, err := simulator.New(simulator.Config{Fault: "kind=loading", ErrorShape: simulator.ShapeLlamaCpp})
	if err != nil {
		t.Fatal(err)
	}
	u := &switchUpstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" {
			u.served.Add(1)
		} else if u.stalled.Load() {
			<-r.Context().Done()
			return
		}
		if u.loading.Load() {
			loading.ServeHTTP(w, r)
			return
		}
		ok.ServeHTTP(w, r)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *switchUpstream) addr() string { return strings.TrimPrefix(u.URL, "http://") }

// sendJSON posts body to the gateway with the test key and returns the answer.
func sendJSON(t testing.TB, port int, path, body string, headers ...string) (*http.Response, []byte) {
	t.Helper()
	req := jsonRequest(t, port, path, secretAll, body)
	if strings.HasPrefix(path, "/v1/messages") {
		req.Header.Set("Anthropic-Version", "2023-06-01")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return doRequest(t, req)
}

// readiness GETs the readiness endpoint, with the key when key is set.
func readiness(t testing.TB, port int, key string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url(port, "/ready"), nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, body := doRequest(t, req)
	return resp.StatusCode, body
}

// TestPoolHealth: with one host healthy, one loading and one down, requests go to the healthy
// one only and at once; a model with no host left is answered 503 model_loading (529 on the
// Anthropic surface) without the proxy's lb_try_duration, or by its fallback; the readiness
// endpoint says so and flips both ways.
func TestPoolHealth(t *testing.T) {
	good := newSwitchUpstream(t)
	loading := newUpstream(t, simulator.Config{Fault: "kind=loading", ErrorShape: simulator.ShapeLlamaCpp})
	closed := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	port := freePort(t)
	startCaddy(t, gatewaySite(port, keyAll+fmt.Sprintf(`
readiness_path /ready
model pool {
	upstream %s %s %s
	health_check {
		interval 50ms
		timeout 500ms
	}
}
model gone {
	upstream %s %s
	health_check /health {
		interval 50ms
	}
}
model rescued {
	upstream %s
	health_check
	fallback pool
}`, good.addr(), loading.addr(), closed, loading.addr(), closed, closed), "lb_try_duration 5s"))

	waitFor(t, "the probes to see the pools", 10*time.Second, func() bool {
		_, body := readiness(t, port, secretAll)
		return gjson.GetBytes(body, `models.#(id=="pool").healthy_hosts`).Int() == 1 &&
			gjson.GetBytes(body, `models.#(id=="pool").loading_hosts`).Int() == 1 &&
			gjson.GetBytes(body, `models.#(id=="pool").down_hosts`).Int() == 1 &&
			gjson.GetBytes(body, `models.#(id=="gone").status`).Str == "loading" &&
			gjson.GetBytes(body, `models.#(id=="rescued").status`).Str == "unavailable"
	})

	chat := `{"model":"%s","messages":[{"role":"user","content":"hi"}],"max_tokens":2}`
	t.Run("requests go to the healthy host", func(t *testing.T) {
		before := good.served.Load()
		for i := 0; i < 10; i++ {
			start := time.Now()
			resp, body := sendJSON(t, port, "/v1/chat/completions", fmt.Sprintf(chat, "pool"))
			if resp.StatusCode != 200 {
				t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("request %d took %s: it waited for an unavailable host", i, d)
			}
		}
		if n := good.served.Load() - before; n != 10 {
			t.Errorf("the healthy host served %d of 10", n)
		}
		for _, r := range loading.requests() {
			if r.Path != "/health" {
				t.Errorf("the loading host got %s", r.Path)
			}
		}
	})
	t.Run("no host left: an answer at once", func(t *testing.T) {
		start := time.Now()
		resp, body := sendJSON(t, port, "/v1/chat/completions", fmt.Sprintf(chat, "gone"))
		elapsed := time.Since(start)
		if resp.StatusCode != 503 || gjson.GetBytes(body, "error.code").Str != "model_loading" || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("%d %v %s", resp.StatusCode, resp.Header, body)
		}
		if elapsed > time.Second { // lb_try_duration is 5s: this is no proxy retry loop
			t.Errorf("the refusal took %s", elapsed)
		}
		t.Logf("503 model_loading in %s", elapsed)
		resp, body = sendJSON(t, port, "/v1/messages", `{"model":"gone","max_tokens":2,"messages":[{"role":"user","content":"hi"}]}`)
		if resp.StatusCode != 529 || gjson.GetBytes(body, "error.type").Str != "overloaded_error" {
			t.Errorf("anthropic: %d %s", resp.StatusCode, body)
		}
	})
	t.Run("the fallback answers", func(t *testing.T) {
		resp, body := sendJSON(t, port, "/v1/chat/completions", fmt.Sprintf(chat, "rescued"))
		if resp.StatusCode != 200 || resp.Header.Get("X-Gateway-Fallback") != "rescued" || gjson.GetBytes(body, "model").Str != "pool" {
			t.Errorf("%d %v %s", resp.StatusCode, resp.Header, body)
		}
	})
	t.Run("readiness without a key says nothing more", func(t *testing.T) {
		s := &usageSetup{port: port}
		served := map[string]string{"model": "", "code": "200"}
		before := s.metric(t, "caddy_ai_gateway_requests_total", served)
		status, body := readiness(t, port, "")
		if after := s.metric(t, "caddy_ai_gateway_requests_total", served); after != before {
			t.Errorf("a readiness probe was counted as a request: %v -> %v", before, after)
		}
		if status != 200 || string(body) != `{"status":"ready"}` {
			t.Errorf("%d %s", status, body)
		}
		if status, body := readiness(t, port, "sk-wrong"); status != 401 {
			t.Errorf("a wrong key: %d %s", status, body)
		}
		req, _ := http.NewRequest(http.MethodPost, url(port, "/ready"), nil)
		if resp, _ := doRequest(t, req); resp.StatusCode != 405 {
			t.Errorf("POST: %d", resp.StatusCode)
		}
	})
	t.Run("metrics", func(t *testing.T) {
		s := &usageSetup{port: port}
		if got := s.metric(t, "caddy_ai_gateway_upstream_hosts", map[string]string{"model": "pool", "state": "loading"}); got != 1 {
			t.Errorf("upstream_hosts{pool,loading} = %v", got)
		}
	})
	t.Run("readiness flips both ways", func(t *testing.T) {
		good.loading.Store(true)
		waitFor(t, "readiness to fail", 10*time.Second, func() bool {
			status, _ := readiness(t, port, "")
			return status == 503
		})
		if _, body := readiness(t, port, ""); string(body) != `{"status":"unavailable"}` {
			t.Errorf("%s", body)
		}
		resp, body := sendJSON(t, port, "/v1/chat/completions", fmt.Sprintf(chat, "pool"))
		if resp.StatusCode != 503 || gjson.GetBytes(body, "error.code").Str != "model_loading" {
			t.Errorf("%d %s", resp.StatusCode, body)
		}
		good.loading.Store(false)
		waitFor(t, "readiness to recover", 10*time.Second, func() bool {
			status, _ := readiness(t, port, "")
			return status == 200
		})
		if resp, body := sendJSON(t, port, "/v1/chat/completions", fmt.Sprintf(chat, "pool")); resp.StatusCode != 200 {
			t.Errorf("after recovery: %d %s", resp.StatusCode, body)
		}
	})
}

// tokenizerModels are the models of the tokenizer upstream tests: tok and tgi on upstream (the
// simulator's /tokenize, two dialects), dead on a closed port.
func tokenizerModels(upstream, closed string) string {
	return fmt.Sprintf(`model tok {
	upstream %s
	tokenizer upstream
	context_window 4096
}
model tgi {
	upstream %s
	tokenizer upstream tgi
}
model dead {
	upstream %s
	tokenizer upstream llamacpp
}`, upstream, upstream, closed)
}

// TestTokenizerUpstream: tokenizer upstream counts with the model server's /tokenize, only when
// the byte bound cannot prove the request fits; its counts are the server's; a dead endpoint
// falls back to the estimate and is counted.
func TestTokenizerUpstream(t *testing.T) {
	up := newUpstream(t, simulator.Config{})
	closed := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	port := freePort(t)
	startCaddy(t, gatewaySite(port, keyAll+"\n"+tokenizerModels(up.addr(), closed), ""))
	tokenizeCalls := func() int {
		n := 0
		for _, r := range up.requests() {
			if r.Path == "/tokenize" {
				n++
			}
		}
		return n
	}
	t.Run("the bound skips the call for a short prompt", func(t *testing.T) {
		resp, body := sendJSON(t, port, "/v1/chat/completions", `{"model":"tok","messages":[{"role":"user","content":"hi"}],"max_tokens":2}`)
		if resp.StatusCode != 200 || tokenizeCalls() != 0 {
			t.Errorf("%d %s; %d /tokenize calls", resp.StatusCode, body, tokenizeCalls())
		}
	})
	t.Run("a prompt the bound cannot prove to fit is counted upstream", func(t *testing.T) {
		long := strings.Repeat("hello ", 1000) // ~6000 bytes: the bound is over 4096, 1000 tokens are not
		resp, body := sendJSON(t, port, "/v1/chat/completions", `{"model":"tok","messages":[{"role":"user","content":"`+long+`"}],"max_tokens":2}`)
		if resp.StatusCode != 200 || tokenizeCalls() == 0 {
			t.Fatalf("%d %s; %d /tokenize calls", resp.StatusCode, body, tokenizeCalls())
		}
		simPrompt := gjson.GetBytes(body, "usage.prompt_tokens").Int()
		over := strings.Repeat("hello ", 5000)
		resp, body = sendJSON(t, port, "/v1/chat/completions", `{"model":"tok","messages":[{"role":"user","content":"`+over+`"}],"max_tokens":2}`)
		if resp.StatusCode != 413 || !strings.Contains(gjson.GetBytes(body, "error.message").Str, " 5") {
			t.Errorf("over the window: %d %s", resp.StatusCode, body)
		}
		t.Logf("1000 x hello: the simulator billed %d prompt tokens", simPrompt)
	})
	t.Run("counts equal the simulator's", func(t *testing.T) {
		msgs := `"system":"You are terse.","messages":[{"role":"user","content":"naïve café — 東京 🚀 and some more words"},{"role":"assistant","content":"ok"},{"role":"user","content":"again"}]`
		for _, model := range []string{"tok", "tgi"} {
			before := tokenizeCalls()
			resp, body := sendJSON(t, port, "/v1/messages/count_tokens", `{"model":"`+model+`",`+msgs+`}`)
			counted := gjson.GetBytes(body, "input_tokens").Int()
			if resp.StatusCode != 200 || counted == 0 || tokenizeCalls() == before {
				t.Fatalf("%s count_tokens: %d %s", model, resp.StatusCode, body)
			}
			resp, body = sendJSON(t, port, "/v1/messages", `{"model":"`+model+`","max_tokens":2,`+msgs+`}`)
			if billed := gjson.GetBytes(body, "usage.input_tokens").Int(); resp.StatusCode != 200 || billed != counted {
				t.Errorf("%s: counted %d, the simulator billed %d (%d %s)", model, counted, billed, resp.StatusCode, body)
			}
		}
	})
	t.Run("a dead endpoint falls back to the estimate", func(t *testing.T) {
		s := &usageSetup{port: port}
		before := s.metric(t, "caddy_ai_gateway_tokenize_fallbacks_total", map[string]string{"model": "dead"})
		start := time.Now()
		resp, body := sendJSON(t, port, "/v1/messages/count_tokens", `{"model":"dead","messages":[{"role":"user","content":"Hello there"}]}`)
		if resp.StatusCode != 200 || gjson.GetBytes(body, "input_tokens").Int() < 8 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		if after := s.metric(t, "caddy_ai_gateway_tokenize_fallbacks_total", map[string]string{"model": "dead"}); after <= before {
			t.Errorf("fallbacks %v -> %v", before, after)
		}
		t.Logf("count_tokens with a dead /tokenize: %s", time.Since(start))
	})
}

// TestCountTokensWhateverTheWindow: count_tokens gives the count of a prompt over the window
// (a client trimming its prompt needs the number), while the same prompt sent is refused.
func TestCountTokensWhateverTheWindow(t *testing.T) {
	up := newUpstream(t, simulator.Config{})
	port := freePort(t)
	startCaddy(t, globalOptions+fmt.Sprintf(`
:%d {
	ai_gateway {
		key %s {
			id all
		}
		model small {
			upstream %s
			context_window 16
		}
	}
	reverse_proxy {
		dynamic ai_gateway
	}
}
`, port, policy.FormatHash(policy.HashSecret(secretAll)), up.addr()))
	msgs := `"messages":[{"role":"user","content":"` + strings.Repeat("hello ", 40) + `"}]`
	resp, body := sendJSON(t, port, "/v1/messages/count_tokens", `{"model":"small",`+msgs+`}`)
	if resp.StatusCode != 200 || gjson.GetBytes(body, "input_tokens").Int() <= 16 {
		t.Errorf("count_tokens: %d %s", resp.StatusCode, body)
	}
	if resp, body := sendJSON(t, port, "/v1/messages", `{"model":"small","max_tokens":4,`+msgs+`}`); resp.StatusCode != 413 {
		t.Errorf("messages: %d %s", resp.StatusCode, body)
	}
}

// TestUpstreamOverflowFollowsContextStatus: with context_status 400 an upstream's context
// overflow is 400 on both surfaces, as the gateway's own refusal is.
func TestUpstreamOverflowFollowsContextStatus(t *testing.T) {
	up := newUpstream(t, simulator.Config{})
	port := freePort(t)
	startCaddy(t, globalOptions+fmt.Sprintf(`
:%d {
	ai_gateway {
		key %s {
			id all
		}
		context_status 400
		model m {
			upstream %s
			context_window 8
		}
		model upstream-checked {
			upstream %s
		}
	}
	reverse_proxy {
		dynamic ai_gateway
	}
}
`, port, policy.FormatHash(policy.HashSecret(secretAll)), up.addr(), up.addr()))
	own, ownBody := sendJSON(t, port, "/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"`+strings.Repeat("hello ", 20)+`"}]}`)
	theirs, theirBody := sendJSON(t, port, "/v1/chat/completions", `{"model":"upstream-checked","messages":[{"role":"user","content":"hi"}]}`,
		"X-Sim-Fault", "kind=context;shape=vllm")
	if own.StatusCode != 400 || theirs.StatusCode != 400 || gjson.GetBytes(theirBody, "error.code").Str != "context_length_exceeded" ||
		gjson.GetBytes(theirBody, "error.param").Str != gjson.GetBytes(ownBody, "error.param").Str {
		t.Errorf("own %d %s\nupstream's %d %s", own.StatusCode, ownBody, theirs.StatusCode, theirBody)
	}
	resp, body := sendJSON(t, port, "/v1/messages", `{"model":"upstream-checked","max_tokens":4,"messages":[{"role":"user","content":"hi"}]}`,
		"X-Sim-Fault", "kind=context")
	if resp.StatusCode != 400 || gjson.GetBytes(body, "error.type").Str != "invalid_request_error" {
		t.Errorf("anthropic: %d %s", resp.StatusCode, body)
	}
}

// TestImagesThroughTheGateway: the simulator's images endpoint answers through the gateway in
// both forms, valid against the OpenAI spec, with its usage read.
func TestImagesThroughTheGateway(t *testing.T) {
	s := startUsage(t, simulator.Config{})
	for _, format := range []string{"b64_json", "url"} {
		resp, body := s.do(t, "/v1/images/generations", "", `{"model":"llama","prompt":"a lighthouse","size":"128x128","response_format":"`+format+`"}`)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", format, resp.StatusCode, body)
		}
		wiretest.Validate(t, "ImagesResponse", body)
		if format == "url" && !strings.HasPrefix(gjson.GetBytes(body, "data.0.url").Str, "data:image/png;base64,") {
			t.Errorf("url: %.200s", body)
		}
		if resp.Header.Get("X-Usage-Completion-Tokens") != "4" { // 128x128: four 64x64 tiles
			t.Errorf("%s: usage headers %v", format, resp.Header)
		}
	}
}

// TestPoolHealthSurvivesReload: what the probes found is kept across a config reload; the new
// config does not start from "not probed yet" (which would route to a loading host).
func TestPoolHealthSurvivesReload(t *testing.T) {
	host := newSwitchUpstream(t)
	host.loading.Store(true)
	port := freePort(t)
	cf := globalOptions + fmt.Sprintf(`
:%d {
	ai_gateway {
		key %s {
			id all
		}
		readiness_path /ready
		model m {
			upstream %s
			health_check {
				interval 50ms
				timeout 5s
			}
		}
	}
	reverse_proxy {
		dynamic ai_gateway
	}
}
`, port, policy.FormatHash(policy.HashSecret(secretAll)), host.addr())
	startCaddy(t, cf)
	waitFor(t, "the host to be seen loading", 10*time.Second, func() bool {
		status, _ := readiness(t, port, "")
		return status == 503
	})
	host.stalled.Store(true) // the new config's first probe will not answer for 5s
	defer host.stalled.Store(false)
	loadCaddy(t, cf)
	if status, body := readiness(t, port, secretAll); status != 503 || gjson.GetBytes(body, "models.0.loading_hosts").Int() != 1 {
		t.Errorf("after a reload: %d %s", status, body)
	}
	if resp, body := sendJSON(t, port, "/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`); resp.StatusCode != 503 ||
		gjson.GetBytes(body, "error.code").Str != "model_loading" {
		t.Errorf("after a reload: %d %s", resp.StatusCode, body)
	}
}
