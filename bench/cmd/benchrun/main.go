// Command benchrun measures the gateway against plain Caddy and against the bare model server,
// on loopback, in one run (`make bench`).
//
// For each scenario it starts a fresh upstream (the fixed-reply server of bench/fixedreply,
// which costs a few µs of CPU per request, or the simulator where the scenario needs latency or
// real answers), a fresh plain Caddy (reverse_proxy to it) and a fresh gateway (ai_gateway with
// reverse_proxy { dynamic ai_gateway }) in front of the same upstream, and drives the targets
// with the closed-loop load generator, interleaved round by round (direct, caddy, gateway,
// direct, caddy, gateway ...) so drift on a shared machine shows in every target alike. It
// reports the median over rounds of requests/s, p50 and p99 latency, time to first byte for
// streams, the CPU time each server process spent per request (from /proc/<pid>/stat) and each
// proxy's peak RSS (VmHWM), as a table on stdout and as JSON in <out>/results.json, then the
// issue's targets, met or not. Scenarios g (Redis limits), h (a batch beside interactive
// traffic) and i (thousands of slow streams) have their own shapes (scenarios.go).
//
// BENCH_QUICK=1 runs one short round per target (a smoke run of about a minute).
//
// Usage:
//
//	benchrun -gateway ./caddy -plain bench/out/caddy-plain -out bench/out [-rounds 3] [-duration 5s]
//	    [-warmup 1s] [-scenarios a,b,c,d,f] [-port 18180] [-profile [-profile-target gateway-ledger]] [-peer portkey=<start-server.js>]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// runEnv is what scenarios may read while they set up.
type runEnv struct {
	outDir   string
	rounds   int
	duration time.Duration
	warmup   time.Duration
	// gatewayRPS is the gateway's median req/s of each scenario already run.
	gatewayRPS map[string]float64
	quick      bool
	ports      portPlan
}

// portPlan is the loopback ports of one run, from -port up.
type portPlan struct {
	upstream, caddy, gateway, admin, gateway2, redis, peer, caddyAdmin int
}

func planPorts(base int) portPlan {
	return portPlan{upstream: base, caddy: base + 1, gateway: base + 2, admin: base + 3,
		gateway2: base + 4, redis: base + 5, peer: base + 6, caddyAdmin: base + 7}
}

type options struct {
	gateway, plain, out string
	rounds              int
	duration, warmup    time.Duration
	scenarios           string
	port                int
	quick               bool
	profile             bool
	profileTarget       string
	peer                string
}

