package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
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

// goroutines reads go_goroutines from the admin API's /metrics (runtime.NumGoroutine, cheap
// even with thousands of goroutines, unlike a goroutine profile).
func goroutines(ctx context.Context, adminPort int) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/metrics", adminPort), nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("counting goroutines: %w", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("counting goroutines: %w", err)
			}
			return int(f), nil
		}
	}
	return 0, fmt.Errorf("counting goroutines: no go_goroutines in /metrics: %v", sc.Err())
}

// countEstablished counts the established TCP connections on loopback whose local port is
// local (accepted by a server there, or waiting to be) and those whose remote port is remote
// (opened to a server there).
func countEstablished(local, remote int) (toLocal, toRemote int, err error) {
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		file, err := os.Open(f)
		if err != nil {
			if f == "/proc/net/tcp6" {
				continue
			}
			return 0, 0, err
		}
		sc := bufio.NewScanner(file)
		for sc.Scan() {
			// sl local_address rem_address st ...: addresses are hex ip:port, st 01 is ESTABLISHED
			fields := strings.Fields(sc.Text())
			if len(fields) < 4 || fields[3] != "01" {
				continue
			}
			if portOf(fields[1]) == local {
				toLocal++
			}
			if portOf(fields[2]) == remote {
				toRemote++
			}
		}
		_ = file.Close()
	}
	return toLocal, toRemote, nil
}

func portOf(addr string) int {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		return -1
	}
	v, err := strconv.ParseUint(addr[i+1:], 16, 16)
	if err != nil {
		return -1
	}
	return int(v)
}

// streamSample is one proxy's figures under the slow streams: medians of the samples taken
// while the streams were open.
type streamSample struct {
	name                 string
	idleRSS              float64 // MB
	idleGoroutines       int
	rss                  float64 // MB
	gorouts              int
	clientConns, streams int // connections accepted by the proxy; its connections to the upstream
	rssPerStreamKB       float64
	goroutinesPerStream  float64
	// cpu is the cores used by the proxy, the upstream and the load generator over the run.
	cpu [3]float64
	res *loadgen.Result
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
	hold := 10 * time.Second
	if env.quick {
		hold = 6 * time.Second
	}
	sample := func(name string, start func() (*server, error), admin int) (*streamSample, error) {
		p, err := start()
		if err != nil {
			return nil, err
		}
		defer p.stop()
		s := &streamSample{name: name}
		_, portStr, _ := strings.Cut(p.addr, ":")
		proxyPort, _ := strconv.Atoi(portStr)
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
		cpu0 := [3]time.Duration{}
		for i, pid := range []int{p.pid(), up.pid(), os.Getpid()} {
			cpu0[i], _ = cpuTime(pid)
		}
		done := make(chan error, 1)
		go func() {
			var err error
			s.res, err = loadgen.Run(ctx, loadgen.Config{Addr: p.addr, Conns: n, Duration: hold, Body: streamBody(),
				Keys: []string{benchSecret}, Stream: true, Timeout: 30 * time.Second, RampUp: time.Second})
			done <- err
		}()
		// Sample while the streams are open: after the ramp-up and the first token.
		var rssv, perKB, perG []float64
		var gv, cv, uv []float64
		if err := sleep(ctx, 3*time.Second); err != nil {
			return nil, err
		}
		for t := 3 * time.Second; t < hold-time.Second; t += time.Second {
			r, err1 := currentRSS(p.pid())
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			g, err2 := goroutines(sctx, admin)
			cancel()
			c, u, err3 := countEstablished(proxyPort, env.ports.upstream)
			if err1 == nil && err2 == nil && err3 == nil && u > 0 {
				mb := float64(r) / (1 << 20)
				rssv, gv, cv, uv = append(rssv, mb), append(gv, float64(g)), append(cv, float64(c)), append(uv, float64(u))
				perKB = append(perKB, (mb-s.idleRSS)*1024/float64(u))
				perG = append(perG, float64(g-s.idleGoroutines)/float64(u))
			}
			if err := sleep(ctx, time.Second); err != nil {
				return nil, err
			}
		}
		if err := <-done; err != nil {
			return nil, err
		}
		if !p.alive() || !up.alive() {
			return nil, fmt.Errorf("%s or the upstream exited: %s", name, logTail(p.log))
		}
		for i, pid := range []int{p.pid(), up.pid(), os.Getpid()} {
			c, _ := cpuTime(pid)
			s.cpu[i] = (c - cpu0[i]).Seconds() / s.res.Elapsed.Seconds()
		}
		s.rss, s.gorouts, s.clientConns, s.streams = median(rssv), int(median(gv)), int(median(cv)), int(median(uv))
		s.rssPerStreamKB, s.goroutinesPerStream = median(perKB), median(perG)
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
			"RSS, goroutines and open connections are medians of samples taken once a second while the streams ran, "+
			"per open stream = (loaded - idle) / the proxy's established connections to the upstream at the same moment", n, hold, limit, ports)}
	for _, s := range []*streamSample{caddy, gw} {
		res.Figures[s.name+"_errors"] = float64(s.res.Errors)
		res.Figures[s.name+"_rss_per_stream_kb"] = s.rssPerStreamKB
		res.Figures[s.name+"_goroutines_per_stream"] = s.goroutinesPerStream
		res.Figures[s.name+"_open_streams"] = float64(s.streams)
		res.Lines = append(res.Lines, fmt.Sprintf("%-8s %6d streams done, %d errors, stream p50 %.0f ms p99 %.0f ms, ttfb p50 %.0f ms p99 %.0f ms; cores used: proxy %.2f, upstream %.2f, load generator %.2f",
			s.name, s.res.OK, s.res.Errors, ms(s.res.Latency.Quantile(0.5)), ms(s.res.Latency.Quantile(0.99)),
			ms(s.res.TTFB.Quantile(0.5)), ms(s.res.TTFB.Quantile(0.99)), s.cpu[0], s.cpu[1], s.cpu[2]),
			fmt.Sprintf("%-8s %d client connections, %d streams open to the upstream; RSS %.0f MB idle, %.0f MB loaded = %.1f KB per open stream; "+
				"goroutines %d idle, %d loaded = %.2f per open stream",
				s.name, s.clientConns, s.streams, s.idleRSS, s.rss, s.rssPerStreamKB, s.idleGoroutines, s.gorouts, s.goroutinesPerStream))
		for _, e := range s.res.ErrorSamples {
			res.Lines = append(res.Lines, s.name+" error: "+e)
		}
	}
	ratio := res.Figures["gateway_rss_per_stream_kb"] / max(res.Figures["caddy_rss_per_stream_kb"], 1e-9)
	res.Figures["rss_per_stream_ratio"] = ratio
	res.Lines = append(res.Lines, fmt.Sprintf("gateway/caddy: RSS per open stream x%.2f", ratio))
	return res, nil
}
