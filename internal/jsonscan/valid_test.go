package jsonscan_test

import (
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/caddyai/gateway/internal/jsonscan"
)

var validCases = []string{
	``, ` `, `{}`, `[]`, `{"a":1}`, `[1,2]`, `{"a":}`, `{"a":1,}`, `[1,]`, `[,1]`, `{,}`, `{"a" 1}`, `{"a":1 "b":2}`,
	`"x"`, `"x`, `"\u12"`, `"\u12g4"`, `"\u1234"`, `"\x"`, `"a\"b"`, `"\\"`, `"\\\""`, "\"tab\there\"", "\"nl\n\"",
	`-`, `-0`, `01`, `1.`, `1.5`, `.5`, `1e`, `1e+`, `1e+5`, `1E-5`, `-1.5e10`, `1x`, `+1`, `--1`,
	`true`, `tru`, `truex`, `false`, `null`, `nul`, `[true,false,null]`, ` [ 1 , { "a" : [ ] } ] `, `{} {}`, `[]]`, `[[]`,
	`{"k":"` + strings.Repeat("long plain text 0123456789 ", 20) + `"}`,
	`{"k":"` + strings.Repeat("é ü 😀 ", 20) + `\n"}`,
	"\"\x7f\x80\xff\"", "\"\x1f\"", "\"12345678\x01abc\"", `"1234567\"`, `"12345678\\"`,
}

func TestValidIsGJSONs(t *testing.T) {
	for _, c := range validCases {
		if got, want := jsonscan.Valid([]byte(c)), gjson.Valid(c); got != want {
			t.Errorf("jsonscan.Valid(%q) = %t, gjson says %t", c, got, want)
		}
	}
}

func TestCheckDepth(t *testing.T) {
	for _, c := range []struct {
		doc            string
		max            int
		valid, tooDeep bool
	}{
		{`[[1]]`, 2, true, false},
		{`[[1]]`, 1, false, true},
		{`{"a":{"b":[]}}`, 3, true, false},
		{`{"a":{"b":[]}}`, 2, false, true},
		{`{"a":{"b":[] x}}`, 3, false, false},
		{`[1 x [[[[`, 2, false, false}, // invalid before it is too deep: jsonscan.NestedTooDeep decides
		{strings.Repeat("[", 100000), 64, false, true},
		{strings.Repeat("[", 100) + strings.Repeat("]", 100), 100, true, false},
	} {
		if v, d := jsonscan.Check([]byte(c.doc), c.max); v != c.valid || d != c.tooDeep {
			t.Errorf("jsonscan.Check(%.20q, %d) = %t, %t; want %t, %t", c.doc, c.max, v, d, c.valid, c.tooDeep)
		}
	}
}

// FuzzValid: Valid is gjson.Valid on any input; Check's depth agrees with jsonscan.NestedTooDeep
// wherever it answers.
func FuzzValid(f *testing.F) {
	for _, c := range validCases {
		f.Add([]byte(c), 3)
	}
	f.Fuzz(func(t *testing.T, doc []byte, max int) {
		max = max%8 + 1
		if max < 1 {
			max += 8
		}
		if got, want := jsonscan.Valid(doc), gjson.ValidBytes(doc); got != want {
			t.Fatalf("jsonscan.Valid(%q) = %t, gjson says %t", doc, got, want)
		}
		valid, deep := jsonscan.Check(doc, max)
		switch {
		case deep && !jsonscan.NestedTooDeep(doc, max):
			t.Fatalf("jsonscan.Check(%q, %d) says too deep, NestedTooDeep does not", doc, max)
		case valid && jsonscan.NestedTooDeep(doc, max):
			t.Fatalf("jsonscan.Check(%q, %d) says valid within the depth, NestedTooDeep says too deep", doc, max)
		case valid != (gjson.ValidBytes(doc) && !jsonscan.NestedTooDeep(doc, max)):
			t.Fatalf("jsonscan.Check(%q, %d) valid = %t", doc, max, valid)
		}
	})
}

// BenchmarkValid: a 20-turn chat request, with gjson.Valid and Valid.
func BenchmarkValid(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"model":"m","temperature":0.7,"messages":[`)
	for i := range 20 {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(`{"role":"user","content":"Turn: ` + strings.Repeat("Tell me more about the history of tokenizers and why byte pair encoding won.\\n ", 4) + `"}`)
	}
	sb.WriteString(`]}`)
	doc := []byte(sb.String())
	b.Run("gjson", func(b *testing.B) {
		b.SetBytes(int64(len(doc)))
		for b.Loop() {
			if !gjson.ValidBytes(doc) {
				b.Fatal("invalid")
			}
		}
	})
	b.Run("jsonscan", func(b *testing.B) {
		b.SetBytes(int64(len(doc)))
		for b.Loop() {
			if !jsonscan.Valid(doc) {
				b.Fatal("invalid")
			}
		}
	})
}

func TestNestedTooDeep(t *testing.T) {
	for _, c := range []struct {
		doc  string
		max  int
		deep bool
	}{
		{`[[1]]`, 2, false},
		{`[[1]]`, 1, true},
		{`{"a":"[[[[[[","b":[1]}`, 2, false},       // brackets in strings do not count
		{`{"a":"\"[[[[","b":[[1]]}`, 2, true},      // nor after an escaped quote
		{`{"a":"\\","b":[[1]]}`, 2, true},          // an escaped backslash ends the string
		{`[[[` + `"unterminated [[[[[[`, 3, false}, // malformed: no more than what was seen
		{`]]]][[`, 1, false},                       // malformed: closers first lower the depth
	} {
		if got := jsonscan.NestedTooDeep([]byte(c.doc), c.max); got != c.deep {
			t.Errorf("NestedTooDeep(%q, %d) = %t, want %t", c.doc, c.max, got, c.deep)
		}
	}
}
