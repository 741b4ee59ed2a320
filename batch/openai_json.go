package batch

import (
	"bytes"
	"errors"
	"sort"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/caddyai/gateway/internal/jsonscan"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/tidwall/gjson"
)

// AppendJSON appends the batch object with every key of the spec's Batch, null where there is
// no value (usage and request_counts are always objects).
func (b *Batch) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"id":`...)
	dst = wire.AppendString(dst, b.ID)
	dst = append(dst, `,"object":"batch","endpoint":`...)
	dst = wire.AppendString(dst, b.Endpoint)
	dst = append(dst, `,"model":`...)
	dst = appendStringOrNull(dst, b.Model)
	dst = append(dst, `,"errors":`...)
	dst = appendErrors(dst, b.Errors)
	dst = append(dst, `,"input_file_id":`...)
	dst = wire.AppendString(dst, b.InputFileID)
	dst = append(dst, `,"completion_window":`...)
	dst = wire.AppendString(dst, b.CompletionWindow)
	dst = append(dst, `,"status":`...)
	dst = wire.AppendString(dst, string(b.Status))
	dst = append(dst, `,"output_file_id":`...)
	dst = appendStringOrNull(dst, b.OutputFileID)
	dst = append(dst, `,"error_file_id":`...)
	dst = appendStringOrNull(dst, b.ErrorFileID)
	for _, f := range [...]struct {
		key string
		t   time.Time
	}{
		{`,"created_at":`, b.CreatedAt}, {`,"in_progress_at":`, b.InProgressAt}, {`,"expires_at":`, b.ExpiresAt},
		{`,"finalizing_at":`, b.FinalizingAt}, {`,"completed_at":`, b.CompletedAt}, {`,"failed_at":`, b.FailedAt},
		{`,"expired_at":`, b.ExpiredAt}, {`,"cancelling_at":`, b.CancellingAt}, {`,"cancelled_at":`, b.CancelledAt},
	} {
		dst = append(dst, f.key...)
		dst = appendUnixOrNull(dst, f.t)
	}
	c := b.RequestCounts
	dst = append(dst, `,"request_counts":{"total":`...)
	dst = strconv.AppendInt(dst, c.Total, 10)
	dst = append(dst, `,"completed":`...)
	dst = strconv.AppendInt(dst, c.Completed, 10)
	dst = append(dst, `,"failed":`...)
	dst = strconv.AppendInt(dst, c.Failed, 10)
	u := b.Usage
	dst = append(dst, `},"usage":{"input_tokens":`...)
	dst = strconv.AppendInt(dst, u.InputTokens, 10)
	dst = append(dst, `,"input_tokens_details":{"cached_tokens":`...)
	dst = strconv.AppendInt(dst, u.CachedTokens, 10)
	dst = append(dst, `},"output_tokens":`...)
	dst = strconv.AppendInt(dst, u.OutputTokens, 10)
	dst = append(dst, `,"output_tokens_details":{"reasoning_tokens":`...)
	dst = strconv.AppendInt(dst, u.ReasoningTokens, 10)
	dst = append(dst, `},"total_tokens":`...)
	dst = strconv.AppendInt(dst, u.TotalTokens, 10)
	dst = append(dst, `},"metadata":`...)
	dst = appendMetadata(dst, b.Metadata)
	return append(dst, '}')
}

// appendErrors appends errors.data as {"object":"list","data":[...]}, or null when there are none.
func appendErrors(dst []byte, errs []LineError) []byte {
	if errs == nil {
		return append(dst, "null"...)
	}
	dst = append(dst, `{"object":"list","data":[`...)
	for i := range errs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = errs[i].AppendJSON(dst)
	}
	return append(dst, "]}"...)
}

// AppendJSON appends the error as a BatchError: {"code","message","param","line"}.
func (e *LineError) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"code":`...)
	dst = wire.AppendString(dst, e.Code)
	dst = append(dst, `,"message":`...)
	dst = wire.AppendString(dst, e.Message)
	dst = append(dst, `,"param":`...)
	dst = appendStringOrNull(dst, e.Param)
	dst = append(dst, `,"line":`...)
	if e.Line > 0 {
		dst = strconv.AppendInt(dst, int64(e.Line), 10)
	} else {
		dst = append(dst, "null"...)
	}
	return append(dst, '}')
}

