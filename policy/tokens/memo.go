package tokens

import (
	"hash/maphash"
	"sync"
)

// memoShards is the number of independently locked parts of a Memo.
const memoShards = 16

// Memo is a bounded memo of token counts keyed by a 64-bit hash of (counter
// name, text). It is safe for concurrent use. It holds at most the number of
// entries given to NewMemo (16 bytes each plus map overhead) and evicts with
// the CLOCK (second chance) policy, so texts seen again, like the earlier
// turns of a growing conversation, stay while one-off texts go. A nil *Memo
// memoises nothing.
//
// Two different texts whose hashes collide would share a count; with a
// 64-bit hash seeded per Memo this is not a practical concern.
type Memo struct {
	seed    maphash.Seed
	msgSeed maphash.Seed // MessageKey's, so that no text's key is a message's
	shards  [memoShards]memoShard
}

// memoShard is one locked part of a Memo: a CLOCK ring over its slots.
type memoShard struct {
	mu    sync.Mutex
	index map[uint64]int32 // key -> position in slots
	slots []memoSlot
	limit int
	hand  int
}

// memoSlot is one memoised count.
type memoSlot struct {
	key   uint64
	count int32
	used  bool
}

// NewMemo returns a Memo holding at most maxEntries counts (at least one per
// shard, so the real bound is max(maxEntries, 16)).
func NewMemo(maxEntries int) *Memo {
	per := max(1, (maxEntries+memoShards-1)/memoShards)
	m := &Memo{seed: maphash.MakeSeed(), msgSeed: maphash.MakeSeed()}
	for i := range m.shards {
		m.shards[i].limit = per
		m.shards[i].index = make(map[uint64]int32, per)
	}
	return m
}

// Key returns the key under which the count of text by the counter named
// name is memoised.
func (m *Memo) Key(name, text string) uint64 {
	var h maphash.Hash
	h.SetSeed(m.seed)
	h.WriteString(name)
	h.WriteByte(0)
	h.WriteString(text)
	return h.Sum64()
}

// MessageKey returns the key under which the count of a whole message (its framing and every
// text in it, as ChatCounter counts one) by the counter named name is memoised: raw is the
// message's JSON, anthropic says which API's formula counted it. Its hash is seeded apart from
// Key's, so a text that spells a message's JSON never shares its key.
func (m *Memo) MessageKey(name string, anthropic bool, raw string) uint64 {
	var h maphash.Hash
	h.SetSeed(m.msgSeed)
	h.WriteString(name)
	if anthropic {
		h.WriteByte(1)
	} else {
		h.WriteByte(0)
	}
	h.WriteString(raw)
	return h.Sum64()
}

// Get returns the count memoised under key.
func (m *Memo) Get(key uint64) (int, bool) {
	if m == nil {
		return 0, false
	}
	s := &m.shards[key%memoShards]
	s.mu.Lock()
	i, ok := s.index[key]
	if !ok {
		s.mu.Unlock()
		return 0, false
	}
	s.slots[i].used = true
	n := int(s.slots[i].count)
	s.mu.Unlock()
	return n, true
}

// Put memoises count under key, evicting an entry not used since the clock
// hand last passed it when the shard is full.
func (m *Memo) Put(key uint64, count int) {
	if m == nil || count < 0 || count > 1<<31-1 {
		return
	}
	s := &m.shards[key%memoShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	if i, ok := s.index[key]; ok {
		s.slots[i].count = int32(count)
		return
	}
	if len(s.slots) < s.limit {
		s.index[key] = int32(len(s.slots))
		s.slots = append(s.slots, memoSlot{key: key, count: int32(count)})
		return
	}
	for s.slots[s.hand].used {
		s.slots[s.hand].used = false
		s.hand = (s.hand + 1) % len(s.slots)
	}
	delete(s.index, s.slots[s.hand].key)
	s.slots[s.hand] = memoSlot{key: key, count: int32(count)}
	s.index[key] = int32(s.hand)
	s.hand = (s.hand + 1) % len(s.slots)
}

// Len returns the number of memoised counts.
func (m *Memo) Len() int {
	if m == nil {
		return 0
	}
	n := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		n += len(s.slots)
		s.mu.Unlock()
	}
	return n
}

// Count returns c.Count(text), memoised.
func (m *Memo) Count(c Counter, text string) int {
	if m == nil || text == "" {
		return c.Count(text)
	}
	key := m.Key(c.Name(), text)
	if n, ok := m.Get(key); ok {
		return n
	}
	n := c.Count(text)
	m.Put(key, n)
	return n
}
