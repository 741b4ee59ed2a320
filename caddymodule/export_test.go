package caddymodule

import (
	"testing"
	"time"
)

// AdvanceBatchClock moves the batch runners' clock d ahead for the rest of the test (the
// runners of a Caddy started by the test see completion windows end without waiting a day).
func AdvanceBatchClock(t testing.TB, d time.Duration) {
	batchClockSkew.Add(int64(d))
	t.Cleanup(func() { batchClockSkew.Add(-int64(d)) })
}

// LearnedStreamUsage is learnedStreamUsage for the external tests.
const LearnedStreamUsage = learnedStreamUsage
