package batch

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/caddyai/gateway/internal/wire"
)

// Status is the status of an OpenAI batch.
type Status string

// The statuses of an OpenAI batch. Failed, Completed, Expired and Cancelled are terminal.
const (
	StatusValidating Status = "validating"
	StatusFailed     Status = "failed"
	StatusInProgress Status = "in_progress"
	StatusFinalizing Status = "finalizing"
	StatusCompleted  Status = "completed"
	StatusExpired    Status = "expired"
	StatusCancelling Status = "cancelling"
	StatusCancelled  Status = "cancelled"
)

// Terminal reports whether a batch in status s is done: nothing moves it any more.
func (s Status) Terminal() bool {
	switch s {
	case StatusFailed, StatusCompleted, StatusExpired, StatusCancelled:
		return true
	}
	return false
}

// RequestCounts are the counts of an OpenAI batch's requests.
type RequestCounts struct {
	// Total is the number of requests (lines) of the batch.
	Total int64
	// Completed is the number of requests answered with a 2xx (in the output file).
	Completed int64
	// Failed is the number of requests refused or not run (in the error file).
	Failed int64
}

// Usage is the token usage of a batch, summed over its requests.
type Usage struct {
	// InputTokens counts every input token, cached ones included.
	InputTokens int64
	// CachedTokens is the part of InputTokens served from a prompt cache.
	CachedTokens int64
	// OutputTokens counts the generated tokens.
	OutputTokens int64
	// ReasoningTokens is the part of OutputTokens spent reasoning.
	ReasoningTokens int64
	// TotalTokens is InputTokens + OutputTokens.
	TotalTokens int64
}

// Add adds the usage of one request. Reasoning tokens, which wire.Usage does not carry, are
// for the caller to add to ReasoningTokens.
func (u *Usage) Add(w wire.Usage) {
	u.InputTokens += w.PromptTokens
	u.CachedTokens += w.CachedTokens
	u.OutputTokens += w.CompletionTokens
	if w.TotalTokens > 0 {
		u.TotalTokens += w.TotalTokens
	} else {
		u.TotalTokens += w.PromptTokens + w.CompletionTokens
	}
}

// Batch is an OpenAI batch. A zero time renders as null, as do empty ids and a nil Errors.
// Its methods move it through its lifecycle:
//
//	validating -> in_progress -> finalizing -> completed      (Start, Finalize, Complete)
//	validating -> failed                                      (Fail)
//	in_progress -> expired                                    (Expire, once Due)
//	validating|in_progress|finalizing -> cancelling -> cancelled  (Cancel, FinishCancel)
//
// Each sets its *_at from the time it is given. A move the lifecycle does not allow returns an
// error wrapping ErrTransition and changes nothing.
type Batch struct {
	// ID is "batch_..." (NewID(PrefixBatch, ...)).
	ID string
	// Endpoint is the endpoint of every line ("/v1/chat/completions").
	Endpoint string
	// Model is the one model of the input file, known once validated.
	Model string
	// InputFileID is the input file's id.
	InputFileID string
	// CompletionWindow is "24h".
	CompletionWindow string
	// Status is the batch's status.
	Status Status
	// OutputFileID is the output file's id, once written.
	OutputFileID string
	// ErrorFileID is the error file's id, once written (none when no request failed).
	ErrorFileID string
	// CreatedAt is when the batch was created.
	CreatedAt time.Time
	// InProgressAt is when it started running.
	InProgressAt time.Time
	// ExpiresAt is CreatedAt + Window: the end of the completion window.
	ExpiresAt time.Time
	// FinalizingAt is when it started writing its output.
	FinalizingAt time.Time
	// CompletedAt is when it completed.
	CompletedAt time.Time
	// FailedAt is when validation failed it.
	FailedAt time.Time
	// ExpiredAt is when it expired.
	ExpiredAt time.Time
	// CancellingAt is when its cancellation was asked for.
	CancellingAt time.Time
	// CancelledAt is when it was cancelled.
	CancelledAt time.Time
	// Errors are the problems of its input file (errors.data); nil renders as null.
	Errors []LineError
	// RequestCounts are its request counts, kept current while it runs.
	RequestCounts RequestCounts
	// Usage is its token usage, kept current while it runs.
	Usage Usage
	// Metadata are the client's key-value pairs; nil renders as null.
	Metadata map[string]string
	// OutputExpiresAfter is the lifetime of its output and error files from their creation (the
	// request's output_expires_after); 0 for the files' default. It is not part of the object.
	OutputExpiresAfter time.Duration
}

