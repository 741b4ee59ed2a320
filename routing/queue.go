package routing

// waiter is one request queued in an Admission.
type waiter struct {
	ready    chan struct{} // closed when admitted
	priority int
	seq      uint64 // arrival order
	index    int    // position in the heap, -1 once out
	admitted bool   // set, under the Admission's lock, before ready is closed
}

// waitQueue is a binary heap of waiters: higher priority first, then earlier arrival. Waiters
// know their index so a cancelled one leaves in O(log n).
type waitQueue []*waiter

// Len returns the number of waiters.
func (q waitQueue) Len() int { return len(q) }

func (q waitQueue) less(i, j int) bool {
	if q[i].priority != q[j].priority {
		return q[i].priority > q[j].priority
	}
	return q[i].seq < q[j].seq
}

func (q waitQueue) swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].index = i
	q[j].index = j
}

func (q waitQueue) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !q.less(i, p) {
			return
		}
		q.swap(i, p)
		i = p
	}
}

// down sinks the element at i and reports whether it moved.
func (q waitQueue) down(i int) bool {
	start := i
	n := len(q)
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		c := l
		if r := l + 1; r < n && q.less(r, l) {
			c = r
		}
		if !q.less(c, i) {
			break
		}
		q.swap(i, c)
		i = c
	}
	return i > start
}

// push adds w.
func (q *waitQueue) push(w *waiter) {
	w.index = len(*q)
	*q = append(*q, w)
	q.up(w.index)
}

// pop removes and returns the first waiter. The queue must not be empty.
func (q *waitQueue) pop() *waiter {
	return q.removeAt(0)
}

// remove takes w out of the queue if it is still there.
func (q *waitQueue) remove(w *waiter) {
	if w.index >= 0 && w.index < len(*q) && (*q)[w.index] == w {
		q.removeAt(w.index)
	}
}

func (q *waitQueue) removeAt(i int) *waiter {
	old := *q
	last := len(old) - 1
	w := old[i]
	if i != last {
		old.swap(i, last)
	}
	old[last] = nil
	*q = old[:last]
	if i != last && !(*q).down(i) {
		(*q).up(i)
	}
	w.index = -1
	return w
}
