package batch

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/caddyai/gateway/internal/jsonscan"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/tidwall/gjson"
)

// ProcessingStatus is the processing_status of an Anthropic message batch.
type ProcessingStatus string

// The processing statuses of a message batch. Ended is terminal.
const (
	ProcessingInProgress ProcessingStatus = "in_progress"
	ProcessingCanceling  ProcessingStatus = "canceling"
	ProcessingEnded      ProcessingStatus = "ended"
)

// ResultType is the type of a message batch request's result.
type ResultType string

// The result types.
const (
	ResultSucceeded ResultType = "succeeded"
	ResultErrored   ResultType = "errored"
	ResultCanceled  ResultType = "canceled"
	ResultExpired   ResultType = "expired"
)

// MessageRequestCounts are the request counts of a message batch; they always sum to the
// number of requests.
type MessageRequestCounts struct {
	// Processing counts the requests without a result yet.
	Processing int64
	// Succeeded counts the requests answered with a message.
	Succeeded int64
	// Errored counts the requests that ended in an error.
	Errored int64
	// Canceled counts the requests a cancel stopped before they ran.
	Canceled int64
	// Expired counts the requests the end of the window stopped before they ran.
	Expired int64
}

// MessageBatch is an Anthropic message batch. A zero time renders as null, as does an empty
// ResultsURL. Processing starts at creation (there is no validating state):
//
//	in_progress -> canceling -> ended   (Cancel, End)
//	in_progress -> ended                (End; at the window's end, once Due)
//
// Each move sets its time from the time it is given; a move the lifecycle does not allow
// returns an error wrapping ErrTransition and changes nothing.
type MessageBatch struct {
	// ID is "msgbatch_..." (NewID(PrefixMessageBatch, ...)).
	ID string
	// ProcessingStatus is the batch's status.
	ProcessingStatus ProcessingStatus
	// RequestCounts are its request counts (Record keeps them).
	RequestCounts MessageRequestCounts
	// CreatedAt is when it was created.
	CreatedAt time.Time
	// ExpiresAt is CreatedAt + Window.
	ExpiresAt time.Time
	// EndedAt is when processing ended.
	EndedAt time.Time
	// CancelInitiatedAt is when a cancel was asked for.
	CancelInitiatedAt time.Time
	// ArchivedAt is when its results became unavailable; the gateway does not archive, so it
	// stays zero (null) until the batch is deleted.
	ArchivedAt time.Time
	// ResultsURL is the absolute URL of its results, set when it ends.
	ResultsURL string
}

// NewMessageBatch returns a message batch of n requests created at time now, in_progress with
// every request processing.
func NewMessageBatch(id string, n int, now time.Time) *MessageBatch {
	return &MessageBatch{ID: id, ProcessingStatus: ProcessingInProgress, CreatedAt: now, ExpiresAt: now.Add(Window),
		RequestCounts: MessageRequestCounts{Processing: int64(n)}}
}

// Due reports whether the batch's window has ended at time now while it is still in progress,
// so that the runner must expire the requests left and End it.
func (m *MessageBatch) Due(now time.Time) bool {
	return m.ProcessingStatus == ProcessingInProgress && !now.Before(m.ExpiresAt)
}

// Record moves one request from processing to the count of its result.
func (m *MessageBatch) Record(r ResultType) error {
	c := &m.RequestCounts
	if c.Processing <= 0 {
		return fmt.Errorf("%w: message batch %s has no request left processing", ErrTransition, m.ID)
	}
	switch r {
	case ResultSucceeded:
		c.Succeeded++
	case ResultErrored:
		c.Errored++
	case ResultCanceled:
		c.Canceled++
	case ResultExpired:
		c.Expired++
	default:
		return fmt.Errorf("recording message batch %s: unknown result type %q", m.ID, r)
	}
	c.Processing--
	return nil
}

