package ratelimit

import (
	"context"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/caddyai/gateway/internal/testredis"
)

// benchLimits never refuse at benchmark rates.
var benchLimits = Limits{RPM: MaxLimit, TPM: MaxLimit, TPD: MaxLimit}

func benchReserveSettle(b *testing.B, l *Limiter, scopes []Scope) {
	b.Helper()
	ctx := context.Background()
	cost := tokens(500)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		r, d, err := l.Reserve(ctx, scopes, cost)
		if err != nil || !d.Allowed {
			b.Fatalf("Reserve: %+v, %v", d, err)
		}
		if err := r.Settle(ctx, 300); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMemoryReserveSettle(b *testing.B) {
	b.Run("1 scope", func(b *testing.B) {
		l := NewLimiter(NewMemoryStore(MemoryOptions{}), Options{})
		benchReserveSettle(b, l, []Scope{scope("key:team-a", benchLimits)})
	})
	b.Run("3 scopes", func(b *testing.B) {
		l := NewLimiter(NewMemoryStore(MemoryOptions{}), Options{})
		benchReserveSettle(b, l, []Scope{
			scope("key:team-a", benchLimits),
			scope("model:llama", benchLimits),
			scope("global", Limits{RPM: MaxLimit, MaxConcurrent: 1 << 30}),
		})
	})
}

func BenchmarkMemoryReserveSettleParallel(b *testing.B) {
	benchReserveSettleParallel(b, NewLimiter(NewMemoryStore(MemoryOptions{}), Options{}), 1)
}

// BenchmarkRedisReserveSettleParallel: 50 callers at once (the gateway under 50 connections),
// each reserve and settle a round trip shared through the store's pipelines.
func BenchmarkRedisReserveSettleParallel(b *testing.B) {
	addr, _ := testredis.Start(b)
	client := newRedisClient(b, addr)
	l := NewLimiter(NewRedisStore(client, RedisOptions{}), Options{OnStoreError: OnStoreErrorDeny})
	benchReserveSettleParallel(b, l, max(1, 50/runtime.GOMAXPROCS(0)))
}

// benchReserveSettleParallel reserves and settles on 1024 keys and 8 models from parallelism
// goroutines per CPU.
func benchReserveSettleParallel(b *testing.B, l *Limiter, parallelism int) {
	const keys = 1024
	scopes := make([][]Scope, keys)
	for i := range scopes {
		scopes[i] = []Scope{scope("key:"+strconv.Itoa(i), benchLimits), scope("model:m"+strconv.Itoa(i%8), benchLimits)}
	}
	var next atomic.Uint64
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(parallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := next.Add(1) * 7919
		for pb.Next() {
			i++
			r, d, err := l.Reserve(ctx, scopes[i%keys], tokens(500))
			if err != nil || !d.Allowed {
				b.Errorf("Reserve: %+v, %v", d, err)
				return
			}
			_ = r.Settle(ctx, 300)
		}
	})
}

func BenchmarkRedisReserveSettle(b *testing.B) {
	addr, _ := testredis.Start(b)
	client := newRedisClient(b, addr)
	l := NewLimiter(NewRedisStore(client, RedisOptions{}), Options{OnStoreError: OnStoreErrorDeny})
	b.Run("1 scope", func(b *testing.B) {
		benchReserveSettle(b, l, []Scope{scope("key:team-a", benchLimits)})
	})
	b.Run("3 scopes", func(b *testing.B) {
		benchReserveSettle(b, l, []Scope{
			scope("key:team-a", benchLimits),
			scope("model:llama", benchLimits),
			scope("global", Limits{RPM: MaxLimit, MaxConcurrent: 1 << 30}),
		})
	})
}
