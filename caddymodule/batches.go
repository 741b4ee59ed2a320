package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/tidwall/gjson"

	"github.com/caddyai/gateway/batch"
	"github.com/caddyai/gateway/internal/wire"
	"github.com/caddyai/gateway/store"
)

// The kinds of the store's records the Batches API writes. A batch's record is under its owner
// (the key id); its active record is under blobOwner so that the runner finds every batch that
// still has work, whoever owns it; a line's result is under the batch's id.
const (
	kindBatch       = "batch"
	kindBatchActive = "batch_active"
	kindBatchResult = "batch_result"
)

// batchQueue is the name of the work queue of batch lines.
const batchQueue = "batch_lines"

// maxBatchCreateBytes bounds the body of POST /v1/batches.
const maxBatchCreateBytes = 64 << 10

// Paging of GET /v1/batches, as OpenAI's.
const (
	defaultBatchListLimit = 20
	maxBatchListLimit     = 100
)

// serveBatches answers the Batches API (/v1/batches, /v1/batches/{batch_id},
// /v1/batches/{batch_id}/cancel) from the store. Every batch belongs to the key that created it
// (by key id): another key's batch does not exist for the caller, whatever the call. The lines
// are run by the store's batch runner (batchrun.go).
func (g *Gateway) serveBatches(w http.ResponseWriter, r *http.Request, ex *exchange) error {
	objs, _, err := g.backend.open()
	if err != nil {
		g.refuse(w, ex, g.storeError(ex, "opening the store", err))
		return nil
	}
	bs := batchService{g: g, ex: ex, objs: objs, owner: ex.keyID()}
	var body []byte
	var werr *wire.Error
	switch {
	case ex.endpoint == wire.EndpointBatches && r.Method == http.MethodPost:
		body, werr = bs.create(w, r)
	case ex.endpoint == wire.EndpointBatches:
		body, werr = bs.list(r)
	case ex.endpoint == wire.EndpointBatchCancel:
		body, werr = bs.cancel(r.Context(), ex.pathParam)
	default:
		body, werr = bs.get(r.Context(), ex.pathParam)
	}
	if werr != nil {
		g.refuse(w, ex, werr)
		return nil
	}
	return answerJSON(w, r, ex, body)
}

// batchService is one Batches API call: the store and the caller.
type batchService struct {
	g     *Gateway
	ex    *exchange
	objs  store.Backend
	owner string
}

// create answers POST /v1/batches: the request is checked (synchronous 400s), the input file
// must be the caller's and have purpose batch, and the batch is stored in validating, with the
// active record the runner looks for written first (a batch record is never without one).
func (bs *batchService) create(w http.ResponseWriter, r *http.Request) ([]byte, *wire.Error) {
	ctx := r.Context()
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBatchCreateBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, wire.InvalidRequest("", "The request body exceeds %d bytes.", maxBatchCreateBytes)
		}
		return nil, wire.ClientClosed()
	}
	if bs.ex.key.NoBatches {
		return nil, &wire.Error{Status: http.StatusForbidden, Type: wire.TypePermission, Code: "batches_not_allowed",
			Message: "This API key may not create batches."}
	}
	req, werr := batch.ParseCreateRequest(raw, batch.SupportedEndpoints)
	if werr != nil {
		return nil, werr
	}
	rec, err := bs.objs.Get(ctx, kindFile, bs.owner, req.InputFileID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, batch.ErrInputFileNotFound(req.InputFileID)
	} else if err != nil {
		return nil, bs.g.storeError(bs.ex, "reading a batch's input file", err)
	}
	f, err := batch.ParseFile(rec.Data)
	if err != nil {
		return nil, bs.g.storeError(bs.ex, "reading a file record", err)
	}
	if f.Purpose != batch.PurposeBatch {
		return nil, batch.ErrInputFilePurpose(req.InputFileID, f.Purpose)
	}
	now := bs.g.now()
	b := batch.NewBatch(batch.NewID(batch.PrefixBatch, now), req, now)
	run := lineTarget(r, "/v1/batches")
	if err := bs.objs.Put(ctx, store.Record{Kind: kindBatchActive, Owner: blobOwner, ID: b.ID,
		Data: appendBlobRecord(nil, bs.owner, now)}); err != nil {
		return nil, bs.g.storeError(bs.ex, "recording a batch", err)
	}
	if err := bs.objs.Put(ctx, store.Record{Kind: kindBatch, Owner: bs.owner, ID: b.ID, Data: encodeBatch(b, run),
		ExpiresAt: now.Add(time.Duration(bs.g.Batches.Retention))}); err != nil {
		return nil, bs.g.storeError(bs.ex, "recording a batch", err)
	}
	bs.g.backend.wakeRunner()
	return b.AppendJSON(nil), nil
}

