package tokens

import (
	"encoding/json"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"
)

// attackSize is the size of the hostile and realistic prompts of the
// counting-attack benchmarks: 4 MiB, the attack of issue 14 item 2.
const attackSize = 4 << 20

// attackTexts are the 4 MiB prompts of the counting-attack benchmarks: one
// word of random letters, one character repeated, and realistic mixed text.
var attackTexts = sync.OnceValue(func() []struct{ name, text string } {
	r := rand.New(rand.NewPCG(1, 2))
	word := make([]byte, attackSize)
	for i := range word {
		word[i] = 'a' + byte(r.IntN(26))
	}
	return []struct{ name, text string }{
		{"oneword", string(word)},
		{"onechar", strings.Repeat("a", attackSize)},
		{"realistic", realisticText(attackSize)},
	}
})

// realisticText returns n bytes of varied prose, code, numbers and a little
// non-ASCII text, so that no memo or vocabulary shortcut applies.
func realisticText(n int) string {
	r := rand.New(rand.NewPCG(3, 4))
	words := strings.Fields(`the gateway counts prompt tokens before a request goes upstream so that a
model's context window is enforced and rate limits reserve what can be generated while streamed
answers are tapped line by line history of tokenizers byte pair encoding won because it handles
any text without unknown words Grüße naïve café Köln 你好 世界 🍕 Привет мир function return
value error handling concurrency limits budget window request response stream usage`)
	var b strings.Builder
	b.Grow(n + 64)
	for b.Len() < n {
		switch k := r.IntN(40); {
		case k == 0:
			b.WriteString("\n\nfunc count" + strconv.Itoa(r.IntN(1000)) + "(s string) int {\n\treturn len(s) / 4\n}\n\n")
		case k == 1:
			b.WriteString(" " + strconv.Itoa(r.IntN(1_000_000)) + ",")
		case k < 4:
			b.WriteString(". ")
		default:
			b.WriteString(words[r.IntN(len(words))])
			b.WriteByte(' ')
		}
	}
	s := b.String()[:n]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// chatBody returns a chat body with one user message holding text.
func chatBody(text string) []byte {
	return []byte(`{"model":"m","messages":[{"role":"user","content":` + jsonString(text) + `}]}`)
}

// jsonString returns s as a JSON string.
func jsonString(s string) string {
	q, _ := json.Marshal(s) // a string always marshals
	return string(q)
}

// BenchmarkCount4MB counts a chat body holding a 4 MiB prompt, cold (no
// memo): the CPU and memory one counting attack costs.
func BenchmarkCount4MB(b *testing.B) {
	for _, tt := range attackTexts() {
		body := chatBody(tt.text)
		for _, spec := range []string{"cl100k_base", "o200k_base", "hf testdata/tiny-bytelevel.json", "hf testdata/tiny-spm.json"} {
			c := mustCounter(b, spec)
			b.Run(tt.name+"/"+strings.TrimPrefix(c.Name(), "hf:testdata/"), func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(tt.text)))
				for b.Loop() {
					if _, err := NewChatCounter(c, nil).CountChat(body); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
