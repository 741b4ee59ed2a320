package caddymodule

import (
	"bytes"
	"errors"
	"io"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

func init() {
	caddy.RegisterModule(Transport{})
}

// Transport is reverse_proxy's `http` transport, with every one of its options, for the
// requests ai_gateway hands on. The gateway holds each request's body in memory (it has read it
// to check and count it), and this transport gives net/http that body as one in memory, so the
// request's header and a body that fits the write buffer (4 KiB by default) leave in one write
// instead of two: net/http flushes the header of a body it cannot see into before sending
// the body, and reverse_proxy wraps every body it forwards. Requests the gateway did not read,
// those with trailers and bodies over 64 KiB (maxSentFromMemory) go through unchanged.
// Use it as `reverse_proxy { dynamic ai_gateway transport ai_gateway { ... } }`; its
// subdirectives are those of `transport http`.
type Transport struct {
	reverseproxy.HTTPTransport
}

// CaddyModule returns the Caddy module information.
func (Transport) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.transport.ai_gateway",
		New: func() caddy.Module { return new(Transport) },
	}
}

// RoundTrip sends req through the http transport, with the body the gateway holds in place of
// the wrapped one when the request's exchange has it untouched. A body sent that way counts as
// read (no fallback resends it) unless the dial failed, which happens before a byte is written;
// its buffer is then the transport's until garbage-collected, never returned to the pool while
// the connection may still be writing it.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ex := exchangeFrom(req)
	if ex == nil {
		return t.HTTPTransport.RoundTrip(req)
	}
	handed := ex.body.handed
	p := ex.body.inMemory(req)
	if p == nil {
		return t.HTTPTransport.RoundTrip(req)
	}
	out := *req // a RoundTripper must not change the request it was given
	out.Body = io.NopCloser(bytes.NewReader(p))
	resp, err := t.HTTPTransport.RoundTrip(&out)
	var dialErr reverseproxy.DialError
	if err == nil || !errors.As(err, &dialErr) {
		// as for reverse_proxy's own retries of a POST, only a failed dial proves that no
		// byte left
		handed.sent.Store(true)
	}
	return resp, err
}

// Interface guards
var (
	_ caddy.Provisioner                   = (*Transport)(nil)
	_ caddy.CleanerUpper                  = (*Transport)(nil)
	_ caddyfile.Unmarshaler               = (*Transport)(nil)
	_ http.RoundTripper                   = (*Transport)(nil)
	_ reverseproxy.TLSTransport           = (*Transport)(nil)
	_ reverseproxy.H2CTransport           = (*Transport)(nil)
	_ reverseproxy.ProxyProtocolTransport = (*Transport)(nil)
)
