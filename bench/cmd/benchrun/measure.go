package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyai/gateway/bench/loadgen"
)

// target is one server the load generator drives.
type target struct {
	name string
	addr string
	// proc is the proxy process; nil for the upstream itself.
	proc *server
	// headers are extra request headers (a peer gateway's routing headers).
	headers []string
	// opts are the options of a gateway target (per-key accounting of scenario g).
	opts *gatewayOptions
}

// requestTimeout bounds one request of the load generator.
const requestTimeout = 10 * time.Second

// idleConnsPerHost is the idle connections to the upstream that plain Caddy and the gateway both
// keep (reverse_proxy's keepalive_idle_conns_per_host), above every scenario's concurrency, as
// the README advises for a model server: with Caddy's default of 32 and 50 connections in
// flight, a connection that comes back while 32 are idle is closed and the next request dials
// a new one (one round of scenario a opened 12,437 connections that way, 468 with this).
const idleConnsPerHost = 256

// gatewayConfig renders the gateway's Caddyfile of a scenario (name tells variants apart).
func gatewayConfig(env *runEnv, sc scenario, name string, port, admin int, opts gatewayOptions) (string, error) {
	sum := sha256.Sum256([]byte(benchSecret))
	conf := filepath.Join(env.outDir, name+"-"+sc.ID+".Caddyfile")
	err := render("gateway.Caddyfile", conf, map[string]any{
		"Port": port, "UpstreamPort": env.ports.upstream, "Model": model, "ContextWindow": 131072,
		"KeyHash": hex.EncodeToString(sum[:]), "KeyTPM": opts.KeyTPM, "KeysFile": opts.KeysFile, "Tokenizer": opts.Tokenizer, "Cache": opts.Cache,
		"AdminPort": admin, "RedisURL": opts.RedisURL, "MaxConcurrent": opts.MaxConcurrent, "Queue": opts.Queue, "StorageDir": opts.StorageDir, "Accounting": opts.Accounting,
		"IdleConns": idleConnsPerHost,
	})
	return conf, err
}

// plainConfig renders plain Caddy's Caddyfile of a scenario.
func plainConfig(env *runEnv, sc scenario, admin int) (string, error) {
	conf := filepath.Join(env.outDir, "plain-"+sc.ID+".Caddyfile")
	err := render("plain.Caddyfile", conf, map[string]any{"Port": env.ports.caddy, "UpstreamPort": env.ports.upstream, "AdminPort": admin,
		"IdleConns": idleConnsPerHost})
	return conf, err
}

// startPlain starts plain Caddy in front of the scenario's upstream.
func startPlain(ctx context.Context, env *runEnv, o options, sc scenario, admin int) (*server, error) {
	conf, err := plainConfig(env, sc, admin)
	if err != nil {
		return nil, err
	}
	return startServer(ctx, "caddy", o.plain, conf, addrOf(env.ports.caddy), filepath.Join(env.outDir, "logs", "caddy-"+sc.ID+".log"))
}

// keyTally adds up, per gateway target, the 200s of each key over every run and the time from
// the first request to the end of the last, to check that no key got more than its limit.
type keyTally struct {
	ok    []int64
	first time.Time
	last  time.Time
}

func (k *keyTally) add(start time.Time, res *loadgen.Result) {
	if k.ok == nil {
		k.ok, k.first = make([]int64, len(res.OKByKey)), start
	}
	for i, n := range res.OKByKey {
		k.ok[i] += n
	}
	k.last = start.Add(res.Elapsed)
}

