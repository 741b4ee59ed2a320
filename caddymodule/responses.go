package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/caddyai/gateway/store"
)

// Stored responses. The Responses API stores each response upstream by default (store: true);
// the gateway records which key created it, in its store, under (kind "response", key id,
// response id), as the answer passes (the JSON body's id, or the stream's response.created,
// before the client has it). GET and DELETE /v1/responses/{id}, POST .../cancel and GET
// .../input_items are sent to the model that made the response only for that key, and a
// previous_response_id is accepted only when it is the caller's: another key's response does
// not exist for the caller (404, the same answer as an unknown id).

// kindResponse is the store kind of the ownership records of stored responses.
const kindResponse = "response"

// responseRetention is how long an ownership record is kept: OpenAI keeps stored responses for
// 30 days.
const responseRetention = 30 * 24 * time.Hour

// responseRecord is the JSON of an ownership record.
type responseRecord struct {
	// Model is the gateway's name of the model that made the response.
	Model string `json:"model"`
	// CreatedAt is when the gateway saw the response, in Unix seconds.
	CreatedAt int64 `json:"created_at"`
}

// responseNotFound is the answer for a response id the caller does not own.
func responseNotFound(id string) *wire.Error {
	return &wire.Error{Status: http.StatusNotFound, Type: wire.TypeInvalidRequest, Reason: "response_not_found",
		Message: fmt.Sprintf("Response with id '%s' not found.", echoValue(id))}
}

// checkPreviousResponse refuses a Responses request whose previous_response_id is not one of
// the caller's stored responses.
func (g *Gateway) checkPreviousResponse(ctx context.Context, ex *exchange) *wire.Error {
	id := ex.info.PreviousResponseID
	if ex.spec.Dialect != wire.DialectResponses || id == "" || ex.route != nil && ex.route.bridge != nil {
		return nil // a bridged model refuses previous_response_id itself (it keeps no conversation)
	}
	if _, werr := g.ownedResponse(ctx, ex, id); werr != nil {
		if werr.Status == http.StatusNotFound {
			werr.Param, werr.Code = "previous_response_id", "previous_response_not_found"
			werr.Message = fmt.Sprintf("Previous response with id '%s' not found.", echoValue(id))
		}
		return werr
	}
	return nil
}

// ownedResponse returns the caller's ownership record of response id, or the refusal: 404 when
// the caller does not own it, a store error otherwise.
func (g *Gateway) ownedResponse(ctx context.Context, ex *exchange, id string) (responseRecord, *wire.Error) {
	if ex.keyID() == "" {
		return responseRecord{}, responseNotFound(id)
	}
	objs, _, err := g.backend.open()
	if err != nil {
		return responseRecord{}, g.storeError(ex, "opening the store", err)
	}
	rec, err := objs.Get(ctx, kindResponse, ex.keyID(), id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return responseRecord{}, responseNotFound(id)
	case err != nil:
		return responseRecord{}, g.storeError(ex, "reading a stored response's owner", err)
	}
	var rr responseRecord
	if err := json.Unmarshal(rec.Data, &rr); err != nil {
		return responseRecord{}, g.storeError(ex, "decoding a stored response's owner", err)
	}
	return rr, nil
}

// recordResponse records, once, that the caller owns response id. A failure is logged: the
// answer still goes out, and its stored response is then unreachable through the gateway (404),
// never reachable by another key.
func (g *Gateway) recordResponse(ex *exchange, id string) {
	if id == "" || ex.responseID != "" || ex.info.NoStore || ex.keyID() == "" || ex.route == nil {
		return
	}
	ex.responseID = id
	data, _ := json.Marshal(responseRecord{Model: ex.route.model.Name, CreatedAt: g.now().Unix()})
	objs, _, err := g.backend.open()
	if err == nil {
		err = objs.Put(ex.r.Context(), store.Record{Kind: kindResponse, Owner: ex.keyID(), ID: id, Data: data,
			ExpiresAt: g.now().Add(responseRetention)})
	}
	if err != nil {
		if c := g.logger.Check(zapcore.WarnLevel, "recording a stored response's owner"); c != nil {
			c.Write(zap.String("request_id", ex.requestID), zap.String("key_id", ex.keyID()), zap.Error(err))
		}
	}
}

// serveStoredResponse sends a call on a stored response (GET, DELETE, cancel, input_items) to
// the model that made it, when the caller owns it. A successful DELETE removes the record.
func (g *Gateway) serveStoredResponse(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, ex *exchange) error {
	id := ex.pathParam
	rr, werr := g.ownedResponse(r.Context(), ex, id)
	if werr == nil {
		m, ok := g.catalog.Resolve(rr.Model)
		if !ok || !ex.key.AllowsModel(m) {
			werr = responseNotFound(id)
		} else {
			ex.route = g.routes[m]
			ex.requestedModel = m.Name
			werr = g.admitToModel(r.Context(), ex)
		}
	}
	if werr != nil {
		g.refuse(w, ex, werr)
		return nil
	}
	delete(r.Header, "Upgrade")
	delete(r.Header, "Connection")
	err := g.forward(w, r, next, ex)
	if ex.endpoint == wire.EndpointResponse && r.Method == http.MethodDelete && ex.status == http.StatusOK {
		if objs, _, oerr := g.backend.open(); oerr == nil {
			_ = objs.Delete(context.WithoutCancel(r.Context()), kindResponse, ex.keyID(), id)
		}
	}
	return err
}
