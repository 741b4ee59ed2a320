package caddymodule_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyai/gateway/policy"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddyai/gateway/caddymodule"
	"github.com/caddyai/gateway/simulator"
)

// freePort returns a TCP port that was free a moment ago on 127.0.0.1.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// caddyMu serialises tests that run a Caddy instance: Caddy holds one running config per process.
var caddyMu sync.Mutex

// loadCaddy adapts a Caddyfile and runs it in this process (real listeners, real sockets). A
// second call while one runs is a config reload, exactly as the admin API's /load does it.
func loadCaddy(t testing.TB, caddyfile string) {
	t.Helper()
	cfg, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
	if err != nil {
		t.Fatalf("adapting Caddyfile: %v\n%s", err, caddyfile)
	}
	for _, w := range warnings {
		t.Logf("adapt warning: %s", w.String())
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatalf("loading config: %v", err)
	}
	// After a reload the old servers close their idle keep-alive connections; a POST racing on
	// one fails with EOF (the SDKs retry those; net/http does not retry a POST).
	http.DefaultClient.CloseIdleConnections()
}

// startCaddy runs a Caddyfile for the duration of the test.
func startCaddy(t testing.TB, caddyfile string) {
	t.Helper()
	caddyMu.Lock()
	loadCaddy(t, caddyfile)
	t.Cleanup(func() {
		if err := caddy.Stop(); err != nil {
			t.Logf("stopping caddy: %v", err)
		}
		caddyMu.Unlock()
	})
}

const globalOptions = `{
	admin off
	auto_https off
	grace_period 1s
	log {
		level ERROR
	}
}
`

// recordingUpstream is a simulated model server on a real socket that records what reached it.
type recordingUpstream struct {
	*httptest.Server
	sim  *simulator.Server
	mu   sync.Mutex
	seen []seenRequest
}

type seenRequest struct {
	Path   string
	Header http.Header
	Body   []byte
	At     time.Time // when it arrived
}

func newUpstream(t testing.TB, cfg simulator.Config) *recordingUpstream {
	t.Helper()
	sim, err := simulator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	u := &recordingUpstream{sim: sim}
	sim.OnRequest(func(r *http.Request, body []byte) {
		u.mu.Lock()
		defer u.mu.Unlock()
		u.seen = append(u.seen, seenRequest{Path: r.URL.Path, Header: r.Header.Clone(), Body: append([]byte(nil), body...), At: time.Now()})
	})
	u.Server = httptest.NewServer(sim)
	t.Cleanup(u.Close)
	return u
}

func (u *recordingUpstream) requests() []seenRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seenRequest(nil), u.seen...)
}

func (u *recordingUpstream) addr() string { return strings.TrimPrefix(u.URL, "http://") }

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// decodeJSON decodes a response body into a map, failing the test on error.
func decodeJSON(t testing.TB, body []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("body is not JSON: %v\n%s", err, body)
	}
	return m
}

// doRequest does req and reads the whole answer; an error fails the test.
func doRequest(t testing.TB, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func url(port int, path string) string { return fmt.Sprintf("http://127.0.0.1:%d%s", port, path) }

// keyAll is the key block of secretAll (id all), for gatewaySite.
var keyAll = "key " + policy.FormatHash(policy.HashSecret(secretAll)) + " {\n\tid all\n}"

// gatewaySite is the site most tests run: :port serving Caddy's /metrics and, on every other
// path, ai_gateway with the directives of gateway (keys, models, options) before
// reverse_proxy { dynamic ai_gateway } with the subdirectives of proxy (and the ai_gateway
// transport unless proxy names a transport), after the global options.
func gatewaySite(port int, gateway, proxy string) string {
	if !strings.Contains(proxy, "transport ") {
		proxy += "\n\t\t\ttransport ai_gateway"
	}
	return globalOptions + fmt.Sprintf(`
:%d {
	handle /metrics {
		metrics
	}
	handle {
		ai_gateway {
%s
		}
		reverse_proxy {
			dynamic ai_gateway
%s
		}
	}
}
`, port, gateway, proxy)
}
