package caddymodule

import (
	"context"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/ratelimit"
)

// TestBatchReserveDefault: without a reserve, a pool of 16 or more keeps one slot in 16 free of
// batch lines, a smaller one none.
func TestBatchReserveDefault(t *testing.T) {
	zero := 0
	for _, tc := range []struct {
		mc   ModelConfig
		want int
	}{
		{ModelConfig{Limits: ratelimit.Limits{MaxConcurrent: 8}}, 0},
		{ModelConfig{Limits: ratelimit.Limits{MaxConcurrent: 16}}, 1},
		{ModelConfig{Limits: ratelimit.Limits{MaxConcurrent: 64}, Batch: &BatchModelConfig{MaxConcurrent: 8}}, 4},
		{ModelConfig{Limits: ratelimit.Limits{MaxConcurrent: 64}, Batch: &BatchModelConfig{Reserve: &zero}}, 0},
		{ModelConfig{}, 0},
	} {
		if got := batchReserve(tc.mc); got != tc.want {
			t.Errorf("max_concurrent %d: reserve %d, want %d", tc.mc.MaxConcurrent, got, tc.want)
		}
	}
}

// TestBatchReserveTooLarge: a reserve as large as the model's pool would leave batch lines no
// slot at all; provisioning refuses it.
func TestBatchReserveTooLarge(t *testing.T) {
	four := 4
	g := &Gateway{Models: []ModelConfig{{Name: "m", Upstreams: []string{"127.0.0.1:1"}, Limits: ratelimit.Limits{MaxConcurrent: 4}, Batch: &BatchModelConfig{Reserve: &four}}},
		Keys: []policy.KeyConfig{{ID: "k", Secret: "sha256:" + strings.Repeat("0", 64)}}}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	err := g.Provision(ctx)
	_ = g.Cleanup()
	if err == nil || !strings.Contains(err.Error(), "reserve must be at least 0 and below the model's max_concurrent (4)") {
		t.Errorf("reserve 4 of max_concurrent 4: %v", err)
	}
}
