package simulator

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestParseFault(t *testing.T) {
	tests := []struct {
		spec    string
		want    Fault
		wantErr bool
	}{
		{"", Fault{}, false},
		{" ; ", Fault{}, false},
		{"kind=overloaded", Fault{Kind: FaultOverloaded}, false},
		{"status=503", Fault{Kind: FaultError, Status: 503}, false},
		{"kind=error;status=429", Fault{Kind: FaultError, Status: 429}, false},
		{" kind = cut ; after = 3 ", Fault{Kind: FaultCut, After: 3}, false},
		{"kind=stall;delay=1.5s", Fault{Kind: FaultStall, Delay: 1500 * time.Millisecond}, false},
		{"kind=midstream_error;after=2;shape=vllm", Fault{Kind: FaultMidstreamError, After: 2, Shape: ShapeVLLM}, false},
		{"shape=tgi", Fault{Shape: ShapeTGI}, false},
		{"kind=explode", Fault{}, true},
		{"kind", Fault{}, true},
		{"=3", Fault{}, true},
		{"kind=cut;kind=close", Fault{}, true},
		{"status=200", Fault{}, true},
		{"status=abc", Fault{}, true},
		{"kind=cut;status=500", Fault{}, true},
		{"after=-1", Fault{}, true},
		{"delay=soon", Fault{}, true},
		{"delay=-1s", Fault{}, true},
		{"shape=xml", Fault{}, true},
		{"colour=red", Fault{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			got, err := ParseFault(tt.spec)
			if (err != nil) != tt.wantErr {
				t.Fatalf("error %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			if err == nil {
				again, err := ParseFault(got.String())
				if err != nil || again != got {
					t.Errorf("String() %q does not round-trip: %+v, %v", got.String(), again, err)
				}
			}
		})
	}
}

const longPrompt = `{"model":"sim-model","max_tokens":10,"messages":[{"role":"user","content":"Please write a very long and detailed essay about the history of computing machines and networks."}]`

// TestErrorGoldens compares every error of every shape with its recorded fixture.
func TestErrorGoldens(t *testing.T) {
	type req struct {
		method, path, body, fault string
	}
	kinds := []struct {
		name string
		cfg  Config
		req  req
	}{
		{"error_502", Config{}, req{"POST", "/v1/chat/completions", helloChat + `}`, "status=502"}},
		{"error_429", Config{}, req{"POST", "/v1/chat/completions", helloChat + `}`, "kind=error;status=429"}},
		{"overloaded", Config{}, req{"POST", "/v1/chat/completions", helloChat + `}`, "kind=overloaded"}},
		{"loading", Config{}, req{"POST", "/v1/chat/completions", helloChat + `}`, "kind=loading"}},
		{"health_loading", Config{}, req{"GET", "/health", "", "kind=loading"}},
		{"context", Config{ContextWindow: 20}, req{"POST", "/v1/chat/completions", longPrompt + `}`, "kind=context"}},
		{"context_max_tokens", Config{ContextWindow: 12}, req{"POST", "/v1/chat/completions", helloChat + `,"max_tokens":10}`, ""}},
		{"context_completions", Config{ContextWindow: 3}, req{"POST", "/v1/completions", `{"model":"m","prompt":"one two three four five"}`, ""}},
		{"midstream_error", Config{}, req{"POST", "/v1/chat/completions", helloChat + `,"stream":true,"max_tokens":4}`, "kind=midstream_error;after=2"}},
		{"bad_request", Config{}, req{"POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}]}`, ""}},
		{"bad_json", Config{}, req{"POST", "/v1/chat/completions", `{"model":`, ""}},
		{"not_found", Config{}, req{"GET", "/v2/unknown", "", ""}},
		{"model_not_found", Config{}, req{"GET", "/v1/models/gpt-9", "", ""}},
		{"method_not_allowed", Config{}, req{"GET", "/v1/embeddings", "", ""}},
	}
	shapes := append([]string{}, validShapes[:]...)
	for _, shape := range shapes {
		for _, k := range kinds {
			t.Run(shape+"/"+k.name, func(t *testing.T) {
				cfg := k.cfg
				cfg.ErrorShape = shape
				s := newServer(t, cfg)
				var hdr []string
				if k.req.fault != "" {
					hdr = []string{FaultHeader, k.req.fault}
				}
				rec := do(t, s, k.req.method, k.req.path, k.req.body, hdr...)
				golden(t, shape+"/"+k.name+".http", dump(rec))
			})
		}
	}
	anthropic := []struct {
		name string
		cfg  Config
		body string
		hdr  []string
	}{
		{"error_500", Config{}, `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"Hi"}]}`, []string{FaultHeader, "status=500"}},
		{"overloaded", Config{}, `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"Hi"}]}`, []string{FaultHeader, "kind=overloaded"}},
		{"loading", Config{}, `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"Hi"}]}`, []string{FaultHeader, "kind=loading"}},
		{"context", Config{ContextWindow: 12}, `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"Write a long essay about the history of computing."}]}`, nil},
		{"context_max_tokens", Config{ContextWindow: 20}, `{"model":"m","max_tokens":50,"messages":[{"role":"user","content":"Hi"}]}`, nil},
		{"missing_max_tokens", Config{}, `{"model":"m","messages":[{"role":"user","content":"Hi"}]}`, nil},
		{"midstream_error", Config{}, `{"model":"m","max_tokens":3,"stream":true,"messages":[{"role":"user","content":"Hi"}]}`, []string{FaultHeader, "kind=midstream_error;after=4"}},
	}
	for _, k := range anthropic {
		t.Run("anthropic/"+k.name, func(t *testing.T) {
			k.cfg.ErrorShape = ShapeVLLM // must not matter on /v1/messages
			s := newServer(t, k.cfg)
			rec := do(t, s, "POST", "/v1/messages", k.body, k.hdr...)
			golden(t, "anthropic/"+k.name+".http", dump(rec))
		})
	}
}

// TestResponseGoldens pins the exact bytes of successful responses.
func TestResponseGoldens(t *testing.T) {
	tests := []struct {
		name, method, path, body, fault string
		cfg                             Config
	}{
		{"chat", "POST", "/v1/chat/completions", helloChat + `,"max_tokens":5}`, "", Config{}},
		{"chat_stream", "POST", "/v1/chat/completions", helloChat + `,"max_tokens":3,"stream":true}`, "", Config{}},
		{"chat_stream_usage", "POST", "/v1/chat/completions", helloChat + `,"max_tokens":3,"stream":true,"stream_options":{"include_usage":true}}`, "", Config{}},
		{"chat_no_usage", "POST", "/v1/chat/completions", helloChat + `,"max_tokens":3}`, "kind=no_usage", Config{}},
		{"chat_stream_no_usage", "POST", "/v1/chat/completions", helloChat + `,"max_tokens":3,"stream":true,"stream_options":{"include_usage":true}}`, "kind=no_usage", Config{}},
		{"chat_ollama_truncated", "POST", "/v1/chat/completions", longPrompt + `}`, "", Config{ContextWindow: 20, ErrorShape: ShapeOllama}},
		{"completions", "POST", "/v1/completions", `{"model":"m","prompt":["a","b"],"max_tokens":2}`, "", Config{}},
		{"completions_stream", "POST", "/v1/completions", `{"model":"m","prompt":"a","max_tokens":2,"stream":true}`, "", Config{}},
		{"embeddings", "POST", "/v1/embeddings", `{"model":"e","input":"hello","dimensions":4}`, "", Config{}},
		{"embeddings_base64", "POST", "/v1/embeddings", `{"model":"e","input":"hello","dimensions":4,"encoding_format":"base64"}`, "", Config{}},
		{"messages", "POST", "/v1/messages", `{"model":"c","max_tokens":3,"messages":[{"role":"user","content":"Hi"}]}`, "", Config{}},
		{"messages_stream", "POST", "/v1/messages", `{"model":"c","max_tokens":2,"stream":true,"messages":[{"role":"user","content":"Hi"}]}`, "", Config{}},
		{"models", "GET", "/v1/models", "", "", Config{}},
		{"tokenize", "POST", "/tokenize", `{"prompt":"Hello world"}`, "", Config{ContextWindow: 8192}},
		{"metrics", "GET", "/metrics", "", "", Config{}},
		{"garbage", "POST", "/v1/chat/completions", helloChat + `}`, "kind=garbage", Config{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, tt.cfg)
			var hdr []string
			if tt.fault != "" {
				hdr = []string{FaultHeader, tt.fault}
			}
			golden(t, "ok/"+tt.name+".http", dump(do(t, s, tt.method, tt.path, tt.body, hdr...)))
		})
	}
}

// post sends body to a real server and returns the response.
func post(t *testing.T, ctx context.Context, url, body, fault string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "POST", url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if fault != "" {
		req.Header.Set(FaultHeader, fault)
	}
	return http.DefaultClient.Do(req)
}

func TestCutAndClose(t *testing.T) {
	s := newServer(t, Config{})
	ts := httptest.NewServer(s)
	defer ts.Close()

	t.Run("stream cut", func(t *testing.T) {
		for _, after := range []int{0, 3, 100} {
			resp, err := post(t, context.Background(), ts.URL+"/v1/chat/completions", helloChat+`,"stream":true,"max_tokens":5}`, "kind=cut;after="+itoa(after))
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("after=%d: read error %v, want unexpected EOF", after, err)
			}
			frames := sseData(t, string(body))
			if want := min(after, 1+5+1); len(frames) != want {
				t.Errorf("after=%d: %d frames, want %d", after, len(frames), want)
			}
			if strings.Contains(string(body), "[DONE]") {
				t.Errorf("after=%d: cut stream has [DONE]", after)
			}
		}
	})
	t.Run("json cut", func(t *testing.T) {
		full := do(t, newServer(t, Config{}), "POST", "/v1/chat/completions", helloChat+`}`).Body.Len()
		resp, err := post(t, context.Background(), ts.URL+"/v1/chat/completions", helloChat+`}`, "kind=cut")
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !errors.Is(err, io.ErrUnexpectedEOF) || len(body) != full/2 || resp.ContentLength != int64(full) {
			t.Errorf("got %d of %d bytes (Content-Length %d), error %v", len(body), full, resp.ContentLength, err)
		}
	})
	t.Run("close", func(t *testing.T) {
		resp, err := post(t, context.Background(), ts.URL+"/v1/chat/completions", helloChat+`}`, "kind=close")
		if err == nil {
			resp.Body.Close()
			t.Fatalf("got a response %d, want a connection error", resp.StatusCode)
		}
	})
	t.Run("still serves afterwards", func(t *testing.T) {
		resp, err := post(t, context.Background(), ts.URL+"/v1/chat/completions", helloChat+`}`, "")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%v", err)
		}
		resp.Body.Close()
	})
}

