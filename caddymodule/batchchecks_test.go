package caddymodule_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/caddyserver/caddy/v2"
	"github.com/openai/openai-go/v3"
	"github.com/tidwall/gjson"

	"github.com/caddyai/gateway/batch"
	"github.com/caddyai/gateway/caddymodule"
	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/simulator"
	"github.com/caddyai/gateway/store"
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

// repeatReader yields n bytes c.
type repeatReader struct {
	c byte
	n int64
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), r.n)]
	for i := range p {
		p[i] = r.c
	}
	r.n -= int64(len(p))
	return len(p), nil
}

// Hostile input files through the Files and Batches APIs with the official SDK: a 64 MiB
// line, binary garbage, CRLF with no final newline and a BOM, a 10 KB custom_id, 50,001
// lines, and a file deleted while its batch runs.
func TestBatchHostileFiles(t *testing.T) {
	s := newBatchSite(t, simulator.Config{TTFT: 150 * time.Millisecond}, "max_concurrent 1", "", "")
	c := filesClient(s.port, secretAll)
	ctx := context.Background()
	upload := func(name string, r io.Reader) (*openai.FileObject, error) {
		return c.Files.New(ctx, openai.FileNewParams{File: openai.File(r, name, "application/jsonl"), Purpose: openai.FilePurposeBatch})
	}
	line := func(cid string) string {
		return `{"custom_id":"` + cid + `","method":"POST","url":"/v1/chat/completions","body":{"model":"demo-llama","messages":[{"role":"user","content":"hi"}],"max_tokens":4}}`
	}
	failsWith := func(t *testing.T, f *openai.FileObject, code string, lineNo int64) {
		t.Helper()
		b := waitBatch(t, c, newBatch(t, c, f.ID).ID)
		if b.Status != openai.BatchStatusFailed || len(b.Errors.Data) == 0 || b.Errors.Data[0].Code != code || b.Errors.Data[0].Line != lineNo {
			t.Fatalf("want failed with %s at line %d: %s", code, lineNo, b.RawJSON())
		}
	}

	t.Run("a 64 MiB line", func(t *testing.T) {
		head := `{"custom_id":"big","method":"POST","url":"/v1/chat/completions","body":{"model":"demo-llama","messages":[{"role":"user","content":"`
		f, err := upload("big.jsonl", io.MultiReader(strings.NewReader(line("a")+"\n"+head), &repeatReader{c: 'x', n: 64 << 20},
			strings.NewReader(`"}]}}`+"\n")))
		if err != nil {
			t.Fatal(err)
		}
		if f.Bytes < 64<<20 {
			t.Fatalf("stored %d bytes", f.Bytes)
		}
		failsWith(t, f, batch.CodeRequestTooLarge, 2)
	})
	t.Run("binary garbage", func(t *testing.T) {
		_, err := upload("garbage.jsonl", strings.NewReader("\x00\x01\xfe\xff\x89PNG\r\n\x1a\n\x00\x00"))
		wantAPIError(t, err, 400, "invalid_file")
	})
	t.Run("CRLF, a BOM and no final newline", func(t *testing.T) {
		f, err := upload("crlf.jsonl", strings.NewReader("\xef\xbb\xbf"+line("a")+"\r\n"+line("b")))
		if err != nil {
			t.Fatal(err)
		}
		b := waitBatch(t, c, newBatch(t, c, f.ID).ID)
		if b.Status != openai.BatchStatusCompleted || b.RequestCounts.Completed != 2 {
			t.Fatalf("batch: %s", b.RawJSON())
		}
		if lines := fileLines(t, c, b.OutputFileID); len(lines) != 2 || !lines["a"].Exists() || !lines["b"].Exists() {
			t.Errorf("output %v", lines)
		}
	})
	t.Run("a 10 KB custom_id", func(t *testing.T) {
		f, err := upload("long-id.jsonl", strings.NewReader(line("a")+"\n"+line(strings.Repeat("x", 10<<10))+"\n"))
		if err != nil {
			t.Fatal(err)
		}
		failsWith(t, f, batch.CodeStringTooLong, 2)
	})
	t.Run("50,001 lines", func(t *testing.T) {
		var sb strings.Builder
		for i := range 50_001 {
			sb.WriteString(line(fmt.Sprintf("r%d", i)))
			sb.WriteByte('\n')
		}
		_, err := upload("many.jsonl", strings.NewReader(sb.String()))
		wantAPIError(t, err, 400, "too_many_lines")
	})
	t.Run("the input file deleted while its batch runs", func(t *testing.T) {
		var sb strings.Builder
		for i := 1; i <= 8; i++ {
			sb.WriteString(line(fmt.Sprintf("d%d", i)) + "\n")
		}
		f, err := upload("deleted.jsonl", strings.NewReader(sb.String()))
		if err != nil {
			t.Fatal(err)
		}
		b := newBatch(t, c, f.ID)
		waitFor(t, "a line done", 10*time.Second, func() bool {
			got, err := c.Batches.Get(ctx, b.ID)
			return err == nil && got.RequestCounts.Completed >= 1
		})
		if _, err := c.Files.Delete(ctx, f.ID); err != nil {
			t.Fatal(err)
		}
		b = waitBatch(t, c, b.ID)
		rc := b.RequestCounts
		if b.Status != openai.BatchStatusCompleted || rc.Total != 8 || rc.Completed == 0 || rc.Completed+rc.Failed != 8 {
			t.Fatalf("batch: %s", b.RawJSON())
		}
		seen := fileLines(t, c, b.OutputFileID)
		if rc.Failed > 0 {
			for cid, l := range fileLines(t, c, b.ErrorFileID) {
				if l.Get("error.code").Str != "input_file_deleted" || seen[cid].Exists() {
					t.Errorf("%s: %s", cid, l.Raw)
				}
				seen[cid] = l
			}
		}
		if len(seen) != 8 {
			t.Errorf("%d custom_ids across the files, want 8", len(seen))
		}
	})
}

