package fixedreply

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

func start(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- Serve(ln, NewReplies("m")) }()
	t.Cleanup(func() {
		_ = ln.Close()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return "http://" + ln.Addr().String()
}

func post(t *testing.T, url, body string, chunked bool) *http.Response {
	t.Helper()
	var r io.Reader = strings.NewReader(body)
	if chunked {
		r = io.MultiReader(r) // no length: net/http sends it chunked
	}
	resp, err := http.Post(url, "application/json", r)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestReplies(t *testing.T) {
	url := start(t)
	t.Run("json", func(t *testing.T) {
		for _, chunked := range []bool{false, true} {
			resp := post(t, url+"/v1/chat/completions", `{"model":"m","messages":[]}`, chunked)
			var v struct {
				Choices []struct {
					Message struct{ Content string }
				}
				Usage struct {
					CompletionTokens int `json:"completion_tokens"`
				}
			}
			if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || resp.StatusCode != 200 {
				t.Fatalf("status %d: %v", resp.StatusCode, err)
			}
			if len(v.Choices) != 1 || v.Usage.CompletionTokens != Chunks || strings.Count(v.Choices[0].Message.Content, " ") != Chunks {
				t.Errorf("%+v", v)
			}
		}
	})
	for _, tc := range []struct {
		body  string
		usage bool
	}{
		{`{"model":"m","stream":true}`, false},
		{`{"model":"m","stream": true,"stream_options":{"include_usage":true}}`, true},
	} {
		t.Run("stream usage="+map[bool]string{true: "yes", false: "no"}[tc.usage], func(t *testing.T) {
			resp := post(t, url+"/v1/chat/completions", tc.body, false)
			if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
				t.Fatalf("content type %q", ct)
			}
			sc := bufio.NewScanner(resp.Body)
			var events []string
			for sc.Scan() {
				if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
					events = append(events, d)
				}
			}
			want := Chunks + 3 // role, content chunks, finish, [DONE]
			if tc.usage {
				want++
			}
			if len(events) != want || events[len(events)-1] != "[DONE]" {
				t.Fatalf("%d events: %q", len(events), events)
			}
			hasUsage := strings.Contains(events[len(events)-2], `"usage"`)
			if hasUsage != tc.usage {
				t.Errorf("usage chunk %v, want %v", hasUsage, tc.usage)
			}
			for _, e := range events[:len(events)-1] {
				if !json.Valid([]byte(e)) {
					t.Errorf("invalid JSON %s", e)
				}
			}
		})
	}
	t.Run("other paths", func(t *testing.T) {
		if resp := post(t, url+"/v1/embeddings", `{}`, false); resp.StatusCode != 404 {
			t.Errorf("status %d", resp.StatusCode)
		}
	})
}
