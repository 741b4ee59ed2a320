package caddymodule

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

func init() {
	caddy.RegisterModule(Upstreams{})
}

// Upstreams hands reverse_proxy the upstream pool of the model that ai_gateway resolved for the
// request, so Caddy's own load balancing, passive health checks, retries and transports apply per
// model (Caddy runs active health checks only for static upstreams).
// Use it as `reverse_proxy { dynamic ai_gateway }` after the ai_gateway handler.
type Upstreams struct{}

// CaddyModule returns the Caddy module information.
func (Upstreams) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.upstreams.ai_gateway",
		New: func() caddy.Module { return new(Upstreams) },
	}
}

var errNoModelRoute = errors.New("ai_gateway resolved no model with upstreams for this request (is the ai_gateway handler before reverse_proxy, and does the model list upstreams?)")

// GetUpstreams returns the resolved model's upstreams, without those its health_check found down
// or loading. Fresh Upstream values are returned on each call because reverse_proxy writes to
// them; their passive health state lives in Caddy's host pool, keyed by dial address, and so
// persists across requests.
func (Upstreams) GetUpstreams(r *http.Request) ([]*reverseproxy.Upstream, error) {
	ex := exchangeFrom(r)
	if ex == nil || ex.route == nil || len(ex.route.dials) == 0 {
		return nil, errNoModelRoute
	}
	// hosts that failed their health check are left out; should every host have failed since
	// the gateway checked the pool, all are offered rather than none (which would have the
	// proxy wait for its lb_try_duration)
	health := ex.route.health
	ups := make([]*reverseproxy.Upstream, 0, len(ex.route.dials))
	for i, d := range ex.route.dials {
		if health.available(i) {
			ups = append(ups, &reverseproxy.Upstream{Dial: d})
		}
	}
	if len(ups) == 0 {
		for _, d := range ex.route.dials {
			ups = append(ups, &reverseproxy.Upstream{Dial: d})
		}
	}
	return ups, nil
}

// dialAddress turns a configured upstream (host:port, http://host[:port], https://host[:port],
// unix//path) into a reverse_proxy dial address.
func dialAddress(s string) (string, error) {
	if strings.HasPrefix(s, "unix/") {
		return s, nil
	}
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return "", fmt.Errorf("parsing upstream %q: %w", s, err)
		}
		if u.Path != "" && u.Path != "/" {
			return "", fmt.Errorf("upstream %q: a path is not allowed (the request's path is kept)", s)
		}
		port := u.Port()
		switch u.Scheme {
		case "http":
			if port == "" {
				port = "80"
			}
		case "https":
			if port == "" {
				port = "443"
			}
		default:
			return "", fmt.Errorf("upstream %q: scheme must be http or https", s)
		}
		if u.Hostname() == "" {
			return "", fmt.Errorf("upstream %q: missing host", s)
		}
		return net.JoinHostPort(u.Hostname(), port), nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" || port == "" {
		return "", fmt.Errorf("upstream %q: want host:port", s)
	}
	return s, nil
}

// Interface guards
var _ reverseproxy.UpstreamSource = (*Upstreams)(nil)
