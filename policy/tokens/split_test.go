package tokens

import (
	"slices"
	"strings"
	"testing"

	"github.com/dlclark/regexp2/v2"
)

// splitPatterns are the patterns written out as code, with the regexp each
// is checked against: regexp2's interpreter. The pattern is wrapped in a
// group so that regexp2 does not pick tiktoken-go's generated matcher,
// registered for the bare string, whose \s*[\r\n]+ stops at the first line
// break of a run ("\n \n" is two pieces there, one in tiktoken's regex
// engine, Python's regex module and the JS engine of js-tiktoken).
var splitPatterns = []struct {
	name, pattern string
}{
	{"cl100k_base", cl100kPattern},
	{"o200k_base", o200kPattern},
}

// regexpPieces are the pieces of s as re finds them.
func regexpPieces(t testing.TB, re *regexp2.Regexp, s string) []string {
	idx, err := re.FindAllStringIndex(s, -1)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range idx {
		out = append(out, s[m[0]:m[1]])
	}
	return out
}

// codePieces are the pieces of s as next cuts them.
func codePieces(t testing.TB, next func(string, int) int, s string) []string {
	var out []string
	for i := 0; i < len(s); {
		j := next(s, i)
		if j <= i || j > len(s) {
			t.Fatalf("%q: piece at %d ends at %d", s, i, j)
		}
		out = append(out, s[i:j])
		i = j
	}
	return out
}

// referenceRegexp compiles pattern for regexp2's interpreter.
func referenceRegexp(pattern string) *regexp2.Regexp {
	return regexp2.MustCompile("(?:"+pattern+")", regexp2.None)
}

// splitCases are texts at each alternative's edges: contractions in both
// cases, a symbol or a space before letters, upper-case words and mixed
// case (o200k), digit groups, symbols followed by line breaks or a slash,
// whitespace runs with and without line breaks, before a non-space and at
// the end, Unicode letters, marks, numbers and spaces, and invalid UTF-8.
var splitCases = []string{
	"", "a", " ", "  ", "   x", " \n ", "\n", "\r\n\r\n  x", "x  \t\n  \ty", "  \n\n", "\t\tx",
	"I'm", "they'll", "DON'T", "we'VE", "it'S", "she'd", "'s", "'Ře", "x'", "'", "''s", "'llama", "'Ll", "'l",
	"'re", "'rE", "'r", "'v", "'ve'", "HELLOworld", "HelloWORLD's", "ABC'S", "abc'd",
	"hello world", "Hello, World!", " ,hello", "-hello", "\thello", "\u00a0hello", "'hello", "\nhello",
	"1234567", "a1b22c333d4444", " 123", "x 12 34", "²³¹½Ⅻ", "١٢٣٤", "1/2/ab/\n",
	"!!!", " !!!\n\n", "...\r\n\r\nx", " ?", "a ...b", "(x)", "$$$ ", "🍕🍕 🍕", "\u0301a", "a\u0301\u0302 !\u0301x",
	"\u3000\u3000x", "\u2028x", "x\u0085 y", "\u200b", "你好世界", "안녕하세요", "ªºµ", "ǅungla Xǅ", "ĞÜNAYDINʰx", "ʰʰ", "\u0301",
	"ab\xffcd\xe4\xbd", "\xff", "\xe4\xbd", " \xff\xfe ", "\xc5", "'\xc5",
	"def f(x):\n    return x ** 2\n\n\n", "<|endoftext|>", "a\u00a0\u00a0b", "x \n \n\r\n\r\n  xx",
}

// TestSplitMatchesRegexp checks each pattern's code against the regexp on
// the edge cases and on long, varied texts.
func TestSplitMatchesRegexp(t *testing.T) {
	texts := append([]string{}, splitCases...)
	texts = append(texts, strings.Join(splitCases, ""), strings.Join(splitCases, " "))
	texts = append(texts, equivalenceTexts()...)
	for _, tc := range tiktokenCases {
		texts = append(texts, tc.text)
	}
	for _, p := range splitPatterns {
		re, next := referenceRegexp(p.pattern), pieceFuncs[p.pattern]
		for i, s := range texts {
			want, got := regexpPieces(t, re, s), codePieces(t, next, s)
			if !slices.Equal(want, got) {
				t.Errorf("%s: text %d %q: pieces differ\n code:   %q\n regexp: %q", p.name, i, trunc(s), firstPieces(got), firstPieces(want))
			}
		}
	}
}

// TestSplitFoldsLongS pins the one case where regexp2 and tiktoken's regex
// engine disagree: (?i) takes 'ſ' (U+017F) for 's' in a contraction under
// Unicode case folding (Python's regex module, tiktoken's fancy-regex, and
// tiktoken-go's generated matcher), not in regexp2's interpreter. The
// expected pieces are the regex module's.
func TestSplitFoldsLongS(t *testing.T) {
	s := "'ſx it'ſx"
	for _, tc := range []struct {
		pattern string
		want    []string
	}{
		{cl100kPattern, []string{"'ſ", "x", " it", "'ſ", "x"}},
		{o200kPattern, []string{"'ſx", " it'ſ", "x"}},
	} {
		if got := codePieces(t, pieceFuncs[tc.pattern], s); !slices.Equal(got, tc.want) {
			t.Errorf("%.20s: pieces %q, want %q", tc.pattern, got, tc.want)
		}
	}
}

// FuzzSplitMatchesRegexp checks each pattern's code against the regexp on
// arbitrary bytes (texts with 'ſ' aside: TestSplitFoldsLongS).
func FuzzSplitMatchesRegexp(f *testing.F) {
	for _, s := range splitCases {
		f.Add(s)
	}
	res := make([]*regexp2.Regexp, len(splitPatterns))
	for i, p := range splitPatterns {
		res[i] = referenceRegexp(p.pattern)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > 1024 || strings.Contains(s, "ſ") {
			return
		}
		for i, p := range splitPatterns {
			want, got := regexpPieces(t, res[i], s), codePieces(t, pieceFuncs[p.pattern], s)
			if !slices.Equal(want, got) {
				t.Fatalf("%s: %q: pieces differ\n code:   %q\n regexp: %q", p.name, s, got, want)
			}
		}
	})
}

// firstPieces is the start of a piece list (its first 40 pieces), where
// two lists that differ usually show it.
func firstPieces(p []string) []string {
	if len(p) > 40 {
		return p[:40]
	}
	return p
}
