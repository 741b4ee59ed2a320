package main

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"text/tabwriter"
	"text/template"
	"time"
)

//go:embed templates/*.Caddyfile
var templateFS embed.FS

var templates = template.Must(template.New("").Option("missingkey=error").ParseFS(templateFS, "templates/*.Caddyfile"))

// render writes the named template, filled with data, to path.
func render(name, path string, data map[string]any) error {
	var b bytes.Buffer
	if err := templates.ExecuteTemplate(&b, name, data); err != nil {
		return fmt.Errorf("rendering %s: %w", name, err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// report is the whole run, as written to results.json.
type report struct {
	Machine   machine           `json:"machine"`
	Config    runConfig         `json:"config"`
	Scenarios []scenarioResult  `json:"scenarios"`
	Pending   []pendingScenario `json:"pending,omitempty"`
	// Targets are the goals of the benchmark, met or not, from the scenarios run.
	Targets []targetRow `json:"targets"`
}

type machine struct {
	NProc         int    `json:"nproc"`
	CPUModel      string `json:"cpu_model"`
	GoVersion     string `json:"go_version"`
	Kernel        string `json:"kernel,omitempty"`
	LoadAvg       string `json:"loadavg_at_start,omitempty"`
	GatewayCaddy  string `json:"gateway_caddy_version,omitempty"`
	PlainCaddy    string `json:"plain_caddy_version,omitempty"`
	StartedAt     string `json:"started_at"`
	ClockTicksSec int    `json:"clock_ticks_per_sec"`
}

type runConfig struct {
	Quick       bool    `json:"quick"`
	Rounds      int     `json:"rounds"`
	DurationSec float64 `json:"duration_sec"`
	WarmupSec   float64 `json:"warmup_sec"`
	Order       string  `json:"order"`
}

type pendingScenario struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

type scenarioResult struct {
	ID             string         `json:"id"`
	Name           string         `json:"name"`
	Upstream       string         `json:"upstream"`
	Conns          int            `json:"conns"`
	Stream         bool           `json:"stream"`
	Note           string         `json:"note,omitempty"`
	Targets        []targetResult `json:"targets"`
	GatewayVsCaddy *comparison    `json:"gateway_vs_caddy,omitempty"`
	// Ratios compare other pairs of targets (gateway-redis/gateway, gateway/portkey).
	Ratios []namedRatio `json:"ratios,omitempty"`
	// Figures are the named results of the scenarios with their own shape (h, i).
	Figures map[string]float64 `json:"figures,omitempty"`
	// Lines are those scenarios' printed results.
	Lines []string `json:"lines,omitempty"`
}

// namedRatio is one target against another: a's req/s, p50 and CPU per request over b's.
type namedRatio struct {
	Name     string  `json:"name"`
	RPSRatio float64 `json:"rps_ratio"`
	P50Ratio float64 `json:"p50_ratio"`
	CPURatio float64 `json:"cpu_ratio"`
	// PairedRPSRatio is the median over rounds of a's req/s over b's in the same round.
	PairedRPSRatio float64 `json:"paired_rps_ratio,omitempty"`
	// SideBySideRPSRatio is the median over side-by-side runs (both loaded at once, half the
	// connections each) of a's req/s over b's.
	SideBySideRPSRatio float64 `json:"side_by_side_rps_ratio,omitempty"`
}

func (s *scenarioResult) target(name string) *targetResult {
	for i := range s.Targets {
		if s.Targets[i].Target == name {
			return &s.Targets[i]
		}
	}
	return nil
}

// targetResult holds medians over rounds (rates, latencies, CPU) and sums (counts).
type targetResult struct {
	Target string `json:"target"`
	// RPS counts answered requests per second: 200s plus expected 429s.
	RPS       float64 `json:"rps"`
	P50Ms     float64 `json:"p50_ms"`
	P99Ms     float64 `json:"p99_ms"`
	TTFBP50Ms float64 `json:"ttfb_p50_ms,omitempty"`
	TTFBP99Ms float64 `json:"ttfb_p99_ms,omitempty"`
	// CPUUsPerReq is the proxy process's CPU time per answered request (0 for direct).
	CPUUsPerReq float64 `json:"cpu_us_per_req,omitempty"`
	// UpstreamCPUUsPerReq is the simulator's CPU time per answered request.
	UpstreamCPUUsPerReq float64 `json:"upstream_cpu_us_per_req"`
	// ClientCPUUsPerReq is the load generator's own CPU time per answered request.
	ClientCPUUsPerReq float64  `json:"client_cpu_us_per_req"`
	PeakRSSMB         float64  `json:"peak_rss_mb,omitempty"`
	OK                int64    `json:"ok"`
	Limited           int64    `json:"limited"`
	Errors            int64    `json:"errors"`
	ErrorSamples      []string `json:"error_samples,omitempty"`
	// OverLimit counts 200s beyond what the keys' rpm allowed (scenarios with rpm keys).
	OverLimit        int64         `json:"over_limit,omitempty"`
	OverLimitChecked bool          `json:"over_limit_checked,omitempty"`
	Rounds           []roundResult `json:"rounds"`
}

type roundResult struct {
	RPS                 float64 `json:"rps"`
	OK                  int64   `json:"ok"`
	Limited             int64   `json:"limited"`
	Errors              int64   `json:"errors"`
	P50Ms               float64 `json:"p50_ms"`
	P99Ms               float64 `json:"p99_ms"`
	TTFBP50Ms           float64 `json:"ttfb_p50_ms,omitempty"`
	TTFBP99Ms           float64 `json:"ttfb_p99_ms,omitempty"`
	CPUUsPerReq         float64 `json:"cpu_us_per_req,omitempty"`
	UpstreamCPUUsPerReq float64 `json:"upstream_cpu_us_per_req"`
	ClientCPUUsPerReq   float64 `json:"client_cpu_us_per_req"`
	ElapsedS            float64 `json:"elapsed_s"`
}

// comparison is the gateway against plain Caddy in one scenario.
type comparison struct {
	RPSRatio  float64 `json:"rps_ratio"`
	P50DiffMs float64 `json:"p50_diff_ms"`
	P99DiffMs float64 `json:"p99_diff_ms"`
	CPUDiffUs float64 `json:"cpu_diff_us_per_req"`
	// TTFBP50DiffMs is the difference of the median time to first byte (streams).
	TTFBP50DiffMs float64 `json:"ttfb_p50_diff_ms,omitempty"`
	// SideBySideRPSRatio is the median gateway/caddy req/s over runs with both loaded at once
	// (scenarios with SideBySide).
	SideBySideRPSRatio float64 `json:"side_by_side_rps_ratio,omitempty"`
}

func (r *report) write(path string) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding results: %w", err)
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing results: %w", err)
	}
	return nil
}

func describeMachine(o options) machine {
	m := machine{
		NProc:         runtime.NumCPU(),
		GoVersion:     runtime.Version(),
		StartedAt:     time.Now().UTC().Format(time.RFC3339),
		ClockTicksSec: int(clockTicks),
	}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(data))
	}
	if data, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.LoadAvg = strings.Join(strings.Fields(string(data))[:3], " ")
	}
	version := func(bin string) string {
		out, err := exec.Command(bin, "version").Output()
		if err != nil {
			return ""
		}
		return strings.Fields(string(out) + " ?")[0]
	}
	m.GatewayCaddy, m.PlainCaddy = version(o.gateway), version(o.plain)
	return m
}

