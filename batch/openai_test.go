package batch

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/caddyai/gateway/internal/wiretest"
	"github.com/openai/openai-go/v3"
	"github.com/tidwall/gjson"
)

var t0 = time.Unix(1_750_000_000, 0)

func at0(d time.Duration) time.Time { return t0.Add(d) }

func newTestBatch(t *testing.T) *Batch {
	t.Helper()
	req, err := ParseCreateRequest([]byte(`{"input_file_id":"file-in","endpoint":"/v1/chat/completions","completion_window":"24h","metadata":{"job":"nightly"}}`), endpoints)
	if err != nil {
		t.Fatal(err)
	}
	return NewBatch(NewID(PrefixBatch, t0), req, t0)
}

// specKeys returns the property names of a schema of the spec.
func specKeys(t *testing.T, schema string) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(wiretest.RepoRoot(t), "testdata", "spec", "openai-openapi.json"))
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	gjson.GetBytes(raw, "components.schemas."+schema+".properties").ForEach(func(k, _ gjson.Result) bool {
		keys = append(keys, k.Str)
		return true
	})
	sort.Strings(keys)
	return keys
}

func objectKeys(body []byte) []string {
	var keys []string
	gjson.ParseBytes(body).ForEach(func(k, _ gjson.Result) bool {
		keys = append(keys, k.Str)
		return true
	})
	sort.Strings(keys)
	return keys
}

// checkBatch validates a rendered batch against the spec and reads it back with openai-go.
func checkBatch(t *testing.T, b *Batch) openai.Batch {
	t.Helper()
	body := b.AppendJSON(nil)
	wiretest.ValidateNullAsAbsent(t, "Batch", body)
	if got, want := objectKeys(body), specKeys(t, "Batch"); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("keys %v, spec %v", got, want)
	}
	var sdk openai.Batch
	if err := json.Unmarshal(body, &sdk); err != nil {
		t.Fatal(err)
	}
	if sdk.ID != b.ID || string(sdk.Status) != string(b.Status) || sdk.CreatedAt != b.CreatedAt.Unix() ||
		sdk.ExpiresAt != b.ExpiresAt.Unix() || sdk.RequestCounts.Total != b.RequestCounts.Total {
		t.Fatalf("openai-go read %+v from %s", sdk, body)
	}
	return sdk
}

