package tokens

import (
	"strings"
	"testing"
)

// boundSeeds are request bodies of every shape, used as fuzz seeds and in
// TestUpperBound.
var boundSeeds = []string{
	`{"messages":[{"role":"user","content":"hi"}]}`,
	`{"messages":[{"role":"user","name":"a","content":[{"type":"text","text":"\n"},{"type":"image_url","image_url":{"url":"u"}},{"type":"input_image"}]}],"tools":[{"type":"function"}]}`,
	`{"system":[{"type":"text","text":"s"}],"messages":[{"role":"user","content":[{"type":"image","source":{}},{"type":"tool_use","input":{}},{"type":"tool_result","content":[{"type":"text","text":"\u0958"},{"type":"image"}]}]}]}`,
	`{"messages":[{"role":"assistant","tool_calls":[{"function":{"name":"f","arguments":"\ud83d\ude00\ud800"}}],"function_call":{"name":"g","arguments":"\n\n"}}],"functions":[]}`,
	`{"prompt":[[1,2,3],[4],5,"x"],"input":["\u00e9\u00e9",[0]]}`,
	"{\"messages\":[{\"role\":\"\xff\",\"content\":\"\xfe\xfd\"}],\"system\":\"\xc3\"}",
	`{"messages":[{"role":"u","content":"\t"},{"role":"u","content":" "}],"system":"\n"}`,
	`{"messages":[{"role":"assistant","refusal":"n\u00e9","content":[{"type":"refusal","refusal":"x"},{"type":"file","file":{"file_data":"QUJD\/"}},{"type":"input_audio","input_audio":{"data":"AAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}]}],"documents":[{"text":"d"}],"chat_template":"{{m}}","chat_template_kwargs":{"k":1},"response_format":{"type":"json_schema","json_schema":{"schema":{}}},"prediction":{"content":[{"type":"text","text":"p"}]}}`,
	`{"messages":[{"role":"user","content":[{"type":"document","title":"t","context":"c","source":{"type":"text","data":"\n"}},{"type":"document","source":{"type":"base64","data":"QQ=="}},{"type":"document","source":{"type":"content","content":[{"type":"text","text":"x"}]}}]}]}`,
	`{"prompt":"p","suffix":"\u00e9"}`,
}

func TestUpperBound(t *testing.T) {
	counters := boundCounters(t)
	for _, body := range append(boundSeeds, string(conversation(20, "")), string(conversation(3, strings.Repeat("🍕 \n", 50)))) {
		ub := UpperBound([]byte(body))
		for _, c := range counters {
			cc := NewChatCounter(c, nil)
			for _, f := range []func([]byte) (int, error){cc.CountChat, cc.CountAnthropic, cc.CountCompletion, cc.CountEmbedding} {
				if n, err := f([]byte(body)); err == nil && n > ub {
					t.Errorf("%s count %d > UpperBound %d for %s", c.Name(), n, ub, trunc(body))
				}
			}
		}
	}
	// Every byte counts 1 here, plus one image allowance for the word.
	body := `{"messages":[{"role":"user","content":"image"}]}`
	if got, want := UpperBound([]byte(body)), len(body)+ImageTokens; got != want {
		t.Errorf("UpperBound = %d, want %d", got, want)
	}
}

func TestUpperBoundAllocs(t *testing.T) {
	body := conversation(4, "")
	if n := testing.AllocsPerRun(100, func() { UpperBound(body) }); n != 0 {
		t.Errorf("UpperBound allocates %v times", n)
	}
}

// boundCounters returns every kind of counter, the estimate included (the
// loosest, which UpperBound must still cover).
func boundCounters(tb testing.TB) []Counter {
	tb.Helper()
	return []Counter{
		Estimate(), cl100k(), o200k(),
		mustCounter(tb, "hf testdata/tiny-spm.json"),
		mustCounter(tb, "hf testdata/tiny-bytelevel.json"),
		mustCounter(tb, "hf testdata/tiny-metaspace.json"),
	}
}

// fuzzBody checks one arbitrary body against one API's count: no panic, an
// error wrapping ErrMalformed or a count within UpperBound.
func fuzzBody(t *testing.T, counters []Counter, body []byte, anthropic bool) {
	ub := UpperBound(body)
	for _, c := range counters {
		cc := NewChatCounter(c, nil)
		count := cc.CountChat
		if anthropic {
			count = cc.CountAnthropic
		}
		n, err := count(body)
		if err != nil {
			if !strings.Contains(err.Error(), ErrMalformed.Error()) {
				t.Fatalf("%s: error %v does not wrap ErrMalformed", c.Name(), err)
			}
			continue
		}
		if n < 0 || n > ub {
			t.Fatalf("%s: count %d outside [0, UpperBound %d]", c.Name(), n, ub)
		}
	}
}

func FuzzCountChat(f *testing.F) {
	for _, s := range boundSeeds {
		f.Add([]byte(s))
	}
	counters := boundCounters(f)
	f.Fuzz(func(t *testing.T, body []byte) { fuzzBody(t, counters, body, false) })
}

func FuzzCountAnthropic(f *testing.F) {
	for _, s := range boundSeeds {
		f.Add([]byte(s))
	}
	counters := boundCounters(f)
	f.Fuzz(func(t *testing.T, body []byte) { fuzzBody(t, counters, body, true) })
}

// TestCountImage holds countImage to strings.Count on texts with the word at every position,
// split words, and runs of its letters that send it to strings.Count part way.
func TestCountImage(t *testing.T) {
	texts := []string{"", "image", "imag", "mage", "gimage", "imageimage", "i mage image", "images of an image",
		strings.Repeat("g", 100) + "image", strings.Repeat("ag", 50) + "image" + strings.Repeat("image g", 20),
		strings.Repeat(`{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}},`, 30),
		strings.Repeat("big bag of gigs ", 40) + "image" + strings.Repeat("g", 500) + "image"}
	for _, s := range texts {
		for pad := 0; pad < 8; pad++ {
			p := strings.Repeat("x", pad) + s
			if got, want := countImage(p), strings.Count(p, "image"); got != want {
				t.Fatalf("countImage(%q) = %d, want %d", trunc(p), got, want)
			}
		}
	}
}

func FuzzCountImage(f *testing.F) {
	f.Add("an image of images")
	f.Add(strings.Repeat("g", 64) + "imageimage")
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := countImage(s), strings.Count(s, "image"); got != want {
			t.Fatalf("countImage(%q) = %d, want %d", s, got, want)
		}
	})
}

// BenchmarkCountImage: countImage and strings.Count on 1 KB of prose, of prose dense in 'g'
// (13%, against 2% in English) and of 'g' alone.
func BenchmarkCountImage(b *testing.B) {
	for name, s := range map[string]string{
		"prose":   strings.Repeat("The gateway checks each request, counts its tokens and sends it to the least loaded server of the model's pool. ", 9),
		"g-dense": strings.Repeat("How do I get a good image of the staging cluster's logging? ", 17),
		"g":       strings.Repeat("g", 1024),
	} {
		b.Run(name+"/countImage", func(b *testing.B) {
			b.SetBytes(int64(len(s)))
			for b.Loop() {
				countImage(s)
			}
		})
		b.Run(name+"/strings.Count", func(b *testing.B) {
			b.SetBytes(int64(len(s)))
			for b.Loop() {
				strings.Count(s, "image")
			}
		})
	}
}
