package routing

import (
	"slices"
	"sync"
	"sync/atomic"
)

// Watchers is a set of funcs told of an event, for any number of watchers that come and go:
// Notify calls each of them on the notifier's goroutine, without a lock and without
// allocating (the set is copied when it changes, never when it is read), so it suits a hot
// path. A watcher must be quick and may run concurrently with itself. The zero value is ready.
type Watchers struct {
	mu   sync.Mutex
	next int
	set  atomic.Pointer[[]watcher]
}

type watcher struct {
	id int
	fn func()
}

// Add adds fn, until the returned func is called.
func (w *Watchers) Add(fn func()) (remove func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	id := w.next
	w.next++
	w.replace(func(old []watcher) []watcher { return append(old, watcher{id, fn}) })
	return func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.replace(func(old []watcher) []watcher {
			return slices.DeleteFunc(old, func(x watcher) bool { return x.id == id })
		})
	}
}

// replace stores edit's result on a copy of the set; w.mu is held.
func (w *Watchers) replace(edit func([]watcher) []watcher) {
	var cur []watcher
	if p := w.set.Load(); p != nil {
		cur = append(cur, (*p)...)
	}
	next := edit(cur)
	w.set.Store(&next)
}

// Notify calls every watcher.
func (w *Watchers) Notify() {
	if p := w.set.Load(); p != nil {
		for _, x := range *p {
			x.fn()
		}
	}
}

// Signal is a watcher sending on c without blocking: c (buffered) holds at most the signals
// its reader has not taken yet, so a burst of events wakes the reader once.
func Signal(c chan<- struct{}) func() {
	return func() {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}
