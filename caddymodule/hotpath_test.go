package caddymodule

import (
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/tidwall/sjson"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/caddyai/gateway/ratelimit"
)

// The gateway's placeholders: the request's while the request is proxied (for header_up), the
// outcome's once the request is recorded (for log formats), each of its own type.
func TestPlaceholders(t *testing.T) {
	g := newBenchGateway(t)
	req := benchRequest(benchChatBody)
	repl := req.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	during := map[string]any{}
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		for _, k := range []string{phKeyID, phModel, phRequested, phRequestID, phPrompt, phSurface} {
			if v, ok := repl.Get(k); ok {
				during[k] = v
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_, err := w.Write([]byte(benchCompletion))
		return err
	})
	rec := httptest.NewRecorder()
	if err := g.ServeHTTP(rec, req, next); err != nil || rec.Code != 200 {
		t.Fatalf("%v %d %s", err, rec.Code, rec.Body)
	}
	if during[phKeyID] != "bench" || during[phModel] != "demo-llama" || during[phRequested] != "llama" || during[phRequestID] == "" {
		t.Errorf("while proxied: %v", during)
	}
	if _, ok := during[phPrompt]; ok {
		t.Errorf("the outcome's placeholders were answered before the outcome: %v", during)
	}
	for k, want := range map[string]any{phModel: "demo-llama", phStream: false, phPrompt: int64(180), phCompletion: int64(10),
		phTotal: int64(190), phSurface: "openai", phRejectReason: "", phEstimated: false} {
		if v, ok := repl.Get(k); !ok || v != want {
			t.Errorf("%s = %v (%T) %v, want %v (%T)", k, v, v, ok, want, want)
		}
	}
	if v := repl.ReplaceAll("{http.ai_gateway.key_id} {http.ai_gateway.total_tokens}", ""); v != "bench 190" {
		t.Errorf("replaced %q", v)
	}
	if _, ok := repl.Get("http.ai_gateway.nope"); ok {
		t.Error("an unknown placeholder was answered")
	}
}

func TestSetRateLimitHeaders(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	both := ratelimit.Decision{Requests: ratelimit.Quota{Limit: 600, Remaining: 599, Reset: 100 * time.Millisecond},
		Tokens: ratelimit.Quota{Limit: 200000, Remaining: 12345, Reset: 3*time.Second + 700*time.Microsecond}}
	for _, tc := range []struct {
		name string
		s    wire.Surface
		d    ratelimit.Decision
		want map[string]string
	}{
		{"openai", wire.OpenAI, both, map[string]string{"X-Ratelimit-Limit-Requests": "600", "X-Ratelimit-Remaining-Requests": "599",
			"X-Ratelimit-Reset-Requests": "100ms", "X-Ratelimit-Limit-Tokens": "200000", "X-Ratelimit-Remaining-Tokens": "12345",
			"X-Ratelimit-Reset-Tokens": "3.001s"}},
		{"tokens only", wire.OpenAI, ratelimit.Decision{Tokens: both.Tokens}, map[string]string{"X-Ratelimit-Limit-Tokens": "200000",
			"X-Ratelimit-Remaining-Tokens": "12345", "X-Ratelimit-Reset-Tokens": "3.001s"}},
		{"anthropic", wire.Anthropic, ratelimit.Decision{Requests: both.Requests}, map[string]string{"Anthropic-Ratelimit-Requests-Limit": "600",
			"Anthropic-Ratelimit-Requests-Remaining": "599", "Anthropic-Ratelimit-Requests-Reset": "2026-01-02T03:04:05Z"}},
		{"no limits", wire.OpenAI, ratelimit.Decision{}, map[string]string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			setRateLimitHeaders(h, tc.s, tc.d, now)
			if len(h) != len(tc.want) {
				t.Errorf("headers %v, want %v", h, tc.want)
			}
			for k, v := range tc.want {
				if got := h.Values(k); len(got) != 1 || got[0] != v {
					t.Errorf("%s: %q, want %q", k, got, v)
				}
			}
			h.Add("X-Ratelimit-Limit-Requests", "extra") // the slices do not share capacity
			if tc.name == "openai" && h.Get("X-Ratelimit-Remaining-Requests") != "599" {
				t.Errorf("appending to one header changed another: %v", h)
			}
		})
	}
}

