package batch

import (
	"strings"
	"testing"
	"time"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/caddyai/gateway/internal/wiretest"
)

var endpoints = SupportedEndpoints

func TestParseCreateRequestValid(t *testing.T) {
	meta := make([]string, MaxMetadataPairs)
	for i := range meta {
		meta[i] = `"k` + string(rune('a'+i)) + `":"v"`
	}
	tests := []struct {
		name string
		body string
		want CreateRequest
	}{
		{"minimal", `{"input_file_id":"file-1","endpoint":"/v1/chat/completions","completion_window":"24h"}`,
			CreateRequest{InputFileID: "file-1", Endpoint: "/v1/chat/completions", CompletionWindow: "24h"}},
		{"null metadata", `{"input_file_id":"file-1","endpoint":"/v1/embeddings","completion_window":"24h","metadata":null,"output_expires_after":null}`,
			CreateRequest{InputFileID: "file-1", Endpoint: "/v1/embeddings", CompletionWindow: "24h"}},
		{"everything", `{"input_file_id":"file-1","endpoint":"/v1/completions","completion_window":"24h","metadata":{"a":"b","` +
			strings.Repeat("é", 64) + `":"` + strings.Repeat("é", 512) + `"},"output_expires_after":{"anchor":"created_at","seconds":3600},"unknown":1}`,
			CreateRequest{InputFileID: "file-1", Endpoint: "/v1/completions", CompletionWindow: "24h",
				Metadata: map[string]string{"a": "b", strings.Repeat("é", 64): strings.Repeat("é", 512)}, OutputExpiresAfter: time.Hour}},
		{"16 pairs", `{"input_file_id":"f","endpoint":"/v1/completions","completion_window":"24h","metadata":{` + strings.Join(meta, ",") + `}}`,
			CreateRequest{InputFileID: "f", Endpoint: "/v1/completions", CompletionWindow: "24h"}},
		{"30 days", `{"input_file_id":"f","endpoint":"/v1/completions","completion_window":"24h","output_expires_after":{"seconds":2592000,"anchor":"created_at"}}`,
			CreateRequest{InputFileID: "f", Endpoint: "/v1/completions", CompletionWindow: "24h", OutputExpiresAfter: 30 * 24 * time.Hour}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCreateRequest([]byte(tt.body), endpoints)
			if err != nil {
				t.Fatal(err)
			}
			if got.InputFileID != tt.want.InputFileID || got.Endpoint != tt.want.Endpoint || got.CompletionWindow != tt.want.CompletionWindow ||
				got.OutputExpiresAfter != tt.want.OutputExpiresAfter {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			if tt.want.Metadata != nil && len(got.Metadata) != len(tt.want.Metadata) {
				t.Fatalf("metadata %v", got.Metadata)
			}
			for k, v := range tt.want.Metadata {
				if got.Metadata[k] != v {
					t.Fatalf("metadata %v", got.Metadata)
				}
			}
			// What the gateway accepts, the spec accepts (a null output_expires_after taken as absent).
			wiretest.ValidateNullAsAbsent(t, "CreateBatchRequest", []byte(tt.body))
		})
	}
}

