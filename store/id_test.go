package store

import (
	"encoding/hex"
	"slices"
	"strings"
	"sync"
	"testing"
)

func TestNewIDShape(t *testing.T) {
	for _, prefix := range []string{"file-", "batch_", "msgbatch_", ""} {
		id := NewID(prefix)
		hexPart, ok := strings.CutPrefix(id, prefix)
		if !ok || len(hexPart) != 32 {
			t.Fatalf("NewID(%q) = %q: want the prefix and 32 hex digits", prefix, id)
		}
		if _, err := hex.DecodeString(hexPart); err != nil {
			t.Fatalf("NewID(%q) = %q: %v", prefix, id, err)
		}
	}
}

func TestNewIDSortsByCreation(t *testing.T) {
	ids := make([]string, 10_000)
	for i := range ids {
		ids[i] = NewID("file-")
	}
	for i := 1; i < len(ids); i++ {
		if ids[i] <= ids[i-1] {
			t.Fatalf("id %d %q is not after id %d %q", i, ids[i], i-1, ids[i-1])
		}
	}
}

func TestNewIDUniqueAcrossGoroutines(t *testing.T) {
	const workers, each = 8, 2000
	var mu sync.Mutex
	var all []string
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			mine := make([]string, each)
			for i := range mine {
				mine[i] = NewID("batch_")
			}
			if !slices.IsSorted(mine) {
				t.Error("one goroutine's ids are not increasing")
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	slices.Sort(all)
	if n := len(slices.Compact(all)); n != workers*each {
		t.Fatalf("%d distinct ids, want %d", n, workers*each)
	}
	// The random halves differ too: knowing when an id was made does not
	// give it away.
	rnd := map[string]bool{}
	for _, id := range all[:1000] {
		rnd[id[len(id)-16:]] = true
	}
	if len(rnd) != 1000 {
		t.Fatalf("%d distinct random parts in 1000 ids", len(rnd))
	}
}
