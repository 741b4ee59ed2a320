// Command benchrun measures the gateway against plain Caddy and against the bare simulated model
// server, on loopback, in one run (`make bench`).
//
// It starts the simulator (ai_simulator, zero latency) on its own port, then for each scenario a
// fresh plain Caddy (reverse_proxy to the simulator) and a fresh gateway (ai_gateway with
// reverse_proxy { dynamic ai_gateway }) in front of the same simulator, and drives the three
// targets with the closed-loop load generator, interleaved round by round (direct, caddy,
// gateway, direct, caddy, gateway ...) so drift on a shared machine shows in every target
// alike. It reports the median over rounds of requests/s, p50 and p99 latency, time to first
// byte for streams, the CPU time each server process spent per request (from /proc/<pid>/stat)
// and each proxy's peak RSS (VmHWM), as a table on stdout and as JSON in <out>/results.json.
//
// BENCH_QUICK=1 runs one short round per target (a smoke run of about a minute).
//
// Usage:
//
//	benchrun -gateway ./caddy -plain bench/out/caddy-plain -out bench/out [-rounds 3] [-duration 5s]
//	    [-warmup 1s] [-scenarios a,b,c,d,f] [-port 18180] [-profile]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
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
}

type options struct {
	gateway, plain, out string
	rounds              int
	duration, warmup    time.Duration
	scenarios           string
	port                int
	quick               bool
	profile             bool
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
	flag.IntVar(&o.port, "port", 18180, "first of four loopback ports (simulator, caddy, gateway, gateway admin with -profile)")
	flag.BoolVar(&o.profile, "profile", false, "enable the gateway's admin API and save a CPU profile of its first round of each scenario in <out>/gateway-<id>.pprof (that round runs profiled)")
	flag.Parse()
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
	env := &runEnv{outDir: out, rounds: o.rounds, duration: o.duration, warmup: o.warmup, gatewayRPS: map[string]float64{}}
	rep := &report{
		Machine: describeMachine(o),
		Config: runConfig{Quick: o.quick, Rounds: o.rounds, DurationSec: o.duration.Seconds(),
			WarmupSec: o.warmup.Seconds(), Order: "direct, caddy, gateway in every round"},
	}
	printHeader(os.Stdout, rep)

	ports := [3]int{o.port, o.port + 1, o.port + 2}
	simConf := filepath.Join(out, "simulator.Caddyfile")
	if err := render("simulator.Caddyfile", simConf, map[string]any{"Port": ports[0], "Model": model, "ResponseTokens": 20}); err != nil {
		return err
	}
	sim, err := startServer(ctx, "simulator", o.gateway, simConf, addrOf(ports[0]), filepath.Join(out, "logs", "simulator.log"))
	if err != nil {
		return err
	}
	defer sim.stop()

	for _, sc := range selected {
		if sc.Pending != "" {
			rep.Pending = append(rep.Pending, pendingScenario{ID: sc.ID, Name: sc.Name, Reason: sc.Pending})
			fmt.Printf("\n(%s) %s: pending, %s\n", sc.ID, sc.Name, sc.Pending)
			continue
		}
		res, err := runScenario(ctx, env, o, sc, sim, ports)
		if err != nil {
			return fmt.Errorf("running scenario %s: %w", sc.ID, err)
		}
		rep.Scenarios = append(rep.Scenarios, *res)
		printScenario(os.Stdout, res)
		if g := res.target("gateway"); g != nil {
			env.gatewayRPS[sc.ID] = g.RPS
		}
	}
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
