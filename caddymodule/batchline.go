package caddymodule

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddyai/gateway/internal/wire"
)

// A batch line is run as a real request through the Caddy server the batch was created on:
// Server.ServeHTTP with the create request's Host and path prefix, so the site's matchers and
// every handler of its chain apply, ai_gateway's whole pipeline included (validation,
// rewriting, the context check, content policy, limits, admission, the hand-off to
// reverse_proxy, the response tap, usage, metrics and the access log). The only difference
// from a client's request is how the key is found: the request carries no secret, but a
// context value (which no client can set) naming the owning key's id, and ai_gateway takes the
// key from its key table by that id (authenticateLine).

// batchLineCtxKey is the context key of a batch line's identity.
type batchLineCtxKey struct{}

// batchLine is the identity of a request the batch runner makes for a line.
type batchLine struct {
	keyID, batchID, customID string
	// deferred is set by the pipeline when it put the line off for want of spare capacity
	// (whatever the envelope of the answer: the Anthropic one has no error code).
	deferred bool
}

// batchLineOf returns the batch line a request runs, or nil for a client's request.
func batchLineOf(r *http.Request) *batchLine {
	l, _ := r.Context().Value(batchLineCtxKey{}).(*batchLine)
	return l
}

// errNoServer is a line's failure when the server its batch was created on is not configured
// any more (or no config is running).
var errNoServer = errors.New("the server the batch was created on is not running")

// errLineAborted is a line's failure when its request was aborted before it was answered.
var errLineAborted = errors.New("the batch line's request was aborted")

// lineRemoteAddr is the client address of a batch line's request.
const lineRemoteAddr = "127.0.0.1:0"

// sendLine runs a batch line through the server its batch was created on and returns the
// answer as a client would have received it.
func sendLine(ctx context.Context, ln lineRequest) (ans lineAnswer) {
	defer func() {
		// the pipeline aborts a request whose client went away (here: the runner stopping)
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				panic(v)
			}
			ans = lineAnswer{Err: errLineAborted}
		}
	}()
	srv := lineServer(ln.Run.Server)
	if srv == nil {
		return lineAnswer{Err: errNoServer}
	}
	host := ln.Run.Host
	if host == "" {
		host = "localhost"
	}
	line := &batchLine{keyID: ln.Owner, batchID: ln.BatchID, customID: ln.CustomID}
	ctx = context.WithValue(ctx, batchLineCtxKey{}, line)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+host+ln.Run.Prefix+ln.Endpoint, bytes.NewReader(ln.Body))
	if err != nil {
		return lineAnswer{Err: err}
	}
	req.RemoteAddr, req.RequestURI = lineRemoteAddr, req.URL.RequestURI()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "ai_gateway-batch")
	if ln.Run.AnthropicVersion != "" {
		req.Header.Set("Anthropic-Version", ln.Run.AnthropicVersion)
	}
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, req)
	if ctx.Err() != nil && rec.Body.Len() == 0 {
		return lineAnswer{Err: ctx.Err()} // stopped before anything was answered
	}
	return lineAnswer{Status: rec.Code, Body: rec.Body.Bytes(), RequestID: rec.Header().Get("X-Request-Id"),
		RetryAfter: lineRetryAfter(rec.Header()), Deferred: line.deferred}
}

// lineServer finds the named server of the running config (the only one when the name is
// unknown, as for a batch created while a reload was swapping servers).
func lineServer(name string) *caddyhttp.Server {
	app, err := caddy.ActiveContext().AppIfConfigured("http")
	if err != nil {
		return nil
	}
	servers := app.(*caddyhttp.App).Servers
	if srv, ok := servers[name]; ok {
		return srv
	}
	if len(servers) == 1 {
		for _, srv := range servers {
			return srv
		}
	}
	return nil
}

// authenticateLine sets the key of a batch line's request from the key table by id: the key
// that owns the batch, with its current settings (a key disabled or expired since has its
// lines refused as its requests would be).
func (g *Gateway) authenticateLine(ex *exchange, line *batchLine) *wire.Error {
	key := g.keys.Load().ByID(line.keyID)
	switch {
	case key == nil:
		return &wire.Error{Status: http.StatusUnauthorized, Type: wire.TypeInvalidRequest, Code: "invalid_api_key", Reason: "key_unknown",
			Message: "The API key that created this batch is no longer configured."}
	case key.Disabled:
		ex.key = key
		return &wire.Error{Status: http.StatusUnauthorized, Type: wire.TypeInvalidRequest, Code: "invalid_api_key", Reason: "key_disabled",
			Message: "This API key has been disabled."}
	case !key.ExpiresAt.IsZero() && !g.now().Before(key.ExpiresAt):
		ex.key = key
		return &wire.Error{Status: http.StatusUnauthorized, Type: wire.TypeInvalidRequest, Code: "invalid_api_key", Reason: "key_expired",
			Message: "This API key has expired."}
	}
	ex.key, ex.batchLine = key, line
	return nil
}

// codeBatchDeferred is the code of a batch line the model had no spare capacity for: the runner
// gives the line back to the queue and tries again shortly (never an error of the batch).
const codeBatchDeferred = "batch_deferred"

// batchDeferRetry is how soon a deferred batch line is tried again.
const batchDeferRetry = time.Second

// batchDeferred is the refusal of a batch line while the model's pool has no spare capacity
// (every slot taken, or interactive requests waiting).
func batchDeferred(model string, retryAfter time.Duration) *wire.Error {
	return &wire.Error{Status: http.StatusServiceUnavailable, Type: wire.TypeServer, Code: codeBatchDeferred, Reason: codeBatchDeferred,
		RetryAfter: retryAfter, Message: "The model " + model + " has no spare capacity for batch requests right now."}
}

// recordBatchLine counts a batch line's outcome and tokens, with the status the runner judges
// it by (transient). A line deferred for spare capacity is logged at debug level only (it is
// the normal state of a batch on a busy pool, not an error) and not counted as a request.
func (g *Gateway) recordBatchLine(ex *exchange, model string) {
	outcome := "failed"
	switch {
	case ex.status >= 200 && ex.status < 300:
		outcome = "done"
	case ex.reject == codeBatchDeferred:
		outcome, ex.batchLine.deferred = "deferred", true
		caddyhttp.SetVar(ex.r.Context(), caddyhttp.LogLevelVar, "debug")
	case transient(lineAnswer{Status: ex.status}):
		outcome = "retried"
	}
	g.metrics.batchLines.WithLabelValues(model, outcome).Inc()
	if ex.usage.PromptTokens > 0 {
		g.metrics.batchTokens.WithLabelValues(model, "prompt").Add(float64(ex.usage.PromptTokens))
	}
	if ex.usage.CompletionTokens > 0 {
		g.metrics.batchTokens.WithLabelValues(model, "completion").Add(float64(ex.usage.CompletionTokens))
	}
}