// NewBatch returns the batch a checked create request makes at time now, in validating.
func NewBatch(id string, req *CreateRequest, now time.Time) *Batch {
	b := &Batch{ID: id, Endpoint: req.Endpoint, InputFileID: req.InputFileID, CompletionWindow: CompletionWindow,
		Status: StatusValidating, CreatedAt: now, ExpiresAt: now.Add(Window), OutputExpiresAfter: req.OutputExpiresAfter}
	if req.Metadata != nil {
		b.Metadata = make(map[string]string, len(req.Metadata))
		for k, v := range req.Metadata {
			b.Metadata[k] = v
		}
	}
	return b
}

// ErrTransition is wrapped by the error of a lifecycle move from a status that does not allow
// it: a fault of the caller (the runner), never of the client.
var ErrTransition = errors.New("illegal batch transition")

func (b *Batch) transition(to Status, from ...Status) error {
	for _, f := range from {
		if b.Status == f {
			return nil
		}
	}
	return fmt.Errorf("%w: batch %s from %s to %s", ErrTransition, b.ID, b.Status, to)
}

// Start moves a validated batch to in_progress with the input's model and request count.
func (b *Batch) Start(now time.Time, model string, total int64) error {
	if err := b.transition(StatusInProgress, StatusValidating); err != nil {
		return err
	}
	b.Status, b.InProgressAt, b.Model, b.RequestCounts = StatusInProgress, now, model, RequestCounts{Total: total}
	return nil
}

// Fail moves a batch whose input file is invalid to failed with its errors (Input.Errors).
func (b *Batch) Fail(now time.Time, errs []LineError) error {
	if err := b.transition(StatusFailed, StatusValidating); err != nil {
		return err
	}
	b.Status, b.FailedAt, b.Errors = StatusFailed, now, errs
	return nil
}

// Finalize moves a batch all of whose requests are done (Completed + Failed == Total) to
// finalizing, while its output and error files are written.
func (b *Batch) Finalize(now time.Time) error {
	if err := b.transition(StatusFinalizing, StatusInProgress); err != nil {
		return err
	}
	if c := b.RequestCounts; c.Completed+c.Failed != c.Total {
		return fmt.Errorf("%w: batch %s finalizing with %d of %d requests done", ErrTransition, b.ID, c.Completed+c.Failed, c.Total)
	}
	b.Status, b.FinalizingAt = StatusFinalizing, now
	return nil
}

// Complete moves a finalizing batch to completed with its output and error files ("" for a
// file that was not written).
func (b *Batch) Complete(now time.Time, outputFileID, errorFileID string) error {
	if err := b.transition(StatusCompleted, StatusFinalizing); err != nil {
		return err
	}
	b.Status, b.CompletedAt, b.OutputFileID, b.ErrorFileID = StatusCompleted, now, outputFileID, errorFileID
	return nil
}

// Due reports whether the batch's window has ended at time now while it is still running, so
// that the runner must Expire it.
func (b *Batch) Due(now time.Time) bool {
	return b.Status == StatusInProgress && !now.Before(b.ExpiresAt)
}

// Expire moves an in-progress batch whose window has ended to expired, with the files holding
// what ran (the requests left are in the error file with code batch_expired).
func (b *Batch) Expire(now time.Time, outputFileID, errorFileID string) error {
	if err := b.transition(StatusExpired, StatusInProgress); err != nil {
		return err
	}
	b.Status, b.ExpiredAt, b.OutputFileID, b.ErrorFileID = StatusExpired, now, outputFileID, errorFileID
	return nil
}

// Cancel is the client's POST /v1/batches/{id}/cancel: a validating, in-progress or finalizing
// batch moves to cancelling; a batch already cancelling stays as it is (a retried cancel
// succeeds). A batch in a terminal status cannot be cancelled: that is a 400, never a 409,
// which the SDKs would retry. Cancelling a validating batch is allowed because a client may
// cancel right after creating, before validation ends; the runner then finishes the
// cancellation without running anything.
func (b *Batch) Cancel(now time.Time) *wire.Error {
	switch b.Status {
	case StatusCancelling:
		return nil
	case StatusValidating, StatusInProgress, StatusFinalizing:
		b.Status, b.CancellingAt = StatusCancelling, now
		return nil
	}
	return &wire.Error{Status: http.StatusBadRequest, Type: wire.TypeInvalidRequest, Reason: "batch_not_cancellable",
		Message: fmt.Sprintf("Cannot cancel a batch with status '%s'.", b.Status)}
}

// FinishCancel moves a cancelling batch to cancelled, with the files holding the partial
// results ("" for a file that was not written).
func (b *Batch) FinishCancel(now time.Time, outputFileID, errorFileID string) error {
	if err := b.transition(StatusCancelled, StatusCancelling); err != nil {
		return err
	}
	b.Status, b.CancelledAt, b.OutputFileID, b.ErrorFileID = StatusCancelled, now, outputFileID, errorFileID
	return nil
}
