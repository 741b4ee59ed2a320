package caddymodule_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/openai/openai-go/v3"
	"github.com/tidwall/gjson"

	"github.com/caddyai/gateway/internal/wiretest"
	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/simulator"
)

// batchesSetup runs a gateway with its store in a temporary directory: key "all" may use every
// model, key "other" (secretQwen) only demo-qwen.
func batchesSetup(t *testing.T, sim simulator.Config, llamaExtra string) (port int, up *recordingUpstream) {
	t.Helper()
	port, up, _ = batchesSetupConfig(t, sim, llamaExtra)
	return port, up
}

// batchesSetupConfig is batchesSetup that also returns the Caddyfile, to reload or restart it.
func batchesSetupConfig(t *testing.T, sim simulator.Config, llamaExtra string) (port int, up *recordingUpstream, caddyfile string) {
	t.Helper()
	if llamaExtra != "" {
		llamaExtra = "\n\t\t\t\t" + strings.ReplaceAll(llamaExtra, "\n", "\n\t\t\t\t")
	}
	sim.Models = []string{"demo-llama", "demo-qwen"}
	up = newUpstream(t, sim)
	port = freePort(t)
	caddyfile = globalOptions + fmt.Sprintf(`
:%d {
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
			key %s {
				id barred
				no_batches
			}
			model demo-llama {
				upstream %s%s
			}
			model demo-qwen {
				upstream %s
			}
			storage {
				dir %s
			}
		}
		reverse_proxy {
			dynamic ai_gateway
		}
	}
}
`, port, policy.FormatHash(policy.HashSecret(secretAll)), policy.FormatHash(policy.HashSecret(secretQwen)),
		policy.FormatHash(policy.HashSecret(secretOther)), up.addr(), llamaExtra, up.addr(), t.TempDir())
	startCaddy(t, caddyfile)
	return port, up, caddyfile
}

// chatLines returns an input file of n chat lines for model.
func chatLines(model string, n int) string {
	var sb strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&sb, `{"custom_id":"req-%d","method":"POST","url":"/v1/chat/completions","body":{"model":%q,"messages":[{"role":"user","content":"line %d"}],"max_tokens":8}}`+"\n", i, model, i)
	}
	return sb.String()
}

func newBatch(t *testing.T, c openai.Client, fileID string) *openai.Batch {
	t.Helper()
	b, err := c.Batches.New(context.Background(), openai.BatchNewParams{
		CompletionWindow: openai.BatchNewParamsCompletionWindow24h,
		Endpoint:         openai.BatchNewParamsEndpointV1ChatCompletions,
		InputFileID:      fileID,
	})
	if err != nil {
		t.Fatalf("creating a batch: %v", err)
	}
	wiretest.ValidateNullAsAbsent(t, "Batch", []byte(b.RawJSON()))
	return b
}

