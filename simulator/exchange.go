package simulator

import (
	"context"
	"net/http"
	"strconv"
	"time"
)

// garbageBody is what kind=garbage answers with status 200.
const garbageBody = "<!DOCTYPE html>\n<html><head><title>Welcome</title></head><body><h1>It works!</h1></body></html>\n"

// exchange is the state of one request being answered.
type exchange struct {
	s     *Server
	w     http.ResponseWriter
	r     *http.Request
	ctx   context.Context
	route route
	fault Fault
	shape string

	cancelled bool
	frames    int    // SSE frames written so far
	buf       []byte // reused for SSE frames
	final     bool   // the next frame ends the stream
	reqID     string // Anthropic request id
}

// cancel records, once, that the client went away.
func (x *exchange) cancel() {
	if !x.cancelled {
		x.cancelled = true
		x.s.cancelled.Add(1)
	}
}

// wait sleeps d with the server's sleeper; false means the client went away.
func (x *exchange) wait(d time.Duration) bool {
	if err := x.s.sleep(x.ctx, d); err != nil {
		x.cancel()
		return false
	}
	return true
}

// requestID returns the Anthropic request id of this exchange, creating it
// and its request-id header on first use.
func (x *exchange) requestID() string {
	if x.reqID == "" {
		x.reqID = x.s.nextID("req_")
		x.w.Header().Set("request-id", x.reqID)
	}
	return x.reqID
}

// renderError spells e for this request: Anthropic's envelope on
// /v1/messages, the request's shape elsewhere.
func (x *exchange) renderError(e *simError) rendered {
	if x.route == routeMessages {
		return e.renderAnthropic(x.requestID())
	}
	return e.render(x.shape)
}

// fail writes e as the whole response.
func (x *exchange) fail(e *simError) {
	rd := x.renderError(e)
	x.writeBody(rd.status, rd.contentType, rd.body)
}

// writeBody writes a complete response.
func (x *exchange) writeBody(status int, contentType string, body []byte) {
	h := x.w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	x.w.WriteHeader(status)
	if _, err := x.w.Write(body); err != nil {
		x.cancel()
	}
}

// writeJSON writes a successful JSON response, or half of it and a dropped
// connection under kind=cut.
func (x *exchange) writeJSON(body []byte) {
	if x.fault.Kind != FaultCut {
		x.writeBody(http.StatusOK, ctJSON, body)
		return
	}
	h := x.w.Header()
	h.Set("Content-Type", ctJSON)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	x.w.WriteHeader(http.StatusOK)
	_, _ = x.w.Write(body[:len(body)/2])
	x.abort(true)
}

// abort drops the connection without finishing the response. When headers
// were written, what was written so far is flushed first; otherwise nothing
// at all reaches the client.
func (x *exchange) abort(headersWritten bool) {
	rc := http.NewResponseController(x.w)
	if headersWritten {
		_ = rc.Flush()
	}
	conn, _, err := rc.Hijack()
	if err != nil {
		// HTTP/2 or a writer that cannot hijack: net/http resets the stream.
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}

// preFault applies the faults that act before the request is looked at. It
// reports whether the request should go on.
func (x *exchange) preFault() bool {
	switch x.fault.Kind {
	case FaultClose:
		x.abort(false)
		return false
	case FaultStall:
		x.s.waiting.Add(1)
		ok := x.wait(x.fault.Delay)
		x.s.waiting.Add(-1)
		return ok
	case FaultError:
		x.fail(&simError{kind: errGeneric, status: x.fault.Status})
		return false
	case FaultOverloaded:
		x.fail(&simError{kind: errOverloaded})
		return false
	case FaultLoading:
		x.fail(&simError{kind: errLoading})
		return false
	case FaultGarbage:
		x.writeBody(http.StatusOK, ctJSON, []byte(garbageBody))
		return false
	}
	return true
}

// startStream sends the headers of an SSE response.
func (x *exchange) startStream() bool {
	h := x.w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	x.w.WriteHeader(http.StatusOK)
	return x.flush()
}

func (x *exchange) flush() bool {
	if err := http.NewResponseController(x.w).Flush(); err != nil {
		x.cancel()
		return false
	}
	return true
}

// frame writes one complete SSE frame and flushes it, unless a cut or
// midstream_error fault is due. It reports whether the stream goes on.
func (x *exchange) frame(b []byte) bool {
	if !x.checkStreamFault() {
		return false
	}
	if _, err := x.w.Write(b); err != nil {
		x.cancel()
		return false
	}
	if !x.flush() {
		return false
	}
	x.frames++
	if x.ctx.Err() != nil {
		x.cancel()
		return false
	}
	return true
}

// done ends an OpenAI-style stream with [DONE], unless a cut or
// midstream_error fault has not acted yet: it acts now, whatever its count.
func (x *exchange) done() {
	x.final = true
	x.frame([]byte("data: [DONE]\n\n"))
}

// checkStreamFault applies a due cut or midstream_error fault and reports
// whether the stream goes on.
func (x *exchange) checkStreamFault() bool {
	k := x.fault.Kind
	if (k != FaultCut && k != FaultMidstreamError) || (x.frames < x.fault.After && !x.final) {
		return true
	}
	if k == FaultCut {
		x.abort(true)
		return false
	}
	e := &simError{kind: errMidstream}
	var b []byte
	switch {
	case x.route == routeMessages:
		b = append(b, "event: error\ndata: "...)
		b = append(b, x.renderError(e).body...)
	case x.route == routeResponses:
		// the Responses stream's error event (ResponseErrorEvent)
		b = append(b, "event: error\ndata: {\"type\":\"error\",\"code\":\"server_error\",\"message\":\"The server had an error while processing your request.\",\"param\":null,\"sequence_number\":"...)
		b = appendInt(b, x.frames)
		b = append(b, '}')
	case x.shape == ShapeText:
		b = append(b, "data: "...)
		rd := e.render(ShapeText)
		b = append(b, rd.body[:len(rd.body)-1]...)
	default:
		b = append(b, "data: "...)
		b = append(b, e.render(x.shape).body...)
	}
	b = append(b, "\n\n"...)
	if _, err := x.w.Write(b); err != nil {
		x.cancel()
		return false
	}
	x.flush()
	return false
}
