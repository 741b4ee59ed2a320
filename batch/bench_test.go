package batch

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// BenchmarkReadInput reads a 50,000-line chat input file (about 12 MB).
func BenchmarkReadInput(b *testing.B) {
	var buf bytes.Buffer
	content := strings.Repeat("lorem ipsum ", 15)
	for i := 0; i < DefaultMaxTasks; i++ {
		fmt.Fprintf(&buf, `{"custom_id":"request-%d","method":"POST","url":"/v1/chat/completions","body":{"model":"m","max_tokens":100,"messages":[{"role":"system","content":"You are helpful."},{"role":"user","content":"%s"}]}}`+"\n", i, content)
	}
	data := buf.Bytes()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		in, err := ReadInput(bytes.NewReader(data), chat, InputLimits{})
		if err != nil || !in.OK() {
			b.Fatal(err, in.Errors)
		}
	}
}

// BenchmarkReadMessageBatchRequest reads a create body of 10,000 requests (about 3 MB).
func BenchmarkReadMessageBatchRequest(b *testing.B) {
	var buf bytes.Buffer
	content := strings.Repeat("lorem ipsum ", 15)
	buf.WriteString(`{"requests":[`)
	for i := 0; i < 10_000; i++ {
		if i > 0 {
			buf.WriteByte(',')
		}
		fmt.Fprintf(&buf, `{"custom_id":"request-%d","params":{"model":"claude","max_tokens":100,"system":"You are helpful.","messages":[{"role":"user","content":"%s"}]}}`, i, content)
	}
	buf.WriteString(`]}`)
	data := buf.Bytes()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ReadMessageBatchRequest(bytes.NewReader(data), RequestLimits{}); err != nil {
			b.Fatal(err)
		}
	}
}
