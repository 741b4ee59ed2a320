package caddymodule_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/tidwall/gjson"

	"github.com/caddyai/gateway/caddymodule"
	"github.com/caddyai/gateway/internal/wiretest"
	"github.com/caddyai/gateway/simulator"
)

// usageSetup is a gateway with a /metrics route in front of a recording simulator.
type usageSetup struct {
	port     int
	upstream *recordingUpstream
}

func startUsage(t *testing.T, cfg simulator.Config) *usageSetup {
	t.Helper()
	up := newUpstream(t, cfg)
	port := freePort(t)
	startCaddy(t, gatewaySite(port, keyAll+`
model demo-llama {
	alias llama
	context_window 8192
	upstream `+up.addr()+`
}`, "flush_interval -1"))
	return &usageSetup{port: port, upstream: up}
}

func (s *usageSetup) do(t *testing.T, path, fault, body string, extra ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url(s.port, path), strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+secretAll)
	req.Header.Set("Content-Type", "application/json")
	if strings.HasPrefix(path, "/v1/messages") {
		req.Header.Set("Anthropic-Version", "2023-06-01")
	}
	if fault != "" {
		req.Header.Set("X-Sim-Fault", fault)
	}
	for i := 0; i+1 < len(extra); i += 2 {
		req.Header.Set(extra[i], extra[i+1])
	}
	return doRequest(t, req)
}

func (s *usageSetup) metric(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	return scrapeMetric(t, url(s.port, "/metrics"), name, labels)
}

