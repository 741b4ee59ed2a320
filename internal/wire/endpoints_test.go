package wire_test

import (
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/caddyai/gateway/internal/wire"
)

// TestEndpointTable checks that every row is complete and that Route finds every row by its path.
func TestEndpointTable(t *testing.T) {
	names := map[string]bool{}
	for _, s := range wire.Specs() {
		if s.Name == "" || names[s.Name] {
			t.Errorf("endpoint %d: name %q is empty or repeated", s.Endpoint, s.Name)
		}
		names[s.Name] = true
		if s.Endpoint.String() != s.Name || s.Endpoint.Spec().Endpoint != s.Endpoint {
			t.Errorf("%s: the row's index and name disagree", s.Name)
		}
		if s.Path == "" {
			continue
		}
		if len(s.Methods) == 0 || s.Answer == wire.AnswerNone {
			t.Errorf("%s: a served endpoint needs methods and an answer", s.Name)
		}
		if s.Dialect != wire.DialectNone && s.Dialect != wire.DialectPredict && (s.ContextParam == "" || len(s.Required) == 0 || s.Required[0] != "model") {
			t.Errorf("%s: a body endpoint needs a context param and model among its required fields", s.Name)
		}
		for _, r := range s.Required {
			if !slices.Contains(s.Params, r) {
				t.Errorf("%s: required field %q is not among its params", s.Name, r)
			}
		}
		path := "/v1/" + s.Path
		want := ""
		switch s.Path {
		case "models/{model}":
			path, want = "/v1/models/org/llama-3.1-8b", "org/llama-3.1-8b"
		case "files/{file_id}":
			path, want = "/v1/files/file-abc123", "file-abc123"
		case "files/{file_id}/content":
			path, want = "/v1/files/file-abc123/content", "file-abc123"
		case "batches/{batch_id}":
			path, want = "/v1/batches/batch_abc123", "batch_abc123"
		case "batches/{batch_id}/cancel":
			path, want = "/v1/batches/batch_abc123/cancel", "batch_abc123"
		case "messages/batches/{message_batch_id}":
			path, want = "/v1/messages/batches/msgbatch_1", "msgbatch_1"
		case "messages/batches/{message_batch_id}/cancel":
			path, want = "/v1/messages/batches/msgbatch_1/cancel", "msgbatch_1"
		case "messages/batches/{message_batch_id}/results":
			path, want = "/v1/messages/batches/msgbatch_1/results", "msgbatch_1"
		case "responses/{response_id}":
			path, want = "/v1/responses/resp_1", "resp_1"
		case "responses/{response_id}/cancel":
			path, want = "/v1/responses/resp_1/cancel", "resp_1"
		case "responses/{response_id}/input_items":
			path, want = "/v1/responses/resp_1/input_items", "resp_1"
		case "fine_tuning/jobs/{job_id}", "fine_tuning/jobs/{job_id}/cancel", "fine_tuning/jobs/{job_id}/pause",
			"fine_tuning/jobs/{job_id}/resume", "fine_tuning/jobs/{job_id}/events", "fine_tuning/jobs/{job_id}/checkpoints":
			path, want = "/v1/"+strings.Replace(s.Path, "{job_id}", "ftjob-1", 1), "ftjob-1"
		case "models/{model_id}/predict":
			path, want = "/v1/models/org/sentiment/predict", "org/sentiment"
		}
		if e, param := wire.Route(path); e != s.Endpoint || param != want {
			t.Errorf("Route(%q) = %s, %q; want %s, %q", path, e, param, s.Name, want)
		}
		if e, _ := wire.Route(path + "/"); e != s.Endpoint {
			t.Errorf("Route(%q/) = %s; want %s", path, e, s.Name)
		}
		if s.Surface != wire.SurfaceOf(path) {
			t.Errorf("%s: the row's surface differs from the path's", s.Name)
		}
	}
	if !wire.EndpointChatCompletions.Spec().Allows("POST") || wire.EndpointChatCompletions.Spec().Allows("GET") {
		t.Error("chat completions: POST only")
	}
	for _, tc := range []struct {
		path  string
		want  wire.Endpoint
		param string
	}{
		{"/v1/files", wire.EndpointFiles, ""},
		{"/v1/files/file-1", wire.EndpointFile, "file-1"},
		{"/v1/files/file-1/content", wire.EndpointFileContent, "file-1"},
		{"/v1/batches", wire.EndpointBatches, ""},
		{"/v1/batches/batch_1", wire.EndpointBatch, "batch_1"},
		{"/v1/batches/batch_1/cancel", wire.EndpointBatchCancel, "batch_1"},
		{"/v1/files/file-1/content/", wire.EndpointFileContent, "file-1"},
		{"/v1/files//content", wire.EndpointFile, "/content"},
		{"/v1/files/a/b/content", wire.EndpointFile, "a/b/content"},
		{"/v1/files/file-1/other", wire.EndpointFile, "file-1/other"},
		{"/v1/models/org/m/content", wire.EndpointModel, "org/m/content"},
		{"/v1/models/sentiment/predict", wire.EndpointModelPredict, "sentiment"},
		{"/v1/models/a/b/c/predict/", wire.EndpointModelPredict, "a/b/c"},
		{"/v1/models/predict", wire.EndpointModel, "predict"},
		{"/v1/predict", wire.EndpointPredict, ""},
		{"/v1/fine-tuning/jobs", wire.EndpointFineTuningJobs, ""},
		{"/v1/fine-tuning/jobs/ftjob-1/events", wire.EndpointFineTuningJobEvents, "ftjob-1"},
		{"/v1/fine_tuning/jobs/ftjob-1", wire.EndpointFineTuningJob, "ftjob-1"},
		{"/v1/filesx", wire.EndpointUnknown, ""},
		{"/v1/messages", wire.EndpointMessages, ""},
		{"/v1/messages/count_tokens", wire.EndpointMessagesCountTokens, ""},
		{"/v1/messages/batches", wire.EndpointMessageBatches, ""},
		{"/v1/messages/batches/", wire.EndpointMessageBatches, ""},
		{"/v1/messages/batches/msgbatch_1", wire.EndpointMessageBatch, "msgbatch_1"},
		{"/v1/messages/batches/msgbatch_1/cancel", wire.EndpointMessageBatchCancel, "msgbatch_1"},
		{"/v1/messages/batches/msgbatch_1/results", wire.EndpointMessageBatchResults, "msgbatch_1"},
		{"/v1/messages/batches/count_tokens", wire.EndpointMessageBatch, "count_tokens"},
		{"/v1/messages/count_tokens/x", wire.EndpointUnknown, ""},
	} {
		if e, param := wire.Route(tc.path); e != tc.want || param != tc.param {
			t.Errorf("Route(%q) = %s, %q; want %s, %q", tc.path, e, param, tc.want, tc.param)
		}
	}
	for _, tc := range []struct {
		target string
		header string
		want   bool
	}{
		{"/v1/files", "", false},
		{"/v1/files?beta=true", "", true},
		{"/v1/files", "anthropic-beta", true},
		{"/v1/files", "anthropic-version", true},
	} {
		r := httptest.NewRequest("GET", tc.target, nil)
		if tc.header != "" {
			r.Header.Set(tc.header, "files-api-2025-04-14")
		}
		if got := wire.FromAnthropicSDK(r); got != tc.want {
			t.Errorf("FromAnthropicSDK(%s, %q) = %v", tc.target, tc.header, got)
		}
	}
}
