package tokens

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/tiktoken-go/tokenizer/codec"
)

// referenceCodecs are tiktoken-go's own codecs, the reference the
// package's tiktoken counters must agree with.
func referenceCodecs() map[string]*codec.Codec {
	return map[string]*codec.Codec{"cl100k_base": codec.NewCl100kBase(), "o200k_base": codec.NewO200kBase()}
}

// equivalenceTexts are texts that exercise segments (long texts with every
// kind of cut), long pieces cut at safe positions and long pieces merged
// whole.
func equivalenceTexts() []string {
	r := rand.New(rand.NewPCG(7, 8))
	randomFrom := func(n int, alphabet string) string {
		rs := []rune(alphabet)
		var b strings.Builder
		for b.Len() < n {
			b.WriteRune(rs[r.IntN(len(rs))])
		}
		return b.String()
	}
	return []string{
		realisticText(200 << 10),
		strings.Repeat("12345678901234567890", 2000) + " x",
		"a" + strings.Repeat("1", 40000) + "b",
		strings.Repeat("你好世界。今日は良い天気です，안녕하세요！", 2000),
		randomFrom(40000, "abcdefghijklmnopqrstuvwxyz"),
		randomFrom(40000, "ACGT"),
		randomFrom(60000, "ab1.,;:'\" \n\t-_=+()[]{}<>/\\|?!@#$%^&*~`"),
		randomFrom(30000, "aé你🍕 1'.\u0301\u0958"),
		strings.Repeat("=", 5000) + strings.Repeat("-", 3000) + strings.Repeat("🍕", 3000),
		strings.Repeat("The_quick-brown.fox's", 3000),
		strings.Repeat("I'm sure they'll say it's what we've done, DON'T YOU'LL ", 500),
		strings.Repeat(" ", 2000) + "x" + strings.Repeat("\t", 300),
		strings.Repeat("ab\xffcd\xe4\xbd", 3000),
	}
}

// TestTiktokenMatchesCodec checks the package's tiktoken counters against
// tiktoken-go's Codec.Count on long texts.
func TestTiktokenMatchesCodec(t *testing.T) {
	refs := referenceCodecs()
	for _, c := range []*tiktokenCounter{cl100k(), o200k()} {
		for i, text := range equivalenceTexts() {
			want, ok := referenceCount(t, refs[c.Name()], c, text)
			if !ok {
				continue
			}
			if got := c.Count(text); got != want {
				t.Errorf("%s: text %d (%d bytes, %q): Count = %d, tiktoken-go %d", c.Name(), i, len(text), trunc(text), got, want)
			}
		}
	}
}

// FuzzTiktokenMatchesCodec checks, on arbitrary text repeated past the
// segment and piece bounds, that the package's tiktoken counters give
// tiktoken-go's count, or more when a piece is too long to merge exactly.
func FuzzTiktokenMatchesCodec(f *testing.F) {
	for _, tc := range tiktokenCases {
		f.Add(tc.text, uint16(1))
	}
	f.Add("12345", uint16(5000))
	f.Add("a.b1 ", uint16(9000))
	f.Add("你好。", uint16(7000))
	refs := referenceCodecs()
	cl, o := cl100k(), o200k()
	f.Fuzz(func(t *testing.T, unit string, times uint16) {
		text := strings.Repeat(unit, int(times%20000)+1)
		if len(text) > 256<<10 || whitespaceCost(text) > maxWhitespaceCost/4 {
			return
		}
		for _, c := range []*tiktokenCounter{cl, o} {
			want, ok := referenceCount(t, refs[c.Name()], c, text)
			if !ok {
				return
			}
			got := c.Count(text)
			if got < want || got > want && !hasLongPiece(c, text) {
				t.Fatalf("%s: Count = %d, tiktoken-go %d for %q x %d", c.Name(), got, want, trunc(unit), times)
			}
		}
	})
}

// referenceCount is tiktoken-go's count of text, piece by piece where its
// generated split matcher cuts text otherwise than the regexp's semantics
// (its \s*[\r\n]+ stops at the first line break of a whitespace run): the
// sum over the pieces of the regexp (regexp2's interpreter, as tiktoken's
// own engine splits) of tiktoken-go's count of each piece, or, for a piece
// tiktoken-go would split again (those whitespace runs), the counter's own
// count, which tiktokenCases checks against js-tiktoken.
//
// tiktoken-go drops the byte 0x7f (DEL) from what it encodes, where tiktoken and js-tiktoken
// count it as a token (tiktokenCases pins "0\x7fA"): texts holding it have no reference here,
// and ok is false.
func referenceCount(t testing.TB, ref *codec.Codec, c *tiktokenCounter, text string) (n int, ok bool) {
	t.Helper()
	if strings.IndexByte(text, 0x7f) >= 0 {
		return 0, false
	}
	count := func(s string) int {
		n, err := ref.Count(s)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	re := referenceRegexp(c.split.String())
	pieces := regexpPieces(t, re, text)
	if slices.Equal(pieces, regexpPieces(t, c.split, text)) {
		return count(text), true
	}
	for _, p := range pieces {
		if one := regexpPieces(t, c.split, p); len(one) == 1 {
			n += count(p)
		} else {
			n += c.Count(p)
		}
	}
	return n, true
}

// hasLongPiece reports whether a piece of text has a part without a cut
// position longer than maxExactPiece (counted by its bytes).
func hasLongPiece(c *tiktokenCounter, text string) bool {
	idx, _ := c.split.FindAllStringIndex(text, -1)
	for _, m := range idx {
		p := text[m[0]:m[1]]
		run := 0
		for k := 1; k < len(p); k++ {
			if c.bpe.canCut(p, k) {
				run = 0
			} else if run++; run > maxExactPiece-2*pieceCut {
				return true
			}
		}
	}
	return false
}