func printHeader(w io.Writer, r *report) {
	m := r.Machine
	fmt.Fprintf(w, "machine: %d CPUs, %s, %s, kernel %s, load %s\n", m.NProc, m.CPUModel, m.GoVersion, m.Kernel, m.LoadAvg)
	fmt.Fprintf(w, "caddy: gateway %s, plain %s\n", m.GatewayCaddy, m.PlainCaddy)
	mode := "full"
	if r.Config.Quick {
		mode = "quick (BENCH_QUICK=1)"
	}
	fmt.Fprintf(w, "run: %s, %d round(s) x %gs per target after %gs warm-up, %s; figures are medians over rounds\n",
		mode, r.Config.Rounds, r.Config.DurationSec, r.Config.WarmupSec, r.Config.Order)
}

func printScenario(w io.Writer, s *scenarioResult) {
	if len(s.Targets) == 0 {
		for _, l := range s.Lines {
			fmt.Fprintln(w, l)
		}
		if s.Note != "" {
			fmt.Fprintf(w, "note: %s\n", s.Note)
		}
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\treq/s\tp50 ms\tp99 ms\tttfb p50\tttfb p99\tproxy cpu µs/req\tupstream cpu µs/req\tpeak RSS MB\t429\terrors\t")
	for _, t := range s.Targets {
		ttfb50, ttfb99, cpu, rss := "-", "-", "-", "-"
		if s.Stream {
			ttfb50, ttfb99 = fmt.Sprintf("%.3f", t.TTFBP50Ms), fmt.Sprintf("%.3f", t.TTFBP99Ms)
		}
		if t.Target != "direct" {
			cpu, rss = fmt.Sprintf("%.1f", t.CPUUsPerReq), fmt.Sprintf("%.1f", t.PeakRSSMB)
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.3f\t%.3f\t%s\t%s\t%s\t%.1f\t%s\t%d\t%d\t\n",
			t.Target, t.RPS, t.P50Ms, t.P99Ms, ttfb50, ttfb99, cpu, t.UpstreamCPUUsPerReq, rss, t.Limited, t.Errors)
	}
	_ = tw.Flush()
	if c := s.GatewayVsCaddy; c != nil {
		fmt.Fprintf(w, "gateway/caddy: req/s x%.2f, p50 %+.3f ms, p99 %+.3f ms, cpu %+.1f µs/req", c.RPSRatio, c.P50DiffMs, c.P99DiffMs, c.CPUDiffUs)
		if s.Stream {
			fmt.Fprintf(w, ", ttfb p50 %+.3f ms", c.TTFBP50DiffMs)
		}
		if c.SideBySideRPSRatio > 0 {
			fmt.Fprintf(w, "; side by side: req/s median x%.3f", c.SideBySideRPSRatio)
		}
		if g := s.target("gateway"); g != nil && g.Limited > 0 {
			fmt.Fprintf(w, " (the gateway's req/s include %.0f%% cheap 429s; p50/p99 are over 200s only)", 100*float64(g.Limited)/float64(g.Limited+g.OK))
		}
		fmt.Fprintln(w)
	}
	for _, r := range s.Ratios {
		fmt.Fprintf(w, "%s: req/s x%.2f, p50 x%.2f, cpu/req x%.2f", r.Name, r.RPSRatio, r.P50Ratio, r.CPURatio)
		if r.PairedRPSRatio > 0 {
			fmt.Fprintf(w, "; req/s in the same round: median x%.3f", r.PairedRPSRatio)
		}
		if r.SideBySideRPSRatio > 0 {
			fmt.Fprintf(w, "; side by side: median x%.3f", r.SideBySideRPSRatio)
		}
		fmt.Fprintln(w)
	}
	for _, t := range s.Targets {
		if t.OverLimitChecked {
			fmt.Fprintf(w, "%s: %d requests admitted beyond their key's rpm\n", t.Target, t.OverLimit)
		}
	}
	for _, l := range s.Lines {
		fmt.Fprintln(w, l)
	}
	if s.Note != "" {
		fmt.Fprintf(w, "note: %s\n", s.Note)
	}
	for _, t := range s.Targets {
		for _, e := range t.ErrorSamples {
			fmt.Fprintf(w, "%s error: %s\n", t.Target, e)
		}
	}
}