func itoa(n int) string { return string(appendInt(nil, n)) }

// TestCancellation checks that a client going away ends the wait at once and
// is counted, both before the first token and in the middle of a stream.
func TestCancellation(t *testing.T) {
	tests := []struct {
		name   string
		body   string
		fault  string
		blockN int // block in the blockN-th sleep (1-based)
		frames int // SSE frames to read before cancelling
	}{
		{"during ttft of json", helloChat + `}`, "", 1, -1},
		{"during stall", helloChat + `}`, "kind=stall;delay=1h", 1, -1},
		{"during ttft of stream", helloChat + `,"stream":true}`, "", 1, 0},
		{"mid stream", helloChat + `,"stream":true}`, "", 4, 4},
		{"mid anthropic stream", `{"model":"m","max_tokens":10,"stream":true,"messages":[{"role":"user","content":"Hi"}]}`, "", 4, 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, Config{TokensPerSecond: 10, TTFT: time.Second})
			blocked := make(chan struct{})
			calls := 0
			s.sleep = func(ctx context.Context, d time.Duration) error {
				calls++
				if calls == tt.blockN {
					close(blocked)
					<-ctx.Done()
					return ctx.Err()
				}
				return ctx.Err()
			}
			served := make(chan struct{})
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				defer close(served)
				s.ServeHTTP(w, r)
			}))
			defer ts.Close()
			path := "/v1/chat/completions"
			if strings.Contains(tt.body, "max_tokens\":10") {
				path = "/v1/messages"
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			errc := make(chan error, 1)
			go func() {
				resp, err := post(t, ctx, ts.URL+path, tt.body, tt.fault)
				if err == nil {
					br := bufio.NewReader(resp.Body)
					for n := 0; n < tt.frames; {
						line, err := br.ReadString('\n')
						if err != nil {
							break
						}
						if line == "\n" {
							n++
						}
					}
					<-ctx.Done()
					resp.Body.Close()
				}
				errc <- err
			}()
			<-blocked
			cancel()
			<-served
			<-errc
			st := s.Stats()
			if st.Cancelled != 1 || st.InFlight != 0 || st.Running != 0 {
				t.Errorf("stats after cancel: %+v", st)
			}
			if st.CompletionTokens >= 16 {
				t.Errorf("the whole completion was served: %+v", st)
			}
		})
	}
}