// scrapeMetric returns the sum of the series of metric name at the Prometheus endpoint u whose
// labels include labels (a histogram's: its sample count).
func scrapeMetric(t *testing.T, u, name string, labels map[string]string) float64 {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	fam, ok := families[name]
	if !ok {
		return 0
	}
	var sum float64
next:
	for _, m := range fam.GetMetric() {
		for k, v := range labels {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == k && lp.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum
}

const chatBody = `{"model":"llama","messages":[{"role":"user","content":"Tell me about gateways"}],"max_tokens":10}`

func streamBody(includeUsage bool) string {
	b := `{"model":"llama","stream":true,"messages":[{"role":"user","content":"Tell me about gateways"}],"max_tokens":10`
	if includeUsage {
		b += `,"stream_options":{"include_usage":true}`
	}
	return b + "}"
}

// dataFrames returns the data payloads of an SSE body.
func dataFrames(body []byte) []string {
	var out []string
	for _, line := range strings.Split(string(body), "\n") {
		if d, ok := strings.CutPrefix(line, "data: "); ok {
			out = append(out, d)
		}
	}
	return out
}

func TestUsageHeadersAndTrailers(t *testing.T) {
	s := startUsage(t, simulator.Config{})

	t.Run("json", func(t *testing.T) {
		resp, body := s.do(t, "/v1/chat/completions", "", chatBody)
		if resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		m := decodeJSON(t, body)
		u := m["usage"].(map[string]any)
		for h, k := range map[string]string{"X-Usage-Prompt-Tokens": "prompt_tokens", "X-Usage-Completion-Tokens": "completion_tokens", "X-Usage-Total-Tokens": "total_tokens"} {
			if resp.Header.Get(h) != strconv.Itoa(int(u[k].(float64))) {
				t.Errorf("%s = %q, body usage %v", h, resp.Header.Get(h), u)
			}
		}
		if resp.Header.Get("X-Usage-Estimated") != "" || resp.Header.Get("X-Gateway-Overhead-Ms") == "" {
			t.Errorf("headers %v", resp.Header)
		}
		if resp.Header.Get("Content-Length") != strconv.Itoa(len(body)) {
			t.Errorf("content-length %s for %d bytes", resp.Header.Get("Content-Length"), len(body))
		}
	})

	t.Run("stream without include_usage: client sees exactly its stream, trailers carry usage", func(t *testing.T) {
		resp, body := s.do(t, "/v1/chat/completions", "", streamBody(false))
		frames := dataFrames(body)
		if frames[len(frames)-1] != "[DONE]" {
			t.Fatalf("last frame %q", frames[len(frames)-1])
		}
		for _, f := range frames {
			if strings.Contains(f, `"choices":[]`) {
				t.Errorf("injected usage chunk reached the client: %s", f)
			}
		}
		seen := s.upstream.requests()
		if !bytes.Contains(seen[len(seen)-1].Body, []byte(`"include_usage":true`)) {
			t.Errorf("usage not requested upstream: %s", seen[len(seen)-1].Body)
		}
		if resp.Trailer.Get("X-Usage-Completion-Tokens") != "10" || resp.Trailer.Get("X-Usage-Prompt-Tokens") == "" || resp.Trailer.Get("X-Usage-Estimated") != "" {
			t.Errorf("trailers %v", resp.Trailer)
		}
	})

	t.Run("stream_options without include_usage: upstream gets one stream_options asking for usage", func(t *testing.T) {
		for _, opts := range []string{"", `"stream_options":{},`, `"stream_options":{"include_usage":false},`, `"stream_options":null,`} {
			body := `{"model":"llama","stream":true,` + opts + `"messages":[{"role":"user","content":"Tell me about gateways"}],"max_tokens":10}`
			_, got := s.do(t, "/v1/chat/completions", "", body)
			for _, f := range dataFrames(got) {
				if strings.Contains(f, `"choices":[]`) {
					t.Errorf("%s: injected usage chunk reached the client: %s", opts, f)
				}
			}
			seen := s.upstream.requests()
			up := seen[len(seen)-1].Body
			if !json.Valid(up) || bytes.Count(up, []byte(`"stream_options"`)) != 1 || !gjson.GetBytes(up, "stream_options.include_usage").Bool() {
				t.Errorf("%s: upstream body %s", opts, up)
			}
		}
	})

	t.Run("stream with include_usage keeps the usage chunk", func(t *testing.T) {
		resp, body := s.do(t, "/v1/chat/completions", "", streamBody(true))
		frames := dataFrames(body)
		usage := frames[len(frames)-2]
		if !strings.Contains(usage, `"choices":[]`) || !strings.Contains(usage, `"completion_tokens":10`) {
			t.Errorf("usage chunk %s", usage)
		}
		for _, f := range frames[:len(frames)-1] {
			wiretest.Validate(t, "CreateChatCompletionStreamResponse", []byte(f))
		}
		if resp.Trailer.Get("X-Usage-Total-Tokens") == "" {
			t.Errorf("trailers %v", resp.Trailer)
		}
	})

	t.Run("upstream without usage: counted and marked estimated", func(t *testing.T) {
		resp, body := s.do(t, "/v1/chat/completions", "kind=no_usage", chatBody)
		m := decodeJSON(t, body)
		u, ok := m["usage"].(map[string]any)
		if !ok || u["completion_tokens"].(float64) != 10 || resp.Header.Get("X-Usage-Estimated") != "true" {
			t.Errorf("usage %v headers %v", m["usage"], resp.Header)
		}
		wiretest.Validate(t, "CreateChatCompletionResponse", body)
		resp, _ = s.do(t, "/v1/chat/completions", "kind=no_usage", streamBody(false))
		if resp.Trailer.Get("X-Usage-Estimated") != "true" || resp.Trailer.Get("X-Usage-Completion-Tokens") != "10" {
			t.Errorf("stream trailers %v", resp.Trailer)
		}
	})

	t.Run("anthropic stream usage", func(t *testing.T) {
		resp, body := s.do(t, "/v1/messages", "", `{"model":"llama","max_tokens":7,"stream":true,"messages":[{"role":"user","content":"hi"}]}`)
		if !bytes.Contains(body, []byte("event: message_stop")) || resp.Trailer.Get("X-Usage-Completion-Tokens") != "7" {
			t.Errorf("trailers %v body %s", resp.Trailer, body)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		before := s.metric(t, "caddy_ai_gateway_requests_total", map[string]string{"model": "demo-llama", "code": "200"})
		tokBefore := s.metric(t, "caddy_ai_gateway_tokens_total", map[string]string{"model": "demo-llama", "kind": "completion"})
		ttftBefore := s.metric(t, "caddy_ai_gateway_time_to_first_token_seconds", map[string]string{"model": "demo-llama"})
		itlBefore := s.metric(t, "caddy_ai_gateway_inter_token_latency_seconds", map[string]string{"model": "demo-llama"})
		s.do(t, "/v1/chat/completions", "", chatBody)
		s.do(t, "/v1/chat/completions", "", streamBody(false))
		if got := s.metric(t, "caddy_ai_gateway_requests_total", map[string]string{"model": "demo-llama", "code": "200"}); got != before+2 {
			t.Errorf("requests_total %v -> %v", before, got)
		}
		if got := s.metric(t, "caddy_ai_gateway_tokens_total", map[string]string{"model": "demo-llama", "kind": "completion"}); got != tokBefore+20 {
			t.Errorf("completion tokens %v -> %v", tokBefore, got)
		}
		if got := s.metric(t, "caddy_ai_gateway_time_to_first_token_seconds", map[string]string{"model": "demo-llama"}); got != ttftBefore+1 {
			t.Errorf("ttft observations %v -> %v", ttftBefore, got)
		}
		// one observation for the stream: the mean of the gaps between its 10 tokens, however
		// its chunks were split into writes
		if got := s.metric(t, "caddy_ai_gateway_inter_token_latency_seconds", map[string]string{"model": "demo-llama"}); got != itlBefore+1 {
			t.Errorf("inter-token latency observations %v -> %v", itlBefore, got)
		}
		s.do(t, "/v1/chat/completions", "", `{"model":"nope","messages":[{"role":"user","content":"hi"}]}`)
		if got := s.metric(t, "caddy_ai_gateway_requests_total", map[string]string{"code": "404", "reject_reason": "model_not_found"}); got < 1 {
			t.Errorf("rejections not counted: %v", got)
		}
	})
}

func TestUpstreamErrorsNormalised(t *testing.T) {
	s := startUsage(t, simulator.Config{})
	tests := []struct {
		fault  string
		status int
		code   string
	}{
		{"kind=context;shape=vllm", 413, "context_length_exceeded"},      // as the gateway's own refusal (context_status)
		{"kind=context;shape=vllm_flat", 413, "context_length_exceeded"}, // as the gateway's own refusal (context_status)
		{"kind=context;shape=tgi", 413, "context_length_exceeded"},       // as the gateway's own refusal (context_status)
		{"kind=context;shape=llamacpp", 413, "context_length_exceeded"},  // as the gateway's own refusal (context_status)
		{"kind=overloaded;shape=vllm", 503, "model_overloaded"},
		{"kind=overloaded;shape=tgi", 503, "model_overloaded"},
		{"kind=overloaded;shape=ollama", 503, "model_overloaded"},
		{"kind=loading;shape=llamacpp", 503, "model_loading"},
		{"kind=error;status=500;shape=text", 502, ""},
		{"kind=error;status=400;shape=tgi", 400, ""},
	}
	for _, tc := range tests {
		t.Run(tc.fault, func(t *testing.T) {
			resp, body := s.do(t, "/v1/chat/completions", tc.fault, chatBody)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			wiretest.Validate(t, "ErrorResponse", body)
			code, _ := decodeJSON(t, body)["error"].(map[string]any)["code"].(string)
			if code != tc.code {
				t.Errorf("code %q, want %q: %s", code, tc.code, body)
			}
			if tc.status == 503 && resp.Header.Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
			if resp.Header.Get("X-Request-Id") == "" {
				t.Error("no x-request-id")
			}
		})
	}
	t.Run("anthropic upstream overflow is the gateway's own 413", func(t *testing.T) {
		resp, body := s.do(t, "/v1/messages", "kind=context", `{"model":"llama","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`)
		if resp.StatusCode != 413 || !strings.Contains(string(body), `"type":"request_too_large"`) {
			t.Errorf("%d %s", resp.StatusCode, body)
		}
	})
	t.Run("anthropic overload is 529", func(t *testing.T) {
		resp, body := s.do(t, "/v1/messages", "kind=overloaded;shape=vllm", `{"model":"llama","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`)
		if resp.StatusCode != 529 || !strings.Contains(string(body), `"overloaded_error"`) {
			t.Errorf("%d %s", resp.StatusCode, body)
		}
	})
	t.Run("openai-go sees typed errors", func(t *testing.T) {
		client := openai.NewClient(option.WithBaseURL(url(s.port, "/v1/")), option.WithAPIKey(secretAll), option.WithMaxRetries(0),
			option.WithHeader("X-Sim-Fault", "kind=context;shape=tgi"))
		_, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
			Model: "llama", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}})
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.Code != "context_length_exceeded" {
			t.Errorf("got %v", err)
		}
	})
}

