package tokens_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/caddyai/gateway/policy/tokens"
	"github.com/caddyai/gateway/simulator"
)

// simTokenizer serves the simulator (cl100k_base) and counts its /tokenize requests.
func simTokenizer(t *testing.T) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	sim, err := simulator.New(simulator.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	sim.OnRequest(func(r *http.Request, _ []byte) {
		if r.URL.Path == "/tokenize" {
			calls.Add(1)
		}
	})
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	return srv, &calls
}

func newUpstreamCounter(t *testing.T, base, flavour string, onFallback func(string)) *tokens.Upstream {
	t.Helper()
	u, err := tokens.NewUpstream(tokens.UpstreamOptions{Name: "upstream:sim-" + flavour, Flavour: flavour, Model: "sim-model",
		Endpoint: func() string { return base }, Timeout: time.Second, OnFallback: onFallback})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestUpstreamCountsEqualTheServers: in each flavour, the count of a text is the server's (the
// simulator counts with cl100k_base), and a chat body counts what the simulator bills.
func TestUpstreamCountsEqualTheServers(t *testing.T) {
	srv, _ := simTokenizer(t)
	exact, err := tokens.New("cl100k_base")
	if err != nil {
		t.Fatal(err)
	}
	texts := []string{"Hello", "The quick brown fox jumps over the lazy dog.", "naïve café — 東京 🚀", "    indented\n\tcode()"}
	for _, flavour := range []string{tokens.FlavourVLLM, tokens.FlavourTGI, tokens.FlavourLlamaCpp} {
		t.Run(flavour, func(t *testing.T) {
			u := newUpstreamCounter(t, srv.URL, flavour, func(r string) { t.Errorf("fallback %s", r) })
			for _, text := range texts {
				if got, want := u.Count(text), exact.Count(text); got != want {
					t.Errorf("%q: %d, want %d", text, got, want)
				}
			}
			body := []byte(`{"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"naïve café — 東京 🚀","name":"bob"}]}`)
			remote, err := tokens.NewChatCounter(u, nil).Count(wire.DialectChat, body)
			if err != nil {
				t.Fatal(err)
			}
			local, _ := tokens.NewChatCounter(exact, nil).Count(wire.DialectChat, body)
			if remote != local {
				t.Errorf("chat body: %d, local cl100k_base %d", remote, local)
			}
		})
	}
}

// TestUpstreamMemoised: a text the server counted once is not asked again.
func TestUpstreamMemoised(t *testing.T) {
	srv, calls := simTokenizer(t)
	cc := tokens.NewChatCounter(newUpstreamCounter(t, srv.URL, "", nil), tokens.NewMemo(64))
	body := []byte(`{"model":"m","messages":[{"role":"user","content":"first turn"},{"role":"assistant","content":"an answer"}]}`)
	a, err := cc.Count(wire.DialectChat, body)
	if err != nil {
		t.Fatal(err)
	}
	first := calls.Load()
	longer := []byte(`{"model":"m","messages":[{"role":"user","content":"first turn"},{"role":"assistant","content":"an answer"},{"role":"user","content":"next"}]}`)
	b, _ := cc.Count(wire.DialectChat, longer)
	if a <= 0 || b <= a {
		t.Fatalf("counts %d then %d", a, b)
	}
	// first: user, "first turn", assistant, "an answer"; then only "next" is new
	if first != 4 || calls.Load() != 5 {
		t.Errorf("%d requests for the first body, %d in all; want 4 and 5", first, calls.Load())
	}
}

// TestUpstreamFallsBack: a dead endpoint, an error answer and a timeout are estimated and
// reported, never memoised; after a failure the backoff spares further requests.
func TestUpstreamFallsBack(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String()
	l.Close()
	var mu sync.Mutex
	var reasons []string
	record := func(r string) {
		mu.Lock()
		reasons = append(reasons, r)
		mu.Unlock()
	}
	text := "The quick brown fox jumps over the lazy dog."
	est := tokens.Estimate().Count(text)

	memo := tokens.NewMemo(64)
	u := newUpstreamCounter(t, dead, "", record)
	cc := tokens.NewChatCounter(u, memo)
	body := []byte(`{"model":"m","messages":[{"role":"user","content":"` + text + `"}]}`)
	n, err := cc.Count(wire.DialectChat, body)
	if err != nil {
		t.Fatal(err)
	}
	if want := 3 + est + tokens.Estimate().Count("user") + 3; n != want {
		t.Errorf("dead endpoint: %d, want the estimate %d", n, want)
	}
	if memo.Len() != 0 {
		t.Error("an estimate was memoised")
	}
	mu.Lock()
	if len(reasons) != 2 || reasons[0] != tokens.FallbackError || reasons[1] != tokens.FallbackUnavailable {
		t.Errorf("reasons %v: want one error, then the backoff", reasons)
	}
	mu.Unlock()

	t.Run("error answer", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, `{"detail":"Not Found"}`, 404)
		}))
		defer srv.Close()
		var got []string
		u := newUpstreamCounter(t, srv.URL, tokens.FlavourTGI, func(r string) { got = append(got, r) })
		if n := u.Count(text); n != est || len(got) != 1 || got[0] != tokens.FallbackError {
			t.Errorf("%d %v", n, got)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		block := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-block:
			case <-r.Context().Done():
			}
		}))
		defer srv.Close()
		defer close(block)
		var got []string
		u, _ := tokens.NewUpstream(tokens.UpstreamOptions{Name: "upstream:slow", Endpoint: func() string { return srv.URL },
			Timeout: 20 * time.Millisecond, OnFallback: func(r string) { got = append(got, r) }})
		if n := u.Count(text); n != est || len(got) != 1 || got[0] != tokens.FallbackTimeout {
			t.Errorf("%d %v", n, got)
		}
	})
	t.Run("no endpoint", func(t *testing.T) {
		var got []string
		u, _ := tokens.NewUpstream(tokens.UpstreamOptions{Name: "upstream:none", Endpoint: func() string { return "" },
			OnFallback: func(r string) { got = append(got, r) }})
		if n := u.Count(text); n != est || len(got) != 1 || got[0] != tokens.FallbackUnavailable {
			t.Errorf("%d %v", n, got)
		}
	})
	t.Run("client gone", func(t *testing.T) {
		srv, _ := simTokenizer(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		var got []string
		cc := tokens.NewChatCounter(newUpstreamCounter(t, srv.URL, "", func(r string) { got = append(got, r) }), nil)
		if _, _, err := cc.CountLimit(ctx, wire.DialectChat, body, 1<<30); !errors.Is(err, context.Canceled) {
			t.Errorf("err %v", err)
		}
		if len(got) != 0 {
			t.Errorf("a cancelled count was reported as a fallback: %v", got)
		}
	})
}

