package caddymodule

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
	"go.uber.org/zap"

	"github.com/caddyai/gateway/batch"
	"github.com/caddyai/gateway/finetune"
	"github.com/caddyai/gateway/internal/wire"
	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/store"
)

// FineTuningConfig passes OpenAI's fine-tuning jobs API through to a training service the
// operator runs (anything that speaks it), owned per key.
type FineTuningConfig struct {
	// Upstream is the training service's base URL (http://host:port or host:port). Required.
	Upstream string `json:"upstream"`
	// UpstreamKey is the credential sent to the training service as "Authorization: Bearer
	// <key>"; give it as a placeholder such as {env.TRAINER_KEY}.
	UpstreamKey string `json:"upstream_key,omitempty"`
	// Timeout bounds each call to the training service. Default: 30s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// ServeOn opts in to serving fine-tuned models: it names a configured model whose pool
	// serves each succeeded job's fine_tuned_model (as an adapter the model server loads, such as
	// vLLM's --enable-lora), on the chat endpoints, to the key that owns the job only. The name
	// is sent upstream as is; the pool's limits and admission apply. Default: not served.
	ServeOn string `json:"serve_on,omitempty"`
}

// The store kinds of fine-tuning: a job owned by a key (by the training service's job id), the
// listing index of a key's jobs (by a creation-ordered id), and a file pushed to the training
// service (by the gateway's file id).
const (
	kindFineTuningJob      = "fine_tuning_job"
	kindFineTuningJobIndex = "fine_tuning_job_index"
	kindFineTuningFile     = "fine_tuning_file"
	kindFineTunedModel     = "fine_tuned_model"
)

// maxTrainerAnswer bounds what the gateway reads of a training service's answer.
const maxTrainerAnswer = 8 << 20

// fineTuning is the provisioned pass-through.
type fineTuning struct {
	base          string // http://host:port
	authorization string
	client        *http.Client
	serveOn       *modelRoute // the pool of fine-tuned models; nil when they are not served
}

// provisionFineTuning resolves the training service's address and credential once.
func (g *Gateway) provisionFineTuning(repl *caddy.Replacer) error {
	cfg := g.FineTuning
	if cfg == nil {
		return nil
	}
	if cfg.Upstream == "" {
		return errors.New("fine_tuning: upstream is required")
	}
	base := cfg.Upstream
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	u, err := url.Parse(base)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return fmt.Errorf("fine_tuning: upstream %q: expected http(s)://host:port or host:port", cfg.Upstream)
	}
	ft := &fineTuning{base: strings.TrimSuffix(base, "/")}
	if cfg.UpstreamKey != "" {
		key, err := repl.ReplaceOrErr(cfg.UpstreamKey, false, true)
		if err != nil {
			return fmt.Errorf("fine_tuning: resolving upstream_key: %w", err)
		}
		if !hasPlaceholder(cfg.UpstreamKey) {
			g.logger.Warn("fine_tuning upstream_key given as a literal: it stays in the config JSON; prefer a placeholder such as {env.TRAINER_KEY}")
		}
		if key = strings.TrimSpace(key); key != "" {
			ft.authorization = "Bearer " + key
		}
	}
	timeout := time.Duration(cfg.Timeout)
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ft.client = &http.Client{Timeout: timeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if cfg.ServeOn != "" {
		m, ok := g.catalog.Resolve(cfg.ServeOn)
		if !ok || g.routes[m].predict != nil {
			return fmt.Errorf("fine_tuning: serve_on %q is not a configured chat model", cfg.ServeOn)
		}
		ft.serveOn = g.routes[m]
	}
	g.fineTuning = ft
	return nil
}

// fineTunedRoute is the route of a fine-tuned model the caller owns (a succeeded job's
// fine_tuned_model, with serve_on): the serve_on model's pool under the fine-tuned name. nil
// when fine-tuned models are not served or the caller owns no such model.
func (g *Gateway) fineTunedRoute(ex *exchange, name string) *modelRoute {
	ft := g.fineTuning
	if ft == nil || ft.serveOn == nil || !strings.HasPrefix(name, "ft:") || ex.key == nil {
		return nil
	}
	objs, _, err := g.backend.open()
	if err != nil {
		return nil
	}
	if _, err := objs.Get(ex.r.Context(), kindFineTunedModel, ex.keyID(), name); err != nil {
		return nil
	}
	route := *ft.serveOn
	base := route.model
	route.model = &policy.Model{Name: name, ContextWindow: base.ContextWindow, MaxOutputTokens: base.MaxOutputTokens,
		Limits: base.Limits}
	route.fallbacks = nil
	route.series = newRouteSeries(g.metrics, name) // its requests are counted under its own name
	return &route
}

