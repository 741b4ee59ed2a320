package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddyai/gateway/batch"
	"github.com/caddyai/gateway/internal/wire"
	"github.com/caddyai/gateway/store"
)

// kindMsgBatch is the kind of an Anthropic message batch's record, under its owner (the key
// id). Its active record and its requests' results are those of the OpenAI batches
// (kindBatchActive, kindBatchResult): one runner moves both along, telling them apart by id.
const kindMsgBatch = "msg_batch"

// defaultAnthropicVersion is the anthropic-version a message batch's requests are sent with
// when its create request had none.
const defaultAnthropicVersion = "2023-06-01"

// Paging of GET /v1/messages/batches, as Anthropic's.
const (
	defaultMsgBatchListLimit = 20
	maxMsgBatchListLimit     = 1000
)

// The blobs of a message batch: the create request's body, whose params objects the runner
// reads one at a time, and the results, written when the batch ends.
func msgInputBlob(id string) string   { return id + ".input" }
func msgResultsBlob(id string) string { return id + ".results" }

// isMsgBatch reports whether id names a message batch (or one of its blobs).
func isMsgBatch(id string) bool { return strings.HasPrefix(id, batch.PrefixMessageBatch) }

// blobKind is the kind of the record that keeps a blob alive: a file's, or a message batch's.
func blobKind(id string) string {
	if isMsgBatch(id) {
		return kindMsgBatch
	}
	return kindFile
}

// blobParent is the id of the record that keeps a blob alive.
func blobParent(id string) string {
	if isMsgBatch(id) {
		if i := strings.IndexByte(id, '.'); i >= 0 {
			return id[:i]
		}
	}
	return id
}

// msgRecord is a message batch's record: the object and the runner's part.
type msgRecord struct {
	Batch *batch.MessageBatch `json:"batch"`
	Run   batchRun            `json:"run"`
}

func encodeMsgBatch(m *batch.MessageBatch, run batchRun) []byte {
	data, _ := json.Marshal(msgRecord{Batch: m, Run: run}) // strings, numbers and times: cannot fail
	return data
}

func decodeMsgBatch(data []byte) (*batch.MessageBatch, batchRun, error) {
	var rec msgRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, rec.Run, err
	}
	if rec.Batch == nil {
		return nil, rec.Run, errors.New("a message batch record without its batch")
	}
	return rec.Batch, rec.Run, nil
}

// serveMessageBatches answers Anthropic's Message Batches API (/v1/messages/batches and below)
// from the store, in the Anthropic envelope. Every batch belongs to the key that created it:
// another key's batch does not exist for the caller. Each request runs through the batch
// runner as a POST /v1/messages of the owning key.
func (g *Gateway) serveMessageBatches(w http.ResponseWriter, r *http.Request, ex *exchange) error {
	objs, blobs, err := g.backend.open()
	if err != nil {
		g.refuse(w, ex, g.storeError(ex, "opening the store", err))
		return nil
	}
	ms := msgBatchService{g: g, ex: ex, objs: objs, blobs: blobs, owner: ex.keyID()}
	var body []byte
	var werr *wire.Error
	switch {
	case ex.endpoint == wire.EndpointMessageBatches && r.Method == http.MethodPost:
		body, werr = ms.create(w, r)
	case ex.endpoint == wire.EndpointMessageBatches:
		body, werr = ms.list(r)
	case ex.endpoint == wire.EndpointMessageBatchCancel:
		body, werr = ms.cancel(r.Context(), ex.pathParam)
	case ex.endpoint == wire.EndpointMessageBatchResults:
		if werr = ms.results(w, r, ex.pathParam); werr == nil {
			return nil
		}
	case r.Method == http.MethodDelete:
		body, werr = ms.delete(r.Context(), ex.pathParam)
	default:
		body, werr = ms.get(r.Context(), ex.pathParam)
	}
	if werr != nil {
		g.refuse(w, ex, werr)
		return nil
	}
	return answerJSON(w, r, ex, body)
}

// msgBatchService is one Message Batches API call: the store and the caller.
type msgBatchService struct {
	g     *Gateway
	ex    *exchange
	objs  store.Backend
	blobs *store.Dir
	owner string
}