func TestParseTokenizeAnswer(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		ok   bool
		name string
	}{
		{`{"count":3,"max_model_len":8192,"tokens":[1,2,3]}`, 3, true, "vllm"},
		{`[{"id":1,"text":"a","start":0,"stop":1},{"id":2,"text":"b","start":1,"stop":2}]`, 2, true, "tgi"},
		{`{"tokens":[5,6,7,8]}`, 4, true, "llama.cpp"},
		{`[]`, 0, true, "empty tgi"},
		{`{"error":"x"}`, 0, false, "error object"},
		{`{"count":-1}`, 0, false, "negative"},
		{`"12"`, 0, false, "string"},
		{`{"count":`, 0, false, "truncated"},
	}
	for _, tt := range tests {
		if n, ok := tokens.ParseTokenizeAnswer([]byte(tt.in)); n != tt.n || ok != tt.ok {
			t.Errorf("%s: %d %v, want %d %v", tt.name, n, ok, tt.n, tt.ok)
		}
	}
}

// FuzzParseTokenizeAnswer: any answer reads as a count or as none, never a negative count, and
// a JSON array counts its elements.
func FuzzParseTokenizeAnswer(f *testing.F) {
	for _, seed := range []string{`{"count":3,"tokens":[1,2,3]}`, `[{"id":1,"text":"a","start":0,"stop":1}]`, `{"tokens":[5]}`, `[]`,
		`{"count":"3"}`, `{"count":1e30}`, `{"tokens":{}}`, `[1,`, `null`, ``} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n, ok := tokens.ParseTokenizeAnswer(b)
		if !ok {
			return
		}
		if n < 0 {
			t.Fatalf("%q: count %d", b, n)
		}
		var arr []json.RawMessage
		if json.Unmarshal(b, &arr) == nil && arr != nil && n != len(arr) {
			t.Fatalf("%q: %d for an array of %d", b, n, len(arr))
		}
	})
}
