package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
)

// startRedis starts a redis-server on loopback without persistence, for scenario g.
func startRedis(ctx context.Context, env *runEnv) (*server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("starting redis: %w", err)
	}
	dir := filepath.Join(env.outDir, "redis")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("starting redis: %w", err)
	}
	port := env.ports.redis
	return startProc(ctx, "redis", []string{bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir}, dir, nil, addrOf(port), filepath.Join(env.outDir, "logs", "redis.log"))
}

// startPortkey starts Portkey's open-source gateway (node build/start-server.js) on the peer
// port, in production mode without its UI.
func startPortkey(ctx context.Context, env *runEnv, script string) (*server, error) {
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, fmt.Errorf("starting portkey: %w", err)
	}
	abs, err := filepath.Abs(script)
	if err != nil {
		return nil, fmt.Errorf("starting portkey: %w", err)
	}
	port := env.ports.peer
	envv := append(os.Environ(), "NODE_ENV=production", "PORT="+strconv.Itoa(port))
	return startProc(ctx, "portkey", []string{node, abs, "--port=" + strconv.Itoa(port), "--headless"},
		filepath.Dir(abs), envv, addrOf(port), filepath.Join(env.outDir, "logs", "portkey.log"))
}

// portkeyHeaders route a request through Portkey to the scenario's upstream as an OpenAI
// provider with a custom host (loopback is one of its trusted custom hosts).
func portkeyHeaders(env *runEnv) []string {
	return []string{"x-portkey-provider: openai", "x-portkey-custom-host: http://" + addrOf(env.ports.upstream) + "/v1"}
}