// Cancel is the client's POST /v1/messages/batches/{id}/cancel: an in-progress batch moves to
// canceling; a canceling one stays as it is (a retried cancel succeeds). An ended batch cannot
// be canceled: a 400, never a 409, which the SDKs would retry.
func (m *MessageBatch) Cancel(now time.Time) *wire.Error {
	switch m.ProcessingStatus {
	case ProcessingCanceling:
		return nil
	case ProcessingInProgress:
		m.ProcessingStatus, m.CancelInitiatedAt = ProcessingCanceling, now
		return nil
	}
	return &wire.Error{Status: http.StatusBadRequest, Type: wire.TypeInvalidRequest, Reason: "batch_not_cancellable",
		Message: "Message batch " + m.ID + " has ended and can no longer be canceled."}
}

// ResultsPath returns the path of a message batch's results under the gateway; the handler
// makes ResultsURL of it with the gateway's public base URL.
func ResultsPath(id string) string { return "/v1/messages/batches/" + id + "/results" }

// End moves an in-progress or canceling batch, every request of which has a result
// (RequestCounts.Processing is 0), to ended, with the absolute URL of its results.
func (m *MessageBatch) End(now time.Time, resultsURL string) error {
	if m.ProcessingStatus != ProcessingInProgress && m.ProcessingStatus != ProcessingCanceling {
		return fmt.Errorf("%w: message batch %s from %s to %s", ErrTransition, m.ID, m.ProcessingStatus, ProcessingEnded)
	}
	if m.RequestCounts.Processing != 0 {
		return fmt.Errorf("%w: message batch %s ending with %d requests processing", ErrTransition, m.ID, m.RequestCounts.Processing)
	}
	if u, err := url.Parse(resultsURL); err != nil || !u.IsAbs() || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return fmt.Errorf("ending message batch %s: results URL %q is not an absolute http(s) URL", m.ID, resultsURL)
	}
	m.ProcessingStatus, m.EndedAt, m.ResultsURL = ProcessingEnded, now, resultsURL
	return nil
}

// Deletable returns nil when the batch may be deleted (it has ended), else the 400 that
// DELETE /v1/messages/batches/{id} answers.
func (m *MessageBatch) Deletable() *wire.Error {
	if m.ProcessingStatus == ProcessingEnded {
		return nil
	}
	return &wire.Error{Status: http.StatusBadRequest, Type: wire.TypeInvalidRequest, Reason: "batch_not_deletable",
		Message: "Message batch " + m.ID + " is still processing; cancel it and wait for it to end before deleting it."}
}

// rfc3339Micro is the time format of Anthropic's objects: RFC 3339 in UTC with microseconds.
const rfc3339Micro = "2006-01-02T15:04:05.000000Z07:00"

func appendTimeOrNull(dst []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(dst, "null"...)
	}
	dst = append(dst, '"')
	dst = t.UTC().AppendFormat(dst, rfc3339Micro)
	return append(dst, '"')
}

