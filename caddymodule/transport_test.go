package caddymodule

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// countingConn counts the writes made on a connection (each one a write system call).
type countingConn struct {
	net.Conn
	writes *atomic.Int32
}

func (c countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// opaqueBody hides the body's type, as reverse_proxy's wrappers do.
type opaqueBody struct{ io.ReadCloser }

// newCountingTransport provisions the ai_gateway transport with a dialer that counts writes.
func newCountingTransport(t *testing.T) (*Transport, *atomic.Int32) {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	tr := new(Transport)
	if err := tr.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Cleanup() })
	writes := new(atomic.Int32)
	dial := tr.Transport.DialContext
	tr.Transport.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return countingConn{c, writes}, nil
	}
	return tr, writes
}

// handedRequest is a request to url whose body the gateway read and handed on, wrapped as
// reverse_proxy wraps it, with its exchange in the context.
func handedRequest(t *testing.T, url, body string) (*http.Request, *exchange) {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(body))
	req = req.WithContext(context.WithValue(req.Context(), caddyhttp.VarsCtxKey, map[string]any{}))
	ex := newExchange(req, time.Now())
	caddyhttp.SetVar(req.Context(), varExchange, ex)
	if werr := ex.body.read(req, 1<<20); werr != nil {
		t.Fatal(werr)
	}
	ex.body.install(req)
	out, err := http.NewRequestWithContext(req.Context(), http.MethodPost, url+"/v1/chat/completions", opaqueBody{req.Body})
	if err != nil {
		t.Fatal(err)
	}
	out.ContentLength = req.ContentLength
	out.Header = req.Header.Clone()
	return out, ex
}

// TestTransportOneWrite: a request whose body the gateway holds leaves in one write through the
// ai_gateway transport (two through Caddy's http transport, which cannot see into the body), and
// the upstream gets every byte of it. A body sent counts as read: no fallback resends it; a
// failed dial leaves it unsent.
func TestTransportOneWrite(t *testing.T) {
	body := `{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("hello ", 300) + `"}]}`
	var got atomic.Value
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got.Store(string(b))
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(upstream.Close)

	roundTripBody := func(t *testing.T, rt http.RoundTripper, req *http.Request, body string) {
		t.Helper()
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if s, _ := got.Load().(string); s != body {
			t.Fatalf("the upstream got %d bytes, want the %d sent", len(s), len(body))
		}
	}
	roundTrip := func(t *testing.T, rt http.RoundTripper, req *http.Request) {
		t.Helper()
		roundTripBody(t, rt, req, body)
	}
	t.Run("ai_gateway transport", func(t *testing.T) {
		tr, writes := newCountingTransport(t)
		req, ex := handedRequest(t, upstream.URL, body)
		if !ex.body.untouched() {
			t.Fatal("a body handed on but not sent is untouched")
		}
		roundTrip(t, tr, req)
		if n := writes.Load(); n != 1 {
			t.Errorf("%d writes for the request, want 1", n)
		}
		if ex.body.untouched() {
			t.Error("a body sent from memory still counts as untouched: a fallback would resend it")
		}
		if !ex.body.given.Load() {
			t.Error("a body sent from memory is not marked given: its buffer could go back to the pool")
		}
		ex.body.release()
		if ex.body.buf == nil {
			t.Error("the buffer of a body sent from memory went back to the pool while the transport may hold it")
		}
	})
	t.Run("a large body", func(t *testing.T) {
		large := `{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("hello ", maxSentFromMemory/6) + `"}]}`
		tr, writes := newCountingTransport(t)
		req, ex := handedRequest(t, upstream.URL, large)
		roundTripBody(t, tr, req, large)
		if n := writes.Load(); n < 2 {
			t.Errorf("%d writes for a %d-byte body", n, len(large))
		}
		// read through the proxy's reader, the body is closed by the transport once written,
		// and its buffer goes back to the pool
		deadline := time.Now().Add(2 * time.Second)
		for !ex.body.handed.closed.Load() && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if !ex.body.handed.closed.Load() || ex.body.handed.sent.Load() {
			t.Error("a body over maxSentFromMemory was sent from memory")
		}
	})
	t.Run("http transport", func(t *testing.T) {
		tr, writes := newCountingTransport(t)
		req, _ := handedRequest(t, upstream.URL, body)
		roundTrip(t, &tr.HTTPTransport, req)
		if n := writes.Load(); n != 2 {
			t.Errorf("%d writes through Caddy's transport, want 2 (header, then body): the test no longer shows the difference", n)
		}
	})
	t.Run("not the gateway's", func(t *testing.T) {
		tr, writes := newCountingTransport(t)
		req, err := http.NewRequest(http.MethodPost, upstream.URL+"/v1/chat/completions", opaqueBody{io.NopCloser(strings.NewReader(body))})
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = int64(len(body))
		roundTrip(t, tr, req)
		if n := writes.Load(); n != 2 {
			t.Errorf("%d writes for a request without an exchange, want 2 (forwarded as it is)", n)
		}
	})
	t.Run("dial fails", func(t *testing.T) {
		tr, _ := newCountingTransport(t)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closed := "http://" + l.Addr().String()
		l.Close()
		req, ex := handedRequest(t, closed, body)
		if resp, err := tr.RoundTrip(req); err == nil {
			resp.Body.Close()
			t.Fatal("a round trip to a closed port succeeded")
		}
		if !ex.body.untouched() {
			t.Error("a body whose dial failed counts as sent: the fallback would not get it")
		}
	})
}
