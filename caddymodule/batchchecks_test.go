package caddymodule_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/openai/openai-go/v3"
	"github.com/tidwall/gjson"

	"github.com/caddyai/gateway/batch"
	"github.com/caddyai/gateway/caddymodule"
	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/simulator"
)

// results_url is absolute to the gateway: the request's scheme and host, X-Forwarded-Proto
// and X-Forwarded-Host only from one of the server's trusted_proxies, or batches.public_url.
func TestMessageBatchResultsURL(t *testing.T) {
	up := newUpstream(t, simulator.Config{Models: []string{"demo-llama"}})
	port, dir := freePort(t), t.TempDir()
	site := func(trusted, batches string) string {
		return fmt.Sprintf(`{
	admin off
	auto_https off
	grace_period 1s
	log {
		level ERROR
	}
	servers {
		trusted_proxies static %s
	}
}
:%d {
	ai_gateway {
		key %s {
			id all
		}
		model demo-llama {
			upstream %s
		}
		storage {
			dir %s
		}
		%s
	}
	reverse_proxy {
		dynamic ai_gateway
	}
}
`, trusted, port, policy.FormatHash(policy.HashSecret(secretAll)), up.addr(), dir, batches)
	}
	resultsURL := func(t *testing.T) string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, url(port, "/v1/messages/batches"),
			strings.NewReader(`{"requests":[{"custom_id":"a","params":{"model":"demo-llama","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}}]}`))
		req.Header.Set("X-Api-Key", secretAll)
		req.Header.Set("Anthropic-Version", "2023-06-01")
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Forwarded-Proto", "https")
		req.Header.Set("X-Forwarded-Host", "ai.example.com")
		resp, body := doRequest(t, req)
		if resp.StatusCode != 200 {
			t.Fatalf("create: %d %s", resp.StatusCode, body)
		}
		m := waitMsgBatch(t, msgClient(port, secretAll), gjson.GetBytes(body, "id").Str)
		if want := "/v1/messages/batches/" + m.ID + "/results"; !strings.HasSuffix(m.ResultsURL, want) {
			t.Errorf("results_url %q does not end in %s", m.ResultsURL, want)
		}
		return strings.TrimSuffix(m.ResultsURL, "/v1/messages/batches/"+m.ID+"/results")
	}

	startCaddy(t, site("10.0.0.0/8", ""))
	if got, want := resultsURL(t), url(port, ""); got != want {
		t.Errorf("forwarded headers from a client that is no trusted proxy: base %q, want %q", got, want)
	}
	loadCaddy(t, site("127.0.0.1/32", ""))
	if got := resultsURL(t); got != "https://ai.example.com" {
		t.Errorf("forwarded headers from a trusted proxy: base %q", got)
	}
	loadCaddy(t, site("127.0.0.1/32", "batches {\n\t\t\tpublic_url https://public.example/gw/\n\t\t}"))
	if got := resultsURL(t); got != "https://public.example/gw" {
		t.Errorf("public_url: base %q", got)
	}
}

