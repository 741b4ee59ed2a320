package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/gjson"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddyai/gateway/batch"
	"github.com/caddyai/gateway/internal/wire"
	"github.com/caddyai/gateway/store"
)

// serveFiles answers the Files API (/v1/files, /v1/files/{file_id}, /v1/files/{file_id}/content)
// from the store. Every file belongs to the key that uploaded it (by key id): another key's
// file does not exist for the caller, whatever the call. Refusals go through refuse, like every
// other.
func (g *Gateway) serveFiles(w http.ResponseWriter, r *http.Request, ex *exchange) error {
	objs, blobs, err := g.backend.open()
	if err != nil {
		g.refuse(w, ex, g.storeError(ex, "opening the store", err))
		return nil
	}
	fs := fileService{g: g, ex: ex, objs: objs, blobs: blobs, owner: ex.keyID()}
	var body []byte
	var werr *wire.Error
	switch {
	case ex.endpoint == wire.EndpointFiles && r.Method == http.MethodPost:
		body, werr = fs.upload(w, r)
	case ex.endpoint == wire.EndpointFiles:
		body, werr = fs.list(r)
	case ex.endpoint == wire.EndpointFile && r.Method == http.MethodDelete:
		body, werr = fs.delete(r.Context(), ex.pathParam)
	case ex.endpoint == wire.EndpointFile:
		body, werr = fs.get(r.Context(), ex.pathParam)
	default:
		werr = fs.content(w, r, ex.pathParam)
		if werr == nil {
			return nil
		}
	}
	if werr != nil {
		g.refuse(w, ex, werr)
		return nil
	}
	return answerJSON(w, r, ex, body)
}

// fileService is one Files API call: the store and the caller.
type fileService struct {
	g     *Gateway
	ex    *exchange
	objs  store.Backend
	blobs *store.Dir
	owner string
}

// The purposes of an upload. batch is what the Batches API reads; fine-tune is what fine-tuning
// jobs send on to the training service (finetune.go). The others are OpenAI's, refused for now.
var (
	uploadPurposes      = []string{batch.PurposeBatch, "fine-tune"}
	unsupportedPurposes = []string{"assistants", "vision", "user_data", "evals"}
)

// The bounds of expires_after[seconds], as OpenAI's.
const (
	minFileExpiry = 3600
	maxFileExpiry = 2_592_000
)

// formSlack is what an upload's body may hold beyond the file: the other fields and the
// multipart framing.
const formSlack = 64 << 10

// maxFieldBytes bounds a form field other than the file.
const maxFieldBytes = 1024

