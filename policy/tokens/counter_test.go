package tokens

import (
	"errors"
	"io/fs"
	"strings"
	"testing"
	"unicode/utf8"
)

// tiktokenCases are exact counts produced with js-tiktoken 1.0.21 (OpenAI's
// ranks files, the reference JS port of tiktoken):
//
//	enc = getEncoding("cl100k_base" | "o200k_base"); enc.encode(text, [], []).length
//
// ("hello world" = 2 in both, "hello" + " world", is also easy to check by
// hand.)
var tiktokenCases = []struct {
	text          string
	cl100k, o200k int
}{
	{"hello world", 2, 2},
	{"Hello, world! How are you today?", 9, 9},
	{"The quick brown fox jumps over the lazy dog.", 10, 10},
	{"Grüße aus Köln — naïve café, señor.", 14, 12},
	{"你好，世界。今日は良い天気です。안녕하세요", 22, 13},
	{"I love 🍕 and 🎉🎉 🤖👍🏽 👨‍👩‍👧", 33, 22},
	{"func main() {\n\tfmt.Println(\"hi\")\n\tfor i := 0; i < 10; i++ {\n\t\tx += i * 2\n\t}\n}\n", 34, 34},
	{"1234567890 3.14159 2026-11-26 $1,000,000", 22, 22},
	{"  leading and    multiple   spaces\n\n\nnewlines\r\n\ttabs  ", 14, 14},
	{"I'm sure they'll say it's what we've done, DON'T YOU'LL", 18, 13},
	{"Привет мир مرحبا بالعالم नमस्ते", 22, 10},
	{"<|endoftext|> is not special here", 11, 11},
	{`{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}`, 27, 28},
	// Whitespace runs with several line breaks: one piece up to the last
	// break in tiktoken's regex engine (two or more in tiktoken-go's).
	{"x \n \n\r\n\r\n  xx", 5, 5},
	{"def f():\n    x = 1\n    \n    return x\n", 13, 13},
	{"para one.\n \npara two.\n\t\n\n  end", 10, 10},
	{"\n \n \n \n \n ", 4, 4},
	{"a\n  \n  \nb", 4, 4},
	// o200k's upper-case words, marks and the slash after symbols.
	{"HELLOworld DON'T it'S ĞÜNAYDINʰx", 17, 15},
	{"a\u0301\u0302 !\u0301x ǅungla Xǅ", 15, 14},
	{"1/2/ab/\n 12345 ²³", 12, 12},
	// DEL is a token of its own (tiktoken-go drops it).
	{"0\x7fA", 3, 3},
	{"", 0, 0},
}

func TestTiktokenExactCounts(t *testing.T) {
	cl, err := New("cl100k_base")
	if err != nil {
		t.Fatal(err)
	}
	o, err := New("o200k_base")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range tiktokenCases {
		t.Run(trunc(tc.text), func(t *testing.T) {
			if got := cl.Count(tc.text); got != tc.cl100k {
				t.Errorf("cl100k_base = %d, want %d", got, tc.cl100k)
			}
			if got := o.Count(tc.text); got != tc.o200k {
				t.Errorf("o200k_base = %d, want %d", got, tc.o200k)
			}
			est := Estimate().Count(tc.text)
			if est < tc.cl100k || est < tc.o200k {
				t.Errorf("Estimate = %d, below an exact count", est)
			}
		})
	}
}

func TestNew(t *testing.T) {
	tests := []struct {
		spec, name string
		err        error
	}{
		{spec: "estimate", name: "estimate"},
		{spec: "cl100k_base", name: "cl100k_base"},
		{spec: " o200k_base ", name: "o200k_base"},
		{spec: "hf testdata/tiny-bytelevel.json", name: "hf:testdata/tiny-bytelevel.json"},
		{spec: "hf ./testdata//tiny-spm.json", name: "hf:testdata/tiny-spm.json"},
		{spec: "p50k_base", err: ErrUnknownSpec},
		{spec: "", err: ErrUnknownSpec},
		{spec: "hf ", err: ErrUnknownSpec},
		{spec: "hf testdata/missing.json", err: fs.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			c, err := New(tt.spec)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("New(%q) error = %v, want %v", tt.spec, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Name() != tt.name {
				t.Errorf("Name() = %q, want %q", c.Name(), tt.name)
			}
		})
	}
}

func TestEstimate(t *testing.T) {
	tests := []struct {
		text string
		want int
	}{
		{"", 0},
		{"a", 2},
		{"hello world", 12},
		{"é", 3},           // 2 bytes + 1
		{"你好", 7},          // 6 bytes + 1
		{"\xff\xfe", 7},    // 2 invalid bytes weigh 3 each
		{"\u0958", 7},      // NFC lengthens it to 6 bytes
		{"\U0001D160", 13}, // NFC: 3 runes of 4 bytes
		{"a\xe4\xbd", 8},   // truncated sequence: 2 invalid bytes
		{strings.Repeat("x", 4096), 4097},
	}
	e := Estimate()
	if e.Name() != "estimate" {
		t.Errorf("Name() = %q", e.Name())
	}
	for _, tt := range tests {
		if got := e.Count(tt.text); got != tt.want {
			t.Errorf("Estimate(%q) = %d, want %d", tt.text, got, tt.want)
		}
	}
}

// TestASCIIRunEnd checks the scan (32 bytes at a time, then eight) against a byte loop, for
// every start and every position of the first non-ASCII byte in texts around both strides.
func TestASCIIRunEnd(t *testing.T) {
	for n := 0; n <= 72; n++ {
		for stop := -1; stop < n; stop++ {
			b := []byte(strings.Repeat("a", n))
			if stop >= 0 {
				b[stop] = 0x80 | byte(stop)
			}
			s := string(b)
			for i := 0; i <= n; i++ {
				want := i
				for want < len(s) && s[want] < 0x80 {
					want++
				}
				if got := asciiRunEnd(s, i); got != want {
					t.Fatalf("asciiRunEnd(%q, %d) = %d, want %d", s, i, got, want)
				}
			}
		}
	}
}

func TestEstimateAllocs(t *testing.T) {
	text := strings.Repeat("Grüße 你好 🍕 \u0958 ", 100)
	e := Estimate()
	if n := testing.AllocsPerRun(100, func() { e.Count(text) }); n != 0 {
		t.Errorf("Estimate allocates %v times", n)
	}
}

// FuzzEstimateBound checks that Estimate never returns less than the exact
// cl100k_base, o200k_base and hf counts.
func FuzzEstimateBound(f *testing.F) {
	for _, tc := range tiktokenCases {
		f.Add(tc.text)
	}
	for _, s := range []string{"\xff", "\xe4\xbd", " \n \n", "\u0958\u0959", "\U0001D160", "\uFB2C", "'s'S'LL", "12345678901234", "<s>a</s>"} {
		f.Add(s)
	}
	cl, o := cl100k(), o200k()
	spm := mustCounter(f, "hf testdata/tiny-spm.json")
	bl := mustCounter(f, "hf testdata/tiny-bytelevel.json")
	f.Fuzz(func(t *testing.T, text string) {
		est := Estimate().Count(text)
		for _, c := range []Counter{cl, o, spm, bl} {
			if n := c.Count(text); n > est {
				t.Fatalf("%s count %d > Estimate %d for %q", c.Name(), n, est, text)
			}
		}
		if utf8.ValidString(text) && text != "" && est < 1 {
			t.Fatalf("Estimate %d for non-empty text", est)
		}
	})
}

// mustCounter builds the counter for spec or stops the test.
func mustCounter(tb testing.TB, spec string) Counter {
	tb.Helper()
	c, err := New(spec)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}
