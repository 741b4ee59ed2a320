package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyai/gateway/bench/loadgen"
	"github.com/caddyai/gateway/policy"
)

type chatRequest struct {
	Model     string `json:"model"`
	Stream    bool   `json:"stream"`
	MaxTokens int    `json:"max_tokens"`
	Messages  []struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	} `json:"messages"`
}

func decode(t *testing.T, body []byte) chatRequest {
	t.Helper()
	var r chatRequest
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("body is not JSON: %v\n%s", err, body)
	}
	if r.Model != model || r.MaxTokens != 20 {
		t.Fatalf("model %q max_tokens %d", r.Model, r.MaxTokens)
	}
	return r
}

func TestBodies(t *testing.T) {
	t.Run("chat is about 1 KB and unique per request", func(t *testing.T) {
		b := chatBody()
		for _, seq := range []int64{0, 7, 123456} {
			body := b(nil, seq)
			if len(body) < 1000 || len(body) > 1050 {
				t.Errorf("request %d: %d bytes, want about 1024", seq, len(body))
			}
			r := decode(t, body)
			if r.Stream || len(r.Messages) != 2 || !strings.Contains(r.Messages[1].Content, "(request "+itoa(seq)+")") {
				t.Errorf("request %d: %+v", seq, r)
			}
		}
	})
	t.Run("stream", func(t *testing.T) {
		if r := decode(t, streamBody()(nil, 3)); !r.Stream {
			t.Error("stream is not set")
		}
	})
	t.Run("multi-turn grows and cycles", func(t *testing.T) {
		b := multiTurnBody()
		var system string
		for seq := int64(0); seq < 2*maxTurns; seq++ {
			r := decode(t, b(nil, seq))
			turn := int(seq%maxTurns) + 1
			if len(r.Messages) != 2*turn {
				t.Fatalf("request %d: %d messages, want %d", seq, len(r.Messages), 2*turn)
			}
			if seq == 0 {
				system = r.Messages[0].Content
			} else if r.Messages[0].Content != system {
				t.Fatalf("request %d: the system prompt changed", seq)
			}
			last := r.Messages[len(r.Messages)-1]
			if last.Role != "user" || !strings.Contains(last.Content, "(request "+itoa(seq)+")") {
				t.Fatalf("request %d: last message %+v", seq, last)
			}
		}
	})
}

func itoa(v int64) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestRenderGateway(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name    string
		opts    gatewayOptions
		admin   int
		want    []string
		wantNot []string
	}{
		{"plain options", gatewayOptions{}, 0, []string{"ai_gateway {", "upstream 127.0.0.1:9001", "dynamic ai_gateway", "admin off"}, []string{"tpm", "tokenizer", "keys_file", "cache"}},
		{"exact counting", gatewayOptions{Tokenizer: "cl100k_base", KeyTPM: 5}, 0, []string{"tokenizer cl100k_base", "tpm 5"}, []string{"keys_file"}},
		{"keys file", gatewayOptions{KeysFile: "/tmp/k.json"}, 0, []string{"keys_file /tmp/k.json"}, []string{"tpm"}},
		{"profiling", gatewayOptions{}, 9003, []string{"admin 127.0.0.1:9003"}, []string{"admin off"}},
		{"cache", gatewayOptions{Cache: true}, 0, []string{"cache {", "ttl 1h"}, []string{"tpm"}},
		{"redis limits", gatewayOptions{RedisURL: "redis://127.0.0.1:9/0"}, 0, []string{"rate_limit {", "store redis redis://127.0.0.1:9/0"}, []string{"storage", "max_concurrent"}},
		{"accounting", gatewayOptions{StorageDir: "/tmp/d", Accounting: true}, 0, []string{"dir /tmp/d", "accounting {", "budget label team=bench", "price {", "label team bench"}, []string{"cache"}},
		{"batches", gatewayOptions{MaxConcurrent: 16, Queue: 256, StorageDir: "/tmp/s"}, 0, []string{"max_concurrent 16", "queue 256", "storage {", "dir /tmp/s"}, []string{"rate_limit"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "g.Caddyfile")
			err := render("gateway.Caddyfile", path, map[string]any{
				"Port": 9002, "UpstreamPort": 9001, "Model": model, "ContextWindow": 1000, "KeyHash": "ab",
				"KeyTPM": tc.opts.KeyTPM, "KeysFile": tc.opts.KeysFile, "Tokenizer": tc.opts.Tokenizer, "AdminPort": tc.admin, "Cache": tc.opts.Cache,
				"RedisURL": tc.opts.RedisURL, "MaxConcurrent": tc.opts.MaxConcurrent, "Queue": tc.opts.Queue, "StorageDir": tc.opts.StorageDir, "Accounting": tc.opts.Accounting,
				"IdleConns": idleConnsPerHost,
			})
			if err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(data), w) {
					t.Errorf("missing %q in\n%s", w, data)
				}
			}
			for _, w := range tc.wantNot {
				if strings.Contains(string(data), w) {
					t.Errorf("unexpected %q in\n%s", w, data)
				}
			}
			if strings.Count(string(data), "{") != strings.Count(string(data), "}") {
				t.Errorf("unbalanced braces:\n%s", data)
			}
		})
	}
	if err := render("gateway.Caddyfile", filepath.Join(dir, "x"), map[string]any{"Port": 1}); err == nil {
		t.Error("a missing template field must be an error")
	}
	if err := render("plain.Caddyfile", filepath.Join(dir, "y"), map[string]any{"Port": 1, "UpstreamPort": 2, "AdminPort": 0}); err == nil {
		t.Error("a missing template field must be an error")
	}
}