// recordFineTunedModel remembers a succeeded job's fine_tuned_model as its owner's.
func (c *fineTuningCall) recordFineTunedModel(ctx context.Context, job []byte) {
	name := gjson.GetBytes(job, "fine_tuned_model").Str
	if c.g.fineTuning.serveOn == nil || name == "" || gjson.GetBytes(job, "status").Str != "succeeded" {
		return
	}
	if err := c.objs.Put(ctx, store.Record{Kind: kindFineTunedModel, Owner: c.owner, ID: name,
		Data: []byte(gjson.GetBytes(job, "id").Str)}); err != nil {
		c.g.logger.Warn("recording a fine-tuned model", zap.String("model", name), zap.Error(err))
	}
}

// serveFineTuning answers the fine-tuning jobs API. Every job belongs to the key that created
// it: the gateway records the owner in its store, another key's job does not exist (404), and
// the list is the key's own index.
func (g *Gateway) serveFineTuning(w http.ResponseWriter, r *http.Request, ex *exchange) error {
	if g.fineTuning == nil {
		g.refuse(w, ex, wire.InvalidURL(r.Method, r.URL.Path))
		return nil
	}
	objs, blobs, err := g.backend.open()
	if err != nil {
		g.refuse(w, ex, g.storeError(ex, "opening the store", err))
		return nil
	}
	fj := fineTuningCall{g: g, ex: ex, objs: objs, blobs: blobs, owner: ex.keyID()}
	var body []byte
	var werr *wire.Error
	switch ex.endpoint {
	case wire.EndpointFineTuningJobs:
		if r.Method == http.MethodPost {
			body, werr = fj.create(r)
		} else {
			body, werr = fj.list(r)
		}
	default:
		body, werr = fj.jobCall(r)
	}
	if werr != nil {
		g.refuse(w, ex, werr)
		return nil
	}
	return answerJSON(w, r, ex, body)
}

// fineTuningCall is one call of the fine-tuning API: the store and the caller.
type fineTuningCall struct {
	g     *Gateway
	ex    *exchange
	objs  store.Objects
	blobs store.Blobs
	owner string
}

// jobRecord is what the gateway keeps of a job: the listing index id, the gateway's ids of its
// files and the job as last seen.
func jobRecord(index, trainingFile, validationFile string, job []byte) []byte {
	b := []byte(`{"index":`)
	b = wire.AppendString(b, index)
	b = append(b, `,"training_file":`...)
	b = wire.AppendString(b, trainingFile)
	b = append(b, `,"validation_file":`...)
	b = wire.AppendString(b, validationFile)
	b = append(b, `,"job":`...)
	b = append(b, job...)
	return append(b, '}')
}

func (c *fineTuningCall) create(r *http.Request) ([]byte, *wire.Error) {
	ex, g := c.ex, c.g
	if werr := ex.body.read(r, g.MaxBody); werr != nil {
		return nil, werr
	}
	raw := ex.body.bytes()
	req, werr := finetune.ParseCreate(raw)
	if werr != nil {
		return nil, werr
	}
	m, ok := g.catalog.ResolveFor(ex.key, req.Model)
	if !ok {
		m = &policy.Model{Name: req.Model}
	}
	if !ex.key.AllowsModel(m) {
		return nil, wire.ModelNotAllowed(req.Model)
	}
	ctx := r.Context()
	out := append([]byte(nil), raw...)
	for _, f := range []struct{ param, id string }{{"training_file", req.TrainingFile}, {"validation_file", req.ValidationFile}} {
		if f.id == "" {
			continue
		}
		remote, werr := c.pushFile(ctx, f.param, f.id)
		if werr != nil {
			return nil, werr
		}
		var err error
		if out, err = sjson.SetBytes(out, f.param, remote); err != nil {
			return nil, wire.Internal()
		}
	}
	status, job, werr := c.forward(ctx, http.MethodPost, "/v1/fine_tuning/jobs", out)
	if werr != nil {
		return nil, werr
	}
	if status != http.StatusOK || gjson.GetBytes(job, "id").Str == "" {
		return nil, trainerError(status, job)
	}
	id := gjson.GetBytes(job, "id").Str
	job = localFiles(job, req.TrainingFile, req.ValidationFile)
	index := store.NewID("ftidx_")
	if err := c.objs.Put(ctx, store.Record{Kind: kindFineTuningJob, Owner: c.owner, ID: id,
		Data: jobRecord(index, req.TrainingFile, req.ValidationFile, job)}); err != nil {
		return nil, g.storeError(ex, "recording a fine-tuning job", err)
	}
	if err := c.objs.Put(ctx, store.Record{Kind: kindFineTuningJobIndex, Owner: c.owner, ID: index, Data: []byte(id)}); err != nil {
		return nil, g.storeError(ex, "recording a fine-tuning job", err)
	}
	return job, nil
}

