package tokens

// shortRanks holds the ranks of the tokens of at most 8 bytes, the ones a count looks up
// nearly every time (whole words, and the pairs a merge tries), in an open-addressing table
// keyed by the token's bytes packed into a uint64: a lookup is one multiply and, mostly, one
// probe of one cache line, where the map of all tokens hashes the string, walks its groups and
// compares the key's bytes behind another pointer.
type shortRanks struct {
	slots []shortSlot
	shift uint
}

// shortSlot is one token: its packed bytes, its rank and its length (0: an empty slot).
type shortSlot struct {
	key  uint64
	rank uint32
	n    uint32
}

// maxShortToken is the longest token shortRanks holds.
const maxShortToken = 8

// pack returns s's bytes (len(s) <= 8) as a little-endian uint64. From 4 bytes on it is two
// overlapping 4-byte loads, the second shifted into place (the bytes both hold are the same).
func pack(s string) uint64 {
	switch n := len(s); {
	case n >= 4:
		t := s[n-4:]
		lo := uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24
		hi := uint64(t[0]) | uint64(t[1])<<8 | uint64(t[2])<<16 | uint64(t[3])<<24
		return lo | hi<<(8*(n-4))
	case n == 3:
		return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16
	case n == 2:
		return uint64(s[0]) | uint64(s[1])<<8
	case n == 1:
		return uint64(s[0])
	}
	return 0
}

// slotOf is where the search for the token of key and length n starts.
func (t *shortRanks) slotOf(key uint64, n int) uint64 {
	return ((key ^ uint64(n)<<59) * 0x9E3779B97F4A7C15) >> t.shift
}

// newShortRanks builds the table of ranks' tokens of at most 8 bytes, at most three quarters
// full (cl100k_base: 2 MiB, o200k_base: 4 MiB).
func newShortRanks(ranks map[string]uint32) shortRanks {
	n := 0
	for tok := range ranks {
		if len(tok) <= maxShortToken {
			n++
		}
	}
	bits := uint(4)
	for 3<<bits < 4*n {
		bits++
	}
	t := shortRanks{slots: make([]shortSlot, 1<<bits), shift: 64 - bits}
	mask := uint64(len(t.slots) - 1)
	for tok, r := range ranks {
		if len(tok) == 0 || len(tok) > maxShortToken {
			continue
		}
		key := pack(tok)
		for i := t.slotOf(key, len(tok)); ; i = (i + 1) & mask {
			if t.slots[i].n == 0 {
				t.slots[i] = shortSlot{key: key, rank: r, n: uint32(len(tok))}
				break
			}
		}
	}
	return t
}

// get returns the rank of the token s (1 <= len(s) <= 8).
func (t *shortRanks) get(s string) (uint32, bool) {
	key, n := pack(s), uint32(len(s))
	mask := uint64(len(t.slots) - 1)
	for i := t.slotOf(key, len(s)); ; i = (i + 1) & mask {
		sl := &t.slots[i]
		if sl.n == n && sl.key == key {
			return sl.rank, true
		}
		if sl.n == 0 {
			return 0, false
		}
	}
}