// waitBatch polls the batch until it reaches a terminal status, validating each object.
func waitBatch(t *testing.T, c openai.Client, id string) *openai.Batch {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, err := c.Batches.Get(context.Background(), id)
		if err != nil {
			t.Fatalf("retrieving batch %s: %v", id, err)
		}
		wiretest.ValidateNullAsAbsent(t, "Batch", []byte(b.RawJSON()))
		switch b.Status {
		case openai.BatchStatusCompleted, openai.BatchStatusFailed, openai.BatchStatusExpired, openai.BatchStatusCancelled:
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("batch %s still %s", id, b.Status)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// fileLines downloads a file and returns its lines by custom_id, failing on a repeated one.
func fileLines(t *testing.T, c openai.Client, id string) map[string]gjson.Result {
	t.Helper()
	f, err := c.Files.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("retrieving file %s: %v", id, err)
	}
	wiretest.ValidateNullAsAbsent(t, "OpenAIFile", []byte(f.RawJSON()))
	if f.Purpose != "batch_output" {
		t.Errorf("file %s: purpose %q, want batch_output", id, f.Purpose)
	}
	resp, err := c.Files.Content(context.Background(), id)
	if err != nil {
		t.Fatalf("downloading file %s: %v", id, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	lines := map[string]gjson.Result{}
	for _, l := range strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n") {
		if !gjson.Valid(l) {
			t.Fatalf("file %s: line is not JSON: %s", id, l)
		}
		r := gjson.Parse(l)
		cid := r.Get("custom_id").String()
		if _, dup := lines[cid]; dup {
			t.Errorf("file %s: custom_id %s appears twice", id, cid)
		}
		if !strings.HasPrefix(r.Get("id").String(), "batch_req_") {
			t.Errorf("file %s: line id %q", id, r.Get("id"))
		}
		lines[cid] = r
	}
	return lines
}

func TestBatchRunsThroughGateway(t *testing.T) {
	port, up := batchesSetup(t, simulator.Config{}, "")
	c := filesClient(port, secretAll)
	f := uploadBatch(t, c, "in.jsonl", chatLines("demo-llama", 3))
	b := newBatch(t, c, f.ID)
	if b.Status != openai.BatchStatusValidating || b.InputFileID != f.ID || !strings.HasPrefix(b.ID, "batch_") {
		t.Fatalf("created batch: %s", b.RawJSON())
	}
	b = waitBatch(t, c, b.ID)
	if b.Status != openai.BatchStatusCompleted {
		t.Fatalf("batch ended %s: %s", b.Status, b.RawJSON())
	}
	if rc := b.RequestCounts; rc.Total != 3 || rc.Completed != 3 || rc.Failed != 0 {
		t.Errorf("request_counts %+v", rc)
	}
	if b.Usage.TotalTokens == 0 || b.Usage.InputTokens == 0 || b.Model != "demo-llama" {
		t.Errorf("usage %s, model %q", b.Usage.RawJSON(), b.Model)
	}
	if b.ErrorFileID != "" || b.InProgressAt == 0 || b.FinalizingAt == 0 || b.CompletedAt == 0 {
		t.Errorf("completed batch: %s", b.RawJSON())
	}
	lines := fileLines(t, c, b.OutputFileID)
	for i := 1; i <= 3; i++ {
		l, ok := lines[fmt.Sprintf("req-%d", i)]
		switch {
		case !ok:
			t.Errorf("req-%d missing from the output", i)
		case l.Get("response.status_code").Int() != 200 || l.Get("response.body.object").String() != "chat.completion" ||
			l.Get("error").Type != gjson.Null || l.Get("response.request_id").String() == "":
			t.Errorf("req-%d: %s", i, l.Raw)
		}
	}
	if len(lines) != 3 {
		t.Errorf("%d output lines, want 3", len(lines))
	}
	if n := len(up.requests()); n != 3 {
		t.Errorf("the upstream got %d requests, want 3 (each line once)", n)
	}
	metrics := &usageSetup{port: port}
	if n := metrics.metric(t, "caddy_ai_gateway_batch_lines_total", map[string]string{"model": "demo-llama", "outcome": "done"}); n < 3 {
		t.Errorf("batch_lines_total{outcome=done} = %v, want at least 3", n)
	}
	if n := metrics.metric(t, "caddy_ai_gateway_batch_tokens_total", map[string]string{"model": "demo-llama", "kind": "prompt"}); n <= 0 {
		t.Errorf("batch_tokens_total{kind=prompt} = %v", n)
	}
	// the list: newest first, every object valid
	c2 := uploadBatch(t, c, "in2.jsonl", chatLines("demo-llama", 1))
	b2 := newBatch(t, c, c2.ID)
	page, err := c.Batches.List(context.Background(), openai.BatchListParams{})
	if err != nil {
		t.Fatal(err)
	}
	wiretest.ValidateNullAsAbsent(t, "ListBatchesResponse", []byte(page.RawJSON()))
	if len(page.Data) != 2 || page.Data[0].ID != b2.ID || page.Data[1].ID != b.ID {
		t.Errorf("list: %s", page.RawJSON())
	}
	page, err = c.Batches.List(context.Background(), openai.BatchListParams{Limit: openai.Int(1)})
	if err != nil || len(page.Data) != 1 || !page.HasMore {
		t.Fatalf("list limit 1: %v %s", err, page.RawJSON())
	}
	waitBatch(t, c, b2.ID)
}

func TestBatchRefusedLinesGoToErrorFile(t *testing.T) {
	port, up := batchesSetup(t, simulator.Config{}, "")
	c := filesClient(port, secretQwen) // key "other": demo-qwen only
	f := uploadBatch(t, c, "in.jsonl", chatLines("demo-llama", 2))
	b := waitBatch(t, c, newBatch(t, c, f.ID).ID)
	if b.Status != openai.BatchStatusCompleted || b.OutputFileID != "" || b.ErrorFileID == "" {
		t.Fatalf("batch: %s", b.RawJSON())
	}
	if rc := b.RequestCounts; rc.Total != 2 || rc.Completed != 0 || rc.Failed != 2 {
		t.Errorf("request_counts %+v", rc)
	}
	// the exact status and body a live request of the key gets
	live, liveBody := doRequest(t, chatRequest(t, port, secretQwen, `{"model":"demo-llama","messages":[{"role":"user","content":"line 1"}],"max_tokens":8}`))
	for cid, l := range fileLines(t, c, b.ErrorFileID) {
		if got := l.Get("response.status_code").Int(); got != int64(live.StatusCode) || got < 400 {
			t.Errorf("%s: status %d, a live request got %d", cid, got, live.StatusCode)
		}
		if l.Get("response.body.error.code").String() != gjson.GetBytes(liveBody, "error.code").String() ||
			l.Get("response.body.error.message").String() != gjson.GetBytes(liveBody, "error.message").String() {
			t.Errorf("%s: body %s, a live request got %s", cid, l.Get("response.body").Raw, liveBody)
		}
	}
	if n := len(up.requests()); n != 0 {
		t.Errorf("the upstream got %d requests of refused lines", n)
	}
}

func chatRequest(t *testing.T, port int, secret, body string) *http.Request {
	t.Helper()
	return jsonRequest(t, port, "/v1/chat/completions", secret, body)
}

// jsonRequest is a POST of the JSON body to the gateway's path with secret as bearer token.
func jsonRequest(t testing.TB, port int, path, secret, body string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url(port, path), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+secret)
	req.Header.Set("Content-Type", "application/json")
	return req
}

func TestBatchMalformedFileFails(t *testing.T) {
	port, _ := batchesSetup(t, simulator.Config{}, "")
	c := filesClient(port, secretAll)
	content := `{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"demo-llama","messages":[]}}
{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"demo-llama","messages":[]}}
{"custom_id":"b","method":"POST","url":"/v1/embeddings","body":{"model":"demo-llama","input":"x"}}
`
	f := uploadBatch(t, c, "bad.jsonl", content)
	b := waitBatch(t, c, newBatch(t, c, f.ID).ID)
	if b.Status != openai.BatchStatusFailed || b.FailedAt == 0 {
		t.Fatalf("batch: %s", b.RawJSON())
	}
	errs := b.Errors.Data
	if len(errs) != 2 || errs[0].Line != 2 || errs[0].Code != "duplicate_custom_id" || errs[1].Line != 3 || errs[1].Code != "url_mismatch" {
		t.Errorf("errors: %s", b.Errors.RawJSON())
	}
	for _, e := range errs {
		wiretest.ValidateNullAsAbsent(t, "BatchError", []byte(e.RawJSON()))
	}
}

func TestBatchCreateRefusals(t *testing.T) {
	port, _ := batchesSetup(t, simulator.Config{}, "")
	c := filesClient(port, secretAll)
	_, err := c.Batches.New(context.Background(), openai.BatchNewParams{CompletionWindow: openai.BatchNewParamsCompletionWindow24h,
		Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions, InputFileID: "file-nope"})
	if status(err) != http.StatusBadRequest {
		t.Errorf("unknown input file: %v", err)
	}
	if _, err := c.Batches.Get(context.Background(), "batch_nope"); status(err) != http.StatusNotFound {
		t.Errorf("unknown batch: %v", err)
	}
	barred := filesClient(port, secretOther)
	f := uploadBatch(t, barred, "in.jsonl", chatLines("demo-llama", 1))
	_, err = barred.Batches.New(context.Background(), openai.BatchNewParams{CompletionWindow: openai.BatchNewParamsCompletionWindow24h,
		Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions, InputFileID: f.ID})
	if status(err) != http.StatusForbidden {
		t.Errorf("a key with no_batches: %v", err)
	}
	qf := uploadBatch(t, filesClient(port, secretQwen), "in.jsonl", chatLines("demo-qwen", 1))
	_, err = c.Batches.New(context.Background(), openai.BatchNewParams{CompletionWindow: openai.BatchNewParamsCompletionWindow24h,
		Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions, InputFileID: qf.ID})
	if status(err) != http.StatusBadRequest {
		t.Errorf("another key's file: %v", err)
	}
}

func TestBatchOwnership(t *testing.T) {
	port, _ := batchesSetup(t, simulator.Config{}, "")
	c, other := filesClient(port, secretAll), filesClient(port, secretQwen)
	f := uploadBatch(t, c, "in.jsonl", chatLines("demo-llama", 1))
	b := newBatch(t, c, f.ID)
	if _, err := other.Batches.Get(context.Background(), b.ID); status(err) != http.StatusNotFound {
		t.Errorf("another key's retrieve: %v", err)
	}
	if _, err := other.Batches.Cancel(context.Background(), b.ID); status(err) != http.StatusNotFound {
		t.Errorf("another key's cancel: %v", err)
	}
	page, err := other.Batches.List(context.Background(), openai.BatchListParams{})
	if err != nil || len(page.Data) != 0 {
		t.Errorf("another key's list: %v %s", err, page.RawJSON())
	}
	_, err = other.Batches.New(context.Background(), openai.BatchNewParams{CompletionWindow: openai.BatchNewParamsCompletionWindow24h,
		Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions, InputFileID: f.ID})
	if status(err) != http.StatusBadRequest {
		t.Errorf("a batch of another key's file: %v", err)
	}
	done := waitBatch(t, c, b.ID)
	if _, err := other.Files.Get(context.Background(), done.OutputFileID); status(err) != http.StatusNotFound {
		t.Errorf("another key's output file: %v", err)
	}
}

func TestBatchCancel(t *testing.T) {
	port, up := batchesSetup(t, simulator.Config{TTFT: 300 * time.Millisecond}, "")
	c := filesClient(port, secretAll)
	f := uploadBatch(t, c, "in.jsonl", chatLines("demo-llama", 20))
	b := newBatch(t, c, f.ID)
	waitFor(t, "the first line", 10*time.Second, func() bool { return len(up.requests()) > 0 })
	cb, err := c.Batches.Cancel(context.Background(), b.ID)
	if err != nil {
		t.Fatal(err)
	}
	wiretest.ValidateNullAsAbsent(t, "Batch", []byte(cb.RawJSON()))
	if cb.Status != openai.BatchStatusCancelling && cb.Status != openai.BatchStatusCancelled {
		t.Errorf("cancel answered %s", cb.Status)
	}
	b = waitBatch(t, c, b.ID)
	if b.Status != openai.BatchStatusCancelled || b.CancelledAt == 0 || b.CancellingAt == 0 {
		t.Fatalf("batch: %s", b.RawJSON())
	}
	seen := map[string]bool{}
	if b.OutputFileID != "" {
		for cid, l := range fileLines(t, c, b.OutputFileID) {
			seen[cid] = true
			if l.Get("response.status_code").Int() != 200 {
				t.Errorf("%s: %s", cid, l.Raw)
			}
		}
	}
	cancelled := 0
	for cid, l := range fileLines(t, c, b.ErrorFileID) {
		if seen[cid] {
			t.Errorf("%s in both files", cid)
		}
		seen[cid] = true
		if l.Get("error.code").String() == "batch_cancelled" {
			cancelled++
		}
	}
	if len(seen) != 20 || cancelled == 0 {
		t.Errorf("%d custom_ids across the files (want 20), %d cancelled", len(seen), cancelled)
	}
	if _, err := c.Batches.Cancel(context.Background(), b.ID); status(err) != http.StatusBadRequest {
		t.Errorf("cancelling a cancelled batch: %v", err)
	}
}

// status is the HTTP status of an SDK error, 0 for none.
func status(err error) int {
	if apiErr, ok := err.(*openai.Error); ok {
		return apiErr.StatusCode
	}
	return 0
}

// A batch line takes spare capacity only: while an interactive request holds the model's one
// slot, no line is sent; once it ends, the batch runs.
func TestBatchUsesSpareCapacityOnly(t *testing.T) {
	port, up := batchesSetup(t, simulator.Config{TTFT: 600 * time.Millisecond}, "max_concurrent 1\nqueue 8")
	c := filesClient(port, secretAll)
	f := uploadBatch(t, c, "in.jsonl", chatLines("demo-llama", 2))
	interactive := make(chan int, 1)
	go func() {
		resp, err := http.DefaultClient.Do(chatRequest(t, port, secretAll, `{"model":"demo-llama","messages":[{"role":"user","content":"hi"}]}`))
		if err != nil {
			interactive <- 0
			return
		}
		resp.Body.Close()
		interactive <- len(up.requests())
	}()
	waitFor(t, "the interactive request upstream", 5*time.Second, func() bool { return len(up.requests()) == 1 })
	b := newBatch(t, c, f.ID)
	if n := <-interactive; n != 1 {
		t.Errorf("%d requests reached the upstream while the interactive one held the only slot, want 1", n)
	}
	b = waitBatch(t, c, b.ID)
	if b.Status != openai.BatchStatusCompleted || b.RequestCounts.Completed != 2 {
		t.Fatalf("batch: %s", b.RawJSON())
	}
}

// A batch survives a restart of the server (the store and its runner closed and opened again)
// and a config reload: every custom_id appears exactly once across the files.
func TestBatchResumesAfterRestartAndReload(t *testing.T) {
	port, _, caddyfile := batchesSetupConfig(t, simulator.Config{TTFT: 100 * time.Millisecond}, "")
	c := filesClient(port, secretAll)
	f := uploadBatch(t, c, "in.jsonl", chatLines("demo-llama", 24))
	b := newBatch(t, c, f.ID)
	progress := func(n int64) func() bool {
		return func() bool {
			got, err := c.Batches.Get(context.Background(), b.ID)
			return err == nil && got.RequestCounts.Completed >= n
		}
	}
	waitFor(t, "some lines done", 10*time.Second, progress(4))
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	loadCaddy(t, caddyfile)
	waitFor(t, "more lines done", 10*time.Second, progress(12))
	loadCaddy(t, caddyfile) // a reload keeps the store and its runner
	b = waitBatch(t, c, b.ID)
	if b.Status != openai.BatchStatusCompleted || b.RequestCounts.Completed != 24 || b.RequestCounts.Failed != 0 {
		t.Fatalf("batch: %s", b.RawJSON())
	}
	if lines := fileLines(t, c, b.OutputFileID); len(lines) != 24 {
		t.Errorf("%d output lines, want 24", len(lines))
	}
}
