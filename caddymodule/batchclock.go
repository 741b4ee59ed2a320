package caddymodule

import (
	"sync/atomic"
	"time"
)

// batchClockSkew moves the batch runners' clock ahead of the system's, in nanoseconds: always 0
// outside tests, which move it to end completion windows without waiting a day
// (AdvanceBatchClock in export_test.go).
var batchClockSkew atomic.Int64

// runnerNow is the batch runners' clock.
func runnerNow() time.Time {
	return time.Now().Add(time.Duration(batchClockSkew.Load()))
}