// upload stores a multipart upload: the file part is streamed into the blob directory as it
// arrives (never held in memory) under the byte limit (and the line limit, for purpose=batch),
// then the file's record is written under the caller. The blob record, written first, lets the
// sweeper take the bytes of an upload that never finished. On any refusal nothing is kept.
func (fs *fileService) upload(w http.ResponseWriter, r *http.Request) (body []byte, werr *wire.Error) {
	ctx := r.Context()
	mediaType, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mediaType != "multipart/form-data" || params["boundary"] == "" {
		return nil, wire.InvalidRequest("", "The upload must be multipart/form-data with a file and a purpose.")
	}
	limits := fs.g.Files
	r.Body = http.MaxBytesReader(w, r.Body, limits.MaxBytes+formSlack)
	mr := multipart.NewReader(r.Body, params["boundary"])
	id := store.NewID(batch.PrefixFile)
	now := fs.g.now()
	var (
		purpose, anchor, seconds, filename string
		gotPurpose, gotFile, blobWritten   bool
		info                               store.BlobInfo
		shape                              batch.Shape
	)
	defer func() {
		if werr != nil && blobWritten {
			fs.dropBlob(id)
		}
	}()
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fs.readError(err)
		}
		switch name := part.FormName(); name {
		case "file":
			if gotFile {
				return nil, wire.InvalidRequest("file", "Only one file may be uploaded at a time.")
			}
			gotFile = true
			if filename = part.FileName(); filename == "" {
				return nil, wire.InvalidRequest("file", "The file field must be a file upload with a filename.")
			}
			if gotPurpose {
				if werr := checkPurpose(purpose); werr != nil {
					return nil, werr // refused before any byte is stored
				}
			}
			lim := store.Limits{MaxBytes: limits.MaxBytes}
			if gotPurpose && purpose == batch.PurposeBatch {
				lim.MaxLines = limits.MaxLines
			}
			if err := fs.objs.Put(ctx, store.Record{Kind: kindFileBlob, Owner: blobOwner, ID: id,
				Data: appendBlobRecord(nil, fs.owner, now)}); err != nil {
				return nil, fs.g.storeError(fs.ex, "recording an upload", err)
			}
			blobWritten = true // from here on, a refusal takes the blob record (and bytes) back
			if info, err = fs.blobs.Write(ctx, id, io.TeeReader(part, &shape), lim); err != nil {
				return nil, fs.writeError(err)
			}
		case "purpose", "expires_after[anchor]", "expires_after[seconds]":
			v, err := io.ReadAll(io.LimitReader(part, maxFieldBytes+1))
			if err != nil {
				return nil, fs.readError(err)
			}
			if len(v) > maxFieldBytes {
				return nil, wire.InvalidRequest(name, "The field %s is longer than %d bytes.", name, maxFieldBytes)
			}
			switch name {
			case "purpose":
				purpose, gotPurpose = strings.TrimSpace(string(v)), true
			case "expires_after[anchor]":
				anchor = string(v)
			default:
				seconds = string(v)
			}
		}
		// other fields are skipped: NextPart reads past them
	}
	switch {
	case !gotFile:
		return nil, wire.InvalidRequest("file", "Missing required parameter: 'file'.")
	case !gotPurpose || purpose == "":
		return nil, wire.InvalidRequest("purpose", "Missing required parameter: 'purpose'.")
	}
	if werr := checkPurpose(purpose); werr != nil {
		return nil, werr
	}
	f := &batch.File{ID: id, Bytes: info.Size, CreatedAt: now, Filename: filename, Purpose: purpose}
	if purpose == batch.PurposeBatch {
		if info.Lines > limits.MaxLines {
			return nil, tooManyLines(limits.MaxLines)
		}
		if werr := checkShape(&shape); werr != nil {
			return nil, werr
		}
		f.ExpiresAt = now.Add(time.Duration(limits.BatchExpiry))
	}
	expiry, werr := expiresAfter(anchor, seconds)
	if werr != nil {
		return nil, werr
	}
	if expiry > 0 {
		f.ExpiresAt = now.Add(expiry)
	}
	body = f.AppendJSON(nil)
	if err := fs.objs.Put(ctx, store.Record{Kind: kindFile, Owner: fs.owner, ID: id, Data: body, ExpiresAt: f.ExpiresAt}); err != nil {
		return nil, fs.g.storeError(fs.ex, "recording an upload", err)
	}
	return body, nil
}

// checkPurpose refuses the purposes the gateway does not take.
func checkPurpose(purpose string) *wire.Error {
	for _, p := range uploadPurposes {
		if purpose == p {
			return nil
		}
	}
	werr := wire.Errorf(http.StatusBadRequest, "invalid_value", "purpose",
		"Invalid value for 'purpose': %q is not supported. Supported values: 'batch' and 'fine-tune'.", echoValue(purpose))
	for _, p := range unsupportedPurposes {
		if purpose == p {
			werr.Message = fmt.Sprintf("The purpose '%s' is not supported by this gateway. Supported values: 'batch' and 'fine-tune'.", p)
		}
	}
	return werr
}

// expiresAfter reads expires_after[anchor] and expires_after[seconds] (both or neither); 0 for
// neither.
func expiresAfter(anchor, seconds string) (time.Duration, *wire.Error) {
	if anchor == "" && seconds == "" {
		return 0, nil
	}
	if anchor != "created_at" {
		return 0, wire.Errorf(http.StatusBadRequest, "invalid_value", "expires_after.anchor",
			"Invalid value for 'expires_after.anchor': expected 'created_at', got %q.", echoValue(anchor))
	}
	n, err := strconv.ParseInt(strings.TrimSpace(seconds), 10, 64)
	if err != nil || n < minFileExpiry || n > maxFileExpiry {
		return 0, wire.Errorf(http.StatusBadRequest, "invalid_value", "expires_after.seconds",
			"Invalid value for 'expires_after.seconds': expected an integer from %d to %d, got %q.", minFileExpiry, maxFileExpiry, echoValue(seconds))
	}
	return time.Duration(n) * time.Second, nil
}

