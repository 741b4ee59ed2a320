package caddymodule

import (
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// TestBatchLeaseConfigured: storage's batch_lease is what the runner claims and renews lines
// on (the latest provisioned config's), the default without it; less than a second is refused.
func TestBatchLeaseConfigured(t *testing.T) {
	h := &backendHandle{}
	r := &batchRunner{h: h, lease: batchLease}
	if got := r.currentLease(); got != batchLease {
		t.Errorf("default lease %s, want %s", got, batchLease)
	}
	h.lease.Store(int64(3 * time.Second))
	if got := r.currentLease(); got != 3*time.Second {
		t.Errorf("configured lease %s, want 3s", got)
	}
	for lease, ok := range map[time.Duration]bool{0: true, time.Second: true, 500 * time.Millisecond: false} {
		g := &Gateway{Storage: &StorageConfig{BatchLease: caddy.Duration(lease)}, Files: &FilesConfig{}}
		if err := g.validateStorage(); (err == nil) != ok {
			t.Errorf("batch_lease %s: validate = %v", lease, err)
		}
	}
}