func TestSetModel(t *testing.T) {
	for _, tc := range []struct{ body, model, want string }{
		{`{"model":"llama","messages":[]}`, "demo-llama", `{"model":"demo-llama","messages":[]}`},
		{`{"messages":[{"model":"x"}], "model" : "llama" ,"n":1}`, "m/7b", `{"messages":[{"model":"x"}], "model" : "m/7b" ,"n":1}`},
		{`{"model":"ll\"ama"}`, `a"b\c` + "\u00e9", `{"model":"a\"b\\c` + "\u00e9" + `"}`},
		{`{"messages":[]}`, "m", `{"messages":[],"model":"m"}`}, // absent: sjson adds it
	} {
		got, err := setModel([]byte(tc.body), tc.model)
		if err != nil || string(got) != tc.want {
			t.Errorf("setModel(%s, %q) = %s, %v; want %s", tc.body, tc.model, got, err, tc.want)
		}
		if !json.Valid(got) {
			t.Errorf("invalid JSON %s", got)
		}
	}
}

// TestAskStreamUsage: the splice and sjson agree on every body: the same members, with
// stream_options.include_usage true; a body with stream_options, or not known to lack one,
// goes through sjson.
func TestAskStreamUsage(t *testing.T) {
	for _, tc := range []struct {
		body   string
		absent bool
		want   string // exact output, "" to compare with sjson's only
	}{
		{`{"model":"m","stream":true}`, true, `{"stream_options":{"include_usage":true},"model":"m","stream":true}`},
		{" \n\t{ \"model\" : \"m\" }\r\n", true, " \n\t{\"stream_options\":{\"include_usage\":true}, \"model\" : \"m\" }\r\n"},
		{`{}`, true, `{"stream_options":{"include_usage":true}}`},
		{"{ \n }", true, "{\"stream_options\":{\"include_usage\":true} \n }"},
		{`{"model":"m","stream_options":{"include_usage":false}}`, false, `{"model":"m","stream_options":{"include_usage":true}}`},
		{`{"model":"m","stream_options":{}}`, false, ""},
		{`{"model":"m","messages":[{"role":"user","content":"{\"stream_options\":1}"}]}`, true, ""},
	} {
		got, err := askStreamUsage([]byte(tc.body), tc.absent)
		if err != nil {
			t.Fatalf("askStreamUsage(%q): %v", tc.body, err)
		}
		if tc.want != "" && string(got) != tc.want {
			t.Errorf("askStreamUsage(%q, %v) = %q, want %q", tc.body, tc.absent, got, tc.want)
		}
		ref, err := sjson.SetBytes([]byte(tc.body), "stream_options.include_usage", true)
		if err != nil {
			t.Fatal(err)
		}
		var a, b map[string]any
		if err := json.Unmarshal(got, &a); err != nil {
			t.Fatalf("askStreamUsage(%q) = %q: %v", tc.body, got, err)
		}
		if err := json.Unmarshal(ref, &b); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(a, b) {
			t.Errorf("askStreamUsage(%q) = %s, sjson sets %s", tc.body, got, ref)
		}
		if n := strings.Count(string(got), `"stream_options"`); n != 1 {
			t.Errorf("askStreamUsage(%q) = %s: %d stream_options members", tc.body, got, n)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = askStreamUsage([]byte(`{"model":"m"}`), true) }); n > 2 {
		t.Errorf("the splice allocates %v times, want at most 2 (the test's body and the result)", n)
	}
}

func TestAppendDuration(t *testing.T) {
	ds := []time.Duration{0, 1, 999, time.Microsecond, 1500 * time.Nanosecond, time.Millisecond, 12 * time.Millisecond,
		999999999, time.Second, 3*time.Second + 700*time.Microsecond, 59*time.Second + 500*time.Millisecond, time.Minute,
		61 * time.Second, time.Hour, 25*time.Hour + 61*time.Second + 5*time.Millisecond, -time.Second, -1500 * time.Millisecond,
		math.MaxInt64, math.MinInt64}
	for i := range 2000 {
		ds = append(ds, time.Duration(i*i*i*7919+i), time.Duration(i)*time.Millisecond*1013, time.Duration(i*i)*time.Millisecond)
	}
	for _, d := range ds {
		if got := string(appendDuration(nil, d)); got != d.String() {
			t.Errorf("%d: %q, want %q", int64(d), got, d.String())
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = appendDuration(make([]byte, 0, 32)[:0], 3*time.Second+time.Millisecond) }); n > 1 {
		t.Errorf("%v allocations", n)
	}
}

func TestStatusLabel(t *testing.T) {
	for _, c := range []int{0, 99, 100, 200, 429, 529, 599, 600, 1000} {
		if got := statusLabel(c); got != strconv.Itoa(c) {
			t.Errorf("statusLabel(%d) = %q", c, got)
		}
	}
}
