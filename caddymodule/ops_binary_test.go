package caddymodule_test

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/simulator"
)

// TestBinaryPoolHealth runs the built binary with a pool of one healthy host, one loading (the
// binary's own ai_simulator with fault kind=loading) and one down (a closed port): requests go to
// the healthy host with no added wait, a model with no host left gets 503 model_loading at once
// (lb_try_duration is 5s), and the readiness endpoint flips both ways.
func TestBinaryPoolHealth(t *testing.T) {
	bin := binaryOrSkip(t)
	good := newSwitchUpstream(t)
	gw, loading, closed := freePort(t), freePort(t), freePort(t)
	startBinary(t, bin, writeCaddyfile(t, t.TempDir(), "Caddyfile", fmt.Sprintf(`{
	admin off
	auto_https off
}
:%d {
	ai_gateway {
		key %s {
			id all
		}
		readiness_path /ready
		model pool {
			upstream %s 127.0.0.1:%d 127.0.0.1:%d
			health_check {
				interval 100ms
				timeout 1s
			}
		}
		model gone {
			upstream 127.0.0.1:%d 127.0.0.1:%d
			health_check {
				interval 100ms
			}
		}
	}
	reverse_proxy {
		dynamic ai_gateway
		lb_try_duration 5s
	}
}
:%d {
	bind 127.0.0.1
	ai_simulator {
		fault kind=loading
		error_shape llamacpp
	}
}
`, gw, policy.FormatHash(policy.HashSecret(secretAll)), good.addr(), loading, closed, loading, closed, loading)))
	waitFor(t, "the binary's probes to see the pools", 30*time.Second, func() bool {
		req, _ := http.NewRequest(http.MethodGet, url(gw, "/ready"), nil)
		req.Header.Set("Authorization", "Bearer "+secretAll)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false // not listening yet
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return gjson.GetBytes(body, `models.#(id=="pool").healthy_hosts`).Int() == 1 &&
			gjson.GetBytes(body, `models.#(id=="pool").loading_hosts`).Int() == 1 &&
			gjson.GetBytes(body, `models.#(id=="pool").down_hosts`).Int() == 1 &&
			gjson.GetBytes(body, `models.#(id=="gone").status`).Str == "loading"
	})
	chat := `{"model":"%s","messages":[{"role":"user","content":"hi"}],"max_tokens":2}`

	before := good.served.Load()
	var served []time.Duration
	for i := 0; i < 20; i++ {
		start := time.Now()
		resp, body := sendJSON(t, gw, "/v1/chat/completions", fmt.Sprintf(chat, "pool"))
		served = append(served, time.Since(start))
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
		}
	}
	if n := good.served.Load() - before; n != 20 {
		t.Errorf("the healthy host served %d of 20", n)
	}

	var refused []time.Duration
	for i := 0; i < 50; i++ {
		start := time.Now()
		resp, body := sendJSON(t, gw, "/v1/chat/completions", fmt.Sprintf(chat, "gone"))
		refused = append(refused, time.Since(start))
		if resp.StatusCode != 503 || gjson.GetBytes(body, "error.code").Str != "model_loading" || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("%d %v %s", resp.StatusCode, resp.Header, body)
		}
	}
	p50, p99 := percentiles(served)
	r50, r99 := percentiles(refused)
	t.Logf("served by the healthy host: p50 %s, max %s; 503 model_loading: p50 %s, max %s", p50, p99, r50, r99)
	if r99 > time.Second || p99 > 2*time.Second { // loose: lb_try_duration 5s would show
		t.Errorf("answers waited: served max %s, refused max %s", p99, r99)
	}

	good.loading.Store(true)
	waitFor(t, "readiness to fail", 30*time.Second, func() bool {
		status, _ := readiness(t, gw, "")
		return status == 503
	})
	good.loading.Store(false)
	waitFor(t, "readiness to recover", 30*time.Second, func() bool {
		status, body := readiness(t, gw, "")
		return status == 200 && string(body) == `{"status":"ready"}`
	})
	if resp, body := sendJSON(t, gw, "/v1/chat/completions", fmt.Sprintf(chat, "pool")); resp.StatusCode != 200 {
		t.Errorf("after recovery: %d %s", resp.StatusCode, body)
	}
}

// percentiles returns the median and the largest of ds.
func percentiles(ds []time.Duration) (p50, max time.Duration) {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2], s[len(s)-1]
}

// TestBinaryTokenizerUpstream runs the built binary with tokenizer upstream against the
// simulator's /tokenize: counts equal the simulator's, the bound skips the call for short
// prompts, a dead endpoint falls back to the estimate.
func TestBinaryTokenizerUpstream(t *testing.T) {
	bin := binaryOrSkip(t)
	up := newUpstream(t, simulator.Config{})
	gw, closed := freePort(t), freePort(t)
	startBinary(t, bin, writeCaddyfile(t, t.TempDir(), "Caddyfile", fmt.Sprintf(`{
	admin off
	auto_https off
}
:%d {
	ai_gateway {
%s
%s
	}
	reverse_proxy {
		dynamic ai_gateway
	}
}
`, gw, keyAll, tokenizerModels(up.addr(), fmt.Sprintf("127.0.0.1:%d", closed)))))
	waitFor(t, "the binary to answer", 30*time.Second, func() bool {
		req, _ := http.NewRequest(http.MethodGet, url(gw, "/v1/models"), nil)
		req.Header.Set("Authorization", "Bearer "+secretAll)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	tokenizeCalls := func() int {
		n := 0
		for _, r := range up.requests() {
			if r.Path == "/tokenize" {
				n++
			}
		}
		return n
	}
	if resp, body := sendJSON(t, gw, "/v1/chat/completions", `{"model":"tok","messages":[{"role":"user","content":"hi"}],"max_tokens":2}`); resp.StatusCode != 200 || tokenizeCalls() != 0 {
		t.Errorf("short prompt: %d %s; %d /tokenize calls", resp.StatusCode, body, tokenizeCalls())
	}
	msgs := `"system":"Answer in French.","messages":[{"role":"user","content":"` + strings.Repeat("What is the capital of France? ", 20) + `"}]`
	for _, model := range []string{"tok", "tgi"} {
		before := tokenizeCalls()
		resp, body := sendJSON(t, gw, "/v1/messages/count_tokens", `{"model":"`+model+`",`+msgs+`}`)
		counted := gjson.GetBytes(body, "input_tokens").Int()
		if resp.StatusCode != 200 || tokenizeCalls() == before {
			t.Fatalf("%s count_tokens: %d %s", model, resp.StatusCode, body)
		}
		resp, body = sendJSON(t, gw, "/v1/messages", `{"model":"`+model+`","max_tokens":2,`+msgs+`}`)
		if billed := gjson.GetBytes(body, "usage.input_tokens").Int(); resp.StatusCode != 200 || billed != counted {
			t.Errorf("%s: counted %d, the simulator billed %d", model, counted, billed)
		}
	}
	resp, body := sendJSON(t, gw, "/v1/messages/count_tokens", `{"model":"dead",`+msgs+`}`)
	if n := gjson.GetBytes(body, "input_tokens").Int(); resp.StatusCode != 200 || n < 100 {
		t.Errorf("dead endpoint: %d %s", resp.StatusCode, body)
	}
}
