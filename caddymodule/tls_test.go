package caddymodule_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/simulator"
)

// TestTLSInternalHTTP2Streaming: the README's TLS section: a site with `tls internal` serves the
// gateway over HTTPS and HTTP/2, and a stream arrives event by event (the first event long before
// the last), ending with [DONE].
func TestTLSInternalHTTP2Streaming(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir()) // the internal CA's storage
	up := newUpstream(t, simulator.Config{TokensPerSecond: 50, ResponseTokens: 10})
	port := freePort(t)
	startCaddy(t, fmt.Sprintf(`{
	admin off
	skip_install_trust
	grace_period 1s
	log {
		level ERROR
	}
}
https://localhost:%d {
	tls internal
	ai_gateway {
		key %s {
			id tls-team
		}
		model demo-llama {
			alias llama
			upstream %s
		}
	}
	reverse_proxy {
		dynamic ai_gateway
	}
}
`, port, policy.FormatHash(policy.HashSecret(secretAll)), up.addr()))
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{ForceAttemptHTTP2: true,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: "localhost"}}} // the test trusts the internal CA blindly
	req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("https://localhost:%d/v1/chat/completions", port),
		strings.NewReader(`{"model":"llama","stream":true,"max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Authorization", "Bearer "+secretAll)
	req.Header.Set("Content-Type", "application/json")
	var resp *http.Response
	waitFor(t, "the TLS site", 10*time.Second, func() bool {
		var err error
		resp, err = client.Do(req.Clone(req.Context()))
		if err == nil && resp.StatusCode != 200 {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.TLS == nil {
		t.Fatalf("served over %s, TLS %v", resp.Proto, resp.TLS != nil)
	}
	sc := bufio.NewScanner(resp.Body)
	var first, last time.Time
	events := 0
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			if first.IsZero() {
				first = time.Now()
			}
			last = time.Now()
			events++
			if data == "[DONE]" {
				break
			}
		}
	}
	if events < 5 || !strings.Contains(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("%d events, content type %q", events, resp.Header.Get("Content-Type"))
	}
	// 10 tokens at 50/s: about 200 ms between the first and the last event if nothing buffers
	if gap := last.Sub(first); gap < 100*time.Millisecond {
		t.Errorf("the stream arrived at once (%s between the first and the last event): buffered", gap)
	}
}