// TestSameTransport: plain Caddy and the gateway keep the same idle connections to the upstream,
// above the scenarios' 50 connections, so that neither redials what the other keeps.
func TestSameTransport(t *testing.T) {
	env := &runEnv{outDir: t.TempDir()}
	env.ports.caddy, env.ports.upstream = 9002, 9001
	sc := scenario{ID: "a"}
	want := "keepalive_idle_conns_per_host " + strconv.Itoa(idleConnsPerHost)
	plain, err := plainConfig(env, sc, 0)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gatewayConfig(env, sc, "gateway", 9003, 0, gatewayOptions{Tokenizer: "cl100k_base"})
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{plain, gw} {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Count(string(data), want) != 1 {
			t.Errorf("%s: want one %q in\n%s", filepath.Base(path), want, data)
		}
	}
	if idleConnsPerHost <= 50 {
		t.Errorf("idleConnsPerHost %d is not above the scenarios' 50 connections", idleConnsPerHost)
	}
}

func TestManyKeysGateway(t *testing.T) {
	env := &runEnv{outDir: t.TempDir(), rounds: 3, duration: 5 * time.Second, warmup: time.Second,
		gatewayRPS: map[string]float64{"a": 4000}}
	opts, err := manyKeysGateway(env)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(opts.KeysFile)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := policy.ParseKeysFile(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != numKeys {
		t.Fatalf("%d keys", len(keys))
	}
	table, err := policy.NewKeyTable(keys)
	if err != nil {
		t.Fatal(err)
	}
	secrets, _ := manyKeys(env)
	for _, i := range []int{0, 1, numKeys - 1} {
		k, _ := table.Lookup(secrets[i], time.Now())
		if k == nil || k.Limits.RPM <= 0 {
			t.Fatalf("secret %d: key %+v", i, k)
		}
	}
	// 4000 req/s over 16 s and 1000 keys is 64 requests a key; buckets allow rpm*(1+48/60).
	if opts.RequestsPerSecond != 4000 {
		t.Errorf("requests per second %v, want 4000", opts.RequestsPerSecond)
	}
	if rpm := keys[0].Limits.RPM; rpm < 20 || rpm > 35 {
		t.Errorf("rpm %d, want about 27", rpm)
	}
}

func TestSelectScenarios(t *testing.T) {
	all, err := selectScenarios("")
	if err != nil || len(all) != len(scenarios()) {
		t.Fatalf("all: %d %v", len(all), err)
	}
	got, err := selectScenarios("f, a")
	if err != nil || len(got) != 2 || got[0].ID != "f" || got[1].ID != "a" {
		t.Fatalf("f,a: %+v %v", got, err)
	}
	if _, err := selectScenarios("a,zz"); err == nil {
		t.Error("unknown scenario accepted")
	}
	for _, sc := range all {
		if sc.Pending == "" && sc.run == nil && (sc.body == nil || sc.Conns < 1) {
			t.Errorf("scenario %s cannot run", sc.ID)
		}
	}
}

func TestSummarise(t *testing.T) {
	tr := summarise("gateway", []roundResult{
		{RPS: 100, P50Ms: 3, OK: 10, Limited: 1},
		{RPS: 300, P50Ms: 1, OK: 20, Errors: 2},
		{RPS: 200, P50Ms: 2, OK: 30},
	}, nil)
	if tr.RPS != 200 || tr.P50Ms != 2 || tr.OK != 60 || tr.Limited != 1 || tr.Errors != 2 {
		t.Errorf("%+v", tr)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Errorf("median %v", m)
	}
	if median(nil) != 0 {
		t.Error("median of nothing")
	}
}

func TestProcReaders(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	x := 0
	for i := range 5_000_000 {
		x += i % 7
	}
	_ = x
	cpu, err := cpuTime(os.Getpid())
	if err != nil || cpu < 0 {
		t.Errorf("cpu time %v %v", cpu, err)
	}
	rss, err := peakRSS(os.Getpid())
	if err != nil || rss < 1<<20 {
		t.Errorf("peak rss %d %v", rss, err)
	}
	if _, err := cpuTime(-1); err == nil {
		t.Error("no error for a missing process")
	}
}

func TestOverLimit(t *testing.T) {
	start := time.Unix(1000, 0)
	var k keyTally
	// Two runs over 30 s in all: a bucket of rpm 10 admits floor(10 * 1.5) = 15, one more for
	// the clocks.
	k.add(start, &loadgen.Result{OKByKey: []int64{5, 9, 0}, Elapsed: 10 * time.Second})
	k.add(start.Add(20*time.Second), &loadgen.Result{OKByKey: []int64{5, 9, 16}, Elapsed: 10 * time.Second})
	if got := overLimit(k, 10); got != 2+0 {
		t.Errorf("over limit %d, want 2 (key 1: 18 of 16)", got)
	}
	if got := overLimit(k, 20); got != 0 {
		t.Errorf("over limit %d at rpm 20", got)
	}
}

func TestEvaluateTargets(t *testing.T) {
	rep := &report{Scenarios: []scenarioResult{
		{ID: "a", GatewayVsCaddy: &comparison{RPSRatio: 0.97, CPUDiffUs: 8}},
		{ID: "b", GatewayVsCaddy: &comparison{P50DiffMs: 0.05}},
		{ID: "d", GatewayVsCaddy: &comparison{RPSRatio: 0.90, SideBySideRPSRatio: 0.96}}, // judged on the rounds, not side by side
		{ID: "e", GatewayVsCaddy: &comparison{RPSRatio: 4.2, SideBySideRPSRatio: 3}},
		{ID: "g", Ratios: []namedRatio{{Name: "gateway-redis/gateway", RPSRatio: 0.9}},
			Targets: []targetResult{{Target: "gateway", OverLimitChecked: true}, {Target: "gateway-redis", OverLimitChecked: true, OverLimit: 1}}},
		{ID: "h", Figures: map[string]float64{"interactive_p99_increase": 0.05, "batch_share_of_spare": 0.9}},
		{ID: "c", Targets: []targetResult{{Target: "portkey", Errors: 3}}},
		{ID: "l", Ratios: []namedRatio{{Name: "gateway-ledger/gateway", RPSRatio: 0.985, PairedRPSRatio: 0.99, SideBySideRPSRatio: 0.96}}},
	}}
	want := map[string]string{"a": "met", "b": "not met", "c": "not met", "d": "not met", "e": "met", "g": "not met", "h": "met", "i": "not run", "j": "reported", "l": "met"}
	rows := evaluateTargets(rep)
	for _, r := range rows {
		if w, ok := want[r.Scenario]; ok && r.Status != w {
			t.Errorf("(%s) %s: %s (%s), want %s", r.Scenario, r.Goal, r.Status, r.Measured, w)
		}
		if r.Scenario == "d" && r.Measured != "x0.90 (side by side x0.96)" {
			t.Errorf("(d) measured %q", r.Measured)
		}
		if r.Scenario == "j" && !strings.Contains(r.Measured, "no request") {
			t.Errorf("(j) %s", r.Measured)
		}
	}
	if len(rows) != 10 {
		t.Errorf("%d rows", len(rows))
	}
	// (g) is judged on the two gateways' ratio in the same rounds, not side by side
	rows = evaluateTargets(&report{Scenarios: []scenarioResult{{ID: "g",
		Ratios:  []namedRatio{{Name: "gateway-redis/gateway", RPSRatio: 0.8, PairedRPSRatio: 0.86, SideBySideRPSRatio: 0.6}},
		Targets: []targetResult{{Target: "gateway", OverLimitChecked: true}, {Target: "gateway-redis", OverLimitChecked: true}}}}})
	for _, r := range rows {
		if r.Scenario == "g" && (r.Status != "met" || r.Measured != "x0.86 in the same rounds (medians x0.80, side by side x0.60), 0 over the limit") {
			t.Errorf("(g) %s: %s", r.Status, r.Measured)
		}
	}
}

func TestPortOf(t *testing.T) {
	for in, want := range map[string]int{"0100007F:46E4": 18148, "00000000000000000000000001000000:0050": 80, "bad": -1} {
		if got := portOf(in); got != want {
			t.Errorf("portOf(%q) = %d, want %d", in, got, want)
		}
	}
	if _, err := os.Stat("/proc/net/tcp"); err != nil {
		t.Skip("no /proc/net/tcp")
	}
	if _, _, err := countEstablished(1, 1); err != nil {
		t.Error(err)
	}
}