func TestStreamIntegrity(t *testing.T) {
	s := startUsage(t, simulator.Config{})
	t.Run("cut mid-stream ends with an error frame and DONE", func(t *testing.T) {
		before := s.metric(t, "caddy_ai_gateway_stream_incomplete_total", nil)
		_, body := s.do(t, "/v1/chat/completions", "kind=cut;after=3", streamBody(false))
		frames := dataFrames(body)
		if len(frames) < 3 || frames[len(frames)-1] != "[DONE]" || !strings.Contains(frames[len(frames)-2], `"code":"stream_incomplete"`) {
			t.Fatalf("frames %q", frames)
		}
		if got := s.metric(t, "caddy_ai_gateway_stream_incomplete_total", nil); got != before+1 {
			t.Errorf("stream_incomplete_total %v -> %v", before, got)
		}
	})
	t.Run("openai-go raises on a cut stream", func(t *testing.T) {
		client := openai.NewClient(option.WithBaseURL(url(s.port, "/v1/")), option.WithAPIKey(secretAll), option.WithMaxRetries(0),
			option.WithHeader("X-Sim-Fault", "kind=cut;after=2"))
		stream := client.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
			Model: "llama", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}})
		for stream.Next() {
		}
		if stream.Err() == nil {
			t.Error("a cut stream looked like success to the SDK")
		}
	})
	t.Run("mid-stream upstream error is normalised", func(t *testing.T) {
		_, body := s.do(t, "/v1/chat/completions", "kind=midstream_error;after=2;shape=vllm", streamBody(false))
		frames := dataFrames(body)
		last := frames[len(frames)-2]
		if frames[len(frames)-1] != "[DONE]" || !strings.HasPrefix(last, `{"error":{`) {
			t.Fatalf("frames %q", frames)
		}
		wiretest.Validate(t, "ErrorResponse", []byte(last))
	})
	t.Run("anthropic cut stream ends with event: error", func(t *testing.T) {
		_, body := s.do(t, "/v1/messages", "kind=cut;after=3", `{"model":"llama","max_tokens":9,"stream":true,"messages":[{"role":"user","content":"hi"}]}`)
		if !bytes.Contains(body, []byte("event: error\ndata: {\"type\":\"error\"")) {
			t.Errorf("body %s", body)
		}
	})
	t.Run("upstream closes before headers", func(t *testing.T) {
		resp, body := s.do(t, "/v1/chat/completions", "kind=close", chatBody)
		if resp.StatusCode != 503 && resp.StatusCode != 502 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		wiretest.Validate(t, "ErrorResponse", body)
	})
	t.Run("json cut mid-body", func(t *testing.T) {
		resp, body := s.do(t, "/v1/chat/completions", "kind=cut;after=1", chatBody)
		if resp.StatusCode != 502 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		wiretest.Validate(t, "ErrorResponse", body)
	})
}