// create answers POST /v1/messages/batches: the body is streamed into the batch's input blob
// (bounded), then read back and checked with batch.ReadMessageBatchRequest (a fault of the body
// is a synchronous 400 or 413 and nothing is kept). The batch is stored in_progress with its
// active record first; the runner enqueues its requests.
func (ms *msgBatchService) create(w http.ResponseWriter, r *http.Request) (body []byte, werr *wire.Error) {
	ctx := r.Context()
	if ms.ex.key.NoBatches {
		return nil, &wire.Error{Status: http.StatusForbidden, Type: wire.TypePermission, Code: "batches_not_allowed",
			Message: "This API key may not create batches."}
	}
	now := ms.g.now()
	id := batch.NewID(batch.PrefixMessageBatch, now)
	in := msgInputBlob(id)
	if err := ms.objs.Put(ctx, store.Record{Kind: kindFileBlob, Owner: blobOwner, ID: in, Data: appendBlobRecord(nil, ms.owner, now)}); err != nil {
		return nil, ms.g.storeError(ms.ex, "recording a message batch", err)
	}
	kept := false
	defer func() {
		if !kept {
			ms.dropBlob(in)
		}
	}()
	r.Body = http.MaxBytesReader(w, r.Body, batch.DefaultMaxBatchBytes)
	if _, err := ms.blobs.Write(ctx, in, r.Body, store.Limits{MaxBytes: batch.DefaultMaxBatchBytes}); err != nil {
		return nil, ms.bodyError(err)
	}
	blob, err := ms.blobs.Open(ctx, in)
	if err != nil {
		return nil, ms.g.storeError(ms.ex, "reading a message batch", err)
	}
	tasks, err := batch.ReadMessageBatchRequest(io.NewSectionReader(blob, 0, blob.Size()), batch.RequestLimits{})
	blob.Close()
	if err != nil {
		return nil, ms.bodyError(err)
	}
	m := batch.NewMessageBatch(id, len(tasks), now)
	run := lineTarget(r, "/v1/messages/batches")
	if run.Base = ms.g.Batches.PublicURL; run.Base == "" {
		run.Base = publicBase(r, run.Prefix)
	}
	if run.AnthropicVersion = r.Header.Get("Anthropic-Version"); run.AnthropicVersion == "" {
		run.AnthropicVersion = defaultAnthropicVersion
	}
	if err := ms.objs.Put(ctx, store.Record{Kind: kindBatchActive, Owner: blobOwner, ID: id, Data: appendBlobRecord(nil, ms.owner, now)}); err != nil {
		return nil, ms.g.storeError(ms.ex, "recording a message batch", err)
	}
	if err := ms.objs.Put(ctx, store.Record{Kind: kindMsgBatch, Owner: ms.owner, ID: id, Data: encodeMsgBatch(m, run),
		ExpiresAt: now.Add(time.Duration(ms.g.Batches.ResultsRetention))}); err != nil {
		return nil, ms.g.storeError(ms.ex, "recording a message batch", err)
	}
	kept = true
	ms.g.backend.wakeRunner()
	return m.AppendJSON(nil), nil
}

// bodyError is the refusal of a create body that could not be read or stored.
func (ms *msgBatchService) bodyError(err error) *wire.Error {
	var werr *wire.Error
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &werr):
		return werr
	case errors.As(err, &tooBig), errors.Is(err, store.ErrTooLarge):
		return &wire.Error{Status: http.StatusRequestEntityTooLarge, Type: wire.TypeInvalidRequest, Reason: "request_too_large",
			Message: "The request body exceeds " + strconv.Itoa(batch.DefaultMaxBatchBytes) + " bytes."}
	case errors.Is(err, store.ErrUnavailable):
		return ms.g.storeError(ms.ex, "storing a message batch", err)
	case ms.ex.clientGone():
		return wire.ClientClosed()
	}
	return wire.InvalidRequest("", "The request body could not be read.")
}

// dropBlob deletes a message batch's blob and its blob record; what fails is left to the sweeper.
func (ms *msgBatchService) dropBlob(id string) {
	ctx := context.WithoutCancel(ms.ex.r.Context())
	if err := ms.blobs.Delete(ctx, id); err != nil && !errors.Is(err, store.ErrNotFound) {
		return
	}
	_ = ms.objs.Delete(ctx, kindFileBlob, blobOwner, id)
}

// publicBase is the absolute URL of the gateway as the client reached it: the request's scheme
// and host (X-Forwarded-Proto and X-Forwarded-Host when Caddy trusts the proxy that sent them)
// and the site's path prefix.
func publicBase(r *http.Request, prefix string) string {
	scheme, host := "http", r.Host
	if r.TLS != nil {
		scheme = "https"
	}
	if trusted, _ := caddyhttp.GetVar(r.Context(), caddyhttp.TrustedProxyVarKey).(bool); trusted {
		if p := strings.TrimSpace(strings.Split(r.Header.Get("X-Forwarded-Proto"), ",")[0]); p == "http" || p == "https" {
			scheme = p
		}
		if h := strings.TrimSpace(strings.Split(r.Header.Get("X-Forwarded-Host"), ",")[0]); h != "" {
			host = h
		}
	}
	if host == "" {
		host = "localhost"
	}
	return scheme + "://" + host + prefix
}

// lookup reads one of the caller's message batches.
func (ms *msgBatchService) lookup(ctx context.Context, id string) (*batch.MessageBatch, batchRun, *wire.Error) {
	rec, err := ms.objs.Get(ctx, kindMsgBatch, ms.owner, id)
	if err != nil {
		return nil, batchRun{}, ms.lookupError(id, err)
	}
	m, run, err := decodeMsgBatch(rec.Data)
	if err != nil {
		return nil, run, ms.g.storeError(ms.ex, "reading a message batch record", err)
	}
	return m, run, nil
}