// localFiles puts the gateway's file ids back into a job the training service answered.
func localFiles(job []byte, training, validation string) []byte {
	if training != "" && gjson.GetBytes(job, "training_file").Exists() {
		job, _ = sjson.SetBytes(job, "training_file", training)
	}
	if validation != "" && gjson.GetBytes(job, "validation_file").Type == gjson.String {
		job, _ = sjson.SetBytes(job, "validation_file", validation)
	}
	return job
}

// pushFile forwards one of the caller's fine-tune files to the training service's /v1/files
// (once: the training service's id is remembered) and returns the training service's id.
func (c *fineTuningCall) pushFile(ctx context.Context, param, id string) (string, *wire.Error) {
	notFound := wire.InvalidRequest(param, "Invalid '%s': no file with id '%s' (upload it with purpose fine-tune first).", param, wire.Shorten(id, 64))
	notFound.Code = "invalid_file"
	rec, err := c.objs.Get(ctx, kindFile, c.owner, id)
	if errors.Is(err, store.ErrNotFound) {
		return "", notFound
	} else if err != nil {
		return "", c.g.storeError(c.ex, "reading a file record", err)
	}
	f, err := batch.ParseFile(rec.Data)
	if err != nil {
		return "", c.g.storeError(c.ex, "reading a file record", err)
	}
	if f.Purpose != "fine-tune" {
		werr := wire.InvalidRequest(param, "Invalid '%s': file '%s' has purpose '%s'; fine-tuning needs purpose 'fine-tune'.", param, wire.Shorten(id, 64), f.Purpose)
		werr.Code = "invalid_file"
		return "", werr
	}
	if pushed, err := c.objs.Get(ctx, kindFineTuningFile, c.owner, id); err == nil {
		return string(pushed.Data), nil
	}
	blob, err := c.blobs.Open(ctx, id)
	if err != nil {
		return "", notFound
	}
	defer blob.Close()
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	written := make(chan struct{})
	go func() {
		defer close(written)
		defer logPanic(c.g.logger, "writing a file for the training service panicked")
		err := mw.WriteField("purpose", "fine-tune")
		if err == nil {
			var part io.Writer
			if part, err = mw.CreateFormFile("file", f.Filename); err == nil {
				if _, err = io.Copy(part, blob); err == nil {
					err = mw.Close()
				}
			}
		}
		pw.CloseWithError(err)
	}()
	status, answer, werr := c.send(ctx, http.MethodPost, "/v1/files", mw.FormDataContentType(), pr)
	_ = pr.Close() // ends the writer if the training service stopped reading
	<-written
	if werr != nil {
		return "", werr
	}
	remote := gjson.GetBytes(answer, "id").Str
	if status != http.StatusOK || remote == "" {
		return "", trainerError(status, answer)
	}
	if err := c.objs.Put(ctx, store.Record{Kind: kindFineTuningFile, Owner: c.owner, ID: id, Data: []byte(remote), ExpiresAt: f.ExpiresAt}); err != nil {
		return "", c.g.storeError(c.ex, "recording a file sent for fine-tuning", err)
	}
	return remote, nil
}