// lineTarget says where the runner sends the batch's lines: the server, host and path prefix
// the create request came in by, so a line goes through the same site (matchers, handlers,
// ai_gateway, reverse_proxy) as a live request of the same client would.
func lineTarget(r *http.Request, path string) batchRun {
	run := batchRun{Host: r.Host}
	orig := r
	if o, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok {
		orig = &o
	}
	if p, ok := strings.CutSuffix(orig.URL.Path, path); ok {
		run.Prefix = p
	} else if p, ok := strings.CutSuffix(orig.URL.Path, path+"/"); ok {
		run.Prefix = p
	}
	srv, _ := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	if app, err := caddy.ActiveContext().AppIfConfigured("http"); err == nil && srv != nil {
		for name, s := range app.(*caddyhttp.App).Servers {
			if s == srv {
				run.Server = name
			}
		}
	}
	return run
}

// get answers GET /v1/batches/{batch_id}.
func (bs *batchService) get(ctx context.Context, id string) ([]byte, *wire.Error) {
	rec, err := bs.objs.Get(ctx, kindBatch, bs.owner, id)
	if err != nil {
		return nil, bs.lookupError(id, err)
	}
	return batchObject(rec.Data), nil
}

// list answers GET /v1/batches: the caller's batches, newest first, paged with after=<id>.
func (bs *batchService) list(r *http.Request) ([]byte, *wire.Error) {
	q := r.URL.Query()
	limit, ok := pageLimit(q.Get("limit"), defaultBatchListLimit, maxBatchListLimit)
	if !ok {
		return nil, wire.Errorf(http.StatusBadRequest, "invalid_value", "limit",
			"Invalid value for 'limit': expected an integer from 1 to %d, got %q.", maxBatchListLimit, echoValue(q.Get("limit")))
	}
	page, err := bs.objs.List(r.Context(), kindBatch, bs.owner, store.ListOptions{Limit: limit, Order: store.OrderDesc, After: q.Get("after")})
	if err != nil {
		return nil, bs.g.storeError(bs.ex, "listing batches", err)
	}
	batches, err := decodePage(page.Records, func(data []byte) (*batch.Batch, error) {
		b, _, err := decodeBatch(data)
		return b, err
	})
	if err != nil {
		return nil, bs.g.storeError(bs.ex, "reading a batch record", err)
	}
	return batch.AppendBatchList(nil, batches, page.HasMore), nil
}

// cancel answers POST /v1/batches/{batch_id}/cancel: the batch moves to cancelling (a compare
// and swap, so it cannot undo a transition of the runner), and the runner finishes the
// cancellation. A batch in a terminal status is a 400.
func (bs *batchService) cancel(ctx context.Context, id string) ([]byte, *wire.Error) {
	b, refused, err := updateOwned(ctx, bs.objs, kindBatch, bs.owner, id, decodeBatch, encodeBatch,
		func(b *batch.Batch) *wire.Error { return b.Cancel(bs.g.now()) })
	switch {
	case refused != nil:
		return nil, refused
	case err != nil:
		return nil, bs.lookupError(id, err)
	}
	bs.g.backend.wakeRunner()
	return b.AppendJSON(nil), nil
}