// lookupError is the refusal of a lookup: another key's batch is as missing as one that never
// existed (404 not_found_error).
func (ms *msgBatchService) lookupError(id string, err error) *wire.Error {
	if errors.Is(err, store.ErrNotFound) || !isMsgBatch(id) {
		return &wire.Error{Status: http.StatusNotFound, Type: wire.TypeInvalidRequest, Reason: "not_found",
			Message: "No message batch found with id '" + echoValue(id) + "'."}
	}
	return ms.g.storeError(ms.ex, "reading a message batch", err)
}

// get answers GET /v1/messages/batches/{id}.
func (ms *msgBatchService) get(ctx context.Context, id string) ([]byte, *wire.Error) {
	m, _, werr := ms.lookup(ctx, id)
	if werr != nil {
		return nil, werr
	}
	return m.AppendJSON(nil), nil
}

// list answers GET /v1/messages/batches: the caller's batches, newest first, paged with
// after_id (older) or before_id (newer).
func (ms *msgBatchService) list(r *http.Request) ([]byte, *wire.Error) {
	q := r.URL.Query()
	limit, ok := pageLimit(q.Get("limit"), defaultMsgBatchListLimit, maxMsgBatchListLimit)
	if !ok {
		return nil, wire.InvalidRequest("limit", "limit: Input should be an integer from 1 to %d, got %q.", maxMsgBatchListLimit, echoValue(q.Get("limit")))
	}
	opts := store.ListOptions{Limit: limit, Order: store.OrderDesc, After: q.Get("after_id"), Before: q.Get("before_id")}
	page, err := ms.objs.List(r.Context(), kindMsgBatch, ms.owner, opts)
	if err != nil {
		return nil, ms.g.storeError(ms.ex, "listing message batches", err)
	}
	out, err := decodePage(page.Records, func(data []byte) (*batch.MessageBatch, error) {
		m, _, err := decodeMsgBatch(data)
		return m, err
	})
	if err != nil {
		return nil, ms.g.storeError(ms.ex, "reading a message batch record", err)
	}
	return batch.AppendMessageBatchList(nil, out, page.HasMore), nil
}

// cancel answers POST /v1/messages/batches/{id}/cancel: the batch moves to canceling (a compare
// and swap); the runner ends it, the requests never run as canceled.
func (ms *msgBatchService) cancel(ctx context.Context, id string) ([]byte, *wire.Error) {
	out, refused, err := updateOwned(ctx, ms.objs, kindMsgBatch, ms.owner, id, decodeMsgBatch, encodeMsgBatch,
		func(m *batch.MessageBatch) *wire.Error { return m.Cancel(ms.g.now()) })
	switch {
	case refused != nil:
		return nil, refused
	case err != nil:
		return nil, ms.lookupError(id, err)
	}
	ms.g.backend.wakeRunner()
	return out.AppendJSON(nil), nil
}

// delete answers DELETE /v1/messages/batches/{id}: only an ended batch; its blobs go with it.
func (ms *msgBatchService) delete(ctx context.Context, id string) ([]byte, *wire.Error) {
	m, _, werr := ms.lookup(ctx, id)
	if werr != nil {
		return nil, werr
	}
	if werr := m.Deletable(); werr != nil {
		return nil, werr
	}
	if err := ms.objs.Delete(ctx, kindMsgBatch, ms.owner, id); err != nil {
		return nil, ms.lookupError(id, err)
	}
	ms.dropBlob(msgInputBlob(id))
	ms.dropBlob(msgResultsBlob(id))
	return batch.AppendMessageBatchDeleted(nil, id), nil
}

// results answers GET /v1/messages/batches/{id}/results: the JSONL results, streamed from the
// store, once the batch has ended.
func (ms *msgBatchService) results(w http.ResponseWriter, r *http.Request, id string) *wire.Error {
	m, _, werr := ms.lookup(r.Context(), id)
	if werr != nil {
		return werr
	}
	if m.ProcessingStatus != batch.ProcessingEnded {
		return &wire.Error{Status: http.StatusBadRequest, Type: wire.TypeInvalidRequest, Reason: "batch_not_ended",
			Message: "Message batch " + id + " is still processing; its results are available once it has ended."}
	}
	blob, err := ms.blobs.Open(r.Context(), msgResultsBlob(id))
	if err != nil {
		return ms.g.storeError(ms.ex, "reading a message batch's results", err)
	}
	defer blob.Close()
	h := w.Header()
	ms.ex.setResponseHeaders(h)
	h["Content-Type"] = []string{"application/x-jsonl"}
	sw := &statusWriter{ResponseWriter: w}
	http.ServeContent(sw, r, "", m.EndedAt, blob)
	ms.ex.status = sw.status
	return nil
}
