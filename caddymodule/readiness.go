package caddymodule

import (
	"net/http"
	"strconv"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/caddyai/gateway/routing"
)

// isReadiness tells whether the request is for the readiness endpoint.
func (g *Gateway) isReadiness(r *http.Request) bool {
	return g.ReadinessPath != "" && r.URL.Path == g.ReadinessPath
}

// serveReadiness answers the readiness endpoint: 200 {"status":"ready"} while at least one
// model can take a request (a model without health checks always can), else 503
// {"status":"unavailable"}. It needs no key and says nothing more without one; with a valid key
// it adds, for each model the key may use, its state and the number of its hosts by health, the
// requests in flight and queued at its admission gate. A key that is sent but wrong gets the 401
// of every other path (and counts toward the brute-force guard), so the endpoint is no oracle
// for keys. An answer is not counted in the gateway's request metrics (probes come every few
// seconds); a refusal is, like any other.
func (g *Gateway) serveReadiness(w http.ResponseWriter, r *http.Request) error {
	ex := newExchange(r, g.now())
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header()["Allow"] = []string{"GET, HEAD"}
		g.refuseReadiness(w, ex, wire.MethodNotAllowed(r.Method, r.URL.Path))
		return nil
	}
	secret, _ := requestCredential(r)
	detail := false
	if secret != "" {
		if werr := g.authenticate(ex, secret); werr != nil {
			if werr.Status == http.StatusUnauthorized {
				if blocked := g.guardBlocked(r); blocked != nil {
					werr = blocked
				} else {
					g.guardFailed(r, ex)
				}
			}
			g.refuseReadiness(w, ex, werr)
			return nil
		}
		detail = true
	}
	ready := false
	var models []byte
	for _, m := range g.catalog.Models() {
		route := g.routes[m]
		st := route.health.status()
		state := "ready" // a model without health checks is taken to be
		switch r := st.Refusal(); {
		case route.health == nil:
		case r == "model_loading":
			state = "loading"
		case r == "model_unavailable":
			state = "unavailable"
		}
		if state == "ready" {
			ready = true
		}
		if !detail || !ex.key.AllowsModel(m) {
			continue
		}
		if len(models) > 0 {
			models = append(models, ',')
		}
		models = appendReadinessModel(models, m.Name, state, route, st)
	}
	body := []byte(`{"status":"ready"`)
	status := http.StatusOK
	if !ready {
		body, status = []byte(`{"status":"unavailable"`), http.StatusServiceUnavailable
	}
	if detail {
		body = append(body, `,"models":[`...)
		body = append(body, models...)
		body = append(body, ']')
	}
	body = append(body, '}')
	h := w.Header()
	ex.setResponseHeaders(h)
	h["Content-Type"] = []string{"application/json"}
	h["Cache-Control"] = []string{"no-store"}
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	ex.status = status
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return nil
	}
	_, err := w.Write(body)
	return err
}

// appendReadinessModel appends one model's entry of the readiness answer. Host addresses are
// never shown: only their number by health.
func appendReadinessModel(dst []byte, name, state string, route *modelRoute, st routing.PoolStatus) []byte {
	dst = append(dst, `{"id":`...)
	dst = wire.AppendString(dst, name)
	dst = append(dst, `,"status":"`...)
	dst = append(dst, state...)
	dst = append(dst, `","health_checked":`...)
	dst = strconv.AppendBool(dst, route.health != nil)
	num := func(key string, n int) {
		dst = append(dst, `,"`...)
		dst = append(dst, key...)
		dst = append(dst, `":`...)
		dst = strconv.AppendInt(dst, int64(n), 10)
	}
	num("hosts", len(route.dials))
	num("healthy_hosts", st.Healthy)
	num("loading_hosts", st.Loading)
	num("down_hosts", st.Down)
	num("unprobed_hosts", st.Unknown)
	inFlight, queued := 0, 0
	if route.gate != nil {
		inFlight, queued = route.gate.Stats()
	}
	num("in_flight", inFlight)
	num("queue_depth", queued)
	return append(dst, '}')
}

// refuseReadiness refuses a readiness request and records it like any refusal.
func (g *Gateway) refuseReadiness(w http.ResponseWriter, ex *exchange, werr *wire.Error) {
	g.refuse(w, ex, werr)
	if repl, ok := ex.r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		g.record(ex, repl)
	}
}
