package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// targetRow is one goal of the benchmark (issue [bench]) against this run.
type targetRow struct {
	Scenario string `json:"scenario"`
	Goal     string `json:"goal"`
	Measured string `json:"measured"`
	// Status is "met", "not met", "reported" (no threshold) or "not run".
	Status string `json:"status"`
}

func status(ok bool) string {
	if ok {
		return "met"
	}
	return "not met"
}

// evaluateTargets checks every goal against the scenarios of the run.
func evaluateTargets(r *report) []targetRow {
	find := func(id string) *scenarioResult {
		for i := range r.Scenarios {
			if r.Scenarios[i].ID == id {
				return &r.Scenarios[i]
			}
		}
		return nil
	}
	var rows []targetRow
	add := func(id, goal string, eval func(s *scenarioResult) (string, string)) {
		row := targetRow{Scenario: id, Goal: goal, Status: "not run", Measured: "-"}
		if s := find(id); s != nil {
			row.Measured, row.Status = eval(s)
		}
		rows = append(rows, row)
	}
	vsCaddy := func(s *scenarioResult) comparison {
		if s.GatewayVsCaddy == nil {
			return comparison{}
		}
		return *s.GatewayVsCaddy
	}
	// rps is the req/s ratio a goal is judged on, the interleaved rounds' (the method:
	// each target alone on the machine in its turn, so its req/s is what its cost per request
	// allows), and how the table shows it, with the side-by-side ratio beside it where the
	// scenario ran so. Side by side, both loaded at once on the same cores, evens their req/s
	// out (each closed-loop connection waits for the shared cores whichever target it drives),
	// so it answers another question and is never the one judged.
	rps := func(c comparison) (float64, string) {
		if c.SideBySideRPSRatio > 0 {
			return c.RPSRatio, fmt.Sprintf("x%.2f (side by side x%.2f)", c.RPSRatio, c.SideBySideRPSRatio)
		}
		return c.RPSRatio, fmt.Sprintf("x%.2f", c.RPSRatio)
	}
	// paired is the ratio of two gateways judged on their ratio in the same rounds (the median
	// of the rounds' ratios, else of the medians' ratio).
	paired := func(q namedRatio) float64 {
		if q.PairedRPSRatio > 0 {
			return q.PairedRPSRatio
		}
		return q.RPSRatio
	}
	add("a", "JSON, 50 conns, every feature on: >= 0.95x req/s and <= +10 µs CPU/req", func(s *scenarioResult) (string, string) {
		c := vsCaddy(s)
		r, shown := rps(c)
		return fmt.Sprintf("%s, %+.1f µs", shown, c.CPUDiffUs), status(r >= 0.95 && c.CPUDiffUs <= 10)
	})
	add("b", "JSON, 1 conn, every feature on: p50 <= +20 µs", func(s *scenarioResult) (string, string) {
		c := vsCaddy(s)
		return fmt.Sprintf("p50 %+.0f µs", 1000*c.P50DiffMs), status(c.P50DiffMs <= 0.020)
	})
	add("c", "SSE 20 chunks, 50 conns, every feature on: >= 0.95x req/s, <= +20 µs CPU/stream, first byte <= +0.3 ms", func(s *scenarioResult) (string, string) {
		c := vsCaddy(s)
		r, shown := rps(c)
		return fmt.Sprintf("%s, %+.1f µs, ttfb %+.3f ms", shown, c.CPUDiffUs, c.TTFBP50DiffMs),
			status(r >= 0.95 && c.CPUDiffUs <= 20 && c.TTFBP50DiffMs <= 0.3)
	})
	add("d", "multi-turn, exact cl100k counting: >= 0.95x req/s", func(s *scenarioResult) (string, string) {
		r, shown := rps(vsCaddy(s))
		return shown, status(r >= 0.95)
	})
	add("e", "cache hits: >= 4x req/s", func(s *scenarioResult) (string, string) {
		c := vsCaddy(s)
		return fmt.Sprintf("x%.2f", c.RPSRatio), status(c.RPSRatio >= 4)
	})
	add("g", "rpm+tpm keys, Redis store >= 0.85x memory store req/s, 0 wrongly admitted", func(s *scenarioResult) (string, string) {
		var ratio float64
		shown := "x0.00"
		for _, q := range s.Ratios {
			if q.Name == "gateway-redis/gateway" {
				ratio, shown = paired(q), fmt.Sprintf("x%.2f in the same rounds (medians x%.2f", paired(q), q.RPSRatio)
				if q.SideBySideRPSRatio > 0 {
					shown += fmt.Sprintf(", side by side x%.2f", q.SideBySideRPSRatio)
				}
				shown += ")"
			}
		}
		var over int64
		checked := 0
		for _, t := range s.Targets {
			if t.OverLimitChecked {
				over += t.OverLimit
				checked++
			}
		}
		return fmt.Sprintf("%s, %d over the limit", shown, over), status(ratio >= 0.85 && over == 0 && checked == 2)
	})
	add("l", "usage ledger and label budget on: >= 0.98x req/s of the same gateway without them", func(s *scenarioResult) (string, string) {
		for _, q := range s.Ratios {
			if q.Name == "gateway-ledger/gateway" {
				return fmt.Sprintf("x%.3f in the same rounds (medians x%.3f, side by side x%.3f, cpu/req x%.3f)",
						paired(q), q.RPSRatio, q.SideBySideRPSRatio, q.CPURatio),
					status(paired(q) >= 0.98)
			}
		}
		return "-", "not run"
	})
	add("h", "batch beside interactive chat: interactive p99 within +10%, batch >= 80% of spare capacity", func(s *scenarioResult) (string, string) {
		f := s.Figures
		inc, share := f["interactive_p99_increase"], f["batch_share_of_spare"]
		return fmt.Sprintf("p99 %+.1f%%, %.0f%% of spare", 100*inc, 100*share), status(inc <= 0.10 && share >= 0.8)
	})
	add("i", "slow streams: 0 errors, gateway RSS per stream <= 1.5x plain Caddy's, goroutines per stream reported", func(s *scenarioResult) (string, string) {
		f := s.Figures
		errs := f["caddy_errors"] + f["gateway_errors"]
		return fmt.Sprintf("%.0f streams, %.0f errors, RSS/stream x%.2f (%.1f vs %.1f KB), goroutines/stream %.2f vs %.2f",
				f["streams"], errs, f["rss_per_stream_ratio"], f["gateway_rss_per_stream_kb"], f["caddy_rss_per_stream_kb"],
				f["gateway_goroutines_per_stream"], f["caddy_goroutines_per_stream"]),
			status(errs == 0 && f["rss_per_stream_ratio"] <= 1.5)
	})
	var peer []string
	for _, id := range []string{"a", "b", "c"} {
		if s := find(id); s != nil {
			p := s.target("portkey")
			if p == nil {
				continue
			}
			if p.OK == 0 {
				peer = append(peer, fmt.Sprintf("(%s) portkey answered no request (%d errors)", id, p.Errors))
				continue
			}
			for _, q := range s.Ratios {
				if q.Name == "gateway/portkey" {
					peer = append(peer, fmt.Sprintf("(%s) req/s x%.1f, cpu/req x%.2f", id, q.RPSRatio, q.CPURatio))
				}
			}
		}
	}
	row := targetRow{Scenario: "j", Goal: "gateway/portkey on a, b, c (make bench-peers): lead by a wide margin", Status: "not run", Measured: "-"}
	if len(peer) > 0 {
		row.Measured, row.Status = strings.Join(peer, "; "), "reported"
	}
	return append(rows, row)
}

func printTargets(w io.Writer, rows []targetRow) {
	fmt.Fprintln(w, "\ntargets (gateway against plain Caddy in this run):")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintf(tw, "(%s)\t%s\t%s\t%s\n", r.Scenario, r.Goal, r.Measured, r.Status)
	}
	_ = tw.Flush()
}