// list serves GET /v1/fine_tuning/jobs from the caller's own index, newest first: after=<job id>,
// limit 1..100 (default 20); a job that has not ended is asked for anew (see current).
func (c *fineTuningCall) list(r *http.Request) ([]byte, *wire.Error) {
	ctx, q := r.Context(), r.URL.Query()
	limit, ok := pageLimit(q.Get("limit"), 20, 100)
	if !ok {
		return nil, wire.InvalidRequest("limit", "Invalid 'limit': expected an integer from 1 to 100.")
	}
	opts := store.ListOptions{Limit: limit, Order: store.OrderDesc}
	if after := q.Get("after"); after != "" {
		rec, err := c.objs.Get(ctx, kindFineTuningJob, c.owner, after)
		if err != nil {
			return nil, c.jobLookupError(after, err)
		}
		opts.After = gjson.GetBytes(rec.Data, "index").Str
	}
	page, err := c.objs.List(ctx, kindFineTuningJobIndex, c.owner, opts)
	if err != nil {
		return nil, c.g.storeError(c.ex, "listing fine-tuning jobs", err)
	}
	body := []byte(`{"object":"list","data":[`)
	n := 0
	for _, idx := range page.Records {
		rec, err := c.objs.Get(ctx, kindFineTuningJob, c.owner, string(idx.Data))
		if err != nil {
			continue // a job whose record is gone
		}
		if n > 0 {
			body = append(body, ',')
		}
		body = append(body, c.current(ctx, rec)...)
		n++
	}
	body = append(body, `],"has_more":`...)
	body = append(body, fmt.Sprint(page.HasMore)...)
	return append(body, '}'), nil
}

// jobCall passes one call on an owned job through: retrieve, cancel, pause, resume (the job's
// record is updated with the answer), events and checkpoints (query kept).
func (c *fineTuningCall) jobCall(r *http.Request) ([]byte, *wire.Error) {
	ctx, id := r.Context(), c.ex.pathParam
	rec, err := c.objs.Get(ctx, kindFineTuningJob, c.owner, id)
	if err != nil {
		return nil, c.jobLookupError(id, err)
	}
	path := "/v1/fine_tuning/jobs/" + url.PathEscape(id)
	method := http.MethodGet
	updates := true
	switch c.ex.endpoint {
	case wire.EndpointFineTuningJobCancel:
		path, method = path+"/cancel", http.MethodPost
	case wire.EndpointFineTuningJobPause:
		path, method = path+"/pause", http.MethodPost
	case wire.EndpointFineTuningJobResume:
		path, method = path+"/resume", http.MethodPost
	case wire.EndpointFineTuningJobEvents:
		path, updates = path+"/events", false
	case wire.EndpointFineTuningJobCheckpoints:
		path, updates = path+"/checkpoints", false
	}
	if !updates && r.URL.RawQuery != "" {
		q := url.Values{}
		for _, k := range []string{"after", "limit"} {
			if v := r.URL.Query().Get(k); v != "" {
				q.Set(k, v)
			}
		}
		path += "?" + q.Encode()
	}
	status, answer, werr := c.forward(ctx, method, path, nil)
	if werr != nil {
		return nil, werr
	}
	if status != http.StatusOK {
		return nil, trainerError(status, answer)
	}
	if !updates {
		return answer, nil
	}
	answer = localFiles(answer, gjson.GetBytes(rec.Data, "training_file").Str, gjson.GetBytes(rec.Data, "validation_file").Str)
	if gjson.GetBytes(answer, "id").Str != id {
		return nil, invalidUpstreamResponse()
	}
	c.store(ctx, id, gjson.GetBytes(rec.Data, "index").Str, answer)
	return answer, nil
}

// current returns a listed job: as last seen when it had ended, else as the training service
// has it now (the record updated), or as last seen when the service does not answer.
func (c *fineTuningCall) current(ctx context.Context, rec store.Record) []byte {
	job := []byte(gjson.GetBytes(rec.Data, "job").Raw)
	switch gjson.GetBytes(job, "status").Str {
	case "succeeded", "failed", "cancelled":
		return job
	}
	status, answer, werr := c.forward(ctx, http.MethodGet, "/v1/fine_tuning/jobs/"+url.PathEscape(rec.ID), nil)
	if werr != nil || status != http.StatusOK || gjson.GetBytes(answer, "id").Str != rec.ID {
		return job
	}
	answer = localFiles(answer, gjson.GetBytes(rec.Data, "training_file").Str, gjson.GetBytes(rec.Data, "validation_file").Str)
	c.store(ctx, rec.ID, gjson.GetBytes(rec.Data, "index").Str, answer)
	return answer
}

