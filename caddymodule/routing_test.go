package caddymodule_test

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/caddyai/gateway/internal/wiretest"
	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/simulator"
)

func routingConfig(port int, models, proxy string) string {
	return globalOptions + fmt.Sprintf(`
:%d {
	ai_gateway {
		key %s {
			id all
		}
		%s
	}
	reverse_proxy {
		dynamic ai_gateway
		%s
	}
}
`, port, policy.FormatHash(policy.HashSecret(secretAll)), models, proxy)
}

// TestAdmissionQueueOverload: max_concurrent 4, queue 8: of 40 simultaneous requests exactly 12
// are served and 28 get 503 model_overloaded with Retry-After.
func TestAdmissionQueueOverload(t *testing.T) {
	up := newUpstream(t, simulator.Config{TTFT: time.Second})
	port := freePort(t)
	startCaddy(t, routingConfig(port, fmt.Sprintf(`model demo-llama {
			alias llama
			upstream %s
			max_concurrent 4
			queue 8 30s
		}`, up.addr()), ""))
	s := &usageSetup{port: port, upstream: up}
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path, body := "/v1/chat/completions", chatBody
			if i%10 == 0 {
				path, body = "/v1/messages", `{"model":"llama","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`
			}
			resp, b := s.do(t, path, "", body)
			mu.Lock()
			codes[resp.StatusCode]++
			mu.Unlock()
			switch resp.StatusCode {
			case 200:
			case 503:
				wiretest.Validate(t, "ErrorResponse", b)
				if gjson.GetBytes(b, "error.code").Str != "model_overloaded" {
					t.Errorf("503 body %s", b)
				}
			case 529:
				if gjson.GetBytes(b, "error.type").Str != "overloaded_error" {
					t.Errorf("529 body %s", b)
				}
			default:
				t.Errorf("status %d: %s", resp.StatusCode, b)
			}
			if resp.StatusCode >= 500 {
				if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 {
					t.Errorf("Retry-After %q", resp.Header.Get("Retry-After"))
				}
			}
		}()
	}
	wg.Wait()
	if codes[200] != 12 || codes[503]+codes[529] != 28 {
		t.Errorf("status mix %v, want 12 served and 28 overloaded", codes)
	}
	if n := len(up.requests()); n != 12 {
		t.Errorf("upstream saw %d requests", n)
	}
}

// TestUpstreamDownAndRecovery: no reachable host is a 503 model_unavailable with Retry-After
// in the envelope; when the host comes back, requests succeed again.
func TestUpstreamDownAndRecovery(t *testing.T) {
	deadPort := freePort(t)
	dead := fmt.Sprintf("127.0.0.1:%d", deadPort)
	port := freePort(t)
	startCaddy(t, routingConfig(port, fmt.Sprintf(`model demo-llama {
			alias llama
			upstream %s
		}`, dead), ""))
	s := &usageSetup{port: port}
	resp, body := s.do(t, "/v1/chat/completions", "", chatBody)
	if resp.StatusCode != 503 || gjson.GetBytes(body, "error.code").Str != "model_unavailable" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("%d %s %v", resp.StatusCode, body, resp.Header)
	}
	wiretest.Validate(t, "ErrorResponse", body)
	resp, body = s.do(t, "/v1/messages", "", `{"model":"llama","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != 529 || gjson.GetBytes(body, "error.type").Str != "overloaded_error" {
		t.Errorf("anthropic: %d %s", resp.StatusCode, body)
	}
	// the host comes back on the same address
	sim, err := simulator.New(simulator.Config{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", dead)
	if err != nil {
		t.Fatal(err)
	}
	srv := &httptest.Server{Listener: l, Config: &http.Server{Handler: sim}}
	srv.Start()
	defer srv.Close()
	waitFor(t, "recovery", 10*time.Second, func() bool {
		resp, _ := s.do(t, "/v1/chat/completions", "", chatBody)
		return resp.StatusCode == 200
	})
}

// TestModelFallback: a model whose pool is down falls back to the next model; the response says
// which model answered and which one it stood in for.
func TestModelFallback(t *testing.T) {
	up := newUpstream(t, simulator.Config{})
	dead := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	port := freePort(t)
	startCaddy(t, routingConfig(port, fmt.Sprintf(`model big-model {
			alias big
			upstream %s
			fallback small-model
		}
		model small-model {
			upstream %s
		}`, dead, up.addr()), ""))
	s := &usageSetup{port: port, upstream: up}
	for _, body := range []string{
		`{"model":"big","messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"big","stream":true,"messages":[{"role":"user","content":"hi"}]}`,
	} {
		resp, b := s.do(t, "/v1/chat/completions", "", body)
		if resp.StatusCode != 200 || resp.Header.Get("X-Gateway-Fallback") != "big-model" || !strings.Contains(string(b), `"model":"small-model"`) {
			t.Errorf("%d %v %s", resp.StatusCode, resp.Header, b)
		}
	}
	seen := up.requests()
	if len(seen) != 2 || gjson.GetBytes(seen[0].Body, "model").Str != "small-model" {
		t.Errorf("upstream saw %d requests: %s", len(seen), seen[0].Body)
	}
	// an overloaded upstream (503) also falls back
	resp, b := s.do(t, "/v1/chat/completions", "", `{"model":"small-model","messages":[{"role":"user","content":"hi"}]}`, "X-Sim-Fault", "kind=overloaded")
	if resp.StatusCode != 503 {
		t.Errorf("a model without fallback: %d %s", resp.StatusCode, b)
	}
}

// TestLeastLoadAvoidsSlowHost: three simulated GPU hosts of different speeds under concurrent
// load; with ai_least_load the slow host receives measurably fewer tokens than with round_robin.
func TestLeastLoadAvoidsSlowHost(t *testing.T) {
	share := map[string]float64{}
	for _, policyName := range []string{"round_robin", "ai_least_load"} {
		t.Run(policyName, func(t *testing.T) {
			slow := newUpstream(t, simulator.Config{TTFT: 240 * time.Millisecond})
			mid := newUpstream(t, simulator.Config{TTFT: 60 * time.Millisecond})
			fast := newUpstream(t, simulator.Config{TTFT: 15 * time.Millisecond})
			port := freePort(t)
			startCaddy(t, routingConfig(port, fmt.Sprintf(`model demo-llama {
			alias llama
			upstream %s %s %s
		}`, slow.addr(), mid.addr(), fast.addr()), "lb_policy "+policyName))
			s := &usageSetup{port: port}
			var wg sync.WaitGroup
			work := make(chan int)
			for w := 0; w < 9; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range work {
						if resp, b := s.do(t, "/v1/chat/completions", "", chatBody); resp.StatusCode != 200 {
							t.Errorf("%d %s", resp.StatusCode, b)
						}
					}
				}()
			}
			for i := 0; i < 90; i++ {
				work <- i
			}
			close(work)
			wg.Wait()
			tokens := func(u *recordingUpstream) float64 {
				st := u.sim.Stats()
				return float64(st.PromptTokens + st.CompletionTokens)
			}
			total := tokens(slow) + tokens(mid) + tokens(fast)
			share[policyName] = tokens(slow) / total
			t.Logf("%s: tokens slow %.0f, mid %.0f, fast %.0f (slow share %.2f)", policyName, tokens(slow), tokens(mid), tokens(fast), share[policyName])
		})
	}
	if share["ai_least_load"] >= share["round_robin"]*0.75 {
		t.Errorf("slow host share: ai_least_load %.2f vs round_robin %.2f", share["ai_least_load"], share["round_robin"])
	}
}
