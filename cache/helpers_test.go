package cache

import (
	"runtime"
	"testing"
)

// waiters counts the callers that joined key's call in flight.
func (g *Group) waiters(key [32]byte) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c, ok := g.calls[key]; ok {
		return c.waiters
	}
	return 0
}

// inFlight reports whether a call for key is running.
func (g *Group) inFlight(key [32]byte) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	_, ok := g.calls[key]
	return ok
}

// waitFor yields until cond holds (a condition on goroutine state, never on elapsed time); the
// test binary's deadline bounds it.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for !cond() {
		runtime.Gosched()
	}
}
