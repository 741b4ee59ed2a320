package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/caddyai/gateway/bench/fixedreply"
)

// upstreamSpec is the model server behind every target of a scenario.
type upstreamSpec struct {
	// Sim runs the simulator (ai_simulator, served by the gateway's binary); otherwise the
	// fixed-reply server (bench/fixedreply, this binary run with -serve-fixed).
	Sim bool
	// TTFT and TokensPerSecond pace the simulator ("0" and 0: no latency).
	TTFT            string
	TokensPerSecond int
	// ResponseTokens is the simulator's answer length. Default: 20.
	ResponseTokens int
}

func (u upstreamSpec) String() string {
	if !u.Sim {
		return "fixed-reply upstream"
	}
	if u.TTFT == "" || u.TTFT == "0" {
		return "simulator, zero latency"
	}
	if u.TokensPerSecond == 0 {
		return fmt.Sprintf("simulator, ttft %s, %d tokens at once", u.TTFT, u.responseTokens())
	}
	return fmt.Sprintf("simulator, ttft %s, %d tokens/s, %d tokens", u.TTFT, u.TokensPerSecond, u.responseTokens())
}

func (u upstreamSpec) responseTokens() int {
	if u.ResponseTokens > 0 {
		return u.ResponseTokens
	}
	return fixedreply.Chunks
}

// startUpstream starts the scenario's model server on port.
func startUpstream(ctx context.Context, o options, out, id string, u upstreamSpec, port int) (*server, error) {
	logPath := filepath.Join(out, "logs", "upstream-"+id+".log")
	if !u.Sim {
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("starting fixed-reply upstream: %w", err)
		}
		return startProc(ctx, "upstream", []string{self, "-serve-fixed", addrOf(port)}, out, nil, addrOf(port), logPath)
	}
	conf := filepath.Join(out, "simulator-"+id+".Caddyfile")
	ttft := u.TTFT
	if ttft == "" {
		ttft = "0"
	}
	if err := render("simulator.Caddyfile", conf, map[string]any{"Port": port, "Model": model,
		"ResponseTokens": u.responseTokens(), "TTFT": ttft, "TokensPerSecond": u.TokensPerSecond}); err != nil {
		return nil, err
	}
	return startServer(ctx, "upstream", o.gateway, conf, addrOf(port), logPath)
}

// serveFixed is the -serve-fixed mode: the fixed-reply upstream on addr until killed.
func serveFixed(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("serving fixed replies: %w", err)
	}
	return fixedreply.Serve(ln, fixedreply.NewReplies(model))
}