func TestBatchLifecycleCompleted(t *testing.T) {
	b := newTestBatch(t)
	if !strings.HasPrefix(b.ID, "batch_") || b.Status != StatusValidating || !b.ExpiresAt.Equal(at0(24*time.Hour)) {
		t.Fatalf("%+v", b)
	}
	sdk := checkBatch(t, b)
	if sdk.JSON.InProgressAt.Valid() || sdk.JSON.Errors.Valid() || sdk.JSON.Model.Valid() || sdk.Metadata["job"] != "nightly" {
		t.Fatalf("validating batch read as %+v", sdk)
	}
	body := b.AppendJSON(nil)
	for _, k := range []string{"model", "errors", "output_file_id", "error_file_id", "in_progress_at", "finalizing_at",
		"completed_at", "failed_at", "expired_at", "cancelling_at", "cancelled_at"} {
		if v := gjson.GetBytes(body, k); !v.Exists() || v.Type != gjson.Null {
			t.Fatalf("%s = %s", k, v.Raw)
		}
	}
	if err := b.Start(at0(time.Minute), "m", 3); err != nil {
		t.Fatal(err)
	}
	checkBatch(t, b)
	if err := b.Finalize(at0(2 * time.Minute)); !errors.Is(err, ErrTransition) {
		t.Fatalf("finalizing with requests left: %v", err)
	}
	b.RequestCounts.Completed, b.RequestCounts.Failed = 2, 1
	b.Usage.Add(wire.Usage{PromptTokens: 10, CompletionTokens: 5, CachedTokens: 4})
	b.Usage.Add(wire.Usage{PromptTokens: 1, CompletionTokens: 1, TotalTokens: 2})
	b.Usage.ReasoningTokens = 3
	if err := b.Finalize(at0(2 * time.Minute)); err != nil {
		t.Fatal(err)
	}
	checkBatch(t, b)
	if err := b.Complete(at0(3*time.Minute), "file-out", "file-err"); err != nil {
		t.Fatal(err)
	}
	sdk = checkBatch(t, b)
	if sdk.Status != openai.BatchStatusCompleted || sdk.InProgressAt != at0(time.Minute).Unix() || sdk.FinalizingAt != at0(2*time.Minute).Unix() ||
		sdk.CompletedAt != at0(3*time.Minute).Unix() || sdk.OutputFileID != "file-out" || sdk.ErrorFileID != "file-err" || sdk.Model != "m" ||
		sdk.RequestCounts.Completed != 2 || sdk.RequestCounts.Failed != 1 || sdk.JSON.FailedAt.Valid() {
		t.Fatalf("completed batch read as %+v", sdk)
	}
	if u := sdk.Usage; u.InputTokens != 11 || u.InputTokensDetails.CachedTokens != 4 || u.OutputTokens != 6 ||
		u.OutputTokensDetails.ReasoningTokens != 3 || u.TotalTokens != 17 {
		t.Fatalf("usage %+v", u)
	}
	// Nothing moves a completed batch.
	for name, err := range map[string]error{
		"start": b.Start(t0, "m", 1), "fail": b.Fail(t0, nil), "finalize": b.Finalize(t0),
		"complete": b.Complete(t0, "", ""), "expire": b.Expire(t0, "", ""), "finish cancel": b.FinishCancel(t0, "", ""),
	} {
		if !errors.Is(err, ErrTransition) {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if b.Status != StatusCompleted || !b.CompletedAt.Equal(at0(3*time.Minute)) {
		t.Fatalf("changed by a refused move: %+v", b)
	}
}

func TestBatchLifecycleFailed(t *testing.T) {
	b := newTestBatch(t)
	in, err := ReadInput(strings.NewReader(req("a")+"\n"+req("a")+"\nnope\n"), chat, InputLimits{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Fail(at0(time.Second), in.Errors); err != nil {
		t.Fatal(err)
	}
	sdk := checkBatch(t, b)
	if sdk.Status != openai.BatchStatusFailed || sdk.FailedAt != at0(time.Second).Unix() || len(sdk.Errors.Data) != 2 ||
		sdk.Errors.Object != "list" || sdk.Errors.Data[0].Code != CodeDuplicateCustomID || sdk.Errors.Data[0].Line != 2 ||
		sdk.Errors.Data[0].Param != "custom_id" || sdk.Errors.Data[1].Line != 3 || sdk.Errors.Data[1].JSON.Param.Valid() {
		t.Fatalf("failed batch read as %+v", sdk)
	}
	for _, e := range in.Errors {
		wiretest.Validate(t, "BatchError", e.AppendJSON(nil))
	}
	empty := LineError{Code: CodeEmptyFile, Message: "The input file has no requests."}
	wiretest.Validate(t, "BatchError", empty.AppendJSON(nil))
	if got := string(empty.AppendJSON(nil)); got != `{"code":"empty_file","message":"The input file has no requests.","param":null,"line":null}` {
		t.Fatalf("%s", got)
	}
	if we := b.Cancel(at0(time.Hour)); we == nil || we.Status != 400 {
		t.Fatalf("cancel of a failed batch: %v", we)
	}
}

func TestBatchLifecycleExpired(t *testing.T) {
	b := newTestBatch(t)
	if b.Due(at0(25 * time.Hour)) {
		t.Fatal("a validating batch is not due")
	}
	if err := b.Start(at0(time.Minute), "m", 10); err != nil {
		t.Fatal(err)
	}
	if b.Due(at0(24*time.Hour - time.Second)) {
		t.Fatal("due before the window ends")
	}
	if !b.Due(at0(24 * time.Hour)) {
		t.Fatal("not due at the window's end")
	}
	if err := b.Expire(at0(24*time.Hour), "file-out", "file-err"); err != nil {
		t.Fatal(err)
	}
	sdk := checkBatch(t, b)
	if sdk.Status != openai.BatchStatusExpired || sdk.ExpiredAt != at0(24*time.Hour).Unix() || b.Due(at0(48*time.Hour)) {
		t.Fatalf("expired batch read as %+v", sdk)
	}
}

func TestBatchLifecycleCancel(t *testing.T) {
	for _, from := range []Status{StatusValidating, StatusInProgress, StatusFinalizing} {
		t.Run(string(from), func(t *testing.T) {
			b := newTestBatch(t)
			if from != StatusValidating {
				_ = b.Start(at0(time.Minute), "m", 0)
			}
			if from == StatusFinalizing {
				if err := b.Finalize(at0(2 * time.Minute)); err != nil {
					t.Fatal(err)
				}
			}
			if we := b.Cancel(at0(time.Hour)); we != nil {
				t.Fatal(we)
			}
			checkBatch(t, b)
			// A retried cancel succeeds and keeps the first time.
			if we := b.Cancel(at0(2 * time.Hour)); we != nil || !b.CancellingAt.Equal(at0(time.Hour)) {
				t.Fatalf("second cancel: %v, cancelling_at %v", we, b.CancellingAt)
			}
			// The runner can no longer start, finalize or complete it.
			if err := b.Start(t0, "m", 1); !errors.Is(err, ErrTransition) {
				t.Fatal(err)
			}
			if err := b.Complete(t0, "", ""); !errors.Is(err, ErrTransition) {
				t.Fatal(err)
			}
			if err := b.FinishCancel(at0(time.Hour+time.Minute), "file-out", ""); err != nil {
				t.Fatal(err)
			}
			sdk := checkBatch(t, b)
			if sdk.Status != openai.BatchStatusCancelled || sdk.CancellingAt != at0(time.Hour).Unix() ||
				sdk.CancelledAt != at0(time.Hour+time.Minute).Unix() || sdk.OutputFileID != "file-out" || sdk.JSON.ErrorFileID.Valid() {
				t.Fatalf("cancelled batch read as %+v", sdk)
			}
			we := b.Cancel(at0(3 * time.Hour))
			if we == nil || we.Status != 400 || we.Message != "Cannot cancel a batch with status 'cancelled'." {
				t.Fatalf("cancel of a cancelled batch: %v", we)
			}
			wiretest.Validate(t, "ErrorResponse", wire.AppendOpenAI(nil, we))
		})
	}
}

func TestBatchCancelTerminal(t *testing.T) {
	for _, s := range []Status{StatusFailed, StatusCompleted, StatusExpired, StatusCancelled} {
		if !s.Terminal() {
			t.Fatalf("%s not terminal", s)
		}
		b := &Batch{ID: "batch_x", Status: s}
		we := b.Cancel(t0)
		if we == nil || we.Status != 400 || b.Status != s || !b.CancellingAt.IsZero() {
			t.Fatalf("%s: %v", s, we)
		}
	}
	for _, s := range []Status{StatusValidating, StatusInProgress, StatusFinalizing, StatusCancelling} {
		if s.Terminal() {
			t.Fatalf("%s terminal", s)
		}
	}
}

func TestFileJSON(t *testing.T) {
	f := &File{ID: NewID(PrefixFile, t0), Bytes: 1234, CreatedAt: t0, ExpiresAt: at0(30 * 24 * time.Hour), Filename: "in.jsonl", Purpose: PurposeBatch}
	body := f.AppendJSON(nil)
	wiretest.ValidateNullAsAbsent(t, "OpenAIFile", body)
	if got, want := objectKeys(body), specKeys(t, "OpenAIFile"); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("keys %v, spec %v", got, want)
	}
	var sdk openai.FileObject
	if err := json.Unmarshal(body, &sdk); err != nil {
		t.Fatal(err)
	}
	if sdk.ID != f.ID || sdk.Bytes != 1234 || sdk.CreatedAt != t0.Unix() || sdk.ExpiresAt != f.ExpiresAt.Unix() || sdk.Filename != "in.jsonl" ||
		sdk.Purpose != openai.FileObjectPurposeBatch || sdk.Status != openai.FileObjectStatusProcessed || sdk.JSON.StatusDetails.Valid() {
		t.Fatalf("openai-go read %+v from %s", sdk, body)
	}
	// A file with every field set validates strictly.
	out := &File{ID: "file-out", Bytes: 1, CreatedAt: t0, ExpiresAt: t0, Filename: "o.jsonl", Purpose: PurposeBatchOutput, Status: "processed", StatusDetails: "ok"}
	wiretest.Validate(t, "OpenAIFile", out.AppendJSON(nil))
	// No expiry is null.
	never := &File{ID: "file-ft", CreatedAt: t0, Filename: "t.jsonl", Purpose: "fine-tune"}
	if v := gjson.GetBytes(never.AppendJSON(nil), "expires_at"); v.Type != gjson.Null {
		t.Fatalf("expires_at %s", v.Raw)
	}

	del := AppendFileDeleted(nil, f.ID)
	wiretest.Validate(t, "DeleteFileResponse", del)
	var sdkDel openai.FileDeleted
	if err := json.Unmarshal(del, &sdkDel); err != nil || !sdkDel.Deleted || sdkDel.ID != f.ID {
		t.Fatalf("%s: %v", del, err)
	}
}

func TestListJSON(t *testing.T) {
	files := []*File{
		{ID: "file-2", Bytes: 2, CreatedAt: t0, Filename: "b.jsonl", Purpose: PurposeBatch},
		{ID: "file-1", Bytes: 1, CreatedAt: t0, Filename: "a.jsonl", Purpose: PurposeBatchOutput},
	}
	page := AppendFileList(nil, files, true)
	wiretest.ValidateNullAsAbsent(t, "ListFilesResponse", page)
	if g := gjson.ParseBytes(page); g.Get("first_id").Str != "file-2" || g.Get("last_id").Str != "file-1" || !g.Get("has_more").Bool() ||
		g.Get("object").Str != "list" || len(g.Get("data").Array()) != 2 {
		t.Fatalf("%s", page)
	}
	empty := AppendFileList(nil, nil, false)
	if string(empty) != `{"object":"list","data":[],"first_id":null,"last_id":null,"has_more":false}` {
		t.Fatalf("%s", empty)
	}

	a, b := newTestBatch(t), newTestBatch(t)
	_ = b.Start(t0, "m", 1)
	bpage := AppendBatchList(nil, []*Batch{b, a}, false)
	wiretest.ValidateNullAsAbsent(t, "ListBatchesResponse", bpage)
	if g := gjson.ParseBytes(bpage); g.Get("first_id").Str != b.ID || g.Get("last_id").Str != a.ID || g.Get("has_more").Bool() {
		t.Fatalf("%s", bpage)
	}
	bempty := AppendBatchList(nil, nil, false)
	wiretest.ValidateNullAsAbsent(t, "ListBatchesResponse", bempty)
}

func TestOutputLine(t *testing.T) {
	tests := []struct {
		name string
		line OutputLine
		want string
	}{
		{"answer", OutputLine{ID: "batch_req_1", CustomID: "r1", StatusCode: 200, RequestID: "req_1", Body: []byte(`{"id":"chatcmpl-1"}`)},
			`{"id":"batch_req_1","custom_id":"r1","response":{"status_code":200,"request_id":"req_1","body":{"id":"chatcmpl-1"}},"error":null}`},
		{"refused", OutputLine{ID: "batch_req_2", CustomID: "r2", StatusCode: 429, RequestID: "req_2",
			Body: wire.AppendOpenAI(nil, wire.InvalidRequest("model", "no"))},
			`{"id":"batch_req_2","custom_id":"r2","response":{"status_code":429,"request_id":"req_2","body":{"error":{"message":"no","type":"invalid_request_error","param":"model","code":null}}},"error":null}`},
		{"expired", OutputLine{ID: "batch_req_3", CustomID: "r3", ErrorCode: CodeBatchExpired, ErrorMessage: "This request could not be executed before the completion window expired."},
			`{"id":"batch_req_3","custom_id":"r3","response":null,"error":{"code":"batch_expired","message":"This request could not be executed before the completion window expired."}}`},
		{"pretty body", OutputLine{ID: "i", CustomID: "c", StatusCode: 200, Body: []byte("{\r\n  \"a\": [1,\n 2]\n}\n")},
			`{"id":"i","custom_id":"c","response":{"status_code":200,"request_id":null,"body":{  "a": [1, 2]}},"error":null}`},
		{"not json", OutputLine{ID: "i", CustomID: "c", StatusCode: 502, Body: []byte("<html>\nbad gateway</html>")},
			`{"id":"i","custom_id":"c","response":{"status_code":502,"request_id":null,"body":"<html>\nbad gateway</html>"},"error":null}`},
		{"empty body", OutputLine{ID: "i", CustomID: "c", StatusCode: 204},
			`{"id":"i","custom_id":"c","response":{"status_code":204,"request_id":null,"body":null},"error":null}`},
		{"bad utf8", OutputLine{ID: "i", CustomID: "c\xff", StatusCode: 200, Body: []byte("{\"a\":\"\xff\"}")},
			`{"id":"i","custom_id":"c\ufffd","response":{"status_code":200,"request_id":null,"body":{"a":"` + "\uFFFD" + `"}},"error":null}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.line.AppendLine(nil)
			if string(got) != tt.want+"\n" {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
			if !gjson.ValidBytes(got) || strings.Count(string(got), "\n") != 1 {
				t.Fatalf("not one JSON line: %q", got)
			}
		})
	}
}

func TestNewID(t *testing.T) {
	a := NewID(PrefixBatch, t0)
	b := NewID(PrefixBatch, t0.Add(time.Millisecond))
	c := NewID(PrefixBatch, t0)
	if len(a) != len(PrefixBatch)+32 || !strings.HasPrefix(a, PrefixBatch) || a == c || !(a < b && c < b) {
		t.Fatalf("%s %s %s", a, b, c)
	}
	if id := NewID(PrefixMessageBatch, t0); !validMessageCustomID(strings.TrimPrefix(id, PrefixMessageBatch)) {
		t.Fatalf("%s", id)
	}
}

func TestParseFile(t *testing.T) {
	for _, f := range []*File{
		{ID: "file-1", Bytes: 42, CreatedAt: time.Unix(1700000000, 0), ExpiresAt: time.Unix(1700003600, 0), Filename: "in.jsonl", Purpose: PurposeBatch},
		{ID: "file-2", CreatedAt: time.Unix(1700000000, 0), Filename: "x", Purpose: "fine-tune"},
	} {
		want := f.AppendJSON(nil)
		got, err := ParseFile(want)
		if err != nil {
			t.Fatal(err)
		}
		if out := got.AppendJSON(nil); string(out) != string(want) {
			t.Errorf("round trip:\n got %s\nwant %s", out, want)
		}
	}
	if _, err := ParseFile([]byte(`{"x":1}`)); err == nil {
		t.Error("a file object without id parsed")
	}
}

func TestParseBatchRoundTrip(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	b := NewBatch("batch_1", &CreateRequest{Endpoint: "/v1/chat/completions", InputFileID: "file-1",
		Metadata: map[string]string{"k": "v"}}, now)
	if err := b.Start(now.Add(time.Second), "m", 3); err != nil {
		t.Fatal(err)
	}
	b.RequestCounts.Completed = 2
	b.Usage = Usage{InputTokens: 5, CachedTokens: 1, OutputTokens: 7, ReasoningTokens: 2, TotalTokens: 12}
	b.Errors = []LineError{{Code: CodeInvalidJSONLine, Message: "bad", Param: "custom_id", Line: 2}}
	want := b.AppendJSON(nil)
	got, err := ParseBatch(want)
	if err != nil {
		t.Fatal(err)
	}
	if again := got.AppendJSON(nil); string(again) != string(want) {
		t.Errorf("round trip:\n got %s\nwant %s", again, want)
	}
	if _, err := ParseBatch([]byte(`{"id":""}`)); err == nil {
		t.Error("a batch without id parsed")
	}
}