func runScenario(ctx context.Context, env *runEnv, o options, sc scenario) (*scenarioResult, error) {
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
	up, err := startUpstream(ctx, o, env.outDir, sc.ID, sc.Upstream, env.ports.upstream)
	if err != nil {
		return nil, err
	}
	defer up.stop()
	procs := []*server{up}
	targets := []target{{name: "direct", addr: up.addr}}
	if sc.NoDirect {
		targets = nil
	}
	plain, err := startPlain(ctx, env, o, sc, 0)
	if err != nil {
		return nil, err
	}
	defer plain.stop()
	procs = append(procs, plain)
	targets = append(targets, target{name: "caddy", addr: plain.addr, proc: plain})
	gwConf, err := gatewayConfig(env, sc, "gateway", env.ports.gateway, adminPort(o, env.ports, "gateway"), opts)
	if err != nil {
		return nil, err
	}
	gw, err := startServer(ctx, "gateway", o.gateway, gwConf, addrOf(env.ports.gateway), filepath.Join(env.outDir, "logs", "gateway-"+sc.ID+".log"))
	if err != nil {
		return nil, err
	}
	defer gw.stop()
	procs = append(procs, gw)
	targets = append(targets, target{name: "gateway", addr: gw.addr, proc: gw, opts: &opts})
	var redis *server
	if sec := sc.Second; sec != nil {
		redisURL := ""
		if sec.Redis {
			if redis, err = startRedis(ctx, env); err != nil {
				return nil, err
			}
			defer redis.stop()
			procs = append(procs, redis)
			redisURL = "redis://" + redis.addr + "/0"
		}
		opts2, err := sec.Options(env, opts, redisURL)
		if err != nil {
			return nil, err
		}
		conf, err := gatewayConfig(env, sc, sec.Name, env.ports.gateway2, adminPort(o, env.ports, sec.Name), opts2)
		if err != nil {
			return nil, err
		}
		gw2, err := startServer(ctx, sec.Name, o.gateway, conf, addrOf(env.ports.gateway2), filepath.Join(env.outDir, "logs", sec.Name+"-"+sc.ID+".log"))
		if err != nil {
			return nil, err
		}
		defer gw2.stop()
		procs = append(procs, gw2)
		targets = append(targets, target{name: sec.Name, addr: gw2.addr, proc: gw2, opts: &opts2})
	}
	if sc.Peer && o.peer != "" {
		peer, err := startPortkey(ctx, env, strings.TrimPrefix(o.peer, "portkey="))
		if err != nil {
			return nil, err
		}
		defer peer.stop()
		procs = append(procs, peer)
		targets = append(targets, target{name: "portkey", addr: peer.addr, proc: peer, headers: portkeyHeaders(env)})
	}

	body := sc.body()
	countKeys := opts.RPM > 0
	config := func(t target, d time.Duration) loadgen.Config {
		cfg := loadgen.Config{Addr: t.addr, Conns: sc.Conns, Duration: d, Body: body, Keys: keys, Stream: sc.Stream,
			Path: sc.Path, StreamDone: sc.StreamDone,
			Timeout: requestTimeout, Headers: t.headers, CountKeys: countKeys}
		if opts.RequestsPerSecond > 0 {
			cfg.Requests = max(1, int64(opts.RequestsPerSecond*d.Seconds()))
			cfg.Duration = 4 * d
		}
		return cfg
	}
	tallies := make([]keyTally, len(targets))
	fmt.Printf("\n(%s) %s [%s]: warming up", sc.ID, sc.Name, sc.Upstream)
	for i, t := range targets {
		if env.warmup <= 0 {
			break
		}
		start := time.Now()
		res, err := loadgen.Run(ctx, config(t, env.warmup))
		if err != nil {
			return nil, err
		}
		tallies[i].add(start, res)
	}
	rounds := make([][]roundResult, len(targets))
	samples := make([][]string, len(targets))
	nrounds := env.rounds
	if sc.MinRounds > nrounds && !env.quick {
		nrounds = sc.MinRounds
	}
	for r := range nrounds {
		fmt.Printf(", round %d/%d", r+1, nrounds)
		// The order turns by one target each round: none always runs first or last (a target
		// run last measured about 3% slower than the same configuration run before it).
		for k := range targets {
			i := (k + r) % len(targets)
			t := targets[i]
			var profiled chan error
			if r == 0 && t.name == o.profileTarget && o.profile {
				profiled = make(chan error, 1)
				go func() {
					profiled <- saveProfile(ctx, adminPort(o, env.ports, t.name), env.duration, filepath.Join(env.outDir, t.name+"-"+sc.ID+".pprof"))
				}()
			}
			start := time.Now()
			rr, res, err := measure(ctx, config(t, env.duration), t, up)
			if err != nil {
				return nil, err
			}
			tallies[i].add(start, res)
			if profiled != nil {
				if err := <-profiled; err != nil {
					return nil, err
				}
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			for _, p := range procs {
				if !p.alive() {
					return nil, fmt.Errorf("%s exited: %s", p.name, logTail(p.log))
				}
			}
			rounds[i] = append(rounds[i], rr)
			for _, s := range res.ErrorSamples {
				if len(samples[i]) < 5 && !slices.Contains(samples[i], s) {
					samples[i] = append(samples[i], s)
				}
			}
		}
	}
	// Side by side: two targets loaded at once, half the connections each, so that both meet
	// the same machine at the same moment; the median of second/first req/s over the runs.
	sideBySide := func(firstName, secondName string) ([]float64, error) {
		first, second := slices.IndexFunc(targets, func(t target) bool { return t.name == firstName }),
			slices.IndexFunc(targets, func(t target) bool { return t.name == secondName })
		if first < 0 || second < 0 {
			return nil, nil
		}
		var ratios []float64
		for r := range nrounds {
			fmt.Printf(", %s and %s side by side %d/%d", firstName, secondName, r+1, nrounds)
			half := func(t target) loadgen.Config {
				c := config(t, env.duration)
				c.Conns = max(1, sc.Conns/2)
				return c
			}
			var ra, rb roundResult
			var errA, errB error
			var wg sync.WaitGroup
			wg.Add(2)
			go func() { defer wg.Done(); ra, _, errA = measure(ctx, half(targets[first]), targets[first], up) }()
			go func() { defer wg.Done(); rb, _, errB = measure(ctx, half(targets[second]), targets[second], up) }()
			wg.Wait()
			if err := errors.Join(errA, errB); err != nil {
				return nil, err
			}
			if ra.RPS > 0 {
				ratios = append(ratios, rb.RPS/ra.RPS)
			}
		}
		return ratios, nil
	}
	var side, sideCaddy []float64
	if sec := sc.Second; sec != nil && sec.SideBySide {
		if side, err = sideBySide("gateway", sec.Name); err != nil {
			return nil, err
		}
	}
	if sc.SideBySide {
		if sideCaddy, err = sideBySide("caddy", "gateway"); err != nil {
			return nil, err
		}
	}
	fmt.Println()
	res := &scenarioResult{ID: sc.ID, Name: sc.Name, Upstream: sc.Upstream.String(), Conns: sc.Conns, Stream: sc.Stream, Note: opts.Note}
	for i, t := range targets {
		tr := summarise(t.name, rounds[i], samples[i])
		if t.proc != nil {
			if rss, err := peakRSS(t.proc.pid()); err == nil {
				tr.PeakRSSMB = float64(rss) / (1 << 20)
			}
		}
		if countKeys && t.opts != nil {
			tr.OverLimit = overLimit(tallies[i], t.opts.RPM)
			tr.OverLimitChecked = true
		}
		res.Targets = append(res.Targets, tr)
	}
	if redis != nil {
		if c, err := cpuTime(redis.pid()); err == nil {
			res.Note = strings.TrimSpace(res.Note + fmt.Sprintf("; redis-server used %.1f s of CPU in all.", c.Seconds()))
		}
	}
	res.GatewayVsCaddy = compare(res.target("gateway"), res.target("caddy"))
	if res.GatewayVsCaddy != nil && len(sideCaddy) > 0 {
		res.GatewayVsCaddy.SideBySideRPSRatio = median(sideCaddy)
	}
	if sec := sc.Second; sec != nil {
		q := ratioOf(sec.Name+"/gateway", res.target(sec.Name), res.target("gateway"))
		// The two gateways' req/s in the same round, a few seconds apart: the median of these
		// ratios is steadier than the ratio of the medians when the machine's speed drifts.
		var paired []float64
		first, second := slices.IndexFunc(targets, func(t target) bool { return t.name == "gateway" }),
			slices.IndexFunc(targets, func(t target) bool { return t.name == sec.Name })
		for r := range rounds[first] {
			if r < len(rounds[second]) && rounds[first][r].RPS > 0 {
				paired = append(paired, rounds[second][r].RPS/rounds[first][r].RPS)
			}
		}
		if len(paired) > 0 {
			q.PairedRPSRatio = median(paired)
		}
		if len(side) > 0 {
			q.SideBySideRPSRatio = median(side)
		}
		res.Ratios = append(res.Ratios, q)
	}
	if p := res.target("portkey"); p != nil {
		res.Ratios = append(res.Ratios, ratioOf("gateway/portkey", res.target("gateway"), p))
	}
	return res, nil
}

// overLimit is how many 200s the keys got beyond what their rpm allowed over the tally's span:
// a bucket of rpm that starts full and refills rpm per minute admits at most
// floor(rpm * (1 + span/1min)) requests (one more is allowed for the refill between the clock
// reads of the gateway and of the benchmark).
func overLimit(k keyTally, rpm int64) int64 {
	allowed := int64(math.Floor(float64(rpm)*(1+k.last.Sub(k.first).Minutes()))) + 1
	var over int64
	for _, n := range k.ok {
		over += max(0, n-allowed)
	}
	return over
}

// compare is a proxy target against another (nil when either is missing).
func compare(g, c *targetResult) *comparison {
	if g == nil || c == nil || c.RPS <= 0 {
		return nil
	}
	return &comparison{RPSRatio: g.RPS / c.RPS, P50DiffMs: g.P50Ms - c.P50Ms, P99DiffMs: g.P99Ms - c.P99Ms,
		CPUDiffUs: g.CPUUsPerReq - c.CPUUsPerReq, TTFBP50DiffMs: g.TTFBP50Ms - c.TTFBP50Ms}
}

func ratioOf(name string, a, b *targetResult) namedRatio {
	r := namedRatio{Name: name}
	if a != nil && b != nil && b.RPS > 0 {
		r.RPSRatio = a.RPS / b.RPS
		r.P50Ratio = a.P50Ms / max(b.P50Ms, 1e-9)
		r.CPURatio = a.CPUUsPerReq / max(b.CPUUsPerReq, 1e-9)
	}
	return r
}

// measure runs one round against one target and reads the CPU time of the proxy and of the
// simulator around it.
func measure(ctx context.Context, cfg loadgen.Config, t target, sim *server) (roundResult, *loadgen.Result, error) {
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
	return rr, res, nil
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

// adminPort is the admin port of the gateway named name when it is the one profiled, else 0
// (admin off).
func adminPort(o options, ports portPlan, name string) int {
	if !o.profile || name != o.profileTarget {
		return 0
	}
	return ports.admin
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
