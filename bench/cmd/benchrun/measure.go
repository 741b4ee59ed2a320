package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/caddyai/gateway/bench/loadgen"
)

// target is one server the load generator drives.
type target struct {
	name string
	addr string
	// proc is the proxy process; nil for the simulator itself.
	proc *server
}

// requestTimeout bounds one request of the load generator.
const requestTimeout = 10 * time.Second

func runScenario(ctx context.Context, env *runEnv, o options, sc scenario, sim *server, ports [3]int) (*scenarioResult, error) {
	var opts gatewayOptions
	var err error
	if sc.gateway != nil {
		if opts, err = sc.gateway(env); err != nil {
			return nil, err
		}
	}
	keys := []string{benchSecret}
	if sc.keys != nil {
		if keys, err = sc.keys(env); err != nil {
			return nil, err
		}
	}
	plainConf := filepath.Join(env.outDir, "plain.Caddyfile")
	if err := render("plain.Caddyfile", plainConf, map[string]any{"Port": ports[1], "UpstreamPort": ports[0]}); err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(benchSecret))
	gwConf := filepath.Join(env.outDir, "gateway-"+sc.ID+".Caddyfile")
	if err := render("gateway.Caddyfile", gwConf, map[string]any{
		"Port": ports[2], "UpstreamPort": ports[0], "Model": model, "ContextWindow": 131072,
		"KeyHash": hex.EncodeToString(sum[:]), "KeyTPM": opts.KeyTPM, "KeysFile": opts.KeysFile, "Tokenizer": opts.Tokenizer, "Cache": opts.Cache,
		"AdminPort": adminPort(o, ports), "DataDir": opts.DataDir,
	}); err != nil {
		return nil, err
	}
	plain, err := startServer(ctx, "caddy", o.plain, plainConf, addrOf(ports[1]), filepath.Join(env.outDir, "logs", "caddy-"+sc.ID+".log"))
	if err != nil {
		return nil, err
	}
	defer plain.stop()
	gw, err := startServer(ctx, "gateway", o.gateway, gwConf, addrOf(ports[2]), filepath.Join(env.outDir, "logs", "gateway-"+sc.ID+".log"))
	if err != nil {
		return nil, err
	}
	defer gw.stop()

	targets := []target{{"direct", sim.addr, nil}, {"caddy", plain.addr, plain}, {"gateway", gw.addr, gw}}
	body := sc.body()
	config := func(addr string, d time.Duration) loadgen.Config {
		cfg := loadgen.Config{Addr: addr, Conns: sc.Conns, Duration: d, Body: body, Keys: keys, Stream: sc.Stream, Timeout: requestTimeout,
			Path: sc.Path, StreamDone: sc.StreamDone}
		if opts.RequestsPerSecond > 0 {
			cfg.Requests = max(1, int64(opts.RequestsPerSecond*d.Seconds()))
			cfg.Duration = 4 * d
		}
		return cfg
	}
	fmt.Printf("\n(%s) %s: warming up", sc.ID, sc.Name)
	for _, t := range targets {
		if env.warmup <= 0 {
			break
		}
		if _, err := loadgen.Run(ctx, config(t.addr, env.warmup)); err != nil {
			return nil, err
		}
	}
	rounds := make([][]roundResult, len(targets))
	samples := make([][]string, len(targets))
	for r := range env.rounds {
		fmt.Printf(", round %d/%d", r+1, env.rounds)
		for i, t := range targets {
			var profiled chan error
			if r == 0 && t.name == "gateway" && o.profile {
				profiled = make(chan error, 1)
				go func() {
					profiled <- saveProfile(ctx, adminPort(o, ports), env.duration, filepath.Join(env.outDir, "gateway-"+sc.ID+".pprof"))
				}()
			}
			rr, errs, err := measure(ctx, config(t.addr, env.duration), t, sim)
			if err != nil {
				return nil, err
			}
			if profiled != nil {
				if err := <-profiled; err != nil {
					return nil, err
				}
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			for _, p := range []*server{sim, plain, gw} {
				if !p.alive() {
					return nil, fmt.Errorf("%s exited: %s", p.name, logTail(p.log))
				}
			}
			rounds[i] = append(rounds[i], rr)
			for _, s := range errs {
				if len(samples[i]) < 5 && !slices.Contains(samples[i], s) {
					samples[i] = append(samples[i], s)
				}
			}
		}
	}
	fmt.Println()
	res := &scenarioResult{ID: sc.ID, Name: sc.Name, Conns: sc.Conns, Stream: sc.Stream, Note: opts.Note}
	for i, t := range targets {
		tr := summarise(t.name, rounds[i], samples[i])
		if t.proc != nil {
			if rss, err := peakRSS(t.proc.pid()); err == nil {
				tr.PeakRSSMB = float64(rss) / (1 << 20)
			}
		}
		res.Targets = append(res.Targets, tr)
	}
	if c, g := res.target("caddy"), res.target("gateway"); c != nil && g != nil && c.RPS > 0 {
		res.GatewayVsCaddy = &comparison{
			RPSRatio:  g.RPS / c.RPS,
			P50DiffMs: g.P50Ms - c.P50Ms,
			P99DiffMs: g.P99Ms - c.P99Ms,
			CPUDiffUs: g.CPUUsPerReq - c.CPUUsPerReq,
		}
	}
	return res, nil
}

