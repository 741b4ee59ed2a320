package caddymodule

import (
	"net/http"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// responseTap wraps the response on its way back from the upstream: it sets the gateway's own
// headers (replacing any the upstream sent under the same names) and records the status.
type responseTap struct {
	*caddyhttp.ResponseWriterWrapper
	ex          *exchange
	wroteHeader bool
}

func newResponseTap(w http.ResponseWriter, ex *exchange) *responseTap {
	return &responseTap{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w}, ex: ex}
}

// WriteHeader sets the gateway's headers, then sends the upstream's status.
func (t *responseTap) WriteHeader(status int) {
	if t.wroteHeader {
		return
	}
	if status >= 100 && status < 200 && status != http.StatusSwitchingProtocols {
		t.ResponseWriterWrapper.WriteHeader(status)
		return
	}
	t.wroteHeader = true
	t.ex.status = status
	t.ex.setResponseHeaders(t.Header())
	t.ResponseWriterWrapper.WriteHeader(status)
}

// Write sends body bytes, sending the header first if needed.
func (t *responseTap) Write(p []byte) (int, error) {
	if !t.wroteHeader {
		t.WriteHeader(http.StatusOK)
	}
	return t.ResponseWriterWrapper.Write(p)
}
