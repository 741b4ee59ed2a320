package tokens

import (
	"strconv"
	"strings"
	"testing"
)

// prompt4KB is about 4 KB of mixed prose, code and a little non-ASCII text.
var prompt4KB = func() string {
	var b strings.Builder
	for b.Len() < 4096 {
		b.WriteString("The gateway counts prompt tokens before a request goes upstream, so that a model's context window is enforced. ")
		b.WriteString("func count(s string) int {\n\treturn len(s) / 4\n}\n")
		b.WriteString("Grüße, naïve café: 你好世界 🍕. ")
	}
	return b.String()[:4096]
}()

// BenchmarkCountCold counts a chat body holding a 4 KB prompt with an empty
// memo: the exact cost of a request never seen before. The piece cache, shared
// by every count of a vocabulary, is warm after the first iteration, as it is
// in a gateway that has counted anything.
func BenchmarkCountCold(b *testing.B) {
	body := []byte(`{"model":"m","messages":[{"role":"user","content":` + strconv.Quote(prompt4KB) + `}]}`)
	for _, spec := range []string{"cl100k_base", "o200k_base", "hf testdata/tiny-bytelevel.json", "hf testdata/tiny-spm.json"} {
		c := mustCounter(b, spec)
		b.Run(c.Name(), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(prompt4KB)))
			for b.Loop() {
				// A fresh memo would be empty; nil skips building one.
				if _, err := NewChatCounter(c, nil).CountChat(body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCountConversation counts a 20-turn conversation whose first 19
// turns are memoised: every iteration appends a different last message, so
// exactly one message is counted for real.
func BenchmarkCountConversation(b *testing.B) {
	for _, spec := range []string{"cl100k_base", "o200k_base"} {
		c := NewChatCounter(mustCounter(b, spec), NewMemo(1<<16))
		b.Run(spec, func(b *testing.B) {
			base := conversation(20, "")
			if _, err := c.CountChat(base); err != nil {
				b.Fatal(err)
			}
			// The body up to the closing quote of the last message.
			cut := len(base) - len(`"}]}`)
			buf := make([]byte, 0, len(base)+32)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				buf = append(buf[:0], base[:cut]...)
				buf = append(buf, " #"...)
				buf = strconv.AppendInt(buf, int64(i), 10)
				buf = append(buf, `"}]}`...)
				if _, err := c.CountChat(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCountConversationAllMemoised counts the same 20-turn conversation
// again: every text comes from the memo.
func BenchmarkCountConversationAllMemoised(b *testing.B) {
	c := NewChatCounter(mustCounter(b, "o200k_base"), NewMemo(1<<16))
	body := conversation(20, "")
	if _, err := c.CountChat(body); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.CountChat(body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEstimate4KB is the Estimate of a 4 KB prompt.
func BenchmarkEstimate4KB(b *testing.B) {
	e := Estimate()
	b.ReportAllocs()
	b.SetBytes(int64(len(prompt4KB)))
	for b.Loop() {
		e.Count(prompt4KB)
	}
}

// BenchmarkUpperBound1KB is UpperBound of a chat body of about 1 KB.
func BenchmarkUpperBound1KB(b *testing.B) {
	body := conversation(3, "")
	for len(body) < 1024 {
		body = conversation(4, "")
	}
	body = conversation(3, strings.Repeat("z", max(0, 1024-len(body))))
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		UpperBound(body)
	}
}
