package caddymodule

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddyai/gateway/internal/wiretest"
	"github.com/caddyai/gateway/policy/tokens"
)

// recordingRegisterer keeps every collector registered on it.
type recordingRegisterer struct{ collectors []prometheus.Collector }

func (r *recordingRegisterer) Register(c prometheus.Collector) error {
	r.collectors = append(r.collectors, c)
	return nil
}
func (r *recordingRegisterer) MustRegister(cs ...prometheus.Collector) {
	r.collectors = append(r.collectors, cs...)
}
func (r *recordingRegisterer) Unregister(prometheus.Collector) bool { return false }

// gatewayMetricNames returns every metric the gateway registers, with its variable labels: what
// Provision registers, whoever added it.
func gatewayMetricNames(t *testing.T) map[string][]string {
	t.Helper()
	reg := new(recordingRegisterer)
	m := newGatewayMetrics()
	if err := m.register(reg); err != nil {
		t.Fatal(err)
	}
	m.registerCountingEstimates(reg, tokens.NewInflight(1, 0))
	descs := make(chan *prometheus.Desc, 64)
	go func() {
		for _, c := range reg.collectors {
			c.Describe(descs)
		}
		close(descs)
	}()
	nameRE := regexp.MustCompile(`fqName: "([^"]+)"`)
	labelsRE := regexp.MustCompile(`variableLabels: \{([^}]*)\}`)
	names := map[string][]string{}
	for d := range descs {
		s := d.String()
		n := nameRE.FindStringSubmatch(s)
		if n == nil {
			t.Fatalf("cannot read a descriptor: %s", s)
		}
		var labels []string
		if l := labelsRE.FindStringSubmatch(s); l != nil && l[1] != "" {
			labels = strings.Split(l[1], ",")
		}
		names[n[1]] = labels
	}
	if len(names) < 10 {
		t.Fatalf("only %d metrics found: %v", len(names), names)
	}
	return names
}

// TestGrafanaDashboard: every metric the dashboard in examples/ queries exists (histograms by
// their _bucket, _sum and _count series), and every label it filters or groups a gateway metric
// by is one of that metric's labels.
func TestGrafanaDashboard(t *testing.T) {
	names := gatewayMetricNames(t)
	data, err := os.ReadFile(filepath.Join(wiretest.RepoRoot(t), "examples", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			ID      int    `json:"id"`
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	var exprs []string
	ids := map[int]bool{}
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q queries nothing", p.Title)
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, v := range dash.Templating.List {
		exprs = append(exprs, v.Definition)
	}
	metricRE := regexp.MustCompile(`caddy_ai_gateway_[a-z_]+`)
	selectorRE := regexp.MustCompile(`(caddy_ai_gateway_[a-z_]+)\{([^}]*)\}`)
	groupRE := regexp.MustCompile(`by \(([^)]*)\)`)
	queried := map[string]bool{}
	for _, e := range exprs {
		var inExpr []string
		for _, name := range metricRE.FindAllString(e, -1) {
			base, ok := resolveMetric(names, name)
			if !ok {
				t.Errorf("the dashboard queries %s, which the gateway does not export (in %s)", name, e)
				continue
			}
			queried[base] = true
			inExpr = append(inExpr, base)
		}
		for _, m := range selectorRE.FindAllStringSubmatch(e, -1) {
			base, ok := resolveMetric(names, m[1])
			if !ok {
				continue
			}
			for _, matcher := range strings.Split(m[2], ",") {
				label := strings.TrimSpace(strings.FieldsFunc(matcher, func(r rune) bool { return r == '=' || r == '!' || r == '~' })[0])
				if !slices.Contains(names[base], label) {
					t.Errorf("%s has no label %q (labels %v), in %s", base, label, names[base], e)
				}
			}
		}
		for _, g := range groupRE.FindAllStringSubmatch(e, -1) {
			for _, label := range strings.Split(g[1], ",") {
				label = strings.TrimSpace(label)
				if label == "le" {
					continue
				}
				for _, base := range inExpr {
					if !slices.Contains(names[base], label) {
						t.Errorf("%s is grouped by %q, not one of its labels %v, in %s", base, label, names[base], e)
					}
				}
			}
		}
	}
	if len(queried) < 15 {
		t.Errorf("the dashboard queries only %d of the gateway's %d metrics", len(queried), len(names))
	}
	for name := range names {
		if !queried[name] {
			t.Logf("not on the dashboard: %s", name)
		}
	}
}

// resolveMetric maps a series name to its metric: histograms are queried by _bucket, _sum and
// _count.
func resolveMetric(names map[string][]string, series string) (string, bool) {
	if _, ok := names[series]; ok {
		return series, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(series, suffix); ok {
			if _, ok := names[base]; ok {
				return base, true
			}
		}
	}
	return "", false
}