// checkShape refuses a batch file that is not UTF-8 JSONL (the cheap look of batch.Shape; the
// batch's validation checks each line).
func checkShape(s *batch.Shape) *wire.Error {
	line, badUTF8, ok := s.Check()
	switch {
	case ok:
		return nil
	case badUTF8:
		return wire.Errorf(http.StatusBadRequest, "invalid_file", "file", "The file is not valid UTF-8: a batch file must be JSONL text.")
	}
	return wire.Errorf(http.StatusBadRequest, "invalid_file", "file",
		"The file is not valid JSONL: line %d is not a JSON object. Each line of a batch file must be one JSON object.", line)
}

func tooManyLines(max int64) *wire.Error {
	return wire.Errorf(http.StatusBadRequest, "too_many_lines", "file", "A batch file may have at most %d lines.", max)
}

// list answers GET /v1/files: the caller's files, newest first unless order=asc, paged with
// after=<id>.
func (fs *fileService) list(r *http.Request) ([]byte, *wire.Error) {
	q := r.URL.Query()
	limit, ok := pageLimit(q.Get("limit"), store.MaxListLimit, store.MaxListLimit)
	if !ok {
		return nil, wire.Errorf(http.StatusBadRequest, "invalid_value", "limit",
			"Invalid value for 'limit': expected an integer from 1 to %d, got %q.", store.MaxListLimit, echoValue(q.Get("limit")))
	}
	opts := store.ListOptions{Limit: limit, Order: store.OrderDesc, After: q.Get("after")}
	switch v := q.Get("order"); v {
	case "", "desc":
	case "asc":
		opts.Order = store.OrderAsc
	default:
		return nil, wire.Errorf(http.StatusBadRequest, "invalid_value", "order",
			"Invalid value for 'order': expected 'asc' or 'desc', got %q.", echoValue(v))
	}
	if purpose := q.Get("purpose"); purpose != "" {
		opts.Match = func(rec store.Record) bool { return gjson.GetBytes(rec.Data, "purpose").Str == purpose }
	}
	page, err := fs.objs.List(r.Context(), kindFile, fs.owner, opts)
	if err != nil {
		return nil, fs.g.storeError(fs.ex, "listing files", err)
	}
	files, err := decodePage(page.Records, batch.ParseFile)
	if err != nil {
		return nil, fs.g.storeError(fs.ex, "reading a file record", err)
	}
	return batch.AppendFileList(nil, files, page.HasMore), nil
}

// get answers GET /v1/files/{file_id}.
func (fs *fileService) get(ctx context.Context, id string) ([]byte, *wire.Error) {
	rec, err := fs.objs.Get(ctx, kindFile, fs.owner, id)
	if err != nil {
		return nil, fs.lookupError(id, err)
	}
	return rec.Data, nil
}

// delete answers DELETE /v1/files/{file_id}: the record, then the bytes, then the blob record
// (a failure after the record leaves the bytes to the sweeper).
func (fs *fileService) delete(ctx context.Context, id string) ([]byte, *wire.Error) {
	if err := fs.objs.Delete(ctx, kindFile, fs.owner, id); err != nil {
		return nil, fs.lookupError(id, err)
	}
	fs.dropBlob(id)
	return batch.AppendFileDeleted(nil, id), nil
}

