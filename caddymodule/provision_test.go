package caddymodule

import (
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddyai/gateway/ratelimit"
)

// TestLogPanicKeepsTheStack: a background goroutine's panic is recovered and logged with the
// stack of where it happened.
func TestLogPanicKeepsTheStack(t *testing.T) {
	core, logs := observer.New(zap.ErrorLevel)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer logPanic(zap.New(core), "worker panicked")
		panicInBackground()
	}()
	<-done
	entries := logs.All()
	if len(entries) != 1 {
		t.Fatalf("want one entry, got %d", len(entries))
	}
	fields := entries[0].ContextMap()
	if fields["panic"] != "boom" {
		t.Errorf("panic value: %v", fields["panic"])
	}
	if stack, _ := fields["stack"].(string); !strings.Contains(stack, "panicInBackground") {
		t.Errorf("the stack does not show where the panic happened:\n%s", stack)
	}
}

func panicInBackground() { panic("boom") }

// TestAuthGuardRetryAfter: the wait announced to a blocked address is the time until one more
// failure fits its bucket at the configured max_failures, not at the default.
func TestAuthGuardRetryAfter(t *testing.T) {
	tests := []struct {
		limit int64
		reset time.Duration
		want  time.Duration
	}{
		{5, time.Minute, 12 * time.Second},      // just blocked: a fifth of the minute
		{5, 50 * time.Second, 2 * time.Second},  // blocked for a while: less left
		{30, time.Minute, 2 * time.Second},      // the default
		{600, time.Minute, time.Second},         // never below a second
		{1, 45 * time.Second, 45 * time.Second}, // one failure a minute
		{0, time.Minute, time.Second},           // no limit reported
	}
	for _, tt := range tests {
		got := tooManyFailures(ratelimit.Quota{Limit: tt.limit, Reset: tt.reset})
		if got.RetryAfter != tt.want || got.Status != 429 || got.Code != "too_many_auth_failures" {
			t.Errorf("limit %d, reset %s: %+v, want a wait of %s", tt.limit, tt.reset, got, tt.want)
		}
	}
}
