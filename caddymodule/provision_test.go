package caddymodule

import (
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
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
