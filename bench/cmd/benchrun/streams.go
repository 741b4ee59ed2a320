package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/caddyai/gateway/bench/loadgen"
)

// Scenario i: thousands of slow streams held open at once through plain Caddy and through the
// gateway (one proxy at a time), each stream 1 s to its first token then 20 tokens at 20 tokens/s.
// While they are open, the proxy's resident memory and goroutines are sampled through its admin
// API; per stream is (under load - idle) / streams.
var slowStreams = upstreamSpec{Sim: true, TTFT: "1s", TokensPerSecond: 20, ResponseTokens: 20}

func slowStreamCount(env *runEnv) int {
	if env.quick {
		return 1000
	}
	return 5000
}

// raiseFileLimit lifts the open-file limit of the benchmark (and so of every process it starts)
// to at least need, as far as the hard limit (or, as root, beyond it) allows.
func raiseFileLimit(need uint64) (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	if l.Max < need {
		raised := syscall.Rlimit{Cur: need, Max: need}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err == nil {
			return need, nil
		}
	}
	l.Cur = l.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	return l.Cur, nil
}

// checkPortRange makes sure the ephemeral port range holds need ports, widening it when it is
// narrower and writable, and says what it found.
func checkPortRange(need int) string {
	const path = "/proc/sys/net/ipv4/ip_local_port_range"
	data, err := os.ReadFile(path)
	if err != nil {
		return "port range unknown: " + err.Error()
	}
	f := strings.Fields(string(data))
	if len(f) != 2 {
		return "port range unreadable"
	}
	lo, _ := strconv.Atoi(f[0])
	hi, _ := strconv.Atoi(f[1])
	if hi-lo+1 >= need {
		return fmt.Sprintf("ephemeral ports %d-%d (enough)", lo, hi)
	}
	if err := os.WriteFile(path, []byte("15000 64999"), 0o644); err != nil {
		return fmt.Sprintf("ephemeral ports %d-%d, fewer than %d, and not widened: %v", lo, hi, need, err)
	}
	return fmt.Sprintf("ephemeral ports widened from %d-%d to 15000-64999", lo, hi)
}

// goroutines reads the goroutine count from the admin API's pprof endpoint.
func goroutines(ctx context.Context, adminPort int) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/goroutine?debug=1", adminPort), nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("counting goroutines: %w", err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("counting goroutines: %w", err)
	}
	v, ok := strings.CutPrefix(strings.TrimSpace(line), "goroutine profile: total ")
	if !ok {
		return 0, fmt.Errorf("counting goroutines: unexpected %q", line)
	}
	return strconv.Atoi(v)
}

// streamSample is one proxy's figures under the slow streams.
type streamSample struct {
	name                    string
	idleRSS, rss            float64 // MB
	idleGoroutines, gorouts int
	res                     *loadgen.Result
}