func TestStreamingIsNotBuffered(t *testing.T) {
	s := startUsage(t, simulator.Config{TokensPerSecond: 4})
	req, _ := http.NewRequest(http.MethodPost, url(s.port, "/v1/chat/completions"), strings.NewReader(streamBody(false)))
	req.Header.Set("Authorization", "Bearer "+secretAll)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req = req.WithContext(ctx)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rd := bufio.NewReader(resp.Body)
	line, err := rd.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "data: {") {
		t.Fatalf("first line %q %v", line, err)
	}
	// The first chunk arrived while the upstream is still generating (10 tokens at 4/s): the
	// gateway forwards events as they come instead of holding the stream.
	if st := s.upstream.sim.Stats(); st.Running != 1 {
		t.Fatalf("upstream no longer running when the first chunk arrived: %+v", st)
	}
	// A client that goes away cancels the upstream request.
	cancel()
	waitFor(t, "the upstream to see the cancellation", 5*time.Second, func() bool { return s.upstream.sim.Stats().Cancelled == 1 })
}

// TestStreamUsageLearned: once a model's last learnedStreamUsage streams all ended with the
// upstream's usage, its next streams do not collect their text; should one then end without
// usage, it is estimated from its events (one token each, never fewer than the text holds) and
// the model's streams collect text again, so the one after it is counted from its text.
func TestStreamUsageLearned(t *testing.T) {
	s := startUsage(t, simulator.Config{})
	completion := func(resp *http.Response) int {
		n, err := strconv.Atoi(resp.Trailer.Get("X-Usage-Completion-Tokens"))
		if err != nil {
			t.Fatalf("trailers %v", resp.Trailer)
		}
		return n
	}
	for i := range caddymodule.LearnedStreamUsage {
		resp, _ := s.do(t, "/v1/chat/completions", "", streamBody(false))
		if resp.Trailer.Get("X-Usage-Estimated") == "true" || completion(resp) != 10 {
			t.Fatalf("stream %d: trailers %v", i, resp.Trailer)
		}
	}
	resp, body := s.do(t, "/v1/chat/completions", "kind=no_usage", streamBody(false))
	events := bytes.Count(body, []byte("data: "))
	// one token per event (the role chunk, 10 content chunks, the finish chunk, [DONE]): more
	// than the text would count, which shows it was not collected
	if got := completion(resp); resp.Trailer.Get("X-Usage-Estimated") != "true" || got <= 10 || got > events {
		t.Errorf("after %d streams with usage, one without: estimated %q, %d completion tokens (10 generated, %d events)",
			caddymodule.LearnedStreamUsage, resp.Trailer.Get("X-Usage-Estimated"), got, events)
	}
	resp, _ = s.do(t, "/v1/chat/completions", "kind=no_usage", streamBody(false))
	if resp.Trailer.Get("X-Usage-Estimated") != "true" || completion(resp) != 10 {
		t.Errorf("the stream after: trailers %v, want its text counted (10)", resp.Trailer)
	}
}
