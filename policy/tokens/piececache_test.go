package tokens

import (
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// A piece merged twice comes out the same: the second time from the cache, which answers only
// for the piece it holds (the same bytes and length: "ab" is not "ab\x00"), and a later piece
// in the same slot replaces it.
func TestPieceCacheGetPut(t *testing.T) {
	var c pieceCache
	if _, ok := c.get("ab"); ok {
		t.Fatal("an empty cache answered")
	}
	c.put("ab", 2)
	c.put("abcdefghijklmnop", 5)
	if n, ok := c.get("ab"); !ok || n != 2 {
		t.Fatalf(`get("ab") = %d, %v`, n, ok)
	}
	if n, ok := c.get("abcdefghijklmnop"); !ok || n != 5 {
		t.Fatalf("get of the 16-byte piece = %d, %v", n, ok)
	}
	for _, other := range []string{"ab\x00", "ba", "abcdefghijklmnoq", "abcdefgh\x00"} {
		if n, ok := c.get(other); ok {
			t.Errorf("get(%q) = %d from another piece", other, n)
		}
	}
	// a piece in the slot of "ab" (found by search) replaces it
	lo, hi := pieceKey("ab")
	target := c.slot(lo, hi, 2)
	var rival string
	for i := 0; rival == "" && i < 1<<24; i++ {
		s := "p" + strconv.Itoa(i)
		if l, h := pieceKey(s); c.slot(l, h, len(s)) == target {
			rival = s
		}
	}
	if rival == "" {
		t.Fatal("no piece found for the slot")
	}
	c.put(rival, 1)
	if _, ok := c.get("ab"); ok {
		t.Error(`"ab" still answered after another piece took its slot`)
	}
	if n, ok := c.get(rival); !ok || n != 1 {
		t.Errorf("get(%q) = %d, %v", rival, n, ok)
	}
	// a slot being written is neither read nor written
	target.meta.Store(target.meta.Load() | 1)
	if _, ok := c.get(rival); ok {
		t.Error("a slot being written answered")
	}
	c.put("ab", 2)
	if target.lo.Load() == lo && target.hi.Load() == hi {
		t.Error("a second writer wrote a slot being written")
	}
}

// Counting with the cache gives the counts of merging every piece afresh, for pieces of every
// cached length, counted by many goroutines at once over a few hundred slots' worth of
// distinct pieces (so that slots are replaced while others read them).
func TestPieceCacheCountsUnchanged(t *testing.T) {
	for _, c := range []*tiktokenCounter{cl100k(), o200k()} {
		b := c.bpe
		r := rand.New(rand.NewPCG(3, 4))
		alphabet := []string{"a", "e", "k", "q", "z", "th", "ng", "é", "ß", "中", "0", "'", "-"}
		pieces := make([]string, 40_000)
		for i := range pieces {
			var sb strings.Builder
			for sb.Len() < 2+r.IntN(maxCachedPiece-1) {
				sb.WriteString(alphabet[r.IntN(len(alphabet))])
			}
			pieces[i] = sb.String()
		}
		want := make([]int, len(pieces))
		sc := new(bpeScratch)
		for i, p := range pieces {
			want[i] = b.mergeScan(p, sc)
		}
		var wg sync.WaitGroup
		errs := make(chan string, 4)
		for g := range 4 {
			wg.Go(func() {
				sc := new(bpeScratch)
				for round := range 3 {
					for k := range pieces {
						i := (k*7 + g*9973 + round*31) % len(pieces)
						if got := b.merge(pieces[i], sc, false); got != want[i] {
							select {
							case errs <- c.Name() + ": " + pieces[i]:
							default:
							}
							return
						}
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Errorf("merge with the cache differs from a fresh merge: %s", e)
		}
		hits := 0
		for _, p := range pieces[:1000] {
			if _, ok := b.cache.get(p); ok {
				hits++
			}
		}
		if hits == 0 {
			t.Errorf("%s: the cache holds none of the pieces just merged", c.Name())
		}
	}
}