// content answers GET /v1/files/{file_id}/content with the raw bytes, streamed from the blob by
// http.ServeContent (Content-Length, Range requests, HEAD). The SDKs' Accept header is ignored:
// the answer is always application/octet-stream.
func (fs *fileService) content(w http.ResponseWriter, r *http.Request, id string) *wire.Error {
	rec, err := fs.objs.Get(r.Context(), kindFile, fs.owner, id)
	if err != nil {
		return fs.lookupError(id, err)
	}
	blob, err := fs.blobs.Open(r.Context(), id)
	if err != nil {
		return fs.lookupError(id, err)
	}
	defer blob.Close()
	f, err := batch.ParseFile(rec.Data)
	if err != nil {
		return fs.g.storeError(fs.ex, "reading a file record", err)
	}
	h := w.Header()
	fs.ex.setResponseHeaders(h)
	h["Content-Type"] = []string{"application/octet-stream"}
	h["Content-Disposition"] = []string{mime.FormatMediaType("attachment", map[string]string{"filename": f.Filename})}
	sw := &statusWriter{ResponseWriter: w}
	http.ServeContent(sw, r, "", f.CreatedAt, blob)
	fs.ex.status = sw.status
	return nil
}

// dropBlob deletes a file's bytes and its blob record; what fails is left to the sweeper.
func (fs *fileService) dropBlob(id string) {
	ctx := context.WithoutCancel(fs.ex.r.Context())
	if err := fs.blobs.Delete(ctx, id); err != nil && !errors.Is(err, store.ErrNotFound) {
		fs.g.logger.Warn("deleting a file's bytes; the sweeper will retry", zap.String("file_id", id), zap.Error(err))
		return
	}
	if err := fs.objs.Delete(ctx, kindFileBlob, blobOwner, id); err != nil && !errors.Is(err, store.ErrNotFound) {
		fs.g.logger.Warn("deleting a file's blob record", zap.String("file_id", id), zap.Error(err))
	}
}

// lookupError is the refusal of a lookup: another key's file is as missing as one that never
// existed.
func (fs *fileService) lookupError(id string, err error) *wire.Error {
	if errors.Is(err, store.ErrNotFound) {
		return batch.ErrFileNotFound(id)
	}
	return fs.g.storeError(fs.ex, "reading a file", err)
}

// readError is the refusal of an upload whose body could not be read.
func (fs *fileService) readError(err error) *wire.Error {
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return fileTooLarge(fs.g.Files.MaxBytes)
	case fs.ex.clientGone():
		return wire.ClientClosed()
	}
	return wire.InvalidRequest("file", "The upload could not be read: %s.", strings.TrimPrefix(err.Error(), "multipart: "))
}

// writeError is the refusal of an upload the blob directory did not take.
func (fs *fileService) writeError(err error) *wire.Error {
	switch {
	case errors.Is(err, store.ErrTooLarge):
		return fileTooLarge(fs.g.Files.MaxBytes)
	case errors.Is(err, store.ErrTooManyLines):
		return tooManyLines(fs.g.Files.MaxLines)
	case errors.Is(err, store.ErrUnavailable):
		return fs.g.storeError(fs.ex, "storing an upload", err)
	}
	return fs.readError(err)
}

func fileTooLarge(max int64) *wire.Error {
	return &wire.Error{Status: http.StatusRequestEntityTooLarge, Type: wire.TypeInvalidRequest, Code: "file_too_large", Param: "file",
		Message: fmt.Sprintf("The file exceeds the limit of %d bytes.", max)}
}

// storeRetryAfter is the wait a 503 of the store asks for.
const storeRetryAfter = 5 * time.Second

// storeError is the refusal of a call the store could not serve: 503 with Retry-After when the
// store is unavailable (a full disk, Redis down), else 500. The cause is logged, never sent.
func (g *Gateway) storeError(ex *exchange, doing string, err error) *wire.Error {
	if c := g.logger.Check(zapcore.ErrorLevel, doing); c != nil {
		c.Write(zap.String("request_id", ex.requestID), zap.String("key_id", ex.keyID()), zap.Error(err))
	}
	if errors.Is(err, store.ErrUnavailable) {
		return &wire.Error{Status: http.StatusServiceUnavailable, Type: wire.TypeServer, Code: "store_unavailable",
			RetryAfter: storeRetryAfter, Reason: "store_unavailable",
			Message: fmt.Sprintf("The gateway's file store is unavailable right now. Please retry after %d seconds.", int(storeRetryAfter/time.Second))}
	}
	return wire.Internal()
}

// echoValue shortens a client's value for an error message.
func echoValue(s string) string { return wire.Shorten(s, 64) }

// statusWriter notes the status http.ServeContent answered with.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