// AppendJSON appends the message_batch object with every key, null where there is no value.
func (m *MessageBatch) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"id":`...)
	dst = wire.AppendString(dst, m.ID)
	dst = append(dst, `,"type":"message_batch","processing_status":`...)
	dst = wire.AppendString(dst, string(m.ProcessingStatus))
	c := m.RequestCounts
	dst = append(dst, `,"request_counts":{"processing":`...)
	dst = strconv.AppendInt(dst, c.Processing, 10)
	dst = append(dst, `,"succeeded":`...)
	dst = strconv.AppendInt(dst, c.Succeeded, 10)
	dst = append(dst, `,"errored":`...)
	dst = strconv.AppendInt(dst, c.Errored, 10)
	dst = append(dst, `,"canceled":`...)
	dst = strconv.AppendInt(dst, c.Canceled, 10)
	dst = append(dst, `,"expired":`...)
	dst = strconv.AppendInt(dst, c.Expired, 10)
	dst = append(dst, `},"ended_at":`...)
	dst = appendTimeOrNull(dst, m.EndedAt)
	dst = append(dst, `,"created_at":`...)
	dst = appendTimeOrNull(dst, m.CreatedAt)
	dst = append(dst, `,"expires_at":`...)
	dst = appendTimeOrNull(dst, m.ExpiresAt)
	dst = append(dst, `,"archived_at":`...)
	dst = appendTimeOrNull(dst, m.ArchivedAt)
	dst = append(dst, `,"cancel_initiated_at":`...)
	dst = appendTimeOrNull(dst, m.CancelInitiatedAt)
	dst = append(dst, `,"results_url":`...)
	dst = appendStringOrNull(dst, m.ResultsURL)
	return append(dst, '}')
}

// AppendMessageBatchList appends a page of GET /v1/messages/batches:
// {"data":[...],"has_more","first_id","last_id"}; the ids are null for an empty page.
func AppendMessageBatchList(dst []byte, batches []*MessageBatch, hasMore bool) []byte {
	dst = append(dst, `{"data":[`...)
	for i, m := range batches {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = m.AppendJSON(dst)
	}
	var first, last string
	if n := len(batches); n > 0 {
		first, last = batches[0].ID, batches[n-1].ID
	}
	dst = append(dst, `],"has_more":`...)
	dst = strconv.AppendBool(dst, hasMore)
	dst = append(dst, `,"first_id":`...)
	dst = appendStringOrNull(dst, first)
	dst = append(dst, `,"last_id":`...)
	dst = appendStringOrNull(dst, last)
	return append(dst, '}')
}

// AppendMessageBatchDeleted appends the answer of DELETE /v1/messages/batches/{id}:
// {"id","type":"message_batch_deleted"}.
func AppendMessageBatchDeleted(dst []byte, id string) []byte {
	dst = append(dst, `{"id":`...)
	dst = wire.AppendString(dst, id)
	return append(dst, `,"type":"message_batch_deleted"}`...)
}

// Result is one line of a message batch's results.
type Result struct {
	// CustomID is the request's custom_id.
	CustomID string
	// Type is the result's type.
	Type ResultType
	// Message is the answer's message object (succeeded), as received.
	Message []byte
	// Error is the Anthropic error envelope of an errored request
	// ({"type":"error","error":{"type","message"}}), the body a live request would have got
	// (ErroredResult builds one from a *wire.Error).
	Error []byte
}

// ErroredResult returns the errored result of a request the gateway or the upstream refused
// with e.
func ErroredResult(customID string, e *wire.Error, requestID string) Result {
	return Result{CustomID: customID, Type: ResultErrored, Error: wire.AppendAnthropic(nil, e, requestID)}
}

// AppendLine appends the result line and its newline: {"custom_id","result":{"type":"succeeded",
// "message":{...}}}, {"custom_id","result":{"type":"errored","error":{...}}},
// {"custom_id","result":{"type":"canceled"}} or {"custom_id","result":{"type":"expired"}}. An
// errored result without a valid error envelope gets a generic api_error one.
func (r *Result) AppendLine(dst []byte) []byte {
	dst = append(dst, `{"custom_id":`...)
	dst = wire.AppendString(dst, r.CustomID)
	dst = append(dst, `,"result":{"type":`...)
	dst = wire.AppendString(dst, string(r.Type))
	switch r.Type {
	case ResultSucceeded:
		dst = append(dst, `,"message":`...)
		dst = appendRawJSON(dst, r.Message)
	case ResultErrored:
		dst = append(dst, `,"error":`...)
		if validEnvelope(r.Error) {
			dst = appendRawJSON(dst, r.Error)
		} else {
			dst = append(dst, `{"type":"error","error":{"type":"api_error","message":"The request failed."}}`...)
		}
	}
	return append(dst, "}}\n"...)
}

// validEnvelope reports whether b is an Anthropic error envelope: {"type":"error","error":{...}}.
func validEnvelope(b []byte) bool {
	if len(b) == 0 || jsonscan.NestedTooDeep(b, MaxDepth) || !gjson.ValidBytes(b) {
		return false
	}
	env := gjson.ParseBytes(b)
	return env.Get("type").Str == "error" && env.Get("error").IsObject()
}