// A store that cannot be reached (Redis refusing connections) gives 503 with Retry-After in
// the envelope of each batches API, and nothing half made.
func TestBatchesStoreUnavailable(t *testing.T) {
	dead := fmt.Sprintf("redis://127.0.0.1:%d/0?max_retries=-1", freePort(t)) // no retries: a fast test
	s := startCore(t, "storage {\n\t\t\tstore redis "+dead+"\n\t\t\tdir "+t.TempDir()+"\n\t\t}")
	c := s.openai(secretAll)
	ctx := context.Background()
	check := func(what string, err error) {
		t.Helper()
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 503 || apiErr.Code != "store_unavailable" ||
			apiErr.Response.Header.Get("Retry-After") == "" || !strings.Contains(apiErr.RawJSON(), `"retry_after":`) {
			t.Errorf("%s: want 503 store_unavailable with Retry-After, got %v", what, err)
		}
	}
	_, err := c.Batches.List(ctx, openai.BatchListParams{})
	check("list", err)
	_, err = c.Batches.Get(ctx, "batch_x")
	check("retrieve", err)
	_, err = c.Batches.New(ctx, openai.BatchNewParams{InputFileID: "file-x", Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions,
		CompletionWindow: openai.BatchNewParamsCompletionWindow24h})
	check("create", err)
	_, err = c.Files.New(ctx, openai.FileNewParams{File: openai.File(strings.NewReader(batchJSONL), "in.jsonl", "application/jsonl"),
		Purpose: openai.FilePurposeBatch})
	check("upload", err)

	req, _ := http.NewRequest(http.MethodPost, url(s.port, "/v1/messages/batches"),
		strings.NewReader(`{"requests":[{"custom_id":"a","params":{"model":"demo-llama","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}}]}`))
	req.Header.Set("X-Api-Key", secretAll)
	req.Header.Set("Anthropic-Version", "2023-06-01")
	req.Header.Set("Content-Type", "application/json")
	resp, body := doRequest(t, req)
	// 529 overloaded_error: the Anthropic surface's 503, which its SDKs retry
	if resp.StatusCode != 529 || resp.Header.Get("Retry-After") == "" || gjson.GetBytes(body, "error.type").Str != "overloaded_error" {
		t.Errorf("message batch create: %d %s", resp.StatusCode, body)
	}
	if _, err := c.Models.List(ctx); err != nil {
		t.Errorf("models with the store down: %v", err)
	}
}