// A batch waits for budget instead of failing its lines, and never spends past the model's
// tpd: lines refused for the budget are retried, not failed. When the window ends (the
// runners' clock moved a day on), the lines left are batch_expired, in the error file of an
// OpenAI batch and as expired results of a message batch; every custom_id appears once.
func TestBatchWaitsForBudgetThenExpires(t *testing.T) {
	const tpd = 200
	s := newBatchSite(t, simulator.Config{}, fmt.Sprintf("tpd %d", tpd), "", "")
	c := filesClient(s.port, secretAll)
	f := uploadBatch(t, c, "in.jsonl", chatLines("demo-llama", 20))
	b := newBatch(t, c, f.ID)
	mc := msgClient(s.port, secretAll)
	m, err := mc.Messages.Batches.New(context.Background(), anthropic.MessageBatchNewParams{Requests: msgRequests("demo-llama", 20)})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "lines refused for the budget", 10*time.Second, func() bool {
		return s.metric(t, `caddy_ai_gateway_batch_lines_total{model="demo-llama",outcome="retried"}`) >= 2
	})
	time.Sleep(300 * time.Millisecond) // a few more ticks: nothing more may run
	got, err := c.Batches.Get(context.Background(), b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != openai.BatchStatusInProgress || got.RequestCounts.Failed != 0 || got.RequestCounts.Completed >= 20 {
		t.Fatalf("a batch out of budget: %s", got.RawJSON())
	}
	spent := s.metric(t, `caddy_ai_gateway_tokens_total{model="demo-llama",kind="prompt"}`) +
		s.metric(t, `caddy_ai_gateway_tokens_total{model="demo-llama",kind="completion"}`)
	if spent == 0 || spent > tpd {
		t.Errorf("batches spent %v tokens of a tpd of %d", spent, tpd)
	}
	if n := len(s.up.requests()); n == 0 || n >= 40 {
		t.Errorf("%d requests upstream", n)
	}

	caddymodule.AdvanceBatchClock(t, batch.Window+time.Minute)
	got = waitBatch(t, c, b.ID)
	done := got.RequestCounts.Completed
	if got.Status != openai.BatchStatusExpired || got.ExpiredAt == 0 || got.RequestCounts.Total != 20 || got.RequestCounts.Failed != 20-done {
		t.Fatalf("expired batch: %s", got.RawJSON())
	}
	lines := fileLines(t, c, got.ErrorFileID)
	if done > 0 {
		for cid, l := range fileLines(t, c, got.OutputFileID) {
			if _, twice := lines[cid]; twice {
				t.Errorf("%s in both files", cid)
			}
			lines[cid] = l
		}
	}
	expired := 0
	for i := 1; i <= 20; i++ {
		l, ok := lines[fmt.Sprintf("req-%d", i)]
		switch {
		case !ok:
			t.Errorf("req-%d in neither file", i)
		case l.Get("error.code").Str == batch.CodeBatchExpired:
			expired++
		case l.Get("response.status_code").Int() != 200:
			t.Errorf("req-%d: %s", i, l.Raw)
		}
	}
	if int64(expired) != 20-done {
		t.Errorf("%d lines batch_expired, want %d", expired, 20-done)
	}

	mb := waitMsgBatch(t, mc, m.ID)
	rc := mb.RequestCounts
	if rc.Expired == 0 || rc.Succeeded+rc.Expired != 20 || rc.Errored != 0 {
		t.Errorf("expired message batch: %s", mb.RawJSON())
	}
	res := msgResults(t, mc, m.ID)
	var n int64
	for _, r := range res {
		if r.Result.Type == "expired" {
			n++
		}
	}
	if len(res) != 20 || n != rc.Expired {
		t.Errorf("%d results, %d expired; counts %s", len(res), n, mb.RawJSON())
	}
}

// An unreachable upstream (connection refused) fails no line: the lines are retried with
// backoff, and a config reload that brings the upstream back lets the batch finish.
func TestBatchRetriesUnreachableUpstream(t *testing.T) {
	s := newBatchSite(t, simulator.Config{}, "", "", "")
	dead := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	broken := strings.Replace(s.caddyfile, "model demo-qwen {\n\t\t\t\tupstream "+s.up.addr(), "model demo-qwen {\n\t\t\t\tupstream "+dead, 1)
	if broken == s.caddyfile {
		t.Fatal("could not point demo-qwen at a closed port")
	}
	loadCaddy(t, broken)
	c := filesClient(s.port, secretQwen)
	f := uploadBatch(t, c, "in.jsonl", chatLines("demo-qwen", 3))
	b := newBatch(t, c, f.ID)
	waitFor(t, "lines tried against the closed port", 10*time.Second, func() bool {
		return s.metric(t, `caddy_ai_gateway_batch_lines_total{model="demo-qwen",outcome="retried"}`) >= 3
	})
	got, err := c.Batches.Get(context.Background(), b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != openai.BatchStatusInProgress || got.RequestCounts.Failed != 0 || got.RequestCounts.Completed != 0 {
		t.Fatalf("with the upstream down: %s", got.RawJSON())
	}
	loadCaddy(t, s.caddyfile)
	got = waitBatch(t, c, b.ID)
	if got.Status != openai.BatchStatusCompleted || got.RequestCounts.Completed != 3 || got.RequestCounts.Failed != 0 {
		t.Fatalf("after the upstream came back: %s", got.RawJSON())
	}
	if lines := fileLines(t, c, got.OutputFileID); len(lines) != 3 {
		t.Errorf("%d output lines", len(lines))
	}
	if n := len(s.up.requests()); n != 3 {
		t.Errorf("the upstream got %d requests, want each line once", n)
	}
}