// measure runs one round against one target and reads the CPU time of the proxy and of the
// simulator around it.
func measure(ctx context.Context, cfg loadgen.Config, t target, sim *server) (roundResult, []string, error) {
	var proxy0, proxy1 time.Duration
	var err error
	if t.proc != nil {
		if proxy0, err = cpuTime(t.proc.pid()); err != nil {
			return roundResult{}, nil, err
		}
	}
	sim0, err := cpuTime(sim.pid())
	if err != nil {
		return roundResult{}, nil, err
	}
	self0, err := cpuTime(os.Getpid())
	if err != nil {
		return roundResult{}, nil, err
	}
	res, err := loadgen.Run(ctx, cfg)
	if err != nil {
		return roundResult{}, nil, err
	}
	self1, err := cpuTime(os.Getpid())
	if err != nil {
		return roundResult{}, nil, err
	}
	sim1, err := cpuTime(sim.pid())
	if err != nil {
		return roundResult{}, nil, err
	}
	if t.proc != nil {
		if proxy1, err = cpuTime(t.proc.pid()); err != nil {
			return roundResult{}, nil, err
		}
	}
	done := res.OK + res.Limited
	rr := roundResult{
		RPS:      float64(done) / res.Elapsed.Seconds(),
		OK:       res.OK,
		Limited:  res.Limited,
		Errors:   res.Errors,
		P50Ms:    ms(res.Latency.Quantile(0.50)),
		P99Ms:    ms(res.Latency.Quantile(0.99)),
		ElapsedS: res.Elapsed.Seconds(),
	}
	if cfg.Stream {
		rr.TTFBP50Ms, rr.TTFBP99Ms = ms(res.TTFB.Quantile(0.50)), ms(res.TTFB.Quantile(0.99))
	}
	if done > 0 {
		rr.UpstreamCPUUsPerReq = float64((sim1 - sim0).Microseconds()) / float64(done)
		rr.ClientCPUUsPerReq = float64((self1 - self0).Microseconds()) / float64(done)
		if t.proc != nil {
			rr.CPUUsPerReq = float64((proxy1 - proxy0).Microseconds()) / float64(done)
		}
	}
	return rr, res.ErrorSamples, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// summarise takes the median of every per-round figure and sums the counts.
func summarise(name string, rounds []roundResult, samples []string) targetResult {
	tr := targetResult{Target: name, Rounds: rounds, ErrorSamples: samples}
	pick := func(f func(roundResult) float64) float64 {
		v := make([]float64, len(rounds))
		for i, r := range rounds {
			v[i] = f(r)
		}
		return median(v)
	}
	tr.RPS = pick(func(r roundResult) float64 { return r.RPS })
	tr.P50Ms = pick(func(r roundResult) float64 { return r.P50Ms })
	tr.P99Ms = pick(func(r roundResult) float64 { return r.P99Ms })
	tr.TTFBP50Ms = pick(func(r roundResult) float64 { return r.TTFBP50Ms })
	tr.TTFBP99Ms = pick(func(r roundResult) float64 { return r.TTFBP99Ms })
	tr.CPUUsPerReq = pick(func(r roundResult) float64 { return r.CPUUsPerReq })
	tr.UpstreamCPUUsPerReq = pick(func(r roundResult) float64 { return r.UpstreamCPUUsPerReq })
	tr.ClientCPUUsPerReq = pick(func(r roundResult) float64 { return r.ClientCPUUsPerReq })
	for _, r := range rounds {
		tr.OK += r.OK
		tr.Limited += r.Limited
		tr.Errors += r.Errors
	}
	return tr
}

// median returns the median of v (the mean of the middle two for an even count), 0 if empty.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// adminPort is the gateway's admin port when profiling, else 0 (admin off).
func adminPort(o options, ports [3]int) int {
	if !o.profile {
		return 0
	}
	return ports[2] + 1
}

// saveProfile fetches a CPU profile of about d from the gateway's admin API into path.
func saveProfile(ctx context.Context, port int, d time.Duration, path string) error {
	secs := max(1, int(d.Round(time.Second)/time.Second))
	url := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", port, secs)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("profiling gateway: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("profiling gateway: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profiling gateway: status %d", resp.StatusCode)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("profiling gateway: %w", err)
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return fmt.Errorf("profiling gateway: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("profiling gateway: %w", err)
	}
	return nil
}