// Retention: an OpenAI batch is kept batches.retention from its creation, a message batch and
// its results batches.results_retention; output and error files expire output_expiry after they
// are written, or as output_expires_after says.
func TestBatchRetention(t *testing.T) {
	s := newBatchSite(t, simulator.Config{}, "", "", "batches {\n\tretention 48h\n\toutput_expiry 26h\n\tresults_retention 30h\n}")
	c := filesClient(s.port, secretAll)
	ctx := context.Background()
	near := func(what string, got, want int64) {
		t.Helper()
		if got < want-5 || got > want+5 {
			t.Errorf("%s: %d, want %d (±5 s)", what, got, want)
		}
	}
	f := uploadBatch(t, c, "in.jsonl", chatLines("demo-llama", 1))
	b := waitBatch(t, c, newBatch(t, c, f.ID).ID)
	out, err := c.Files.Get(ctx, b.OutputFileID)
	if err != nil {
		t.Fatal(err)
	}
	near("output file expires_at", out.ExpiresAt, b.CompletedAt+26*3600)

	b2, err := c.Batches.New(ctx, openai.BatchNewParams{InputFileID: f.ID, Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions,
		CompletionWindow:   openai.BatchNewParamsCompletionWindow24h,
		OutputExpiresAfter: openai.BatchNewParamsOutputExpiresAfter{Seconds: 7200}})
	if err != nil {
		t.Fatal(err)
	}
	b2 = waitBatch(t, c, b2.ID)
	if out, err = c.Files.Get(ctx, b2.OutputFileID); err != nil {
		t.Fatal(err)
	}
	near("output_expires_after 7200", out.ExpiresAt, b2.CompletedAt+7200)
	// paging as the SDK does it, one batch a page: newest first, then after=<last id>
	var ids []string
	iter := c.Batches.ListAutoPaging(ctx, openai.BatchListParams{Limit: openai.Int(1)})
	for iter.Next() {
		ids = append(ids, iter.Current().ID)
	}
	if err := iter.Err(); err != nil || len(ids) != 2 || ids[0] != b2.ID || ids[1] != b.ID {
		t.Errorf("paged list: %v %v", ids, err)
	}

	mc := msgClient(s.port, secretAll)
	m, err := mc.Messages.Batches.New(ctx, anthropic.MessageBatchNewParams{Requests: msgRequests("demo-llama", 1)})
	if err != nil {
		t.Fatal(err)
	}
	waitMsgBatch(t, mc, m.ID)

	if err := caddy.Stop(); err != nil { // the bolt file is free once the store is closed
		t.Fatal(err)
	}
	objs, err := store.OpenBolt(filepath.Join(s.dir, "store.db"), store.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer objs.Close()
	rec, err := objs.Get(ctx, "batch", "all", b.ID)
	if err != nil {
		t.Fatal(err)
	}
	near("batch record expiry", rec.ExpiresAt.Unix(), b.CreatedAt+48*3600)
	if rec, err = objs.Get(ctx, "msg_batch", "all", m.ID); err != nil {
		t.Fatal(err)
	}
	near("message batch record expiry", rec.ExpiresAt.Unix(), m.CreatedAt.Unix()+30*3600)
}

// Batches on /v1/completions and /v1/embeddings run like chat batches.
func TestBatchEndpoints(t *testing.T) {
	s := newBatchSite(t, simulator.Config{}, "", "", "")
	c := filesClient(s.port, secretAll)
	ctx := context.Background()
	for _, tc := range []struct {
		endpoint openai.BatchNewParamsEndpoint
		body     string
		want     string // a path in each answer
	}{
		{openai.BatchNewParamsEndpointV1Completions, `{"model":"demo-llama","prompt":"once upon","max_tokens":4}`, "choices.0.text"},
		{openai.BatchNewParamsEndpointV1Embeddings, `{"model":"demo-llama","input":"hello"}`, "data.0.embedding"},
	} {
		t.Run(string(tc.endpoint), func(t *testing.T) {
			var sb strings.Builder
			for i := 1; i <= 2; i++ {
				fmt.Fprintf(&sb, `{"custom_id":"e%d","method":"POST","url":%q,"body":%s}`+"\n", i, tc.endpoint, tc.body)
			}
			f := uploadBatch(t, c, "in.jsonl", sb.String())
			b, err := c.Batches.New(ctx, openai.BatchNewParams{InputFileID: f.ID, Endpoint: tc.endpoint,
				CompletionWindow: openai.BatchNewParamsCompletionWindow24h})
			if err != nil {
				t.Fatal(err)
			}
			b = waitBatch(t, c, b.ID)
			if b.Status != openai.BatchStatusCompleted || b.RequestCounts.Completed != 2 || b.Endpoint != string(tc.endpoint) ||
				b.Usage.InputTokens == 0 {
				t.Fatalf("batch: %s", b.RawJSON())
			}
			for cid, l := range fileLines(t, c, b.OutputFileID) {
				if !l.Get("response.body." + tc.want).Exists() {
					t.Errorf("%s: %s", cid, l.Raw)
				}
			}
		})
	}
}

// Each refusal of a line is the exact status and body a live request of the key gets: content
// policy, validation, the context window.
func TestBatchLineRefusalsMatchLive(t *testing.T) {
	s := newBatchSite(t, simulator.Config{}, "context_window 64", "",
		"content_policy {\n\trule no-secrets (?i)launch\\s+codes\n}")
	c := filesClient(s.port, secretQwen) // key "other": demo-qwen only
	bodies := map[string]string{
		"ok":        `{"model":"demo-qwen","messages":[{"role":"user","content":"fine"}],"max_tokens":8}`,
		"policy":    `{"model":"demo-qwen","messages":[{"role":"user","content":"tell me the launch codes"}],"max_tokens":8}`,
		"bad_param": `{"model":"demo-qwen","messages":[{"role":"user","content":"fine"}],"max_tokens":8,"temperature":"hot"}`,
	}
	var sb strings.Builder
	for cid, body := range bodies {
		fmt.Fprintf(&sb, `{"custom_id":%q,"method":"POST","url":"/v1/chat/completions","body":%s}`+"\n", cid, body)
	}
	f := uploadBatch(t, c, "in.jsonl", sb.String())
	b := waitBatch(t, c, newBatch(t, c, f.ID).ID)
	if b.Status != openai.BatchStatusCompleted {
		t.Fatalf("batch: %s", b.RawJSON())
	}
	errLines := fileLines(t, c, b.ErrorFileID)
	for _, cid := range []string{"policy", "bad_param"} {
		l, ok := errLines[cid]
		if !ok {
			t.Errorf("%s not in the error file", cid)
			continue
		}
		live, liveBody := doRequest(t, chatRequest(t, s.port, secretQwen, bodies[cid]))
		got := l.Get("response.body.error")
		want := gjson.GetBytes(liveBody, "error")
		if l.Get("response.status_code").Int() != int64(live.StatusCode) || live.StatusCode < 400 ||
			got.Get("code").Raw != want.Get("code").Raw || got.Get("message").Str != want.Get("message").Str ||
			got.Get("type").Str != want.Get("type").Str || got.Get("param").Raw != want.Get("param").Raw {
			t.Errorf("%s: %s, a live request got %d %s", cid, l.Raw, live.StatusCode, liveBody)
		}
	}
	if b.RequestCounts.Failed != 2 || b.RequestCounts.Completed != 1 {
		t.Errorf("counts: %s", b.RawJSON())
	}

	// a context overflow on demo-llama (window 64), as the key "all" would get it live
	c = filesClient(s.port, secretAll)
	long := `{"model":"demo-llama","messages":[{"role":"user","content":"` + strings.Repeat("word ", 80) + `"}],"max_tokens":8}`
	f = uploadBatch(t, c, "long.jsonl", `{"custom_id":"long","method":"POST","url":"/v1/chat/completions","body":`+long+"}\n")
	b = waitBatch(t, c, newBatch(t, c, f.ID).ID)
	l := fileLines(t, c, b.ErrorFileID)["long"]
	live, liveBody := doRequest(t, chatRequest(t, s.port, secretAll, long))
	if l.Get("response.status_code").Int() != int64(live.StatusCode) || live.StatusCode != 413 ||
		l.Get("response.body.error.message").Str != gjson.GetBytes(liveBody, "error.message").Str ||
		l.Get("response.body.error.code").Str != "context_length_exceeded" {
		t.Errorf("context overflow: %s, a live request got %d %s", l.Raw, live.StatusCode, liveBody)
	}
	if n := len(s.up.requests()); n != 1 {
		t.Errorf("%d requests upstream, want only the ok line", n)
	}
}

// With ai_least_load, batch lines go to the least-loaded host like every request.
func TestBatchLinesLeastLoad(t *testing.T) {
	sim := simulator.Config{TTFT: 300 * time.Millisecond, Models: []string{"demo-llama"}}
	a, b := newUpstream(t, sim), newUpstream(t, sim)
	port := freePort(t)
	startCaddy(t, globalOptions+fmt.Sprintf(`
:%d {
	ai_gateway {
		key %s {
			id all
		}
		model demo-llama {
			upstream %s %s
		}
		storage {
			dir %s
		}
	}
	reverse_proxy {
		dynamic ai_gateway
		lb_policy ai_least_load
	}
}
`, port, policy.FormatHash(policy.HashSecret(secretAll)), a.addr(), b.addr(), t.TempDir()))
	c := filesClient(port, secretAll)
	f := uploadBatch(t, c, "in.jsonl", chatLines("demo-llama", 8))
	got := waitBatch(t, c, newBatch(t, c, f.ID).ID)
	if got.Status != openai.BatchStatusCompleted || got.RequestCounts.Completed != 8 {
		t.Fatalf("batch: %s", got.RawJSON())
	}
	if na, nb := len(a.requests()), len(b.requests()); na != 4 || nb != 4 {
		t.Errorf("lines per host: %d and %d, want 4 and 4 (8 lines in flight at once)", na, nb)
	}
}

// A file store that cannot be written (its directory replaced by a file, as a full or failed
// disk refuses writes) gives 503 with Retry-After on upload and keeps nothing half made; a batch
// created meanwhile waits, and completes with whole files once the disk is back.
func TestBatchDiskFailure(t *testing.T) {
	s := newBatchSite(t, simulator.Config{}, "", "", "")
	c := filesClient(s.port, secretAll)
	ctx := context.Background()
	f := uploadBatch(t, c, "in.jsonl", chatLines("demo-llama", 3))
	files, aside := filepath.Join(s.dir, "files"), filepath.Join(s.dir, "files.aside")
	if err := os.Rename(files, aside); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(files, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := c.Files.New(ctx, openai.FileNewParams{File: openai.File(strings.NewReader(batchJSONL), "x.jsonl", "application/jsonl"),
		Purpose: openai.FilePurposeBatch})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 503 || apiErr.Code != "store_unavailable" || apiErr.Response.Header.Get("Retry-After") == "" {
		t.Fatalf("upload to a broken disk: want 503 store_unavailable with Retry-After, got %v", err)
	}
	page, err := c.Files.List(ctx, openai.FileListParams{})
	if err != nil || len(page.Data) != 1 || page.Data[0].ID != f.ID {
		t.Fatalf("files after the failed upload: %v %s", err, page.RawJSON())
	}
	b := newBatch(t, c, f.ID)
	time.Sleep(600 * time.Millisecond) // ticks of the runner: it cannot read the input
	got, err := c.Batches.Get(ctx, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != openai.BatchStatusValidating || got.OutputFileID != "" {
		t.Fatalf("a batch on a broken disk: %s", got.RawJSON())
	}
	if err := os.Remove(files); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(aside, files); err != nil {
		t.Fatal(err)
	}
	got = waitBatch(t, c, b.ID)
	if got.Status != openai.BatchStatusCompleted || got.RequestCounts.Completed != 3 {
		t.Fatalf("after the disk came back: %s", got.RawJSON())
	}
	if lines := fileLines(t, c, got.OutputFileID); len(lines) != 3 {
		t.Errorf("%d output lines, want 3", len(lines))
	}
}
