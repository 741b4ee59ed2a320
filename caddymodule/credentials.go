package caddymodule

import (
	"context"
	"net/http"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// Keys out of Caddy's access log, with no log filter to configure.
//
// Caddy's access log records a copy of the request headers taken before any handler runs, and
// redacts only Authorization, Proxy-Authorization and cookies there. Removing x-api-key (the
// Anthropic SDKs' header) or api-key (Azure-style clients) from the request is too late for that
// copy. So when a request carries one of them on a server that writes access logs, the gateway
// takes the credential, removes every credential header and serves the request again through the
// same Caddy server, from the top, with the credential in the request's context: Caddy's access
// log entry is that of the second pass (every field, log_append's included, as usual) and shows no
// key; the first pass is not logged. The handlers before ai_gateway in the route run twice for such
// a request (Caddy's own per-handler metrics count it twice); requests keyed with Authorization,
// and servers without access logs, take one pass.

// credentialCtxKey holds the credential of a request served again without its credential headers.
type credentialCtxKey struct{}

type takenCredential struct{ secret, header string }

// serveWithoutCredentialHeaders serves the request again without its credential headers when
// Caddy's access log would otherwise record one it does not redact. It reports whether it did.
func (g *Gateway) serveWithoutCredentialHeaders(w http.ResponseWriter, r *http.Request) bool {
	if len(r.Header["X-Api-Key"]) == 0 && len(r.Header["Api-Key"]) == 0 {
		return false
	}
	srv, _ := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	if srv == nil || srv.Logs == nil || srv.Logs.ShouldLogCredentials {
		return false
	}
	if skip, _ := caddyhttp.GetVar(r.Context(), caddyhttp.LogSkipVar).(bool); skip {
		return false // this request is not logged anyway
	}
	if _, again := r.Context().Value(credentialCtxKey{}).(takenCredential); again {
		return false
	}
	secret, header := takeCredential(r.Header)
	r2 := r.Clone(context.WithValue(r.Context(), credentialCtxKey{}, takenCredential{secret, header}))
	if orig, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok {
		// as the request arrived: handlers before the gateway may have rewritten it
		r2.Method, r2.RequestURI, r2.RemoteAddr = orig.Method, orig.RequestURI, orig.RemoteAddr
		if orig.URL != nil {
			u := *orig.URL
			r2.URL = &u
		}
	}
	// the connection's own writer: the wrappers of the first pass (its access log recorder,
	// encoders) must not see the second pass's answer, which gets its own
	base := w
	for {
		u, ok := base.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			break
		}
		base = u.Unwrap()
	}
	clear(base.Header()) // the second pass sets its own response headers
	g.accessLogWarning.Do(func() {
		g.logger.Info("API keys arrive in the "+header+" header on a server that writes access logs, which would record it: such "+
			"requests are served a second time without the header (handlers before ai_gateway run twice for them)",
			zap.String("header", header))
	})
	caddyhttp.SetVar(r.Context(), caddyhttp.LogSkipVar, true)
	srv.ServeHTTP(base, r2)
	return true
}

// requestCredential returns the client's API key and the header that carried it, and removes
// every credential header (see takeCredential); a request served again without them carries its
// credential in its context.
func requestCredential(r *http.Request) (secret, header string) {
	if c, ok := r.Context().Value(credentialCtxKey{}).(takenCredential); ok {
		takeCredential(r.Header)
		return c.secret, c.header
	}
	return takeCredential(r.Header)
}
