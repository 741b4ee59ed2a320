package simulator

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// discardWriter is a minimal flushable ResponseWriter that keeps nothing.
type discardWriter struct {
	h http.Header
	n int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { w.n += len(b); return len(b), nil }
func (w *discardWriter) WriteHeader(int)             {}
func (w *discardWriter) Flush()                      {}

func benchServe(b *testing.B, body string) {
	s := newServer(b, Config{})
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		clear(w.h)
		r := httptest.NewRequest("POST", "/v1/chat/completions", strings.NewReader(body))
		s.ServeHTTP(w, r)
	}
	if w.n == 0 {
		b.Fatal("nothing written")
	}
}

func BenchmarkChatJSON(b *testing.B) {
	benchServe(b, helloChat+`}`)
}

// BenchmarkChatStream20 streams 20 token chunks (23 frames with role, finish and [DONE]).
func BenchmarkChatStream20(b *testing.B) {
	benchServe(b, helloChat+`,"stream":true,"max_tokens":20}`)
}
