package tokens

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/caddyai/gateway/internal/wire"
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

// BenchmarkCountLimit4MB is the refusal of a 4 MiB prompt by CountLimit, with
// the room of an 8k and of a 128k window: the CPU one refused request costs.
func BenchmarkCountLimit4MB(b *testing.B) {
	ctx := context.Background()
	for _, tt := range attackTexts() {
		body := chatBody(tt.text)
		for _, spec := range []string{"cl100k_base", "o200k_base", "hf testdata/tiny-spm.json"} {
			c := NewChatCounter(mustCounter(b, spec), nil)
			for _, limit := range []int{8 << 10, 128 << 10} {
				name := tt.name + "/" + strings.TrimPrefix(c.Name(), "hf:testdata/") + "/limit-" + strconv.Itoa(limit>>10) + "k"
				b.Run(name, func(b *testing.B) {
					b.ReportAllocs()
					for b.Loop() {
						if _, exceeded, err := c.CountLimit(ctx, wire.DialectChat, body, limit); err != nil || !exceeded {
							b.Fatal(exceeded, err)
						}
					}
				})
			}
		}
	}
}

// BenchmarkLowerBound4MB is LowerBound of a chat body holding a 4 MiB prompt.
func BenchmarkLowerBound4MB(b *testing.B) {
	body := chatBody(attackTexts()[2].text)
	c := NewChatCounter(cl100k(), nil)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := c.LowerBound(wire.DialectChat, body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConcurrent4MB counts 16 realistic 4 MiB prompts at once (cl100k,
// no memo, no limit: the worst case, a gateway that must count them all),
// while another request's 4 KB prompt is counted over and over; it reports
// the peak heap above the bodies themselves and that request's median and
// 90th percentile latency, without and with an Inflight bound of 32 MiB
// (waiting up to 50 ms, then estimating).
func BenchmarkConcurrent4MB(b *testing.B) {
	text := attackTexts()[2].text
	small := chatBody(prompt4KB)
	for _, bound := range []*Inflight{nil, NewInflight(32<<20, 50*time.Millisecond)} {
		name := "unbounded"
		if bound != nil {
			name = "inflight-32MiB"
		}
		b.Run(name, func(b *testing.B) {
			c := &ChatCounter{Counter: cl100k(), Inflight: bound}
			other := NewChatCounter(cl100k(), nil)
			for b.Loop() {
				bodies := make([][]byte, 16)
				for i := range bodies {
					bodies[i] = chatBody(strconv.Itoa(i) + text)
				}
				runtime.GC()
				base := heapBytes()
				stop := make(chan struct{})
				peak := make(chan uint64)
				go func() { peak <- samplePeakHeap(stop) }()
				lat := make(chan []time.Duration)
				go func() {
					var ds []time.Duration
					for {
						select {
						case <-stop:
							lat <- ds
							return
						default:
						}
						t0 := time.Now()
						if _, err := other.CountChat(small); err != nil {
							panic(err)
						}
						ds = append(ds, time.Since(t0))
						time.Sleep(time.Millisecond)
					}
				}()
				var wg sync.WaitGroup
				for _, body := range bodies {
					wg.Add(1)
					go func() {
						defer wg.Done()
						if _, err := c.CountChat(body); err != nil {
							panic(err)
						}
					}()
				}
				wg.Wait()
				close(stop)
				b.ReportMetric(float64(<-peak-base)/(1<<20), "peak-heap-MiB")
				ds := <-lat
				slices.Sort(ds)
				if len(ds) > 0 {
					b.ReportMetric(float64(ds[len(ds)/2].Microseconds()), "other-p50-µs")
					b.ReportMetric(float64(ds[len(ds)*9/10].Microseconds()), "other-p90-µs")
				}
			}
			if bound != nil {
				b.ReportMetric(float64(bound.Fallbacks())/float64(b.N), "estimated/op")
			}
		})
	}
}

// heapBytes returns the bytes of heap objects, live or not yet swept.
func heapBytes() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// samplePeakHeap returns the largest heap (heapBytes) seen every millisecond
// until stop is closed.
func samplePeakHeap(stop chan struct{}) uint64 {
	var peak uint64
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for {
		peak = max(peak, heapBytes())
		select {
		case <-stop:
			return peak
		case <-t.C:
		}
	}
}