// recordingWriter logs each write so that tests can check the order of waits and frames.
type recordingWriter struct {
	*httptest.ResponseRecorder
	log *[]string
}

func (w recordingWriter) Write(b []byte) (int, error) {
	*w.log = append(*w.log, "write "+strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0])[:min(30, len(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0])))])
	return w.ResponseRecorder.Write(b)
}

func (w recordingWriter) Flush() { w.ResponseRecorder.Flush() }

func TestPacing(t *testing.T) {
	s := newServer(t, Config{TTFT: 250 * time.Millisecond, TokensPerSecond: 4})
	var log []string
	s.sleep = func(ctx context.Context, d time.Duration) error {
		log = append(log, "sleep "+d.String())
		return ctx.Err()
	}
	req := httptest.NewRequest("POST", "/v1/chat/completions", strings.NewReader(helloChat+`,"stream":true,"max_tokens":3}`))
	w := recordingWriter{httptest.NewRecorder(), &log}
	s.ServeHTTP(w, req)
	got := strings.Join(log, "\n")
	kinds := make([]string, len(log))
	for i, l := range log {
		switch {
		case strings.HasPrefix(l, "sleep"):
			kinds[i] = l
		case strings.HasPrefix(l, "write data: [DONE]"):
			kinds[i] = "done"
		default:
			kinds[i] = "frame"
		}
	}
	want := "sleep 250ms frame frame sleep 250ms frame sleep 250ms frame frame done"
	if strings.Join(kinds, " ") != want {
		t.Errorf("order:\n%s\nwant kinds %s", got, want)
	}

	// JSON responses wait as long as the stream takes, once: TTFT and two token intervals.
	log = nil
	do(t, s, "POST", "/v1/chat/completions", helloChat+`,"max_tokens":3}`)
	if strings.Join(log, ",") != "sleep 750ms" {
		t.Errorf("json waits: %q", log)
	}
}