// appendMetadata appends the pairs in key order, or null.
func appendMetadata(dst []byte, m map[string]string) []byte {
	if m == nil {
		return append(dst, "null"...)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	dst = append(dst, '{')
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = wire.AppendString(dst, k)
		dst = append(dst, ':')
		dst = wire.AppendString(dst, m[k])
	}
	return append(dst, '}')
}

func appendStringOrNull(dst []byte, s string) []byte {
	if s == "" {
		return append(dst, "null"...)
	}
	return wire.AppendString(dst, s)
}

func appendUnixOrNull(dst []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(dst, "null"...)
	}
	return strconv.AppendInt(dst, t.Unix(), 10)
}

// AppendBatchList appends a page of GET /v1/batches:
// {"object":"list","data":[...],"first_id","last_id","has_more"}; the ids are null for an
// empty page.
func AppendBatchList(dst []byte, batches []*Batch, hasMore bool) []byte {
	dst = append(dst, `{"object":"list","data":[`...)
	for i, b := range batches {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = b.AppendJSON(dst)
	}
	var first, last string
	if n := len(batches); n > 0 {
		first, last = batches[0].ID, batches[n-1].ID
	}
	return appendPageEnd(dst, first, last, hasMore)
}

func appendPageEnd(dst []byte, first, last string, hasMore bool) []byte {
	dst = append(dst, `],"first_id":`...)
	dst = appendStringOrNull(dst, first)
	dst = append(dst, `,"last_id":`...)
	dst = appendStringOrNull(dst, last)
	dst = append(dst, `,"has_more":`...)
	dst = strconv.AppendBool(dst, hasMore)
	return append(dst, '}')
}

// File purposes the batches use.
const (
	// PurposeBatch is the purpose of a batch input file.
	PurposeBatch = "batch"
	// PurposeBatchOutput is the purpose of a batch's output and error files.
	PurposeBatchOutput = "batch_output"
)

// FileStatusProcessed is the (deprecated but required) status of every stored file: the SDKs'
// wait_for_processing polls until processed, error or deleted.
const FileStatusProcessed = "processed"

// File is an OpenAI file object.
type File struct {
	// ID is "file-..." (NewID(PrefixFile, ...)).
	ID string
	// Bytes is the file's size.
	Bytes int64
	// CreatedAt is when it was uploaded or written.
	CreatedAt time.Time
	// ExpiresAt is when it will be deleted; zero (null) for never.
	ExpiresAt time.Time
	// Filename is the uploaded part's file name (the batch's output files are named by the
	// runner, e.g. "batch_..._output.jsonl").
	Filename string
	// Purpose is the file's purpose (PurposeBatch, PurposeBatchOutput, "fine-tune", ...).
	Purpose string
	// Status is the deprecated status; "" renders as FileStatusProcessed.
	Status string
	// StatusDetails is the deprecated status_details; "" renders as null.
	StatusDetails string
}