func main() {
	var o options
	flag.StringVar(&o.gateway, "gateway", "./caddy", "the gateway's Caddy binary (make build)")
	flag.StringVar(&o.plain, "plain", "bench/out/caddy-plain", "plain Caddy with standard modules only")
	flag.StringVar(&o.out, "out", "bench/out", "directory for configs, logs and results.json")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds per scenario (each target once per round)")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "measured time per target per round")
	flag.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured load per target before the rounds")
	flag.StringVar(&o.scenarios, "scenarios", "", "comma-separated scenario ids (default: all)")
	flag.StringVar(&o.peer, "peer", "", "also drive a peer gateway in scenarios a, b and c: portkey=<path of @portkey-ai/gateway's build/start-server.js> (make bench-peers)")
	serve := flag.String("serve-fixed", "", "serve the fixed-reply upstream on this address (used by the benchmark itself)")
	flag.IntVar(&o.port, "port", 18180, "first of eight loopback ports (upstream, caddy, gateway, gateway admin, second gateway, redis, peer, caddy admin)")
	flag.BoolVar(&o.profile, "profile", false, "enable the gateway's admin API and save a CPU profile of its first round of each scenario in <out>/<target>-<id>.pprof (that round runs profiled)")
	flag.StringVar(&o.profileTarget, "profile-target", "gateway", "the target -profile profiles: gateway, or a scenario's second gateway (gateway-redis, gateway-ledger)")
	flag.Parse()
	if *serve != "" {
		if err := serveFixed(*serve); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	if v := os.Getenv("BENCH_QUICK"); v != "" && v != "0" {
		o.quick = true
		o.rounds, o.duration, o.warmup = 1, 1500*time.Millisecond, 300*time.Millisecond
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	if o.rounds < 1 || o.duration <= 0 {
		return errors.New("checking options: -rounds must be at least 1 and -duration positive")
	}
	for _, bin := range []*string{&o.gateway, &o.plain} {
		if _, err := os.Stat(*bin); err != nil {
			return fmt.Errorf("checking binaries: %w (run make build and make bench/out/caddy-plain)", err)
		}
		abs, err := filepath.Abs(*bin)
		if err != nil {
			return fmt.Errorf("checking binaries: %w", err)
		}
		*bin = abs
	}
	out, err := filepath.Abs(o.out)
	if err != nil {
		return fmt.Errorf("creating output directory: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(out, "logs"), 0o755); err != nil {
		return fmt.Errorf("creating output directory: %w", err)
	}
	selected, err := selectScenarios(o.scenarios)
	if err != nil {
		return err
	}
	if o.peer != "" && !strings.HasPrefix(o.peer, "portkey=") {
		return fmt.Errorf("checking options: -peer %q: want portkey=<path of start-server.js>", o.peer)
	}
	env := &runEnv{outDir: out, rounds: o.rounds, duration: o.duration, warmup: o.warmup, gatewayRPS: map[string]float64{},
		quick: o.quick, ports: planPorts(o.port)}
	rep := &report{
		Machine: describeMachine(o),
		Config: runConfig{Quick: o.quick, Rounds: o.rounds, DurationSec: o.duration.Seconds(),
			WarmupSec: o.warmup.Seconds(), Order: "every target in every round, the order turned by one each round"},
	}
	printHeader(os.Stdout, rep)

	for _, sc := range selected {
		if sc.Second != nil && sc.Second.Redis {
			if _, err := exec.LookPath("redis-server"); err != nil {
				sc.Pending = "redis-server is not installed"
			}
		}
		if sc.Pending != "" {
			rep.Pending = append(rep.Pending, pendingScenario{ID: sc.ID, Name: sc.Name, Reason: sc.Pending})
			fmt.Printf("\n(%s) %s: pending, %s\n", sc.ID, sc.Name, sc.Pending)
			continue
		}
		var res *scenarioResult
		if sc.run != nil {
			fmt.Printf("\n(%s) %s [%s]: ", sc.ID, sc.Name, sc.Upstream)
			res, err = sc.run(ctx, env, o, sc)
		} else {
			res, err = runScenario(ctx, env, o, sc)
		}
		if err != nil {
			return fmt.Errorf("running scenario %s: %w", sc.ID, err)
		}
		rep.Scenarios = append(rep.Scenarios, *res)
		printScenario(os.Stdout, res)
		if g := res.target("gateway"); g != nil {
			env.gatewayRPS[sc.ID] = g.RPS
		}
	}
	rep.Targets = evaluateTargets(rep)
	printTargets(os.Stdout, rep.Targets)
	path := filepath.Join(out, "results.json")
	if err := rep.write(path); err != nil {
		return err
	}
	fmt.Printf("\nresults: %s\n", path)
	return nil
}

func addrOf(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }

func selectScenarios(list string) ([]scenario, error) {
	all := scenarios()
	if strings.TrimSpace(list) == "" {
		return all, nil
	}
	var out []scenario
	for _, id := range strings.Split(list, ",") {
		id = strings.TrimSpace(id)
		i := slices.IndexFunc(all, func(s scenario) bool { return s.ID == id })
		if i < 0 {
			return nil, fmt.Errorf("selecting scenarios: unknown scenario %q", id)
		}
		out = append(out, all[i])
	}
	return out, nil
}
