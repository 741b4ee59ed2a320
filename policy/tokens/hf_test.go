package tokens

import (
	"errors"
	"strings"
	"testing"
)

// tinyJSON returns a minimal byte-level-free BPE tokenizer.json with the
// given normalizer, pre_tokenizer and model type.
func tinyJSON(normalizer, preTokenizer, modelType string) string {
	return `{"added_tokens":[{"id":5,"content":"<s>"}],"normalizer":` + normalizer + `,"pre_tokenizer":` + preTokenizer +
		`,"model":{"type":"` + modelType + `","unk_token":"<unk>","vocab":{"<unk>":0,"a":1,"b":2,"ab":3,"▁":4,"<s>":5,"▁ab":6},"merges":["a b","▁ ab"]}}`
}

func TestParseHFErrors(t *testing.T) {
	tests := []struct {
		name, json string
	}{
		{"lowercase", tinyJSON(`{"type":"Lowercase"}`, `null`, "BPE")},
		{"nfkc", tinyJSON(`{"type":"NFKC"}`, `null`, "BPE")},
		{"replace lengthens", tinyJSON(`{"type":"Replace","pattern":{"String":"a"},"content":"abc"}`, `null`, "BPE")},
		{"replace regex", tinyJSON(`{"type":"Replace","pattern":{"Regex":"a+"},"content":"a"}`, `null`, "BPE")},
		{"prepend two runes", tinyJSON(`{"type":"Prepend","prepend":"▁▁"}`, `null`, "BPE")},
		{"two prefixes", tinyJSON(`{"type":"Prepend","prepend":"▁"}`, `{"type":"Metaspace","replacement":"▁","prepend_scheme":"always"}`, "BPE")},
		{"replacement not a token", tinyJSON(`{"type":"Replace","pattern":{"String":" "},"content":"·"}`, `null`, "BPE")},
		{"byte-level prefix after split", tinyJSON(`null`, `{"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"String":"b"},"behavior":"Isolated"},{"type":"ByteLevel","add_prefix_space":true}]}`, "BPE")},
		{"metaspace prepend after split", tinyJSON(`null`, `{"type":"Sequence","pretokenizers":[{"type":"WhitespaceSplit"},{"type":"Metaspace","prepend_scheme":"always"}]}`, "BPE")},
		{"one-byte added token", strings.Replace(tinyJSON(`{"type":"Prepend","prepend":"▁"}`, `null`, "BPE"), `"content":"<s>"`, `"content":"#"`, 1)},
		{"bert pre-tokenizer", tinyJSON(`null`, `{"type":"BertPreTokenizer"}`, "BPE")},
		{"split behaviour", tinyJSON(`null`, `{"type":"Split","pattern":{"String":" "},"behavior":"Sideways"}`, "BPE")},
		{"wordpiece", tinyJSON(`null`, `null`, "WordPiece")},
		{"unigram", tinyJSON(`null`, `null`, "Unigram")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseHF("x", []byte(tt.json)); !errors.Is(err, ErrUnsupported) {
				t.Errorf("ParseHF error = %v, want ErrUnsupported", err)
			}
		})
	}
	for _, bad := range []string{`{`, `{"model":{"type":"BPE","vocab":{"a":1},"merges":["ab"]}}`, `{"model":{"type":"BPE","vocab":{"a":1},"merges":[["a","b"]]}}`, `{"model":{"type":"BPE","vocab":{},"merges":5}}`} {
		if _, err := ParseHF("x", []byte(bad)); err == nil {
			t.Errorf("ParseHF(%s) succeeded", bad)
		}
	}
}