// AppendJSON appends the file object:
// {"id","object":"file","bytes","created_at","expires_at","filename","purpose","status","status_details"}.
func (f *File) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"id":`...)
	dst = wire.AppendString(dst, f.ID)
	dst = append(dst, `,"object":"file","bytes":`...)
	dst = strconv.AppendInt(dst, f.Bytes, 10)
	dst = append(dst, `,"created_at":`...)
	dst = strconv.AppendInt(dst, f.CreatedAt.Unix(), 10)
	dst = append(dst, `,"expires_at":`...)
	dst = appendUnixOrNull(dst, f.ExpiresAt)
	dst = append(dst, `,"filename":`...)
	dst = wire.AppendString(dst, f.Filename)
	dst = append(dst, `,"purpose":`...)
	dst = wire.AppendString(dst, f.Purpose)
	dst = append(dst, `,"status":`...)
	status := f.Status
	if status == "" {
		status = FileStatusProcessed
	}
	dst = wire.AppendString(dst, status)
	dst = append(dst, `,"status_details":`...)
	dst = appendStringOrNull(dst, f.StatusDetails)
	return append(dst, '}')
}

// AppendFileList appends a page of GET /v1/files:
// {"object":"list","data":[...],"first_id","last_id","has_more"}; the ids are null for an
// empty page.
func AppendFileList(dst []byte, files []*File, hasMore bool) []byte {
	dst = append(dst, `{"object":"list","data":[`...)
	for i, f := range files {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = f.AppendJSON(dst)
	}
	var first, last string
	if n := len(files); n > 0 {
		first, last = files[0].ID, files[n-1].ID
	}
	return appendPageEnd(dst, first, last, hasMore)
}

// AppendFileDeleted appends the answer of DELETE /v1/files/{id}: {"id","object":"file","deleted":true}.
func AppendFileDeleted(dst []byte, id string) []byte {
	dst = append(dst, `{"id":`...)
	dst = wire.AppendString(dst, id)
	return append(dst, `,"object":"file","deleted":true}`...)
}

// CodeBatchExpired is the error code of the requests a batch had not run when its window ended.
const CodeBatchExpired = "batch_expired"

// CodeBatchCancelled is the error code of the requests a cancelled batch never ran.
const CodeBatchCancelled = "batch_cancelled"

// OutputLine is one line of a batch's output or error file (the same shape in both).
type OutputLine struct {
	// ID is "batch_req_..." (NewID(PrefixBatchRequest, ...)).
	ID string
	// CustomID is the request's custom_id.
	CustomID string
	// StatusCode is the HTTP status of the answer; 0 when there was none (response is null).
	StatusCode int
	// RequestID is the answer's request id ("req_...").
	RequestID string
	// Body is the answer's JSON body, as received (a refused request's error body in the
	// envelope a live request would get).
	Body []byte
	// ErrorCode and ErrorMessage are a failure that is not an HTTP answer (CodeBatchExpired);
	// "" renders error as null.
	ErrorCode, ErrorMessage string
}

// AppendLine appends the line and its newline:
// {"id","custom_id","response":{"status_code","request_id","body"},"error":null} or
// {"id","custom_id","response":null,"error":{"code","message"}}. A body that is not valid JSON
// is embedded as a JSON string, and line breaks of a pretty-printed body are removed, so that
// the line is always one JSON object.
func (l *OutputLine) AppendLine(dst []byte) []byte {
	dst = append(dst, `{"id":`...)
	dst = wire.AppendString(dst, l.ID)
	dst = append(dst, `,"custom_id":`...)
	dst = wire.AppendString(dst, l.CustomID)
	dst = append(dst, `,"response":`...)
	if l.StatusCode == 0 {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, `{"status_code":`...)
		dst = strconv.AppendInt(dst, int64(l.StatusCode), 10)
		dst = append(dst, `,"request_id":`...)
		dst = appendStringOrNull(dst, l.RequestID)
		dst = append(dst, `,"body":`...)
		dst = appendRawJSON(dst, l.Body)
		dst = append(dst, '}')
	}
	dst = append(dst, `,"error":`...)
	if l.ErrorCode == "" {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, `{"code":`...)
		dst = wire.AppendString(dst, l.ErrorCode)
		dst = append(dst, `,"message":`...)
		dst = wire.AppendString(dst, l.ErrorMessage)
		dst = append(dst, '}')
	}
	return append(dst, "}\n"...)
}

// appendRawJSON appends body as it is when it is valid JSON, without its line breaks (in valid
// JSON a raw CR or LF can only be whitespace), and as a JSON string otherwise; null when empty.
func appendRawJSON(dst, body []byte) []byte {
	body = bytes.TrimSpace(body)
	switch {
	case len(body) == 0:
		return append(dst, "null"...)
	case jsonscan.NestedTooDeep(body, MaxDepth) || !gjson.ValidBytes(body):
		return wire.AppendString(dst, string(body))
	}
	if !utf8.Valid(body) {
		// Outside strings valid JSON is ASCII, so the bad bytes are inside strings.
		body = bytes.ToValidUTF8(body, []byte("\uFFFD"))
	}
	if bytes.IndexByte(body, '\n') < 0 && bytes.IndexByte(body, '\r') < 0 {
		return append(dst, body...)
	}
	for _, c := range body {
		if c != '\n' && c != '\r' {
			dst = append(dst, c)
		}
	}
	return dst
}

// ParseFile reads a file object written by AppendJSON (as a store keeps it) back.
func ParseFile(data []byte) (*File, error) {
	if !gjson.ValidBytes(data) {
		return nil, errors.New("parsing file object: invalid JSON")
	}
	r := gjson.ParseBytes(data)
	f := &File{ID: r.Get("id").String(), Bytes: r.Get("bytes").Int(), Filename: r.Get("filename").String(),
		Purpose: r.Get("purpose").String(), Status: r.Get("status").String(), StatusDetails: r.Get("status_details").String()}
	if f.ID == "" {
		return nil, errors.New("parsing file object: no id")
	}
	f.CreatedAt = time.Unix(r.Get("created_at").Int(), 0)
	if e := r.Get("expires_at"); e.Type == gjson.Number {
		f.ExpiresAt = time.Unix(e.Int(), 0)
	}
	return f, nil
}

// ParseBatch reads a batch object written by AppendJSON (as a store keeps it) back. Fields
// that are not part of the object (OutputExpiresAfter) are left zero.
func ParseBatch(data []byte) (*Batch, error) {
	if !gjson.ValidBytes(data) {
		return nil, errors.New("parsing batch object: invalid JSON")
	}
	r := gjson.ParseBytes(data)
	b := &Batch{ID: r.Get("id").String(), Endpoint: r.Get("endpoint").String(), Model: r.Get("model").String(),
		InputFileID: r.Get("input_file_id").String(), CompletionWindow: r.Get("completion_window").String(),
		Status: Status(r.Get("status").String()), OutputFileID: r.Get("output_file_id").String(),
		ErrorFileID: r.Get("error_file_id").String()}
	if b.ID == "" || b.Status == "" {
		return nil, errors.New("parsing batch object: no id or status")
	}
	for _, f := range [...]struct {
		key string
		t   *time.Time
	}{
		{"created_at", &b.CreatedAt}, {"in_progress_at", &b.InProgressAt}, {"expires_at", &b.ExpiresAt},
		{"finalizing_at", &b.FinalizingAt}, {"completed_at", &b.CompletedAt}, {"failed_at", &b.FailedAt},
		{"expired_at", &b.ExpiredAt}, {"cancelling_at", &b.CancellingAt}, {"cancelled_at", &b.CancelledAt},
	} {
		if v := r.Get(f.key); v.Type == gjson.Number {
			*f.t = time.Unix(v.Int(), 0)
		}
	}
	if errs := r.Get("errors.data"); errs.IsArray() {
		errs.ForEach(func(_, e gjson.Result) bool {
			b.Errors = append(b.Errors, LineError{Code: e.Get("code").String(), Message: e.Get("message").String(),
				Param: e.Get("param").String(), Line: int(e.Get("line").Int())})
			return true
		})
	}
	c := r.Get("request_counts")
	b.RequestCounts = RequestCounts{Total: c.Get("total").Int(), Completed: c.Get("completed").Int(), Failed: c.Get("failed").Int()}
	u := r.Get("usage")
	b.Usage = Usage{InputTokens: u.Get("input_tokens").Int(), CachedTokens: u.Get("input_tokens_details.cached_tokens").Int(),
		OutputTokens: u.Get("output_tokens").Int(), ReasoningTokens: u.Get("output_tokens_details.reasoning_tokens").Int(),
		TotalTokens: u.Get("total_tokens").Int()}
	if m := r.Get("metadata"); m.IsObject() {
		b.Metadata = map[string]string{}
		m.ForEach(func(k, v gjson.Result) bool {
			b.Metadata[k.String()] = v.String()
			return true
		})
	}
	return b, nil
}
