package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func chatBody(dst []byte, seq int64) []byte {
	dst = append(dst, `{"model":"m","messages":[{"role":"user","content":"hello `...)
	dst = fmt.Appendf(dst, "%d", seq)
	return append(dst, `"}]}`...)
}

// fakeUpstream answers by the number in the request's content: every seq%5==1 gets 429,
// seq%5==2 a 500, seq%5==3 a 200 without "choices" (JSON) or without [DONE] (stream), the rest
// a good 200. It counts the requests it saw and checks the bearer key rotation.
func fakeUpstream(t *testing.T, seen *atomic.Int64) *httptest.Server {
	t.Helper()
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("reading body: %v", err)
			return
		}
		var seq int64
		s := string(body)
		if i := strings.Index(s, "hello "); i >= 0 {
			_, _ = fmt.Sscanf(s[i+len("hello "):], "%d", &seq)
		}
		if want := fmt.Sprintf("Bearer k%d", seq%3); r.Header.Get("Authorization") != want {
			t.Errorf("request %d: Authorization %q, want %q", seq, r.Header.Get("Authorization"), want)
		}
		stream := strings.Contains(s, `"stream":true`)
		switch seq % 5 {
		case 1:
			http.Error(w, `{"error":{"message":"slow down"}}`, http.StatusTooManyRequests)
			return
		case 2:
			http.Error(w, `{"error":{"message":"boom"}}`, http.StatusInternalServerError)
			return
		}
		good := seq%5 != 3
		if !stream {
			w.Header().Set("Content-Type", "application/json")
			if good {
				_, _ = io.WriteString(w, `{"id":"x","choices":[{"message":{"content":"hi"}}]}`)
			} else {
				_, _ = io.WriteString(w, `{"id":"x"}`)
			}
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Trailer", "X-Usage")
		f := w.(http.Flusher)
		for i := range 20 {
			fmt.Fprintf(w, "data: {\"choices\":[{\"delta\":{\"content\":\"t%d\"}}]}\n\n", i)
			f.Flush()
		}
		if good {
			_, _ = io.WriteString(w, "data: [DONE]\n\n")
		}
		w.Header().Set("X-Usage", "20")
	}))
}

func TestRunCounts(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stream bool
		conns  int
	}{
		{"json one connection", false, 1},
		{"json many connections", false, 4},
		{"stream", true, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var seen atomic.Int64
			srv := fakeUpstream(t, &seen)
			defer srv.Close()
			body := chatBody
			if tc.stream {
				body = func(dst []byte, seq int64) []byte {
					dst = chatBody(dst, seq)
					return append(dst[:len(dst)-1], `,"stream":true}`...)
				}
			}
			res, err := Run(context.Background(), Config{
				Addr:     strings.TrimPrefix(srv.URL, "http://"),
				Conns:    tc.conns,
				Requests: 100,
				Body:     body,
				Keys:     []string{"k0", "k1", "k2"},
				Stream:   tc.stream,
				Timeout:  10 * time.Second,
			})
			if err != nil {
				t.Fatal(err)
			}
			// Of 100 requests: 40 good, 20 limited, 20 server errors, 20 bad bodies.
			if res.OK != 40 || res.Limited != 20 || res.Errors != 40 {
				t.Errorf("ok=%d limited=%d errors=%d, want 40/20/40 (samples %q)", res.OK, res.Limited, res.Errors, res.ErrorSamples)
			}
			if got := seen.Load(); got != 100 {
				t.Errorf("server saw %d requests, want 100", got)
			}
			if res.Latency.Count() != 40 {
				t.Errorf("latency samples %d, want 40", res.Latency.Count())
			}
			if tc.stream != (res.TTFB.Count() == 40) {
				t.Errorf("ttfb samples %d (stream %v)", res.TTFB.Count(), tc.stream)
			}
			wantSample := `JSON body without "choices"`
			if tc.stream {
				wantSample = `stream did not end with "data: [DONE]"`
			}
			if !contains(res.ErrorSamples, wantSample) {
				t.Errorf("error samples %q lack %q", res.ErrorSamples, wantSample)
			}
			if res.RPS() <= 0 {
				t.Errorf("RPS %v", res.RPS())
			}
		})
	}
}

func TestRunDurationAndRefusedConnections(t *testing.T) {
	var seen atomic.Int64
	srv := fakeUpstream(t, &seen)
	addr := strings.TrimPrefix(srv.URL, "http://")
	srv.Close() // nothing listens any more: every attempt is a dial error
	res, err := Run(context.Background(), Config{Addr: addr, Conns: 2, Duration: 50 * time.Millisecond, Body: chatBody, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 0 || res.Errors == 0 {
		t.Errorf("ok=%d errors=%d, want only errors", res.OK, res.Errors)
	}
	if len(res.ErrorSamples) == 0 || !strings.Contains(res.ErrorSamples[0], "dialing") {
		t.Errorf("error samples %q", res.ErrorSamples)
	}
}

func TestRunConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no address", Config{Body: chatBody, Requests: 1}},
		{"no body", Config{Addr: "127.0.0.1:1", Requests: 1}},
		{"no bound", Config{Addr: "127.0.0.1:1", Body: chatBody}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Run(context.Background(), tc.cfg); err == nil {
				t.Error("want an error")
			}
		})
	}
}