// store keeps the job as the training service answered it, and its fine-tuned model.
func (c *fineTuningCall) store(ctx context.Context, id, index string, answer []byte) {
	_, err := c.objs.Update(ctx, kindFineTuningJob, c.owner, id, func(old []byte) ([]byte, error) {
		return jobRecord(index, gjson.GetBytes(old, "training_file").Str, gjson.GetBytes(old, "validation_file").Str, answer), nil
	})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		c.g.logger.Warn("updating a fine-tuning job record", zap.String("job_id", id), zap.Error(err))
	}
	c.recordFineTunedModel(ctx, answer)
}

func (c *fineTuningCall) jobLookupError(id string, err error) *wire.Error {
	if errors.Is(err, store.ErrNotFound) {
		return &wire.Error{Status: http.StatusNotFound, Type: wire.TypeInvalidRequest, Code: "fine_tune_not_found", Param: "fine_tuning_job_id",
			Message: fmt.Sprintf("No fine-tuning job found with id '%s'.", wire.Shorten(id, 64))}
	}
	return c.g.storeError(c.ex, "reading a fine-tuning job", err)
}

// forward sends a JSON call (or a bodiless one) to the training service.
func (c *fineTuningCall) forward(ctx context.Context, method, path string, body []byte) (int, []byte, *wire.Error) {
	var rd io.Reader
	ct := ""
	if body != nil {
		rd, ct = bytes.NewReader(body), "application/json"
	}
	return c.send(ctx, method, path, ct, rd)
}

// send makes one call to the training service with the gateway's credential (never the
// client's) and reads its answer, bounded.
func (c *fineTuningCall) send(ctx context.Context, method, path, contentType string, body io.Reader) (int, []byte, *wire.Error) {
	ft := c.g.fineTuning
	req, err := http.NewRequestWithContext(ctx, method, ft.base+path, body)
	if err != nil {
		return 0, nil, wire.Internal()
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if ft.authorization != "" {
		req.Header.Set("Authorization", ft.authorization)
	}
	req.Header.Set("X-Request-Id", c.ex.requestID)
	resp, err := ft.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return 0, nil, wire.ClientClosed()
		}
		c.g.logger.Warn("calling the training service", zap.String("request_id", c.ex.requestID), zap.Error(err))
		return 0, nil, &wire.Error{Status: http.StatusServiceUnavailable, Type: wire.TypeServer, Code: "training_service_unavailable",
			Reason: "training_service_unavailable", RetryAfter: time.Second, Message: "The training service is not reachable right now. Please try again shortly."}
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxTrainerAnswer+1))
	if err != nil || len(answer) > maxTrainerAnswer || resp.StatusCode == http.StatusOK && !gjson.ValidBytes(answer) {
		return 0, nil, invalidUpstreamResponse()
	}
	return resp.StatusCode, answer, nil
}

// trainerError is the client's answer to a training service's refusal: its status and message
// in the OpenAI envelope (a 404 of an owned job stays a 404).
func trainerError(status int, body []byte) *wire.Error {
	if status == http.StatusOK {
		return invalidUpstreamResponse()
	}
	return wire.NormalizeUpstreamError(status, "application/json", body)
}

// parseFineTuning parses:
//
//	fine_tuning {
//	    upstream <address>
//	    upstream_key <secret>
//	    timeout <duration>
//	    serve_on <model>
//	}
func parseFineTuning(d *caddyfile.Dispenser) (*FineTuningConfig, error) {
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	c := new(FineTuningConfig)
	err := newSubdirectives("fine_tuning").each(d, func(name string) (err error) {
		switch name {
		case "upstream":
			c.Upstream, err = stringArg(d)
		case "upstream_key":
			c.UpstreamKey, err = stringArg(d)
		case "timeout":
			c.Timeout, err = durationArg(d)
		case "serve_on":
			c.ServeOn, err = stringArg(d)
		default:
			return d.Errf("unrecognized fine_tuning subdirective %q", name)
		}
		return err
	})
	if err == nil && c.Upstream == "" {
		err = d.Err("fine_tuning: upstream is required")
	}
	return c, err
}
