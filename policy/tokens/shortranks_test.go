package tokens

import (
	"math/rand/v2"
	"testing"
)

// The short table answers, for every token of at most 8 bytes, the rank the map of all tokens
// has, and no rank for strings that are not tokens, zero bytes and every length included.
func TestShortRanksAgreeWithMap(t *testing.T) {
	for _, c := range []*tiktokenCounter{cl100k(), o200k()} {
		b := c.bpe
		short := 0
		for tok, want := range b.ranks {
			if len(tok) > maxShortToken {
				continue
			}
			short++
			if got, ok := b.rank(tok); !ok || got != want {
				t.Fatalf("%s: rank(%q) = %d, %v; the map has %d", c.Name(), tok, got, ok, want)
			}
		}
		if short < 1000 {
			t.Fatalf("%s: only %d short tokens", c.Name(), short)
		}
		r := rand.New(rand.NewPCG(1, 2))
		buf := make([]byte, maxShortToken)
		misses := 0
		for range 200_000 {
			n := 1 + r.IntN(maxShortToken)
			for i := range n {
				buf[i] = byte(r.IntN(4)) * 0x3f // 0x00, 0x3f, 0x7e, 0xbd: zero bytes and padding-alike keys
			}
			s := string(buf[:n])
			want, inMap := b.ranks[s]
			got, ok := b.rank(s)
			if ok != inMap || ok && got != want {
				t.Fatalf("%s: rank(%q) = %d, %v; the map: %d, %v", c.Name(), s, got, ok, want, inMap)
			}
			if !ok {
				misses++
			}
		}
		if misses == 0 {
			t.Fatal("no string outside the vocabulary was tried")
		}
		if _, ok := b.rank(""); ok {
			t.Errorf("%s: the empty string has a rank", c.Name())
		}
	}
}
