package batch

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/caddyai/gateway/internal/wire"
	"github.com/tidwall/gjson"
)

// readMessageBatch renders m and reads it back with anthropic-sdk-go.
func readMessageBatch(t *testing.T, m *MessageBatch) anthropic.MessageBatch {
	t.Helper()
	body := m.AppendJSON(nil)
	keys := strings.Join(objectKeys(body), ",")
	if keys != "archived_at,cancel_initiated_at,created_at,ended_at,expires_at,id,processing_status,request_counts,results_url,type" {
		t.Fatalf("keys %s", keys)
	}
	var sdk anthropic.MessageBatch
	if err := json.Unmarshal(body, &sdk); err != nil {
		t.Fatal(err)
	}
	if sdk.ID != m.ID || string(sdk.ProcessingStatus) != string(m.ProcessingStatus) || !sdk.CreatedAt.Equal(m.CreatedAt.Truncate(time.Microsecond)) ||
		!sdk.ExpiresAt.Equal(m.ExpiresAt.Truncate(time.Microsecond)) || sdk.RequestCounts.Processing != m.RequestCounts.Processing || string(sdk.Type) != "message_batch" {
		t.Fatalf("anthropic-sdk-go read %+v from %s", sdk, body)
	}
	return sdk
}

func TestMessageBatchLifecycle(t *testing.T) {
	created := time.Date(2025, 6, 1, 12, 0, 0, 123456789, time.FixedZone("CEST", 2*3600))
	m := NewMessageBatch(NewID(PrefixMessageBatch, created), 3, created)
	sdk := readMessageBatch(t, m)
	body := m.AppendJSON(nil)
	if got := gjson.GetBytes(body, "created_at").Str; got != "2025-06-01T10:00:00.123456Z" {
		t.Fatalf("created_at %s", got)
	}
	for _, k := range []string{"ended_at", "archived_at", "cancel_initiated_at", "results_url"} {
		if v := gjson.GetBytes(body, k); !v.Exists() || v.Type != gjson.Null {
			t.Fatalf("%s = %s", k, v.Raw)
		}
	}
	if sdk.ProcessingStatus != anthropic.MessageBatchProcessingStatusInProgress || !sdk.ExpiresAt.Equal(created.Add(24*time.Hour).Truncate(time.Microsecond)) {
		t.Fatalf("%+v", sdk)
	}
	if we := m.Deletable(); we == nil || we.Status != 400 {
		t.Fatalf("deletable while in progress: %v", we)
	}
	if err := m.End(created, "https://gw.example/x"); !errors.Is(err, ErrTransition) {
		t.Fatalf("ended with requests processing: %v", err)
	}
	for _, r := range []ResultType{ResultSucceeded, ResultErrored, ResultSucceeded} {
		if err := m.Record(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Record(ResultSucceeded); !errors.Is(err, ErrTransition) {
		t.Fatalf("a fourth result of three requests: %v", err)
	}
	for _, u := range []string{"", "/v1/messages/batches/x/results", "ftp://gw/x", "https:///x"} {
		if err := m.End(created, u); err == nil {
			t.Fatalf("results URL %q accepted", u)
		}
	}
	resultsURL := "https://gw.example" + ResultsPath(m.ID)
	if err := m.End(created.Add(time.Hour), resultsURL); err != nil {
		t.Fatal(err)
	}
	sdk = readMessageBatch(t, m)
	if sdk.ProcessingStatus != anthropic.MessageBatchProcessingStatusEnded || sdk.ResultsURL != resultsURL || !sdk.EndedAt.Equal(created.Add(time.Hour).Truncate(time.Microsecond)) ||
		sdk.RequestCounts.Succeeded != 2 || sdk.RequestCounts.Errored != 1 || sdk.RequestCounts.Processing != 0 {
		t.Fatalf("%+v", sdk)
	}
	if m.Deletable() != nil {
		t.Fatal("an ended batch is deletable")
	}
	if we := m.Cancel(created.Add(2 * time.Hour)); we == nil || we.Status != 400 {
		t.Fatalf("cancel of an ended batch: %v", we)
	}
	if err := m.End(created, resultsURL); !errors.Is(err, ErrTransition) {
		t.Fatalf("ended twice: %v", err)
	}
}

func TestMessageBatchCancel(t *testing.T) {
	m := NewMessageBatch("msgbatch_1", 2, t0)
	if we := m.Cancel(at0(time.Minute)); we != nil {
		t.Fatal(we)
	}
	if we := m.Cancel(at0(2 * time.Minute)); we != nil || !m.CancelInitiatedAt.Equal(at0(time.Minute)) {
		t.Fatalf("retried cancel: %v, %v", we, m.CancelInitiatedAt)
	}
	if m.Due(at0(48 * time.Hour)) {
		t.Fatal("a canceling batch is not due")
	}
	_ = m.Record(ResultSucceeded)
	_ = m.Record(ResultCanceled)
	if err := m.End(at0(3*time.Minute), "http://localhost:8080"+ResultsPath(m.ID)); err != nil {
		t.Fatal(err)
	}
	sdk := readMessageBatch(t, m)
	if !sdk.CancelInitiatedAt.Equal(at0(time.Minute)) || sdk.RequestCounts.Canceled != 1 || sdk.RequestCounts.Succeeded != 1 {
		t.Fatalf("%+v", sdk)
	}
}

func TestMessageBatchExpiry(t *testing.T) {
	m := NewMessageBatch("msgbatch_1", 1, t0)
	if m.Due(at0(24*time.Hour - time.Nanosecond)) {
		t.Fatal("due early")
	}
	if !m.Due(at0(24 * time.Hour)) {
		t.Fatal("not due")
	}
	if err := m.Record(ResultExpired); err != nil {
		t.Fatal(err)
	}
	if err := m.End(at0(24*time.Hour), "https://gw/x"); err != nil {
		t.Fatal(err)
	}
	if sdk := readMessageBatch(t, m); sdk.RequestCounts.Expired != 1 {
		t.Fatalf("%+v", sdk)
	}
}

func TestMessageBatchListAndDelete(t *testing.T) {
	a, b := NewMessageBatch("msgbatch_b", 1, t0), NewMessageBatch("msgbatch_a", 1, t0)
	page := AppendMessageBatchList(nil, []*MessageBatch{a, b}, true)
	var sdk struct {
		Data    []anthropic.MessageBatch `json:"data"`
		HasMore bool                     `json:"has_more"`
		FirstID string                   `json:"first_id"`
		LastID  string                   `json:"last_id"`
	}
	if err := json.Unmarshal(page, &sdk); err != nil {
		t.Fatal(err)
	}
	if len(sdk.Data) != 2 || !sdk.HasMore || sdk.FirstID != "msgbatch_b" || sdk.LastID != "msgbatch_a" {
		t.Fatalf("%s", page)
	}
	if got := string(AppendMessageBatchList(nil, nil, false)); got != `{"data":[],"has_more":false,"first_id":null,"last_id":null}` {
		t.Fatalf("%s", got)
	}
	var del anthropic.DeletedMessageBatch
	if err := json.Unmarshal(AppendMessageBatchDeleted(nil, "msgbatch_a"), &del); err != nil || del.ID != "msgbatch_a" || string(del.Type) != "message_batch_deleted" {
		t.Fatalf("%+v %v", del, err)
	}
}

func TestResultLines(t *testing.T) {
	msg := `{"id":"msg_1","type":"message","role":"assistant","model":"claude","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":1,"output_tokens":1}}`
	tests := []struct {
		name string
		r    Result
		want string
	}{
		{"succeeded", Result{CustomID: "a", Type: ResultSucceeded, Message: []byte(msg)},
			`{"custom_id":"a","result":{"type":"succeeded","message":` + msg + `}}`},
		{"errored", ErroredResult("b", wire.InvalidRequest("max_tokens", "max_tokens: Field required"), ""),
			`{"custom_id":"b","result":{"type":"errored","error":{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}}}`},
		{"errored with request id", ErroredResult("b", wire.ModelOverloaded("claude", "queue_full", 0), "req_9"),
			`{"custom_id":"b","result":{"type":"errored","error":{"type":"error","error":{"type":"overloaded_error","message":"The model ` + "`claude`" + ` is overloaded right now. Please try again shortly."},"request_id":"req_9"}}}`},
		{"errored without envelope", Result{CustomID: "c", Type: ResultErrored, Error: []byte(`{"error":"x"}`)},
			`{"custom_id":"c","result":{"type":"errored","error":{"type":"error","error":{"type":"api_error","message":"The request failed."}}}}`},
		{"canceled", Result{CustomID: "d", Type: ResultCanceled}, `{"custom_id":"d","result":{"type":"canceled"}}`},
		{"expired", Result{CustomID: "e", Type: ResultExpired}, `{"custom_id":"e","result":{"type":"expired"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			line := tt.r.AppendLine(nil)
			if string(line) != tt.want+"\n" {
				t.Fatalf("got  %s\nwant %s", line, tt.want)
			}
			var sdk anthropic.MessageBatchIndividualResponse
			if err := json.Unmarshal(line, &sdk); err != nil {
				t.Fatal(err)
			}
			if sdk.CustomID != tt.r.CustomID || sdk.Result.Type != string(tt.r.Type) {
				t.Fatalf("anthropic-sdk-go read %+v", sdk)
			}
			switch tt.r.Type {
			case ResultSucceeded:
				if sdk.Result.Message.ID != "msg_1" || sdk.Result.Message.Content[0].Text != "hi" {
					t.Fatalf("%+v", sdk.Result.Message)
				}
			case ResultErrored:
				if sdk.Result.Error.Error.Message == "" || sdk.Result.Error.Error.Type == "" {
					t.Fatalf("%+v", sdk.Result.Error)
				}
			}
		})
	}
}
