package caddymodule_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/caddyserver/caddy/v2"
	"github.com/tidwall/gjson"

	"github.com/caddyai/gateway/simulator"
)

func msgClient(port int, secret string) anthropic.Client {
	return anthropic.NewClient(aoption.WithBaseURL(url(port, "/")), aoption.WithAPIKey(secret), aoption.WithMaxRetries(0))
}

// msgRequests returns n message batch requests "req-1".. for model.
func msgRequests(model string, n int) []anthropic.MessageBatchNewParamsRequest {
	reqs := make([]anthropic.MessageBatchNewParamsRequest, n)
	for i := range reqs {
		reqs[i] = anthropic.MessageBatchNewParamsRequest{CustomID: fmt.Sprintf("req-%d", i+1),
			Params: anthropic.MessageBatchNewParamsRequestParams{Model: anthropic.Model(model), MaxTokens: 8,
				Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(fmt.Sprintf("line %d", i+1)))}}}
	}
	return reqs
}

// waitMsgBatch polls the message batch until it has ended.
func waitMsgBatch(t *testing.T, c anthropic.Client, id string) *anthropic.MessageBatch {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		m, err := c.Messages.Batches.Get(context.Background(), id, anthropic.MessageBatchGetParams{})
		if err != nil {
			t.Fatalf("retrieving message batch %s: %v", id, err)
		}
		if m.ProcessingStatus == anthropic.MessageBatchProcessingStatusEnded {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("message batch %s still %s", id, m.ProcessingStatus)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// msgResults reads a batch's results with the SDK, by custom_id, failing on a repeated one.
func msgResults(t *testing.T, c anthropic.Client, id string) map[string]anthropic.MessageBatchIndividualResponse {
	t.Helper()
	stream := c.Messages.Batches.ResultsStreaming(context.Background(), id, anthropic.MessageBatchResultsParams{})
	out := map[string]anthropic.MessageBatchIndividualResponse{}
	for stream.Next() {
		r := stream.Current()
		if _, dup := out[r.CustomID]; dup {
			t.Errorf("custom_id %s twice in the results", r.CustomID)
		}
		out[r.CustomID] = r
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("reading the results: %v", err)
	}
	return out
}

func anthropicStatus(err error) int {
	var apiErr *anthropic.Error
	if errors.As(err, &apiErr) {
		return apiErr.StatusCode
	}
	return 0
}

func TestMessageBatchRunsThroughGateway(t *testing.T) {
	port, up := batchesSetup(t, simulator.Config{}, "")
	c := msgClient(port, secretAll)
	ctx := context.Background()
	m, err := c.Messages.Batches.New(ctx, anthropic.MessageBatchNewParams{Requests: msgRequests("demo-llama", 3)})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(m.ID, "msgbatch_") || m.ProcessingStatus != anthropic.MessageBatchProcessingStatusInProgress ||
		m.RequestCounts.Processing+m.RequestCounts.Succeeded != 3 || m.ResultsURL != "" {
		t.Fatalf("created: %s", m.RawJSON())
	}
	m = waitMsgBatch(t, c, m.ID)
	if m.RequestCounts.Succeeded != 3 || m.RequestCounts.Processing != 0 || m.EndedAt.IsZero() {
		t.Errorf("ended: %s", m.RawJSON())
	}
	if want := url(port, "/v1/messages/batches/"+m.ID+"/results"); m.ResultsURL != want {
		t.Errorf("results_url %q, want %q", m.ResultsURL, want)
	}
	res := msgResults(t, c, m.ID)
	for i := 1; i <= 3; i++ {
		r, ok := res[fmt.Sprintf("req-%d", i)]
		if !ok || r.Result.Type != "succeeded" || r.Result.Message.Model != "demo-llama" || len(r.Result.Message.Content) == 0 {
			t.Errorf("result of req-%d: %s", i, r.RawJSON())
		}
	}
	if len(res) != 3 || len(up.requests()) != 3 {
		t.Errorf("%d results, %d upstream requests", len(res), len(up.requests()))
	}

	// results_url as the SDKs of other languages use it: absolute, with the normal auth headers
	req, _ := http.NewRequest(http.MethodGet, m.ResultsURL, nil)
	req.Header.Set("X-Api-Key", secretAll)
	req.Header.Set("Anthropic-Version", "2023-06-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-jsonl" || strings.Count(string(body), "\n") != 3 {
		t.Errorf("results: %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}

	page, err := c.Messages.Batches.List(ctx, anthropic.MessageBatchListParams{})
	if err != nil || len(page.Data) != 1 || page.Data[0].ID != m.ID || page.FirstID != m.ID || page.LastID != m.ID || page.HasMore {
		t.Errorf("list: %v %s", err, page.RawJSON())
	}

	// another key: nothing to see, nothing to touch
	other := msgClient(port, secretQwen)
	if _, err := other.Messages.Batches.Get(ctx, m.ID, anthropic.MessageBatchGetParams{}); anthropicStatus(err) != 404 ||
		!strings.Contains(err.Error(), "not_found_error") {
		t.Errorf("another key's retrieve: %v", err)
	}
	if _, err := other.Messages.Batches.Cancel(ctx, m.ID, anthropic.MessageBatchCancelParams{}); anthropicStatus(err) != 404 {
		t.Errorf("another key's cancel: %v", err)
	}
	if _, err := other.Messages.Batches.Delete(ctx, m.ID, anthropic.MessageBatchDeleteParams{}); anthropicStatus(err) != 404 {
		t.Errorf("another key's delete: %v", err)
	}
	stream := other.Messages.Batches.ResultsStreaming(ctx, m.ID, anthropic.MessageBatchResultsParams{})
	if stream.Next() || anthropicStatus(stream.Err()) != 404 {
		t.Errorf("another key's results: %v", stream.Err())
	}
	if page, err := other.Messages.Batches.List(ctx, anthropic.MessageBatchListParams{}); err != nil || len(page.Data) != 0 {
		t.Errorf("another key's list: %v %s", err, page.RawJSON())
	}

	d, err := c.Messages.Batches.Delete(ctx, m.ID, anthropic.MessageBatchDeleteParams{})
	if err != nil || d.ID != m.ID || string(d.Type) != "message_batch_deleted" {
		t.Fatalf("delete: %v", err)
	}
	if _, err := c.Messages.Batches.Get(ctx, m.ID, anthropic.MessageBatchGetParams{}); anthropicStatus(err) != 404 {
		t.Errorf("retrieve after delete: %v", err)
	}
}

func TestMessageBatchRefusedRequestIsErrored(t *testing.T) {
	port, _ := batchesSetup(t, simulator.Config{}, "")
	c := msgClient(port, secretQwen) // may use demo-qwen only
	reqs := append(msgRequests("demo-qwen", 2), msgRequests("demo-llama", 3)[2])
	m, err := c.Messages.Batches.New(context.Background(), anthropic.MessageBatchNewParams{Requests: reqs})
	if err != nil {
		t.Fatal(err)
	}
	m = waitMsgBatch(t, c, m.ID)
	if m.RequestCounts.Succeeded != 2 || m.RequestCounts.Errored != 1 {
		t.Errorf("counts: %s", m.RawJSON())
	}
	res := msgResults(t, c, m.ID)
	if r := res["req-3"]; r.Result.Type != "errored" || r.Result.Error.Error.Type == "" || !strings.Contains(r.Result.Error.Error.Message, "demo-llama") {
		t.Errorf("refused request: %s", r.RawJSON())
	}
	for _, id := range []string{"req-1", "req-2"} {
		if res[id].Result.Type != "succeeded" {
			t.Errorf("%s: %s", id, res[id].RawJSON())
		}
	}
}

func TestMessageBatchCancel(t *testing.T) {
	port, up := batchesSetup(t, simulator.Config{TTFT: 300 * time.Millisecond}, "")
	c := msgClient(port, secretAll)
	ctx := context.Background()
	m, err := c.Messages.Batches.New(ctx, anthropic.MessageBatchNewParams{Requests: msgRequests("demo-llama", 20)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Messages.Batches.Delete(ctx, m.ID, anthropic.MessageBatchDeleteParams{}); anthropicStatus(err) != 400 {
		t.Errorf("deleting a batch in progress: %v", err)
	}
	waitFor(t, "the first request", 10*time.Second, func() bool { return len(up.requests()) > 0 })
	cm, err := c.Messages.Batches.Cancel(ctx, m.ID, anthropic.MessageBatchCancelParams{})
	if err != nil {
		t.Fatal(err)
	}
	if cm.ProcessingStatus != anthropic.MessageBatchProcessingStatusCanceling || cm.CancelInitiatedAt.IsZero() {
		t.Errorf("cancel answered %s", cm.RawJSON())
	}
	m = waitMsgBatch(t, c, m.ID)
	n := m.RequestCounts
	if n.Canceled == 0 || n.Succeeded+n.Errored+n.Canceled != 20 || n.Processing != 0 {
		t.Errorf("counts: %s", m.RawJSON())
	}
	res := msgResults(t, c, m.ID)
	canceled := 0
	for _, r := range res {
		if r.Result.Type == "canceled" {
			canceled++
		}
	}
	if len(res) != 20 || int64(canceled) != n.Canceled {
		t.Errorf("%d results, %d canceled, counts %s", len(res), canceled, m.RawJSON())
	}
	if _, err := c.Messages.Batches.Delete(ctx, m.ID, anthropic.MessageBatchDeleteParams{}); err != nil {
		t.Errorf("deleting the ended batch: %v", err)
	}
}

// msgCall makes a raw Message Batches call as key secret and returns the status and body.
func msgCall(t *testing.T, port int, secret, method, path, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url(port, path), strings.NewReader(body))
	req.Header.Set("X-Api-Key", secret)
	req.Header.Set("Anthropic-Version", "2023-06-01")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestMessageBatchWire(t *testing.T) {
	port, _ := batchesSetup(t, simulator.Config{}, "")
	const one = `{"custom_id":"a","params":{"model":"demo-llama","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}}`

	t.Run("a malformed body is a 400 in the Anthropic envelope", func(t *testing.T) {
		for _, body := range []string{`{"requests":[]}`, `{"requests":[` + one + `,` + one + `]}`, `{"requests":[{"custom_id":"a b","params":{}}]}`, `nope`} {
			st, got := msgCall(t, port, secretAll, "POST", "/v1/messages/batches", body)
			if st != 400 || !strings.Contains(got, `"type":"error"`) || !strings.Contains(got, `"invalid_request_error"`) {
				t.Errorf("%s: %d %s", body, st, got)
			}
		}
		if st, got := msgCall(t, port, secretAll, "GET", "/v1/messages/batches", ""); st != 200 || !strings.Contains(got, `"data":[]`) {
			t.Errorf("nothing kept: %d %s", st, got)
		}
	})

	t.Run("a key barred from batches", func(t *testing.T) {
		if st, got := msgCall(t, port, secretOther, "POST", "/v1/messages/batches", `{"requests":[`+one+`]}`); st != 403 {
			t.Errorf("%d %s", st, got)
		}
	})

	t.Run("stream true is an errored result", func(t *testing.T) {
		body := `{"requests":[{"custom_id":"s","params":{"model":"demo-llama","max_tokens":8,"stream":true,"messages":[{"role":"user","content":"hi"}]}}]}`
		st, got := msgCall(t, port, secretAll, "POST", "/v1/messages/batches?beta=true", body)
		if st != 200 {
			t.Fatalf("%d %s", st, got)
		}
		m := waitMsgBatch(t, msgClient(port, secretAll), gjsonID(got))
		if m.RequestCounts.Errored != 1 {
			t.Errorf("counts: %s", m.RawJSON())
		}
		st, got = msgCall(t, port, secretAll, "GET", "/v1/messages/batches/"+m.ID+"/results", "")
		if st != 200 || !strings.Contains(got, `"type":"errored"`) || !strings.Contains(got, "stream") {
			t.Errorf("results: %d %s", st, got)
		}
	})

	t.Run("paging", func(t *testing.T) {
		c := msgClient(port, secretQwen)
		var ids []string
		for range 3 {
			m, err := c.Messages.Batches.New(context.Background(), anthropic.MessageBatchNewParams{Requests: msgRequests("demo-qwen", 1)})
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, m.ID)
		}
		p1, err := c.Messages.Batches.List(context.Background(), anthropic.MessageBatchListParams{Limit: anthropic.Int(2)})
		if err != nil || len(p1.Data) != 2 || !p1.HasMore || p1.FirstID != ids[2] || p1.LastID != ids[1] {
			t.Fatalf("first page: %v %s", err, p1.RawJSON())
		}
		p2, err := c.Messages.Batches.List(context.Background(), anthropic.MessageBatchListParams{Limit: anthropic.Int(2), AfterID: anthropic.String(p1.LastID)})
		if err != nil || len(p2.Data) != 1 || p2.HasMore || p2.FirstID != ids[0] {
			t.Fatalf("second page: %v %s", err, p2.RawJSON())
		}
		p3, err := c.Messages.Batches.List(context.Background(), anthropic.MessageBatchListParams{Limit: anthropic.Int(1), BeforeID: anthropic.String(ids[0])})
		if err != nil || len(p3.Data) != 1 || p3.FirstID != ids[1] || !p3.HasMore {
			t.Fatalf("before_id: %v %s", err, p3.RawJSON())
		}
		if st, got := msgCall(t, port, secretQwen, "GET", "/v1/messages/batches?limit=0", ""); st != 400 {
			t.Errorf("limit 0: %d %s", st, got)
		}
		if st, got := msgCall(t, port, secretQwen, "GET", "/v1/messages/batches/"+ids[0]+"/results", ""); st != 200 && st != 400 {
			t.Errorf("results: %d %s", st, got)
		}
	})

	t.Run("the messages rows are untouched", func(t *testing.T) {
		st, got := msgCall(t, port, secretAll, "POST", "/v1/messages/count_tokens", `{"model":"demo-llama","messages":[{"role":"user","content":"hi"}]}`)
		if st != 200 || !strings.Contains(got, "input_tokens") {
			t.Errorf("count_tokens: %d %s", st, got)
		}
		st, got = msgCall(t, port, secretAll, "GET", "/v1/messages/batches/msgbatch_nope", "")
		if st != 404 || !strings.Contains(got, "not_found_error") {
			t.Errorf("unknown batch: %d %s", st, got)
		}
	})
}

func gjsonID(body string) string { return gjson.Get(body, "id").Str }

func TestMessageBatchResumesAfterRestart(t *testing.T) {
	port, _, caddyfile := batchesSetupConfig(t, simulator.Config{TTFT: 100 * time.Millisecond}, "")
	c := msgClient(port, secretAll)
	m, err := c.Messages.Batches.New(context.Background(), anthropic.MessageBatchNewParams{Requests: msgRequests("demo-llama", 24)})
	if err != nil {
		t.Fatal(err)
	}
	progress := func(n int64) func() bool {
		return func() bool {
			got, err := c.Messages.Batches.Get(context.Background(), m.ID, anthropic.MessageBatchGetParams{})
			return err == nil && got.RequestCounts.Succeeded >= n
		}
	}
	waitFor(t, "some requests done", 10*time.Second, progress(4))
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	loadCaddy(t, caddyfile)
	m = waitMsgBatch(t, c, m.ID)
	if m.RequestCounts.Succeeded != 24 || m.RequestCounts.Errored != 0 {
		t.Fatalf("batch: %s", m.RawJSON())
	}
	if res := msgResults(t, c, m.ID); len(res) != 24 {
		t.Errorf("%d results, want 24", len(res))
	}
}
