package caddymodule_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/redis/go-redis/v9"
	"github.com/tidwall/gjson"

	"github.com/caddyai/gateway/internal/testredis"
	"github.com/caddyai/gateway/internal/wiretest"
	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/ratelimit"
	"github.com/caddyai/gateway/simulator"
)

// limitsConfig is a gateway whose key "limited" has the given key-block limit lines.
func limitsConfig(port int, upstream, keyLimits, rateLimit string) string {
	return gatewaySite(port, fmt.Sprintf(`key %s {
	id limited
	%s
}
model demo-llama {
	alias llama
	context_window 8192
	upstream %s
}
%s`, policy.FormatHash(policy.HashSecret(secretAll)), keyLimits, upstream, rateLimit), "")
}

func startLimits(t *testing.T, keyLimits, rateLimit string) *usageSetup {
	t.Helper()
	up := newUpstream(t, simulator.Config{})
	port := freePort(t)
	startCaddy(t, limitsConfig(port, up.addr(), keyLimits, rateLimit))
	return &usageSetup{port: port, upstream: up}
}

func TestRequestLimitHeadersAnd429(t *testing.T) {
	s := startLimits(t, "rpm 3", "")
	for i := 0; i < 3; i++ {
		resp, body := s.do(t, "/v1/chat/completions", "", chatBody)
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
		}
		if resp.Header.Get("X-Ratelimit-Limit-Requests") != "3" || resp.Header.Get("X-Ratelimit-Remaining-Requests") != strconv.Itoa(2-i) {
			t.Errorf("request %d headers: limit %q remaining %q", i, resp.Header.Get("X-Ratelimit-Limit-Requests"), resp.Header.Get("X-Ratelimit-Remaining-Requests"))
		}
		if _, err := time.ParseDuration(resp.Header.Get("X-Ratelimit-Reset-Requests")); err != nil {
			t.Errorf("reset %q: %v", resp.Header.Get("X-Ratelimit-Reset-Requests"), err)
		}
	}
	before := len(s.upstream.requests())
	resp, body := s.do(t, "/v1/chat/completions", "", chatBody)
	if resp.StatusCode != 429 {
		t.Fatalf("4th request: %d %s", resp.StatusCode, body)
	}
	if len(s.upstream.requests()) != before {
		t.Error("a refused request reached the upstream")
	}
	e := decodeJSON(t, body)["error"].(map[string]any)
	if e["type"] != "requests" || e["code"] != "rate_limit_exceeded" || !strings.Contains(e["message"].(string), "Please try again in") {
		t.Errorf("error %v", e)
	}
	ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	ms, err2 := strconv.Atoi(resp.Header.Get("Retry-After-Ms"))
	// rpm 3 refills one request every 20s: the wait is for one request, never the whole window
	if err != nil || err2 != nil || ra < 1 || ra > 20 || ms > 20000 || ms < 19000 {
		t.Errorf("Retry-After %q, retry-after-ms %q", resp.Header.Get("Retry-After"), resp.Header.Get("Retry-After-Ms"))
	}
	if resp.Header.Get("X-Should-Retry") != "" {
		t.Error("a 20s wait must not forbid retries")
	}
	// the body says it too, for clients that read only the body; the envelope stays the spec's
	if got, ok := e["retry_after"].(float64); !ok || int(got) != ra {
		t.Errorf("error.retry_after %v, want the Retry-After header's %d", e["retry_after"], ra)
	}
	wiretest.Validate(t, "ErrorResponse", body)
	// and the official SDK reads the 429 as an API error with its status, type and code
	client := openai.NewClient(option.WithBaseURL(url(s.port, "/v1")), option.WithAPIKey(secretAll), option.WithMaxRetries(0))
	_, sdkErr := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model: "llama", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}})
	var apiErr *openai.Error
	if !errors.As(sdkErr, &apiErr) || apiErr.StatusCode != 429 || apiErr.Code != "rate_limit_exceeded" || apiErr.Type != "requests" {
		t.Errorf("openai-go on a 429 with retry_after: %v", sdkErr)
	}

	resp, body = s.do(t, "/v1/messages", "", `{"model":"llama","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != 429 || !strings.Contains(string(body), `"rate_limit_error"`) || resp.Header.Get("Anthropic-Ratelimit-Requests-Limit") != "3" {
		t.Errorf("anthropic: %d %s %v", resp.StatusCode, body, resp.Header)
	}
	if _, err := time.Parse(time.RFC3339, resp.Header.Get("Anthropic-Ratelimit-Requests-Reset")); err != nil {
		t.Errorf("anthropic reset: %v", err)
	}
}

func TestDailyLimitSaysDoNotRetry(t *testing.T) {
	s := startLimits(t, "rpd 1", "")
	if resp, _ := s.do(t, "/v1/chat/completions", "", chatBody); resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	resp, _ := s.do(t, "/v1/chat/completions", "", chatBody)
	if resp.StatusCode != 429 || resp.Header.Get("X-Should-Retry") != "false" {
		t.Errorf("%d x-should-retry %q", resp.StatusCode, resp.Header.Get("X-Should-Retry"))
	}
}

// TestTokenLimitUnderConcurrency: 200 parallel requests against tpm 1000 admit no more than 1000
// tokens of actual usage (plus what refills while the test runs and one request's estimate).
func TestTokenLimitUnderConcurrency(t *testing.T) {
	for _, store := range []string{"memory", "redis"} {
		t.Run(store, func(t *testing.T) {
			rl := ""
			if store == "redis" {
				addr, stop := testredis.Start(t)
				defer stop()
				rl = "rate_limit {\n\tstore redis redis://" + addr + "/0\n\tredis_prefix " + t.Name() + ":\n}"
			}
			s := startLimits(t, "tpm 1000", rl)
			start := time.Now()
			var admitted, refused, tokensUsed, maxReq atomic.Int64
			var wg sync.WaitGroup
			for i := 0; i < 200; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					resp, body := s.do(t, "/v1/chat/completions", "", chatBody)
					switch resp.StatusCode {
					case 200:
						admitted.Add(1)
						n, _ := strconv.ParseInt(resp.Header.Get("X-Usage-Total-Tokens"), 10, 64)
						tokensUsed.Add(n)
						if n+10 > maxReq.Load() {
							maxReq.Store(n + 10)
						}
					case 429:
						refused.Add(1)
					default:
						t.Errorf("status %d: %s", resp.StatusCode, body)
					}
				}()
			}
			wg.Wait()
			refill := int64(time.Since(start).Seconds()*1000/60) + 1
			limit := 1000 + refill + maxReq.Load()
			t.Logf("%s: %d admitted, %d refused, %d tokens used (bound %d)", store, admitted.Load(), refused.Load(), tokensUsed.Load(), limit)
			if tokensUsed.Load() > limit || admitted.Load() == 0 || refused.Load() == 0 {
				t.Errorf("admitted %d requests using %d tokens; bound %d", admitted.Load(), tokensUsed.Load(), limit)
			}
		})
	}
}

func TestReloadKeepsLimiterState(t *testing.T) {
	up := newUpstream(t, simulator.Config{})
	port := freePort(t)
	startCaddy(t, limitsConfig(port, up.addr(), "rpm 5", ""))
	s := &usageSetup{port: port, upstream: up}
	for i := 0; i < 3; i++ {
		if resp, _ := s.do(t, "/v1/chat/completions", "", chatBody); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
	}
	// reload in the middle of the window (a changed unrelated setting forces a new config)
	loadCaddy(t, limitsConfig(port, up.addr(), "rpm 5\n\t\t\t\tlabel reloaded yes", ""))
	ok := 0
	for i := 0; i < 4; i++ {
		if resp, _ := s.do(t, "/v1/chat/completions", "", chatBody); resp.StatusCode == 200 {
			ok++
		}
	}
	if ok != 2 {
		t.Errorf("after reload %d requests admitted, want the remaining 2", ok)
	}
}

func TestMaxConcurrentPerKey(t *testing.T) {
	up := newUpstream(t, simulator.Config{TTFT: 300 * time.Millisecond})
	port := freePort(t)
	startCaddy(t, limitsConfig(port, up.addr(), "max_concurrent 2", ""))
	s := &usageSetup{port: port, upstream: up}
	var wg sync.WaitGroup
	codes := make(chan int, 6)
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, _ := s.do(t, "/v1/chat/completions", "", chatBody)
			codes <- resp.StatusCode
			if resp.StatusCode == 429 && resp.Header.Get("Retry-After") == "" {
				t.Error("concurrency 429 without Retry-After")
			}
		}()
	}
	wg.Wait()
	close(codes)
	n200 := 0
	for c := range codes {
		if c == 200 {
			n200++
		}
	}
	if n200 < 2 || n200 > 4 {
		t.Errorf("%d of 6 simultaneous requests admitted with max_concurrent 2", n200)
	}
	// slots are released: the next request goes through
	if resp, _ := s.do(t, "/v1/chat/completions", "", chatBody); resp.StatusCode != 200 {
		t.Errorf("slot not released: %d", resp.StatusCode)
	}
}

func TestRedisOutage(t *testing.T) {
	srv := testredis.StartServer(t)
	for _, mode := range []string{"allow", "deny"} {
		t.Run(mode, func(t *testing.T) {
			rl := fmt.Sprintf("rate_limit {\n\tstore redis redis://%s/0\n\tredis_prefix %s:\n\ton_store_error %s\n}", srv.Addr(), t.Name(), mode)
			s := startLimits(t, "rpm 4", rl)
			for i := 0; i < 2; i++ {
				if resp, body := s.do(t, "/v1/chat/completions", "", chatBody); resp.StatusCode != 200 {
					t.Fatalf("%d %s", resp.StatusCode, body)
				}
			}
			srv.Kill()
			resp, body := s.do(t, "/v1/chat/completions", "", chatBody)
			switch mode {
			case "allow":
				if resp.StatusCode != 200 {
					t.Errorf("allow: %d %s", resp.StatusCode, body)
				}
			case "deny":
				if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
					t.Errorf("deny: %d %s", resp.StatusCode, body)
				}
			}
			srv.Restart()
			// sharing resumes: Redis still holds the 2 requests taken before the outage
			waitFor(t, "the limiter to use Redis again", 10*time.Second, func() bool {
				resp, _ := s.do(t, "/v1/chat/completions", "", chatBody)
				return resp.StatusCode == 429
			})
		})
	}
}

// TestRedisOutageFallbackFraction: with fallback_fraction 0.5 an instance admits half of each
// limit while Redis is down (rpm 4: 2), and says so in its headers.
func TestRedisOutageFallbackFraction(t *testing.T) {
	srv := testredis.StartServer(t)
	rl := fmt.Sprintf("rate_limit {\n\tstore redis redis://%s/0\n\ton_store_error allow\n\tfallback_fraction 0.5\n}", srv.Addr())
	s := startLimits(t, "rpm 4", rl)
	if resp, body := s.do(t, "/v1/chat/completions", "", chatBody); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	srv.Kill()
	for i := 0; i < 2; i++ {
		resp, body := s.do(t, "/v1/chat/completions", "", chatBody)
		if resp.StatusCode != 200 || resp.Header.Get("X-Ratelimit-Limit-Requests") != "2" {
			t.Fatalf("request %d with Redis down: %d, limit %q: %s", i, resp.StatusCode, resp.Header.Get("X-Ratelimit-Limit-Requests"), body)
		}
	}
	if resp, body := s.do(t, "/v1/chat/completions", "", chatBody); resp.StatusCode != 429 {
		t.Fatalf("third request with Redis down: %d %s, want 429 (half of rpm 4)", resp.StatusCode, body)
	}
}

// TestSDKRetriesAfterRetryAfter: openai-go with its default retries waits for Retry-After and
// succeeds once the bucket refills.
func TestSDKRetriesAfterRetryAfter(t *testing.T) {
	s := startLimits(t, "rpm 60", "")
	for i := 0; i < 60; i++ {
		if resp, _ := s.do(t, "/v1/chat/completions", "", chatBody); resp.StatusCode != 200 {
			break
		}
	}
	refusedBefore := s.metric(t, "caddy_ai_gateway_requests_total", map[string]string{"code": "429"})
	servedBefore := len(s.upstream.requests())
	var attempts atomic.Int32
	client := openai.NewClient(option.WithBaseURL(url(s.port, "/v1/")), option.WithAPIKey(secretAll),
		option.WithMiddleware(func(r *http.Request, next option.MiddlewareNext) (*http.Response, error) {
			attempts.Add(1)
			return next(r)
		}))
	resp, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model: "llama", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}})
	var apiErr *openai.Error
	if errors.As(err, &apiErr) || err != nil {
		t.Fatalf("SDK gave up: %v", err)
	}
	if resp.Model != "demo-llama" {
		t.Errorf("model %q", resp.Model)
	}
	refused := s.metric(t, "caddy_ai_gateway_requests_total", map[string]string{"code": "429"}) - refusedBefore
	if attempts.Load() < 2 || int(refused) != int(attempts.Load())-1 || len(s.upstream.requests()) != servedBefore+1 {
		t.Errorf("%d attempts, %v refused, upstream saw %d", attempts.Load(), refused, len(s.upstream.requests())-servedBefore)
	}
}

// TestCapMaxTokensToBudget: with cap_max_tokens_to_budget a request that does not fit the token
// budget left gets a smaller max_tokens instead of a 429.
func TestCapMaxTokensToBudget(t *testing.T) {
	s := startLimits(t, "tpm 300", "rate_limit {\n\tcap_max_tokens_to_budget 20\n}")
	body := `{"model":"llama","max_tokens":250,"messages":[{"role":"user","content":"hi"}]}`
	resp, b := s.do(t, "/v1/chat/completions", "", body)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	// the first used 24 tokens (settled), so about 276 remain: 290 more do not fit, 268 do
	resp, b = s.do(t, "/v1/chat/completions", "", strings.Replace(body, "250", "290", 1))
	seen := s.upstream.requests()
	got := gjson.GetBytes(seen[len(seen)-1].Body, "max_tokens").Int()
	if resp.StatusCode != 200 || got >= 290 || got < 250 {
		t.Errorf("second request: %d, max_tokens upstream %d: %s", resp.StatusCode, got, b)
	}
}

// TestTokenLimitCountsEveryChoice: a request reserves what it can make the server generate, n
// choices (best_of when larger) for each of its prompts, so n cannot carry it past a token
// limit. 10 concurrent {"n":128,"max_tokens":100} on a tpm 1000 key are all refused without
// reaching the upstream (12,800 tokens can never fit); n=4 requests are admitted only while
// their 4 x 100 fit.
func TestTokenLimitCountsEveryChoice(t *testing.T) {
	s := startLimits(t, "tpm 1000", "")
	var wg sync.WaitGroup
	codes := make(chan int, 10)
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, body := s.do(t, "/v1/chat/completions", "", `{"model":"llama","messages":[{"role":"user","content":"Hi"}],"max_tokens":100,"n":128}`)
			if resp.StatusCode == 429 && (gjson.GetBytes(body, "error.type").Str != "tokens" || resp.Header.Get("X-Should-Retry") != "false") {
				t.Errorf("429 without type tokens and x-should-retry false: %v %s", resp.Header, body)
			}
			codes <- resp.StatusCode
		}()
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 429 {
			t.Errorf("a request asking for 128 x 100 tokens on a tpm 1000 key got %d", c)
		}
	}
	if n := len(s.upstream.requests()); n != 0 {
		t.Fatalf("%d requests reached the upstream", n)
	}
	// a completions request with 2 prompts and n 2 reserves 2 x 2 x 100 = 400 output tokens
	resp, body := s.do(t, "/v1/completions", "", `{"model":"llama","prompt":["a","b"],"max_tokens":100,"n":2}`)
	remaining, _ := strconv.Atoi(resp.Header.Get("X-Ratelimit-Remaining-Tokens"))
	if resp.StatusCode != 200 || remaining > 600 || remaining < 500 {
		t.Errorf("%d, %d tokens remaining of 1000 after reserving 400 + the prompt: %s", resp.StatusCode, remaining, body)
	}
	for _, r := range s.upstream.requests() {
		if gjson.GetBytes(r.Body, "n").Int() != 2 {
			t.Errorf("the upstream got %s", r.Body)
		}
	}
}

// TestCountingIsNoWeapon: a huge prompt costs the gateway little. A 3.5 MB one-word prompt on
// an 8192-token model is refused with context_length_exceeded ("at least") without the tokenizer
// running over it; a key already over its rpm is refused before its prompt is counted at all;
// a small prompt over the window is still counted in full, so its refusal names the exact count.
func TestCountingIsNoWeapon(t *testing.T) {
	s := startLimits(t, "rpm 1\n\t\t\t\ttpm 1000000", "")
	huge := `{"model":"llama","messages":[{"role":"user","content":"` + strings.Repeat("a", 3500000) + `"}],"max_tokens":10}`
	count := func(how string) float64 {
		return s.metric(t, "caddy_ai_gateway_prompt_counts_total", map[string]string{"model": "demo-llama", "how": how})
	}
	resp, body := s.do(t, "/v1/chat/completions", "", huge)
	if resp.StatusCode != 413 || gjson.GetBytes(body, "error.code").Str != "context_length_exceeded" ||
		!strings.Contains(gjson.GetBytes(body, "error.message").Str, "at least") {
		t.Fatalf("huge prompt: %d %.300s", resp.StatusCode, body)
	}
	if exact, partial := count("exact"), count("partial"); exact != 0 || partial+count("lower_bound") != 1 {
		t.Errorf("the huge prompt was counted: exact %v, partial %v", exact, partial)
	}
	// the key's only request of the minute (the refusal took none): a small prompt, far from the
	// key's tpm, reserved at its byte bound without a count
	resp, body = s.do(t, "/v1/chat/completions", "", chatBody)
	if resp.StatusCode != 200 || count("exact") != 0 || count("bound") != 1 {
		t.Fatalf("small prompt: %d exact=%v bound=%v %s", resp.StatusCode, count("exact"), count("bound"), body)
	}
	// over its rpm now: a prompt that could fit (its lower bound does) is refused before any count
	before := count("exact") + count("partial")
	resp, body = s.do(t, "/v1/chat/completions", "", `{"model":"llama","messages":[{"role":"user","content":"`+strings.Repeat("hello ", 5000)+`"}]}`)
	if resp.StatusCode != 429 || gjson.GetBytes(body, "error.type").Str != "requests" {
		t.Fatalf("over rpm: %d %.300s", resp.StatusCode, body)
	}
	if after := count("exact") + count("partial"); after != before {
		t.Errorf("a request over its rpm was counted (%v -> %v)", before, after)
	}
	if n := len(s.upstream.requests()); n != 1 {
		t.Errorf("%d requests reached the upstream, want 1", n)
	}
}

// TestCountingSmallPromptOverTheWindow: a prompt of a few thousand words over the window is
// counted in full: the refusal names its exact count.
func TestCountingSmallPromptOverTheWindow(t *testing.T) {
	s := startLimits(t, "tpm 1000000", "")
	resp, body := s.do(t, "/v1/chat/completions", "", `{"model":"llama","messages":[{"role":"user","content":"`+strings.Repeat(" the", 9000)+`"}]}`)
	msg := gjson.GetBytes(body, "error.message").Str
	if resp.StatusCode != 413 || strings.Contains(msg, "at least") || !strings.Contains(msg, "resulted in 900") {
		t.Errorf("%d %s", resp.StatusCode, msg)
	}
}

// TestRedisStallFreesSlots: Redis stalls (SIGSTOP) while a max_concurrent 3 key sends 3
// requests (the memory fallback serves them, on_store_error allow); once Redis answers again
// the key has its 3 slots back within seconds. The store-level tests in ratelimit
// (TestRedisStallReleasesSlots, TestRedisOutageReleasesSlots) reproduce the lost replies and
// failed settles exactly.
func TestRedisStallFreesSlots(t *testing.T) {
	srv := testredis.StartServer(t)
	up := newUpstream(t, simulator.Config{TTFT: 800 * time.Millisecond})
	port := freePort(t)
	rl := fmt.Sprintf("rate_limit {\n\tstore redis redis://%s/0\n\tredis_prefix %s:\n}", srv.Addr(), t.Name())
	startCaddy(t, limitsConfig(port, up.addr(), "max_concurrent 3", rl))
	s := &usageSetup{port: port, upstream: up}
	three := func() (codes []int) {
		var wg sync.WaitGroup
		ch := make(chan int, 3)
		for range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, _ := s.do(t, "/v1/chat/completions", "", chatBody)
				ch <- resp.StatusCode
			}()
		}
		wg.Wait()
		close(ch)
		for c := range ch {
			codes = append(codes, c)
		}
		return codes
	}
	if codes := three(); fmt.Sprint(codes) != "[200 200 200]" {
		t.Fatalf("before the stall: %v", codes)
	}
	srv.Pause()
	during := three()
	srv.Resume()
	t.Logf("during the stall: %v", during)
	waitFor(t, "three requests at once to be admitted again", 10*time.Second, func() bool {
		return fmt.Sprint(three()) == "[200 200 200]"
	})
}

// TestPromptBearingFieldsCount: text a model server renders into the prompt counts toward the
// window even outside messages: 40,000 words of vLLM documents on an 8192-token model are refused
// before the upstream sees them.
func TestPromptBearingFieldsCount(t *testing.T) {
	s := startLimits(t, "", "")
	docs := `[{"title":"notes","text":"` + strings.Repeat(" word", 40000) + `"}]`
	resp, body := s.do(t, "/v1/chat/completions", "", `{"model":"llama","messages":[{"role":"user","content":"Summarise the notes."}],"documents":`+docs+`}`)
	if resp.StatusCode != 413 || gjson.GetBytes(body, "error.code").Str != "context_length_exceeded" {
		t.Fatalf("%d %.300s", resp.StatusCode, body)
	}
	if n := len(s.upstream.requests()); n != 0 {
		t.Errorf("%d requests reached the upstream", n)
	}
}

// TestRedisSettlementsLeaveBeforeTheStoreCloses: settlements queued without their answers
// waiting (one in flight while Redis stalls, one queued behind it) are in Redis once a reload has
// replaced the store: both of the key's slots are free for another instance at once, not after
// the 30 s lease.
func TestRedisSettlementsLeaveBeforeTheStoreCloses(t *testing.T) {
	srv := testredis.StartServer(t)
	up := newUpstream(t, simulator.Config{TTFT: 300 * time.Millisecond})
	port := freePort(t)
	prefix := t.Name() + ":"
	rl := func(prefix string) string {
		return fmt.Sprintf("rate_limit {\n\tstore redis redis://%s/0\n\tredis_prefix %s\n}", srv.Addr(), prefix)
	}
	startCaddy(t, limitsConfig(port, up.addr(), "max_concurrent 2", rl(prefix)))
	s := &usageSetup{port: port, upstream: up}
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if resp, body := s.do(t, "/v1/chat/completions", "", chatBody); resp.StatusCode != 200 {
				t.Errorf("%d %s", resp.StatusCode, body)
			}
		}()
	}
	time.Sleep(150 * time.Millisecond) // both reserved, both at the upstream
	srv.Pause()
	wg.Wait() // both answered: their settlements wait for Redis
	resumed := make(chan struct{})
	go func() {
		defer close(resumed)
		time.Sleep(150 * time.Millisecond) // within the store's 500 ms read timeout
		srv.Resume()
	}()
	loadCaddy(t, limitsConfig(port, up.addr(), "max_concurrent 2", rl(t.Name()+"-other:"))) // the old store is closed
	<-resumed

	client := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer client.Close()
	l := ratelimit.NewLimiter(ratelimit.NewRedisStore(client, ratelimit.RedisOptions{Prefix: prefix}), ratelimit.Options{OnStoreError: ratelimit.OnStoreErrorDeny})
	scope := []ratelimit.Scope{{ID: "key:limited", Limits: ratelimit.Limits{MaxConcurrent: 2}}}
	for i := range 2 {
		if _, d, err := l.Reserve(context.Background(), scope, ratelimit.Cost{Requests: 1}); err != nil || !d.Allowed {
			t.Fatalf("slot %d after the reload: %+v, %v (a settlement was lost with the store)", i+1, d, err)
		}
	}
}

// TestPromptAtItsBoundRedis: with the Redis store a small prompt is not looked for, so a key's
// first prompt is counted; the quota its reservation reported then lets the next ones, far from
// the key's tpm, be reserved at their byte bound; on a key close to its limit every prompt is
// counted. Every request is answered either way.
func TestPromptAtItsBoundRedis(t *testing.T) {
	srv := testredis.StartServer(t)
	for _, tc := range []struct {
		name, limits string
		bound, exact float64
	}{
		{"far from the limit", "tpm 1000000", 2, 1},
		{"close to the limit", "tpm 150", 0, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newUpstream(t, simulator.Config{})
			port := freePort(t)
			rl := fmt.Sprintf("rate_limit {\n\tstore redis redis://%s/0\n\tredis_prefix %s:\n}", srv.Addr(), t.Name())
			startCaddy(t, limitsConfig(port, up.addr(), tc.limits, rl))
			s := &usageSetup{port: port, upstream: up}
			count := func(how string) float64 {
				return s.metric(t, "caddy_ai_gateway_prompt_counts_total", map[string]string{"model": "demo-llama", "how": how})
			}
			bound0, exact0 := count("bound"), count("exact")
			for i := range 3 {
				if resp, body := s.do(t, "/v1/chat/completions", "", chatBody); resp.StatusCode != 200 {
					t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
				}
			}
			if b, e := count("bound")-bound0, count("exact")-exact0; b != tc.bound || e != tc.exact {
				t.Errorf("prompts at their bound %v, counted %v; want %v, %v", b, e, tc.bound, tc.exact)
			}
		})
	}
}