// TestHFComponents checks counts for the components the tiny reference
// tokenizers do not use. Each was worked out by hand and agrees with Hugging
// Face tokenizers 0.23.2 (the Rust library, through its npm binding) on the
// same tokenizer.json.
func TestHFComponents(t *testing.T) {
	tests := []struct {
		name, pre, text string
		want            int
	}{
		// "ab" merges; "ba" stays two tokens.
		{"no pre-tokenizer", `null`, "abba", 3},
		// Split on "b", removed: "a", "a" -> 2.
		{"split removed", `{"type":"Split","pattern":{"String":"b"},"behavior":"Removed"}`, "abba", 2},
		// Merged with previous: "ab", "b", "a" -> 1 + 1 + 1.
		{"split merged previous", `{"type":"Split","pattern":{"String":"b"},"behavior":"MergedWithPrevious"}`, "abba", 3},
		// Merged with next: "a", "b", "ba" -> 1 + 1 + 2.
		{"split merged next", `{"type":"Split","pattern":{"String":"b"},"behavior":"MergedWithNext"}`, "abba", 4},
		// Contiguous: "a", "bb", "a" -> 1 + 2 + 1.
		{"split contiguous", `{"type":"Split","pattern":{"String":"b"},"behavior":"Contiguous"}`, "abba", 4},
		// Inverted: the matches "b" are kept apart from the rest, removed are the non-matches.
		{"split invert removed", `{"type":"Split","pattern":{"Regex":"b+"},"behavior":"Removed","invert":true}`, "abba", 2},
		// Metaspace with split: "▁ab", "▁ab" -> 2; always prepends.
		{"metaspace split", `{"type":"Metaspace","replacement":"▁","prepend_scheme":"always","split":true}`, "ab ab", 2},
		// Without prepending: "ab▁ab" one piece: "ab", "▁ab" -> 2.
		{"metaspace never", `{"type":"Metaspace","replacement":"▁","prepend_scheme":"never","split":false}`, "ab ab", 2},
		// Unknown characters, fuse_unk off: one <unk> each.
		{"unk", `null`, "xyz", 3},
		// Added token in the middle: "ab" + <s> + "ab".
		{"added token", `null`, "ab<s>ab", 3},
		// Two spaces: "▁ab", "▁", "▁ab".
		{"metaspace split spaces", `{"type":"Metaspace","replacement":"▁","prepend_scheme":"always","split":true}`, "ab  ab", 3},
		// "a", "b", "b", "ba" -> 1 + 1 + 1 + 2.
		{"split merged next run", `{"type":"Split","pattern":{"String":"b"},"behavior":"MergedWithNext"}`, "abbba", 5},
		{"whitespace split", `{"type":"WhitespaceSplit"}`, "ab  ab\tb", 3},
		{"digits", `{"type":"Sequence","pretokenizers":[{"type":"Digits","individual_digits":true}]}`, "a12b", 4}, // "1" and "2" are unknown
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseHF("x", []byte(tinyJSON(`null`, tt.pre, "BPE")))
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Count(tt.text); got != tt.want {
				t.Errorf("Count(%q) = %d, want %d", tt.text, got, tt.want)
			}
			if est := Estimate().Count(tt.text); est < c.Count(tt.text) {
				t.Errorf("Estimate %d below count", est)
			}
		})
	}
}

func TestTiktokenWhitespaceGuard(t *testing.T) {
	if got := whitespaceCost("a  b\n \n c"); got != 4+16+0 {
		t.Errorf("whitespaceCost = %d, want 20", got)
	}
	if got := whitespaceCost("\u3000\u3000x "); got != 36+1 {
		t.Errorf("whitespaceCost = %d, want 37", got)
	}
	// The tiktoken counters split in code, linear in the text: a 40 KB
	// run of "\n " (seconds in a backtracking regexp) is counted exactly
	// (js-tiktoken 1.0.21 gives the same counts).
	for _, c := range []Counter{cl100k(), o200k()} {
		if got := c.Count(strings.Repeat("\n ", 20000)); got != 10001 {
			t.Errorf("%s Count = %d, want 10001", c.Name(), got)
		}
		if got := c.Count(strings.Repeat("\n ", 100)); got != 51 {
			t.Errorf("%s Count = %d, want 51", c.Name(), got)
		}
	}
}

// TestCountersConcurrent runs every counter from several goroutines (run
// with -race) and checks they agree with a sequential count.
func TestCountersConcurrent(t *testing.T) {
	texts := []string{"hello world", "Grüße 你好 🍕", "func f() {}\n\treturn", strings.Repeat("token ", 50)}
	for _, c := range boundCounters(t) {
		want := make([]int, len(texts))
		for i, s := range texts {
			want[i] = c.Count(s)
		}
		done := make(chan struct{})
		for range 4 {
			go func() {
				defer func() { done <- struct{}{} }()
				for range 50 {
					for i, s := range texts {
						if got := c.Count(s); got != want[i] {
							t.Errorf("%s: concurrent Count(%q) = %d, want %d", c.Name(), s, got, want[i])
							return
						}
					}
				}
			}()
		}
		for range 4 {
			<-done
		}
	}
}
