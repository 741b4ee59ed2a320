package jsonscan

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

// members lists what a ForEach gives for t and, depth first, for every nested value.
func members(t gjson.Result, each func(gjson.Result, func(key, value gjson.Result) bool), depth int) []string {
	var out []string
	each(t, func(k, v gjson.Result) bool {
		out = append(out, fmt.Sprintf("%d key{%d %q %q %v %d} value{%d %q %q %v %d}", depth,
			k.Type, k.Raw, k.Str, k.Num, k.Index, v.Type, v.Raw, v.Str, v.Num, v.Index))
		if v.IsObject() || v.IsArray() {
			out = append(out, members(v, each, depth+1)...)
		}
		return true
	})
	return out
}

func gjsonForEach(t gjson.Result, fn func(key, value gjson.Result) bool) { t.ForEach(fn) }

// same fails unless ForEach gives what gjson's does on doc, at every depth.
func same(t *testing.T, doc string) {
	t.Helper()
	root := gjson.Parse(doc)
	want, got := members(root, gjsonForEach, 0), members(root, ForEach, 0)
	if strings.Join(want, "\n") != strings.Join(got, "\n") {
		t.Fatalf("%q:\ngjson:\n%s\njsonscan:\n%s", doc, strings.Join(want, "\n"), strings.Join(got, "\n"))
	}
	// a value reached by a path, with its own Index
	if m := root.Get("messages"); m.Exists() {
		if w, g := members(m, gjsonForEach, 0), members(m, ForEach, 0); strings.Join(w, "\n") != strings.Join(g, "\n") {
			t.Fatalf("%q messages: gjson %v, jsonscan %v", doc, w, g)
		}
	}
}

var docs = []string{
	`{}`, `[]`, `{"a":1}`, `[1,2,3]`, ` { "a" : [ 1 , 2 ] , "b" : { } } `, `[1 ]`, `[ "x" , true,false ,null]`,
	`"just a string"`, `12.5e3`, `true`, `null`,
	`{"model":"m","messages":[{"role":"user","content":"hi \"there\" \\ \n \u00e9 \ud83d\ude00"},{"role":"assistant","content":[{"type":"text","text":"a\\"}]}]}`,
	`{"k\"ey":"v","k\\":"\\\\","":"","e":"\u0000","paren":"(x)","p":["(",")","[","}"]}`,
	`{"n":-0.5,"big":1e400,"neg":-12,"arr":[[[]],{"x":[{}]}],"t":true,"f":false,"z":null}`,
	"{\"ws\"\t:\r\n\"v\"\n}",
	`[{"a":"\\\"","b":"\\\\\""}]`,
}

func TestForEachIsGJSONs(t *testing.T) {
	for _, d := range docs {
		if !gjson.Valid(d) {
			t.Fatalf("test document not valid: %q", d)
		}
		same(t, d)
	}
	// the walk stops when told to
	n := 0
	ForEach(gjson.Parse(`[1,2,3]`), func(_, _ gjson.Result) bool { n++; return n < 2 })
	if n != 2 {
		t.Fatalf("ForEach went on after false: %d calls", n)
	}
	ForEach(gjson.Result{}, func(_, _ gjson.Result) bool { t.Fatal("called for a value that does not exist"); return true })
}

// FuzzForEach: on valid JSON, what gjson's ForEach gives, at every depth; on anything else, no
// panic and an end.
func FuzzForEach(f *testing.F) {
	for _, d := range docs {
		f.Add(d)
	}
	for _, d := range []string{`{"a":"unterminated`, `[1,2`, `{"a":[1,{"b":"\"}]}`, `{"a"`, `[`, `{"a":tru}`, `["\\`} {
		f.Add(d)
	}
	f.Fuzz(func(t *testing.T, doc string) {
		if gjson.Valid(doc) {
			same(t, doc)
			return
		}
		root := gjson.Parse(doc)
		_ = members(root, ForEach, 0)
		ForEach(gjson.Result{Type: gjson.JSON, Raw: doc}, func(_, v gjson.Result) bool {
			_ = members(gjson.Result{Type: gjson.JSON, Raw: v.Raw}, ForEach, 1)
			return true
		})
	})
}

// BenchmarkForEachChat walks a 20-turn chat request's messages and each message's members, with
// gjson and with ForEach.
func BenchmarkForEachChat(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"model":"m","messages":[`)
	for i := range 20 {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"role":"user","content":"Turn %d: %s"}`, i, strings.Repeat("Tell me more about the history of tokenizers and why byte pair encoding won. ", 4))
	}
	sb.WriteString(`]}`)
	doc := sb.String()
	for _, impl := range []struct {
		name string
		each func(gjson.Result, func(key, value gjson.Result) bool)
	}{{"gjson", gjsonForEach}, {"jsonscan", ForEach}} {
		b.Run(impl.name, func(b *testing.B) {
			b.SetBytes(int64(len(doc)))
			for b.Loop() {
				n := 0
				impl.each(gjson.Parse(doc), func(k, msgs gjson.Result) bool {
					impl.each(msgs, func(_, m gjson.Result) bool {
						impl.each(m, func(_, v gjson.Result) bool { n += len(v.Str); return true })
						return true
					})
					return true
				})
				if n == 0 {
					b.Fatal("nothing walked")
				}
			}
		})
	}
}