func TestParseCreateRequestErrors(t *testing.T) {
	base := `"input_file_id":"file-1","endpoint":"/v1/chat/completions","completion_window":"24h"`
	with := func(s string) string { return "{" + base + "," + s + "}" }
	meta := make([]string, MaxMetadataPairs+1)
	for i := range meta {
		meta[i] = `"k` + string(rune('a'+i)) + `":"v"`
	}
	tests := []struct {
		name, body, code, param string
	}{
		{"empty", ``, CodeInvalidJSON, ""},
		{"not json", `{"input_file_id":`, CodeInvalidJSON, ""},
		{"array", `[]`, CodeInvalidType, ""},
		{"deep", strings.Repeat("[", 100000), CodeInvalidJSON, ""},
		{"missing input_file_id", `{"endpoint":"/v1/chat/completions","completion_window":"24h"}`, CodeMissingParam, "input_file_id"},
		{"numeric input_file_id", `{"input_file_id":1,"endpoint":"/v1/chat/completions","completion_window":"24h"}`, CodeInvalidType, "input_file_id"},
		{"empty input_file_id", `{"input_file_id":"","endpoint":"/v1/chat/completions","completion_window":"24h"}`, CodeEmptyString, "input_file_id"},
		{"long input_file_id", `{"input_file_id":"` + strings.Repeat("f", 10000) + `","endpoint":"/v1/chat/completions","completion_window":"24h"}`, CodeStringTooLong, "input_file_id"},
		{"duplicate input_file_id", `{"input_file_id":"a","input_file_id":"b","endpoint":"/v1/chat/completions","completion_window":"24h"}`, CodeDuplicateKey, "input_file_id"},
		{"missing endpoint", `{"input_file_id":"f","completion_window":"24h"}`, CodeMissingParam, "endpoint"},
		{"numeric endpoint", `{"input_file_id":"f","endpoint":3,"completion_window":"24h"}`, CodeInvalidType, "endpoint"},
		{"unknown endpoint", `{"input_file_id":"f","endpoint":"/v1/moderations","completion_window":"24h"}`, CodeInvalidValue, "endpoint"},
		{"missing window", `{"input_file_id":"f","endpoint":"/v1/chat/completions"}`, CodeMissingParam, "completion_window"},
		{"48h", `{"input_file_id":"f","endpoint":"/v1/chat/completions","completion_window":"48h"}`, CodeInvalidValue, "completion_window"},
		{"numeric window", `{"input_file_id":"f","endpoint":"/v1/chat/completions","completion_window":24}`, CodeInvalidType, "completion_window"},
		{"metadata array", with(`"metadata":[]`), CodeInvalidType, "metadata"},
		{"17 pairs", with(`"metadata":{` + strings.Join(meta, ",") + `}`), CodeObjectTooLarge, "metadata"},
		{"long key", with(`"metadata":{"` + strings.Repeat("k", 65) + `":"v"}`), CodeStringTooLong, "metadata"},
		{"long value", with(`"metadata":{"k":"` + strings.Repeat("v", 513) + `"}`), CodeStringTooLong, "metadata.k"},
		{"numeric value", with(`"metadata":{"k":1}`), CodeInvalidType, "metadata.k"},
		{"duplicate metadata key", with(`"metadata":{"k":"a","k":"b"}`), CodeDuplicateKey, "metadata.k"},
		{"expires not object", with(`"output_expires_after":3600`), CodeInvalidType, "output_expires_after"},
		{"expires no anchor", with(`"output_expires_after":{"seconds":3600}`), CodeMissingParam, "output_expires_after.anchor"},
		{"expires bad anchor", with(`"output_expires_after":{"anchor":"now","seconds":3600}`), CodeInvalidValue, "output_expires_after.anchor"},
		{"expires no seconds", with(`"output_expires_after":{"anchor":"created_at"}`), CodeMissingParam, "output_expires_after.seconds"},
		{"expires fraction", with(`"output_expires_after":{"anchor":"created_at","seconds":3600.5}`), CodeInvalidType, "output_expires_after.seconds"},
		{"expires string", with(`"output_expires_after":{"anchor":"created_at","seconds":"3600"}`), CodeInvalidType, "output_expires_after.seconds"},
		{"expires short", with(`"output_expires_after":{"anchor":"created_at","seconds":3599}`), CodeIntegerBelowMin, "output_expires_after.seconds"},
		{"expires long", with(`"output_expires_after":{"anchor":"created_at","seconds":2592001}`), CodeIntegerAboveMax, "output_expires_after.seconds"},
		{"expires huge", with(`"output_expires_after":{"anchor":"created_at","seconds":99999999999999999999999}`), CodeIntegerAboveMax, "output_expires_after.seconds"},
		{"expires negative huge", with(`"output_expires_after":{"anchor":"created_at","seconds":-99999999999999999999999}`), CodeIntegerBelowMin, "output_expires_after.seconds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseCreateRequest([]byte(tt.body), endpoints)
			if err == nil {
				t.Fatal("accepted")
			}
			if err.Status != 400 || err.Type != wire.TypeInvalidRequest || err.Code != tt.code || err.Param != tt.param || err.Message == "" {
				t.Fatalf("got %d %s %s %q: %s", err.Status, err.Type, err.Code, err.Param, err.Message)
			}
			if len(err.Message) > 400 {
				t.Fatalf("message of %d bytes", len(err.Message))
			}
			wiretest.Validate(t, "ErrorResponse", wire.AppendOpenAI(nil, err))
		})
	}
}

func TestParseCreateRequestMessages(t *testing.T) {
	_, err := ParseCreateRequest([]byte(`{"input_file_id":"f","endpoint":"/v1/x","completion_window":"24h"}`), endpoints)
	want := "Invalid value: '/v1/x'. Supported values are: '/v1/chat/completions', '/v1/completions', '/v1/embeddings', '/v1/responses'."
	if err.Message != want {
		t.Fatalf("message %q", err.Message)
	}
	_, err = ParseCreateRequest([]byte(`{"endpoint":"/v1/x"}`), endpoints)
	if err.Message != "Missing required parameter: 'input_file_id'." {
		t.Fatalf("message %q", err.Message)
	}
}

func TestHandlerErrors(t *testing.T) {
	for _, e := range []*wire.Error{ErrInputFileNotFound("file-x"), ErrInputFilePurpose("file-x", "fine-tune")} {
		if e.Status != 400 || e.Param != "input_file_id" {
			t.Fatalf("%+v", e)
		}
		wiretest.Validate(t, "ErrorResponse", wire.AppendOpenAI(nil, e))
	}
	for _, e := range []*wire.Error{ErrBatchNotFound("batch_x"), ErrFileNotFound("file-x")} {
		if e.Status != 404 {
			t.Fatalf("%+v", e)
		}
		wiretest.Validate(t, "ErrorResponse", wire.AppendOpenAI(nil, e))
	}
}

func TestSupportedEndpoints(t *testing.T) {
	// Each is a row of the endpoint table answered by an upstream, with a JSON body naming a
	// model, on the OpenAI surface: what a batch line needs.
	for _, path := range SupportedEndpoints {
		e, _ := wire.Route(path)
		spec := e.Spec()
		if spec.Answer != wire.AnswerUpstream || !e.HasBody() || e.Surface() != wire.OpenAI || !spec.Allows("POST") {
			t.Fatalf("%s routes to %+v", path, spec)
		}
	}
}
