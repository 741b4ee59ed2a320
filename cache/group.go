package cache

import (
	"context"
	"errors"
	"sync"
)

// errLeaderPanicked is what waiters see when the call they waited for panicked.
var errLeaderPanicked = errors.New("cache fill panicked")

// call is one fill in flight.
type call struct {
	done    chan struct{}
	entry   *Entry
	err     error
	waiters int // callers that joined the call (guarded by Group.mu)
}

// Group deduplicates concurrent identical misses: while one caller runs fn for a key, others
// asking for the same key wait for its result instead of sending the same request upstream.
// When that fn fails (an error, or no entry: the answer was not cacheable), the waiters go around once more (one of them becomes the new leader); if
// that fails too they proceed on their own, so a failing upstream never makes callers queue
// behind one another. The zero Group is ready to use.
type Group struct {
	mu    sync.Mutex
	calls map[[32]byte]*call
}

// Do runs fn for key unless a call for key is already in flight, in which case it waits for that
// call's entry (shared is then true). A waiter whose ctx ends stops waiting and returns ctx's
// error; the leader itself runs fn to completion (fn should watch its own context). The entry is
// shared between callers: treat it as read-only.
func (g *Group) Do(ctx context.Context, key [32]byte, fn func() (*Entry, error)) (entry *Entry, shared bool, err error) {
	const rounds = 2 // failed leaders a waiter waits through before running fn itself
	for range rounds {
		g.mu.Lock()
		if g.calls == nil {
			g.calls = make(map[[32]byte]*call)
		}
		c, ok := g.calls[key]
		if !ok {
			c = &call{done: make(chan struct{})}
			g.calls[key] = c
			g.mu.Unlock()
			g.lead(key, c, fn)
			return c.entry, false, c.err
		}
		c.waiters++
		g.mu.Unlock()
		select {
		case <-c.done:
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
		if c.err == nil && c.entry != nil {
			return c.entry, true, nil
		}
	}
	entry, err = fn()
	return entry, false, err
}

// lead runs fn as the leader of c and releases the waiters, even if fn panics (the panic goes on
// up the leader's stack; waiters see an error and retry).
func (g *Group) lead(key [32]byte, c *call, fn func() (*Entry, error)) {
	c.err = errLeaderPanicked
	defer func() {
		g.mu.Lock()
		delete(g.calls, key)
		g.mu.Unlock()
		close(c.done)
	}()
	c.entry, c.err = fn()
}