func runSlowStreams(ctx context.Context, env *runEnv, o options, sc scenario) (*scenarioResult, error) {
	n := slowStreamCount(env)
	limit, err := raiseFileLimit(uint64(3*n + 2000))
	if err != nil {
		return nil, fmt.Errorf("raising the open-file limit: %w", err)
	}
	ports := checkPortRange(2*n + 2000)
	up, err := startUpstream(ctx, o, env.outDir, sc.ID, sc.Upstream, env.ports.upstream)
	if err != nil {
		return nil, err
	}
	defer up.stop()
	hold := 8 * time.Second
	if env.quick {
		hold = 4 * time.Second
	}
	sample := func(name string, start func() (*server, error), admin int) (*streamSample, error) {
		p, err := start()
		if err != nil {
			return nil, err
		}
		defer p.stop()
		s := &streamSample{name: name}
		if err := sleep(ctx, 300*time.Millisecond); err != nil {
			return nil, err
		}
		rss, err := currentRSS(p.pid())
		if err != nil {
			return nil, err
		}
		s.idleRSS = float64(rss) / (1 << 20)
		if s.idleGoroutines, err = goroutines(ctx, admin); err != nil {
			return nil, err
		}
		fmt.Printf(", %s", name)
		done := make(chan error, 1)
		go func() {
			var err error
			s.res, err = loadgen.Run(ctx, loadgen.Config{Addr: p.addr, Conns: n, Duration: hold, Body: streamBody(),
				Keys: []string{benchSecret}, Stream: true, Timeout: 30 * time.Second, RampUp: time.Second})
			done <- err
		}()
		// Sample while every stream is open: after the ramp-up and the first token.
		var rssv []float64
		var gv []int
		if err := sleep(ctx, 2500*time.Millisecond); err != nil {
			return nil, err
		}
		for t := 2500 * time.Millisecond; t < hold-500*time.Millisecond; t += 700 * time.Millisecond {
			if r, err := currentRSS(p.pid()); err == nil {
				rssv = append(rssv, float64(r)/(1<<20))
			}
			if g, err := goroutines(ctx, admin); err == nil {
				gv = append(gv, g)
			}
			if err := sleep(ctx, 700*time.Millisecond); err != nil {
				return nil, err
			}
		}
		if err := <-done; err != nil {
			return nil, err
		}
		if !p.alive() || !up.alive() {
			return nil, fmt.Errorf("%s or the upstream exited: %s", name, logTail(p.log))
		}
		s.rss = median(rssv)
		if len(gv) > 0 {
			slices.Sort(gv)
			s.gorouts = gv[len(gv)/2]
		}
		return s, nil
	}
	fmt.Print("streams")
	caddy, err := sample("caddy", func() (*server, error) { return startPlain(ctx, env, o, sc, env.ports.caddyAdmin) }, env.ports.caddyAdmin)
	if err != nil {
		return nil, err
	}
	gw, err := sample("gateway", func() (*server, error) {
		conf, err := gatewayConfig(env, sc, "gateway", env.ports.gateway, env.ports.admin, gatewayOptions{KeyTPM: 10_000_000_000})
		if err != nil {
			return nil, err
		}
		return startServer(ctx, "gateway", o.gateway, conf, addrOf(env.ports.gateway), filepath.Join(env.outDir, "logs", "gateway-"+sc.ID+".log"))
	}, env.ports.admin)
	if err != nil {
		return nil, err
	}
	fmt.Println()
	res := &scenarioResult{ID: sc.ID, Name: fmt.Sprintf("%s: %d concurrent streams", sc.Name, n), Upstream: sc.Upstream.String(), Conns: n, Stream: true,
		Figures: map[string]float64{"streams": float64(n)},
		Note: fmt.Sprintf("each proxy alone, %d closed-loop connections for %s after a 1 s ramp-up; open-file limit %d; %s; "+
			"RSS and goroutines are medians of samples taken while every stream was open, per stream = (loaded - idle) / streams", n, hold, limit, ports)}
	for _, s := range []*streamSample{caddy, gw} {
		perKB := (s.rss - s.idleRSS) * 1024 / float64(n)
		perG := float64(s.gorouts-s.idleGoroutines) / float64(n)
		res.Figures[s.name+"_errors"] = float64(s.res.Errors)
		res.Figures[s.name+"_rss_per_stream_kb"] = perKB
		res.Figures[s.name+"_goroutines_per_stream"] = perG
		res.Lines = append(res.Lines, fmt.Sprintf("%-8s %6d streams done, %d errors, stream p50 %.0f ms p99 %.0f ms, ttfb p50 %.0f ms p99 %.0f ms; "+
			"RSS %.0f MB idle, %.0f MB loaded = %.1f KB per stream; goroutines %d idle, %d loaded = %.2f per stream",
			s.name, s.res.OK, s.res.Errors, ms(s.res.Latency.Quantile(0.5)), ms(s.res.Latency.Quantile(0.99)),
			ms(s.res.TTFB.Quantile(0.5)), ms(s.res.TTFB.Quantile(0.99)), s.idleRSS, s.rss, perKB, s.idleGoroutines, s.gorouts, perG))
		for _, e := range s.res.ErrorSamples {
			res.Lines = append(res.Lines, s.name+" error: "+e)
		}
	}
	ratio := res.Figures["gateway_rss_per_stream_kb"] / max(res.Figures["caddy_rss_per_stream_kb"], 1e-9)
	res.Figures["rss_per_stream_ratio"] = ratio
	res.Lines = append(res.Lines, fmt.Sprintf("gateway/caddy: RSS per open stream x%.2f", ratio))
	return res, nil
}
