package ratelimit

import (
	"sync"
	"time"
)

// A key past its requests-per-minute (or per-day) limit keeps sending: a runaway client, a retry
// loop. Each of its requests would cost a reserve script call in Redis only to be refused again,
// so the store remembers, per scope, a refusal by a request bucket until that bucket has room for
// one request, and refuses locally meanwhile (make bench (g): a third of the requests are such
// 429s).
//
// This never admits what Redis would refuse, and it refuses only what Redis would: a request
// bucket only fills (reserves) and drains with time; no settlement or release gives requests
// back, whichever instance runs it. The state Redis returned with the refusal, drained to a later
// time with the same limit, is therefore a lower bound of the state Redis holds then, and when
// that bound has no room for one request, Redis has none either. A token bucket can be refunded
// by any instance's settlement, and a concurrency slot freed at any moment, so refusals by those
// are not remembered. The Redis clock is read from the reply's now against the local clock
// before the call was sent, which puts the estimate of Redis's time at or after the real one:
// a remembered refusal ends at the latest when Redis would admit again. A scope whose limits
// changed (a config reload) is asked again. This holds while every instance gives a scope the
// same limits, as one config does; while a fleet is rolled to other limits, an instance with the
// old ones may hold a refusal longer than Redis would, at most until its own limit had room.
//
// A remembered refusal holds for refusedHold at most, then Redis is asked again (and the refusal
// remembered anew): a bucket emptied in Redis by hand, a Redis restarted empty or an outage is
// seen within that time, as without the memo, and a client sending past its limit costs Redis one
// call per scope per refusedHold instead of one per request.
//
// What a local refusal reports: the request bucket's exact wait and quota; the token quota is
// the state of the refusal's reply drained to now, which another instance may have moved since.

// maxRefused bounds the remembered refusals; beyond it a new one is not remembered. When full,
// the expired ones are swept, at most once per refusedSweep, so that more scopes at their limits
// than the bound (a keys file of 100,000 keys) cost one sweep a second, not one per refusal.
const (
	maxRefused   = 1 << 16
	refusedSweep = int64(time.Second)
	refusedHold  = int64(time.Second)
)

// refusedMemo holds the remembered refusals by scope id.
type refusedMemo struct {
	mu    sync.Mutex
	m     map[string]*refusedScope
	swept int64 // local clock (ns) of the last sweep
}

// refusedScope is one remembered refusal.
type refusedScope struct {
	lim    Limits     // the limits st was measured against
	st     scopeState // the scope's refilled state in the refusal's reply, in Redis's clock
	at     int64      // Redis's clock (ns) of st
	offset int64      // Redis's clock minus the local clock (ns), at or above the real offset
	since  int64      // local clock (ns) when remembered: a clock turned back forgets it
	until  int64      // local clock (ns): from then on Redis is asked (the bucket has room, or refusedHold passed)
}

// requestRoomAt returns when (in st's clock, ns) every request bucket of st has room for one
// request, and false when one has room already.
func requestRoomAt(lim *Limits, st *scopeState, now int64) (int64, bool) {
	var at int64
	refused := false
	for _, k := range [...]int{dimRPM, dimRPD} {
		c := limitOf(lim, k)
		if c <= 0 {
			continue
		}
		l := st.lv[k]
		l.refill(c, k, now)
		p := periodTicks(k)
		if over := l.w + p - c*p; over > 0 {
			refused = true
			at = max(at, l.t+ceilDiv(over, c)*tick(k))
		}
	}
	return at, refused
}

// remember records the refusals by request buckets in a reserve or peek reply: st are the
// scopes' states at now (Redis's clock, ns), offset Redis's clock minus the local clock (at or
// above the real one).
func (m *refusedMemo) remember(scopes []Scope, st []scopeState, now, offset int64) {
	for i := range scopes {
		at, refused := requestRoomAt(&scopes[i].Limits, &st[i], now)
		if !refused {
			continue
		}
		since := now - offset
		e := &refusedScope{lim: scopes[i].Limits, st: st[i], at: now, offset: offset, since: since, until: min(at-offset, since+refusedHold)}
		m.mu.Lock()
		if m.m == nil {
			m.m = make(map[string]*refusedScope)
		}
		if local := now - offset; len(m.m) >= maxRefused && (local-m.swept >= refusedSweep || local < m.swept) {
			m.swept = local
			for id, old := range m.m {
				if old.until <= local {
					delete(m.m, id)
				}
			}
		}
		if len(m.m) < maxRefused {
			m.m[scopes[i].ID] = e
		}
		m.mu.Unlock()
	}
}

// refuse returns the decision for cost on scopes when a remembered refusal still holds at local
// time now (ns), and false when Redis must be asked.
func (m *refusedMemo) refuse(scopes []Scope, cost Cost, now int64) (Decision, bool) {
	if cost.Requests <= 0 {
		return Decision{}, false
	}
	for i := range scopes {
		m.mu.Lock()
		e := m.m[scopes[i].ID]
		if e != nil && (e.until <= now || now < e.since || e.lim != scopes[i].Limits) {
			delete(m.m, scopes[i].ID)
			e = nil
		}
		m.mu.Unlock()
		if e == nil {
			continue
		}
		redisNow := max(now+e.offset, e.at)
		st := e.st
		st.refillAll(&e.lim, redisNow)
		// The wait and the refusing dimension come from the request buckets alone; the quotas
		// from every bucket of the drained state.
		reqOnly := []Scope{{ID: scopes[i].ID, Limits: Limits{RPM: e.lim.RPM, RPD: e.lim.RPD}}}
		d := decide(redisNow, reqOnly, cost, []scopeState{st}, false)
		if d.Allowed || d.Impossible {
			return Decision{}, false
		}
		d.Requests, d.Tokens = Quota{}, Quota{}
		fillQuotas(&d, redisNow, scopes[i:i+1], []scopeState{st})
		return d, true
	}
	return Decision{}, false
}
