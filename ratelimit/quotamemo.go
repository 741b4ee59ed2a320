package ratelimit

import (
	"hash/maphash"
	"sync"
)

// quotaMemoSlots is the number of scope sets a QuotaMemo holds at once (a power of two).
const quotaMemoSlots = 4096

// QuotaMemo remembers, per scope set (a key on a model), the token quota its last reservation
// through this process reported: what a caller with a remote store can know of a bucket
// without a round trip. The bucket has moved since (refilled, settled, taken from by other
// instances), so the memo is a hint for choices that stay safe when it is wrong, never a
// decision: the reservation decides. It is direct-mapped: a set whose slot another took is
// forgotten, and nothing grows with the number of keys.
type QuotaMemo struct {
	seed  maphash.Seed
	slots [quotaMemoSlots]quotaSlot
}

type quotaSlot struct {
	mu   sync.Mutex
	hash uint64 // the set's hash; 0 when empty
	q    Quota
}

// NewQuotaMemo returns an empty memo.
func NewQuotaMemo() *QuotaMemo { return &QuotaMemo{seed: maphash.MakeSeed()} }

func (m *QuotaMemo) slot(key, model string) (*quotaSlot, uint64) {
	var h maphash.Hash
	h.SetSeed(m.seed)
	h.WriteString(key)
	h.WriteByte(0)
	h.WriteString(model)
	sum := h.Sum64() | 1 // never 0, the empty slot's
	return &m.slots[sum&(quotaMemoSlots-1)], sum
}

// Put remembers q for key on model; a quota without a limit is not remembered.
func (m *QuotaMemo) Put(key, model string, q Quota) {
	if m == nil || q.Limit <= 0 {
		return
	}
	s, h := m.slot(key, model)
	s.mu.Lock()
	s.hash, s.q = h, q
	s.mu.Unlock()
}

// Get returns the quota last remembered for key on model.
func (m *QuotaMemo) Get(key, model string) (Quota, bool) {
	if m == nil {
		return Quota{}, false
	}
	s, h := m.slot(key, model)
	s.mu.Lock()
	q, ok := s.q, s.hash == h
	s.mu.Unlock()
	return q, ok
}
