package caddymodule_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/openai/openai-go/v3"
	"github.com/tidwall/gjson"

	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/simulator"
)

// batchSite is a gateway for the batch tests: key "all" (secretAll) may use every model, key
// "other" (secretQwen) only demo-qwen; llama, qwen and gateway are extra lines of the demo-llama
// and demo-qwen blocks and of ai_gateway. Caddy's metrics are at /metrics; the access log
// (JSON) is in accessLog.
type batchSite struct {
	port      int
	up        *recordingUpstream
	caddyfile string
	accessLog string
	dir       string // the store's
}

func newBatchSite(t *testing.T, sim simulator.Config, llama, qwen, gateway string) *batchSite {
	t.Helper()
	indent := func(s string, tabs int) string {
		if s == "" {
			return ""
		}
		in := "\n" + strings.Repeat("\t", tabs)
		return in + strings.ReplaceAll(s, "\n", in)
	}
	sim.Models = []string{"demo-llama", "demo-qwen"}
	s := &batchSite{up: newUpstream(t, sim), port: freePort(t), accessLog: filepath.Join(t.TempDir(), "access.log"), dir: t.TempDir()}
	s.caddyfile = globalOptions + fmt.Sprintf(`
:%d {
	log {
		output file %s
		format json
	}
	handle /metrics {
		metrics
	}
	handle {
		ai_gateway {
			key %s {
				id all
			}
			key %s {
				id other
				models demo-qwen
			}
			model demo-llama {
				upstream %s%s
			}
			model demo-qwen {
				upstream %s%s
			}
			storage {
				dir %s
			}%s
		}
		reverse_proxy {
			dynamic ai_gateway
		}
	}
}
`, s.port, s.accessLog, policy.FormatHash(policy.HashSecret(secretAll)), policy.FormatHash(policy.HashSecret(secretQwen)),
		s.up.addr(), indent(llama, 4), s.up.addr(), indent(qwen, 4), s.dir, indent(gateway, 3))
	startCaddy(t, s.caddyfile)
	return s
}

// metric reads one sample of Caddy's /metrics: the value of the series whose name and labels
// start with series (e.g. `caddy_ai_gateway_batches{api="openai",status="in_progress"}`), or 0.
func (s *batchSite) metric(t *testing.T, series string) float64 {
	t.Helper()
	resp, err := http.Get(url(s.port, "/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	name, labels, _ := strings.Cut(strings.TrimSuffix(series, "}"), "{")
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		head, val, _ := strings.Cut(line, " ")
		ok := true
		for _, l := range strings.Split(labels, ",") {
			if l != "" && !strings.Contains(head, l) {
				ok = false
			}
		}
		if ok {
			v, _ := strconv.ParseFloat(val, 64)
			return v
		}
	}
	return 0
}

// isBatchLine tells a batch line's request from a client's at the upstream.
func isBatchLine(r seenRequest) bool { return r.Header.Get("User-Agent") == "ai_gateway-batch" }

// While interactive requests hold every slot of the model and more wait in its queue, no batch
// line is sent; the queued interactive requests get the slots first, and the batch runs only
// once nobody is waiting. The batch lines carry the model's batch priority, replacing their own.
func TestBatchWaitsBehindInteractive(t *testing.T) {
	s := newBatchSite(t, simulator.Config{TTFT: 400 * time.Millisecond}, "max_concurrent 2\nqueue 8\nbatch {\n\tpriority 10\n}", "", "")
	c := filesClient(s.port, secretAll)
	lines := chatLines("demo-llama", 3)
	lines = strings.Replace(lines, `"max_tokens":8`, `"max_tokens":8,"priority":-5`, 1) // a line asking to jump the queue
	f := uploadBatch(t, c, "in.jsonl", lines)

	var wg sync.WaitGroup
	statuses := make(chan int, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.DefaultClient.Do(chatRequest(t, s.port, secretAll, `{"model":"demo-llama","messages":[{"role":"user","content":"hi"}]}`))
			if err != nil {
				statuses <- 0
				return
			}
			resp.Body.Close()
			statuses <- resp.StatusCode
		}()
	}
	waitFor(t, "two interactive requests upstream", 5*time.Second, func() bool { return len(s.up.requests()) >= 2 })
	b := newBatch(t, c, f.ID)
	wg.Wait()
	close(statuses)
	for st := range statuses {
		if st != 200 {
			t.Errorf("an interactive request got %d", st)
		}
	}
	b = waitBatch(t, c, b.ID)
	if b.Status != openai.BatchStatusCompleted || b.RequestCounts.Completed != 3 {
		t.Fatalf("batch: %s", b.RawJSON())
	}
	seen := s.up.requests()
	if len(seen) != 7 {
		t.Fatalf("%d upstream requests, want 7", len(seen))
	}
	for i, r := range seen {
		if batch := isBatchLine(r); batch != (i >= 4) {
			t.Errorf("upstream request %d: batch line %v; every interactive request must come first", i, batch)
		}
		if p := gjson.GetBytes(r.Body, "priority"); isBatchLine(r) != p.Exists() || p.Exists() && p.Int() != 10 {
			t.Errorf("upstream request %d (batch line %v): priority %s", i, isBatchLine(r), p.Raw)
		}
	}
	if n := s.metric(t, `caddy_ai_gateway_batch_lines_total{model="demo-llama",outcome="deferred"}`); n < 1 {
		t.Errorf("no deferred line counted (retried %v)", n)
	}
}

