package tokens

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/caddyai/gateway/internal/wire"
)

func TestInflightAcquire(t *testing.T) {
	ctx := context.Background()
	f := NewInflight(100<<10, 0)
	big := 60 << 10
	if ok, err := f.acquire(ctx, big); !ok || err != nil {
		t.Fatalf("first acquire = %v, %v", ok, err)
	}
	// Short texts never wait.
	if ok, _ := f.acquire(ctx, MinInflightText-1); !ok {
		t.Error("a short text was refused")
	}
	// No room and no wait: estimate.
	if ok, _ := f.acquire(ctx, big); ok {
		t.Error("second acquire fitted into a full bound")
	}
	if got := f.Fallbacks(); got != 1 {
		t.Errorf("Fallbacks = %d, want 1", got)
	}
	f.release(big)
	if got := f.InUse(); got != 0 {
		t.Errorf("InUse = %d after release, want 0", got)
	}
	// A text larger than the bound takes all of it.
	if ok, _ := f.acquire(ctx, 1<<30); !ok || f.InUse() != 100<<10 {
		t.Errorf("huge acquire: InUse = %d", f.InUse())
	}
	f.release(1 << 30)
}

func TestInflightWait(t *testing.T) {
	ctx := context.Background()
	f := NewInflight(64<<10, time.Minute)
	if ok, _ := f.acquire(ctx, 64<<10); !ok {
		t.Fatal("first acquire failed")
	}
	got := make(chan bool)
	go func() {
		ok, _ := f.acquire(ctx, 32<<10)
		got <- ok
	}()
	for {
		f.mu.Lock()
		n := len(f.waiters)
		f.mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	f.release(64 << 10)
	if !<-got {
		t.Error("waiter was not granted after release")
	}
	// A waiter whose context ends leaves with the context's error.
	cctx, cancel := context.WithCancel(ctx)
	go func() { time.Sleep(10 * time.Millisecond); cancel() }()
	if ok, err := f.acquire(cctx, 64<<10); ok || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled acquire = %v, %v", ok, err)
	}
	f.release(32 << 10)
	if n := f.InUse(); n != 0 {
		t.Errorf("InUse = %d, want 0", n)
	}
}

func TestInflightTimeout(t *testing.T) {
	f := NewInflight(64<<10, 5*time.Millisecond)
	f.acquire(context.Background(), 64<<10)
	start := time.Now()
	if ok, err := f.acquire(context.Background(), 20<<10); ok || err != nil {
		t.Errorf("acquire = %v, %v; want an estimate after the wait", ok, err)
	}
	if time.Since(start) < 5*time.Millisecond {
		t.Error("did not wait")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.waiters) != 0 {
		t.Errorf("%d waiters left", len(f.waiters))
	}
}

// TestChatCounterInflight checks that a ChatCounter whose bound is full
// counts with Estimate (an upper bound) and does not memoise it, and that
// concurrent counts never hold more than the bound.
func TestChatCounterInflight(t *testing.T) {
	text := realisticText(200 << 10)
	body := chatBody(text)
	exact, err := NewChatCounter(cl100k(), nil).CountChat(body)
	if err != nil {
		t.Fatal(err)
	}
	f := NewInflight(256<<10, 0)
	cc := &ChatCounter{Counter: cl100k(), Memo: NewMemo(100), Inflight: f}
	// Fill the bound so the next count estimates.
	f.acquire(context.Background(), 256<<10)
	n, err := cc.CountChat(body)
	if err != nil {
		t.Fatal(err)
	}
	if want := 3 + 1 + 3 + Estimate().Count(text); n != want || n < exact {
		t.Errorf("count with a full bound = %d, want the estimate %d (exact %d)", n, want, exact)
	}
	f.release(256 << 10)
	if n, _ := cc.CountChat(body); n != exact {
		t.Errorf("count after release = %d, want %d (the estimate was memoised?)", n, exact)
	}

	// Eight concurrent counts of 200 KiB under a 256 KiB bound: at most
	// one at a time, the others estimated, none below the exact count.
	cc = &ChatCounter{Counter: cl100k(), Inflight: NewInflight(256<<10, time.Millisecond)}
	var wg sync.WaitGroup
	var mu sync.Mutex
	peak := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := cc.Count(wire.DialectChat, body)
			mu.Lock()
			defer mu.Unlock()
			peak = max(peak, cc.Inflight.InUse())
			if err != nil || n < exact {
				t.Errorf("concurrent count = %d, %v; exact %d", n, err, exact)
			}
		}()
	}
	wg.Wait()
	if peak > 256<<10 {
		t.Errorf("peak in use %d over the bound", peak)
	}
}