// lookupError is the refusal of a lookup: another key's batch is as missing as one that never
// existed.
func (bs *batchService) lookupError(id string, err error) *wire.Error {
	if errors.Is(err, store.ErrNotFound) {
		return batch.ErrBatchNotFound(id)
	}
	return bs.g.storeError(bs.ex, "reading a batch", err)
}

// batchRun is what the runner keeps of a batch beside its object: where its lines are sent.
type batchRun struct {
	// Server is the name of the Caddy server the batch was created on.
	Server string `json:"server,omitempty"`
	// Host is the Host of the create request.
	Host string `json:"host,omitempty"`
	// Prefix is the path before /v1/ of the create request (a site mounted under a path).
	Prefix string `json:"prefix,omitempty"`
	// OutputExpiresAfter is the request's output_expires_after, in nanoseconds.
	OutputExpiresAfter int64 `json:"output_expires_after,omitempty"`
	// Closer is the runner writing the batch's files, until CloseUntil (unix ms): with several
	// instances, one of them ends a batch.
	Closer     string `json:"closer,omitempty"`
	CloseUntil int64  `json:"close_until,omitempty"`
	// Enqueuer is the runner filling the queue with the batch's lines, until EnqueueUntil (unix
	// ms): with several instances, one of them does (see holdEnqueue).
	Enqueuer     string `json:"enqueuer,omitempty"`
	EnqueueUntil int64  `json:"enqueue_until,omitempty"`
	// OutputFile and ErrorFile are the ids of the batch's files, chosen when its close is first
	// claimed: a close redone after a crash rewrites those files instead of leaving a first,
	// unreferenced copy in the owner's list.
	OutputFile string `json:"output_file,omitempty"`
	ErrorFile  string `json:"error_file,omitempty"`
	// Queued is set on a message batch once its requests are in the queue (the runner
	// enqueues them, so a create cut short never leaves a batch half queued).
	Queued bool `json:"queued,omitempty"`
	// Base is the absolute URL of the gateway a message batch was created through (scheme,
	// host and path prefix): its results_url is Base + batch.ResultsPath.
	Base string `json:"base,omitempty"`
	// AnthropicVersion is the anthropic-version of a message batch's create request, sent
	// with each of its requests.
	AnthropicVersion string `json:"anthropic_version,omitempty"`
	// Model is the model a message batch's requests name (mixed for several), for the metrics.
	Model string `json:"model,omitempty"`
}

// encodeBatch is a batch's record: {"object":<the batch object>,"run":{...}}.
func encodeBatch(b *batch.Batch, run batchRun) []byte {
	run.OutputExpiresAfter = int64(b.OutputExpiresAfter)
	dst := append([]byte(nil), `{"object":`...)
	dst = b.AppendJSON(dst)
	dst = append(dst, `,"run":`...)
	r, _ := json.Marshal(run) // plain strings and a number: cannot fail
	dst = append(dst, r...)
	return append(dst, '}')
}

// decodeBatch reads a batch's record back.
func decodeBatch(data []byte) (*batch.Batch, batchRun, error) {
	var run batchRun
	b, err := batch.ParseBatch([]byte(gjson.GetBytes(data, "object").Raw))
	if err != nil {
		return nil, run, err
	}
	if raw := gjson.GetBytes(data, "run").Raw; raw != "" {
		if err := json.Unmarshal([]byte(raw), &run); err != nil {
			return nil, run, err
		}
	}
	b.OutputExpiresAfter = time.Duration(run.OutputExpiresAfter)
	return b, run, nil
}

// batchObject is the batch object of a batch's record.
func batchObject(data []byte) []byte { return []byte(gjson.GetBytes(data, "object").Raw) }
