package jsonscan

import (
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

// chunk is an OpenAI stream chunk whose delta content is the JSON string body text (as written
// between the quotes, escapes included).
func chunk(text string) []byte {
	return []byte(`{"id":"chatcmpl-8f2c1e0a9b6d4f3e","object":"chat.completion.chunk","created":1731000000,"model":"m","choices":[{"index":0,"delta":{"content":"` +
		text + `"},"logprobs":null,"finish_reason":null}]}`)
}

// nextTexts are string bodies, valid and not, around the places the fast path must refuse:
// quotes, backslashes, escapes cut anywhere, control characters.
var nextTexts = []string{
	"", " token1", " token2", "x", "Hello, world", "caf\u00e9", "🍕 ok", `a\"b`, `a\\`, `a\\b`, `\u00e9`, `\u00e8`,
	`\u00eZ`, `\u00e`, `a\`, `a"b`, `"`, `\`, `\n`, `\t`, `\x`, "tab\there", "nl\nhere", `x\u0041y`, `x\u0042y`,
	`\\\"`, `end\\`, `\/`, `\b\f\r`, strings.Repeat("long text ", 20),
}

// TestValidNext: every pair of chunks whose texts come from nextTexts (a valid previous chunk,
// any next one) gets Valid's answer, and so do the cuts and extensions of a chunk.
func TestValidNext(t *testing.T) {
	for _, a := range nextTexts {
		prev := chunk(a)
		if !Valid(prev) {
			continue
		}
		for _, b := range nextTexts {
			cur := chunk(b)
			if got, want := ValidNext(prev, cur), gjson.ValidBytes(cur); got != want {
				t.Errorf("ValidNext(%q -> %q) = %t, want %t", a, b, got, want)
			}
		}
		for k := range len(prev) + 1 {
			for _, tail := range []string{"", `"}`, `x"}]}`, `\`, `"`, `}`} {
				cur := append(prev[:k:k], tail...)
				if got, want := ValidNext(prev, cur), gjson.ValidBytes(cur); got != want {
					t.Fatalf("ValidNext(%q -> %q) = %t, want %t", prev, cur, got, want)
				}
			}
		}
	}
}

// TestValidNextFastPath: consecutive chunks that differ in their text only are checked without
// a full parse, escapes and non-ASCII text included; a change elsewhere is not.
func TestValidNextFastPath(t *testing.T) {
	fast := func(prev, cur []byte) bool {
		_, _, ok := sameButText(prev, cur, 0)
		return ok
	}
	for _, pair := range [][2]string{{" token1", " token2"}, {"Hello", " world"}, {"caf\u00e9", "🍕"}, {`a\u00e9`, `a b`}, {`x\\y`, `x\\z`}, {"", "x"}} {
		if !fast(chunk(pair[0]), chunk(pair[1])) {
			t.Errorf("%q -> %q: not taken as a change of text", pair[0], pair[1])
		}
	}
	prev, cur := chunk("a"), []byte(strings.Replace(string(chunk("a")), `"index":0`, `"index":1`, 1))
	if fast(prev, cur) {
		t.Error("a changed number taken as a change of text")
	}
	if !ValidNext(prev, cur) {
		t.Error("a valid chunk whose index changed refused")
	}
}

// TestSequence: a Sequence answers Valid's answer for every document of sequences of chunks in
// every order (valid and not, longer than its copy, unrelated documents between them), takes the
// fast path for a stream's chunks and allocates nothing for them.
func TestSequence(t *testing.T) {
	docs := [][]byte{[]byte(`{"a":1}`), []byte(`[1,2`), []byte(strings.Repeat(" ", 500) + `{"big":"` + strings.Repeat("x", 500) + `"}`)}
	for _, a := range nextTexts {
		docs = append(docs, chunk(a))
	}
	for step := 1; step < len(docs); step++ {
		var q Sequence
		for i := range 4 * len(docs) {
			doc := docs[(i*step)%len(docs)]
			if got, want := q.Valid(doc), gjson.ValidBytes(doc); got != want {
				t.Fatalf("step %d, document %d: Valid(%.60q) = %t, want %t", step, i, doc, got, want)
			}
		}
	}
	var q Sequence
	stream := make([][]byte, 20)
	for i := range stream {
		stream[i] = chunk(" token" + strings.Repeat("é", i%4))
	}
	for i, c := range stream {
		if !q.Valid(c) || q.misses != 0 || i > 0 && q.at == 0 {
			t.Fatalf("chunk %d: misses %d, at %d: the fast path not taken", i, q.misses, q.at)
		}
	}
	if n := testing.AllocsPerRun(100, func() {
		for _, c := range stream {
			q.Valid(c)
		}
	}); n != 0 {
		t.Errorf("a stream's chunks allocate %v times", n)
	}
}

func FuzzSequence(f *testing.F) {
	f.Add(chunk("a"), chunk("b"), chunk(`\`))
	f.Add([]byte(`{"a":"x"}`), []byte(`{"a":"xy"}`), []byte(`{"a":"x\"}`))
	f.Add([]byte(`{"usag":1}`), []byte(`{"usage":1}`), []byte(`{"usage" :"x"}`))
	f.Fuzz(func(t *testing.T, a, b, c []byte) {
		var q Sequence
		var last []byte // the last valid document
		for i, doc := range [][]byte{a, b, c, b, a, c} {
			got, want := q.Valid(doc), gjson.ValidBytes(doc)
			if got != want {
				t.Fatalf("document %d: Valid(%q) = %t, gjson says %t (after %q, %q, %q)", i, doc, got, want, a, b, c)
			}
			if got && q.SameShape() && (last == nil || shapeOf(gjson.ParseBytes(doc)) != shapeOf(gjson.ParseBytes(last))) {
				t.Fatalf("document %d: %q said shaped as %q", i, doc, last)
			}
			if got {
				last = doc
			}
		}
	})
}

// shapeOf returns r's JSON with the content of every string value left out: keys, numbers,
// literals and nesting stay.
func shapeOf(r gjson.Result) string {
	switch {
	case r.IsObject():
		var b strings.Builder
		b.WriteByte('{')
		r.ForEach(func(k, v gjson.Result) bool {
			b.WriteString(k.Raw + ":" + shapeOf(v) + ",")
			return true
		})
		return b.String() + "}"
	case r.IsArray():
		var b strings.Builder
		b.WriteByte('[')
		r.ForEach(func(_, v gjson.Result) bool {
			b.WriteString(shapeOf(v) + ",")
			return true
		})
		return b.String() + "]"
	case r.Type == gjson.String:
		return `""`
	}
	return r.Raw
}

// TestSequenceSameShape: a changed text keeps the shape; a changed key, number or nesting, an
// invalid document and the first document do not.
func TestSequenceSameShape(t *testing.T) {
	for _, tt := range []struct {
		docs []string
		want bool // SameShape after the last
	}{
		{[]string{string(chunk("a")), string(chunk("ab"))}, true},
		{[]string{string(chunk("a")), string(chunk("a"))}, true},
		{[]string{string(chunk("a"))}, false},
		{[]string{`{"usag":1}`, `{"usage":1}`}, false},
		{[]string{`{"usag" :1}`, `{"usage" :1}`}, false},
		{[]string{`{"a":"x","n":1}`, `{"a":"x","n":2}`}, false},
		{[]string{`{"a":"x"}`, `{"a":"y","b":1}`}, false},
		{[]string{`{"a":"x"}`, `{"a":"x"`}, false},
		{[]string{`["x", "y"]`, `["x", "yz"]`}, true},
	} {
		var q Sequence
		for _, d := range tt.docs {
			q.Valid([]byte(d))
		}
		if q.SameShape() != tt.want {
			t.Errorf("%q: SameShape = %t, want %t", tt.docs, q.SameShape(), tt.want)
		}
	}
}

func FuzzValidNext(f *testing.F) {
	for i, a := range nextTexts {
		f.Add(chunk(a), chunk(nextTexts[(i+1)%len(nextTexts)]))
	}
	f.Add([]byte(`["a\\"]`), []byte(`["a\\x"]`))
	f.Add([]byte(`{"a":"x"}`), []byte(`{"a":"x","b":"y"}`))
	f.Fuzz(func(t *testing.T, prev, cur []byte) {
		if !Valid(prev) {
			return
		}
		if got, want := ValidNext(prev, cur), gjson.ValidBytes(cur); got != want {
			t.Fatalf("ValidNext(%q, %q) = %t, gjson says %t", prev, cur, got, want)
		}
	})
}

// BenchmarkValidNext: the chunks of a 20-token stream checked with Valid and with ValidNext.
func BenchmarkValidNext(b *testing.B) {
	chunks := make([][]byte, 20)
	for i := range chunks {
		chunks[i] = chunk(" token" + strings.Repeat("x", i%5))
	}
	b.Run("Valid", func(b *testing.B) {
		for b.Loop() {
			for _, c := range chunks {
				Valid(c)
			}
		}
	})
	b.Run("Sequence", func(b *testing.B) {
		for b.Loop() {
			var q Sequence
			for _, c := range chunks {
				q.Valid(c)
			}
		}
	})
}