func TestClientRead(t *testing.T) {
	for _, tc := range []struct {
		name    string
		raw     string
		status  int
		body    string
		close   bool
		wantErr bool
	}{
		{"content length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 200, "hello", false, false},
		{"chunked with trailers", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nX-Usage: 5\r\n\r\n", 200, "abcde", false, false},
		{"connection close", "HTTP/1.1 429 Too Many\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}", 429, "{}", true, false},
		{"until eof", "HTTP/1.0 200 OK\r\n\r\nrest of it", 200, "rest of it", true, false},
		{"informational first", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", 204, "", false, false},
		{"short body", "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhello", 0, "", false, true},
		{"bad status", "HTTP/1.1 2x0 OK\r\n\r\n", 0, "", false, true},
		{"bad chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 0, "", false, true},
		{"not http", "SSH-2.0-OpenSSH\r\n", 0, "", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient("", time.Second, 1<<20)
			c.br = bufio.NewReaderSize(strings.NewReader(tc.raw), maxHeaderLine)
			var r response
			err := c.read(&r)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("want an error, got status %d body %q", r.status, r.body)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.status != tc.status || string(r.body) != tc.body || r.close != tc.close {
				t.Errorf("got %d %q close=%v, want %d %q close=%v", r.status, r.body, r.close, tc.status, tc.body, tc.close)
			}
			if !bytes.HasSuffix([]byte(tc.body), r.tail[:r.tailLen]) {
				t.Errorf("tail %q is not the end of %q", r.tail[:r.tailLen], tc.body)
			}
		})
	}
}

func TestTailSurvivesTruncation(t *testing.T) {
	body := strings.Repeat("x", 1000) + "data: [DONE]\n\n"
	raw := fmt.Sprintf("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(body), body)
	c := newClient("", time.Second, 100)
	c.br = bufio.NewReaderSize(strings.NewReader(raw), maxHeaderLine)
	var r response
	if err := c.read(&r); err != nil {
		t.Fatal(err)
	}
	if len(r.body) != 100 {
		t.Errorf("kept %d bytes, want 100", len(r.body))
	}
	if !bytes.HasSuffix(r.tail[:r.tailLen], doneSuffix) {
		t.Errorf("tail %q", r.tail[:r.tailLen])
	}
}

func FuzzClientRead(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX: y\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\n\r\nabc"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := newClient("", time.Second, 64)
		c.br = bufio.NewReaderSize(bytes.NewReader(data), maxHeaderLine)
		var r response
		if err := c.read(&r); err != nil {
			return
		}
		if len(r.body) > 64 || r.tailLen > len(r.tail) {
			t.Fatalf("body %d bytes, tail %d", len(r.body), r.tailLen)
		}
	})
}

func BenchmarkRun(b *testing.B) {
	payload := []byte(`{"id":"x","choices":[{"message":{"content":"` + strings.Repeat("word ", 40) + `"}}]}`)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(payload)
	}))
	defer srv.Close()
	b.ReportAllocs()
	b.ResetTimer()
	res, err := Run(context.Background(), Config{Addr: strings.TrimPrefix(srv.URL, "http://"), Conns: 1, Requests: int64(b.N), Body: chatBody})
	if err != nil {
		b.Fatal(err)
	}
	if res.OK != int64(b.N) {
		b.Fatalf("ok %d of %d: %q", res.OK, b.N, res.ErrorSamples)
	}
}

func BenchmarkClientRead(b *testing.B) {
	raw := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n" +
		strings.Repeat("1e\r\ndata: {\"choices\":[\"abcdef\"]}\n\n\r\n", 20) + "e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n")
	rd := bytes.NewReader(raw)
	c := newClient("", time.Second, 1<<20)
	c.br = bufio.NewReaderSize(rd, maxHeaderLine)
	var r response
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		rd.Reset(raw)
		c.br.Reset(rd)
		if err := c.read(&r); err != nil {
			b.Fatal(err)
		}
	}
}

func TestRunHeadersKeysAndRampUp(t *testing.T) {
	var seen atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		if r.Header.Get("X-Peer") != "yes" {
			http.Error(w, "no header", http.StatusBadRequest)
			return
		}
		if r.Header.Get("Authorization") == "Bearer k1" && seen.Load()%2 == 0 {
			http.Error(w, `{"error":{}}`, http.StatusTooManyRequests)
			return
		}
		_, _ = io.WriteString(w, `{"choices":[]}`)
	}))
	defer srv.Close()
	start := time.Now()
	res, err := Run(context.Background(), Config{
		Addr: strings.TrimPrefix(srv.URL, "http://"), Conns: 4, Requests: 60, Body: chatBody,
		Keys: []string{"k0", "k1", "k2"}, Headers: []string{"X-Peer: yes"}, CountKeys: true,
		RampUp: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 0 || len(res.OKByKey) != 3 {
		t.Fatalf("errors %d (%q), by key %v", res.Errors, res.ErrorSamples, res.OKByKey)
	}
	if res.OKByKey[0] != 20 || res.OKByKey[2] != 20 || res.OKByKey[1]+res.Limited != 20 {
		t.Errorf("by key %v, limited %d", res.OKByKey, res.Limited)
	}
	// The last connection starts 3/4 of the ramp-up after the first.
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("finished in %v, before the ramp-up", d)
	}
}