// TestBatchLeavesReserve: with `reserve 1` on a pool of 4, batch lines never take the last free
// slot, so an interactive request beside a running batch is sent at once, never queued behind
// a line.
func TestBatchLeavesReserve(t *testing.T) {
	s := newBatchSite(t, simulator.Config{TTFT: 300 * time.Millisecond}, "max_concurrent 4\nqueue 8\nbatch {\n\treserve 1\n}", "", "")
	c := filesClient(s.port, secretAll)
	f := uploadBatch(t, c, "in.jsonl", chatLines("demo-llama", 16))
	b := newBatch(t, c, f.ID)
	waitFor(t, "batch lines upstream", 5*time.Second, func() bool { return s.up.sim.Stats().Running > 0 })
	stop := samplePeak(s)
	time.Sleep(time.Second) // three rounds of lines
	if p := stop(); p != 3 {
		t.Errorf("the batch alone: peak %d lines upstream, want 3 of the pool's 4", p)
	}
	for range 3 {
		start := time.Now()
		resp, err := http.DefaultClient.Do(chatRequest(t, s.port, secretAll, `{"model":"demo-llama","messages":[{"role":"user","content":"hi"}]}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		// 300 ms of TTFT; queued behind a line it would wait for one to end as well
		if d := time.Since(start); resp.StatusCode != 200 || d > 550*time.Millisecond {
			t.Errorf("interactive request beside the batch: %d after %v", resp.StatusCode, d)
		}
	}
	b = waitBatch(t, c, b.ID)
	if b.Status != openai.BatchStatusCompleted || b.RequestCounts.Completed != 16 {
		t.Fatalf("batch: %s", b.RawJSON())
	}
}

// samplePeak samples the simulator's requests in flight every 5 ms until the returned func is
// called, which returns the most it saw.
func samplePeak(s *batchSite) (stop func() int) {
	var mu sync.Mutex
	peak := 0
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
			mu.Lock()
			peak = max(peak, int(s.up.sim.Stats().Running))
			mu.Unlock()
		}
	}()
	return func() int {
		close(done)
		<-sampled
		mu.Lock()
		defer mu.Unlock()
		return peak
	}
}

// A model's batch block caps its batch lines in flight and paces their dispatch; interactive
// requests still go at once while the batch holds its share of the slots.
func TestBatchModelCapAndRate(t *testing.T) {
	s := newBatchSite(t, simulator.Config{TTFT: 300 * time.Millisecond}, "max_concurrent 4\nbatch {\n\tmax_concurrent 2\n}",
		"batch {\n\trate 5/s\n}", "")
	stopSampling := samplePeak(s)
	c := filesClient(s.port, secretAll)
	f := uploadBatch(t, c, "in.jsonl", chatLines("demo-llama", 6))
	b := newBatch(t, c, f.ID)
	waitFor(t, "batch lines upstream", 5*time.Second, func() bool { return len(s.up.requests()) > 0 })
	start := time.Now()
	resp, err := http.DefaultClient.Do(chatRequest(t, s.port, secretAll, `{"model":"demo-llama","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if d := time.Since(start); resp.StatusCode != 200 || d > 2*time.Second {
		t.Errorf("interactive request beside the batch: %d after %v", resp.StatusCode, d)
	}
	b = waitBatch(t, c, b.ID)
	peak := stopSampling()
	if b.Status != openai.BatchStatusCompleted || b.RequestCounts.Completed != 6 {
		t.Fatalf("batch: %s", b.RawJSON())
	}
	if peak > 3 || peak < 2 {
		t.Errorf("peak %d requests upstream; want the batch's 2 and at most the one interactive", peak)
	}

	// rate 5/s: a line every 200 ms at most, the first at once
	before := len(s.up.requests())
	f = uploadBatch(t, c, "qwen.jsonl", chatLines("demo-qwen", 5))
	b = waitBatch(t, c, newBatch(t, c, f.ID).ID)
	if b.Status != openai.BatchStatusCompleted || b.RequestCounts.Completed != 5 {
		t.Fatalf("paced batch: %s", b.RawJSON())
	}
	if n := len(s.up.requests()) - before; n != 5 {
		t.Fatalf("%d upstream requests for the paced batch", n)
	}
	paced := s.up.requests()[before:]
	for i := 1; i < len(paced); i++ {
		// burst 1: each line waits for its turn, 200 ms after the one before (a little less:
		// the upstream sees it a moment after its turn came)
		if gap := paced[i].At.Sub(paced[i-1].At); gap < 100*time.Millisecond {
			t.Errorf("line %d reached the upstream %v after the one before, want about 200ms", i+1, gap)
		}
	}
}

// The batch metrics move: the batches gauge by status while a batch runs, the lines waiting,
// the lines done, the batch tokens and the batches ended.
func TestBatchMetrics(t *testing.T) {
	s := newBatchSite(t, simulator.Config{TTFT: 200 * time.Millisecond}, "max_concurrent 1", "", "")
	c := filesClient(s.port, secretAll)
	f := uploadBatch(t, c, "in.jsonl", chatLines("demo-llama", 4))
	b := newBatch(t, c, f.ID)
	waitFor(t, "the batch running in the gauges", 5*time.Second, func() bool {
		return s.metric(t, `caddy_ai_gateway_batches{api="openai",status="in_progress"}`) == 1 &&
			s.metric(t, `caddy_ai_gateway_batch_lines_waiting{model="demo-llama"}`) > 0
	})
	b = waitBatch(t, c, b.ID)
	if b.Status != openai.BatchStatusCompleted {
		t.Fatalf("batch: %s", b.RawJSON())
	}
	waitFor(t, "the gauges back to 0", 5*time.Second, func() bool {
		return s.metric(t, `caddy_ai_gateway_batches{api="openai",status="in_progress"}`) == 0 &&
			s.metric(t, `caddy_ai_gateway_batch_lines_waiting{model="demo-llama"}`) == 0
	})
	for series, want := range map[string]float64{
		`caddy_ai_gateway_batch_lines_total{model="demo-llama",outcome="done"}`: 4,
		`caddy_ai_gateway_batches_ended_total{api="openai",status="completed"}`: 1,
		`caddy_ai_gateway_requests_total{model="demo-llama",code="200"}`:        4,
	} {
		if got := s.metric(t, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	if got := s.metric(t, `caddy_ai_gateway_batch_tokens_total{model="demo-llama",kind="completion"}`); got < 4 {
		t.Errorf("batch completion tokens %v", got)
	}
	// each line in the access log: its batch, custom_id and usage
	logged := map[string]bool{}
	data, err := os.ReadFile(s.accessLog)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		e := gjson.Parse(l)
		if e.Get("ai_batch_id").Str != b.ID {
			continue
		}
		if e.Get("status").Int() != 200 || e.Get("ai_key_id").Str != "all" || e.Get("ai_prompt_tokens").Int() <= 0 ||
			e.Get("ai_completion_tokens").Int() <= 0 || e.Get("request.headers.Authorization").Exists() {
			t.Errorf("access log entry of a line: %s", l)
		}
		logged[e.Get("ai_custom_id").Str] = true
	}
	for i := 1; i <= 4; i++ {
		if !logged[fmt.Sprintf("req-%d", i)] {
			t.Errorf("req-%d not in the access log with its batch id (%d lines logged)", i, len(logged))
		}
	}

	// a message batch: its status in the gauges, its end counted
	mc := msgClient(s.port, secretAll)
	m, err := mc.Messages.Batches.New(context.Background(), anthropic.MessageBatchNewParams{Requests: msgRequests("demo-llama", 2)})
	if err != nil {
		t.Fatal(err)
	}
	waitMsgBatch(t, mc, m.ID)
	waitFor(t, "the message batch ended in the metrics", 5*time.Second, func() bool {
		return s.metric(t, `caddy_ai_gateway_batches_ended_total{api="anthropic",status="ended"}`) == 1 &&
			s.metric(t, `caddy_ai_gateway_batches{api="anthropic",status="in_progress"}`) == 0
	})
}

// A message batch waits for spare capacity like an OpenAI batch: no request is sent while a live
// one holds the model's only slot, and the batch goes on within about a second once it is free
// (a deferral is no failure: no backoff, whatever the envelope).
func TestMessageBatchWaitsForSpareCapacity(t *testing.T) {
	s := newBatchSite(t, simulator.Config{}, "max_concurrent 1\nqueue 4", "", "")
	done := make(chan time.Time, 1)
	go func() {
		req := chatRequest(t, s.port, secretAll, `{"model":"demo-llama","messages":[{"role":"user","content":"hi"}]}`)
		req.Header.Set(simulator.FaultHeader, "kind=stall;delay=3500ms") // holds the slot 3.5 s
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- time.Now()
	}()
	waitFor(t, "the live request upstream", 5*time.Second, func() bool { return len(s.up.requests()) == 1 })
	mc := msgClient(s.port, secretAll)
	m, err := mc.Messages.Batches.New(context.Background(), anthropic.MessageBatchNewParams{Requests: msgRequests("demo-llama", 1)})
	if err != nil {
		t.Fatal(err)
	}
	freed := <-done
	if n := len(s.up.requests()); n != 1 {
		t.Fatalf("%d requests upstream while the live one held the slot", n)
	}
	waitFor(t, "the batch's request upstream", 10*time.Second, func() bool { return len(s.up.requests()) == 2 })
	if d := time.Since(freed); d > 2*time.Second {
		t.Errorf("the batch's request went %v after the slot was free, want about a second", d)
	}
	if n := s.metric(t, `caddy_ai_gateway_batch_lines_total{model="demo-llama",outcome="deferred"}`); n < 1 {
		t.Errorf("deferred %v", n)
	}
	waitMsgBatch(t, mc, m.ID)
}
