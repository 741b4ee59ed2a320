package caddymodule_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/caddyai/gateway/internal/testredis"
	"github.com/caddyai/gateway/internal/wiretest"
	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/simulator"
)

// TestExamplesAdaptAndValidate adapts every Caddyfile the project ships (the demo and
// examples/) and provisions and validates it, as `caddy validate` does.
func TestExamplesAdaptAndValidate(t *testing.T) {
	root := wiretest.RepoRoot(t)
	files, err := filepath.Glob(filepath.Join(root, "examples", "*.Caddyfile"))
	if err != nil || len(files) < 5 {
		t.Fatalf("examples missing: %v %v", files, err)
	}
	files = append(files, filepath.Join(root, "Caddyfile"))
	t.Chdir(root) // relative paths in the examples are relative to the repository root
	secrets := 0
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			adapted, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt(data, map[string]any{"filename": f})
			if err != nil {
				t.Fatalf("adapting: %v", err)
			}
			for _, w := range warnings {
				t.Errorf("adapt warning: %s", w.String())
			}
			var cfg caddy.Config
			if err := json.Unmarshal(adapted, &cfg); err != nil {
				t.Fatal(err)
			}
			if err := caddy.Validate(&cfg); err != nil {
				t.Fatalf("validating: %v", err)
			}
			// what the admin API's GET /config/ shows holds no secret: key secrets are hashes
			// or placeholders, upstream credentials placeholders
			for _, m := range regexp.MustCompile(`"(secret|upstream_key)":"([^"]*)"`).FindAllStringSubmatch(string(adapted), -1) {
				secrets++
				if !strings.HasPrefix(m[2], "sha256:") && !strings.HasPrefix(m[2], "{env.") && !strings.HasPrefix(m[2], "{file.") {
					t.Errorf("the adapted config holds a literal %s: %.12s...", m[1], m[2])
				}
			}
		})
	}
	if secrets < 3 {
		t.Errorf("only %d secrets found in the adapted configs: the check above looks at nothing", secrets)
	}
}

// TestBinaryDemo runs the xcaddy-built binary (make test-binary sets CADDY_BINARY) on the root
// Caddyfile, with its ports moved to free ones, and checks what the README promises.
func TestBinaryDemo(t *testing.T) {
	bin := binaryOrSkip(t)
	root := wiretest.RepoRoot(t)
	data, err := os.ReadFile(filepath.Join(root, "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	gw, sim, admin := freePort(t), freePort(t), freePort(t)
	cf := strings.NewReplacer(":8080", fmt.Sprintf(":%d", gw), ":8081", fmt.Sprintf(":%d", sim), "localhost:2019", fmt.Sprintf("localhost:%d", admin)).Replace(string(data))
	path := writeCaddyfile(t, t.TempDir(), "Caddyfile", cf)
	startBinary(t, bin, path)
	post := func(path string, headers map[string]string, body string) (*http.Response, string) {
		req, _ := http.NewRequest(http.MethodPost, url(gw, path), strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	auth := map[string]string{"Authorization": "Bearer sk-demo-gateway"}
	chat := `{"model":"llama","messages":[{"role":"user","content":"Hello"}]}`
	waitFor(t, "the demo to answer", 30*time.Second, func() bool {
		resp, _ := post("/v1/chat/completions", auth, chat)
		return resp != nil && resp.StatusCode == 200
	})

	resp, body := post("/v1/chat/completions", auth, chat)
	m := decodeJSON(t, []byte(body))
	if resp.StatusCode != 200 || m["model"] != "demo-llama" || m["usage"] == nil {
		t.Errorf("chat: %d %s", resp.StatusCode, body)
	}
	resp, body = post("/v1/chat/completions", nil, chat)
	if resp.StatusCode != 401 || !strings.Contains(body, `"code":"invalid_api_key"`) {
		t.Errorf("no key: %d %s", resp.StatusCode, body)
	}
	// the readiness endpoint needs no key (the README's curl)
	if resp, err := http.Get(url(gw, "/ready")); err != nil || resp.StatusCode != 200 {
		t.Errorf("readiness: %v %v", err, resp)
	} else {
		resp.Body.Close()
	}
	resp, body = post("/v1/messages", map[string]string{"X-Api-Key": "sk-demo-gateway", "Anthropic-Version": "2023-06-01"},
		`{"model":"llama","max_tokens":16,"messages":[{"role":"user","content":"Hello"}]}`)
	if m := decodeJSON(t, []byte(body)); resp.StatusCode != 200 || m["type"] != "message" || m["content"] == nil {
		t.Errorf("messages: %d %s", resp.StatusCode, body)
	}
	resp, body = post("/v1/models/sentiment/predict", auth, `{"text":"I love this product"}`)
	if m := decodeJSON(t, []byte(body)); resp.StatusCode != 200 || m["prediction"] != "positive" {
		t.Errorf("predict: %d %s", resp.StatusCode, body)
	}
	resp, body = post("/v1/chat/completions", auth, `{"model":"llama","stream":true,"messages":[{"role":"user","content":"Hello"}]}`)
	if resp.StatusCode != 200 || !strings.HasSuffix(body, "data: [DONE]\n\n") {
		t.Errorf("stream: %d %q", resp.StatusCode, body)
	}

	// the Files API out of the box: the store under Caddy's data directory, nothing configured
	c := openai.NewClient(option.WithBaseURL(url(gw, "/v1/")), option.WithAPIKey("sk-demo-gateway"), option.WithMaxRetries(0))
	f, err := c.Files.New(context.Background(), openai.FileNewParams{
		File: openai.File(strings.NewReader("{}\n"), "in.jsonl", "application/jsonl"), Purpose: openai.FilePurposeBatch})
	if err != nil {
		t.Fatalf("files upload: %v", err)
	}
	if got, err := c.Files.Get(context.Background(), f.ID); err != nil || got.Bytes != 3 {
		t.Errorf("files get: %v %+v", err, got)
	}
}

// binaryOrSkip is the path of the built binary (CADDY_BINARY); without one the test is skipped.
func binaryOrSkip(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("CADDY_BINARY")
	if bin == "" {
		t.Skip("CADDY_BINARY not set: run `make test-binary` (part of `make test`) to test the built binary")
	}
	return bin
}

// startBinary runs the built caddy on a Caddyfile until the test ends, failing the test if the
// logs ever contain a demo or test secret.
func startBinary(t *testing.T, bin, caddyfile string) {
	t.Helper()
	cmd := exec.Command(bin, "run", "--config", caddyfile, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "XDG_DATA_HOME="+t.TempDir())
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	done := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs.WriteString(sc.Text() + "\n")
		}
		close(done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		<-done
		if t.Failed() {
			t.Logf("caddy logs:\n%s", logs.String())
		}
		for _, secret := range []string{"sk-demo-gateway", secretAll} {
			if strings.Contains(logs.String(), secret) {
				t.Errorf("a secret appears in the logs: %s", secret)
			}
		}
	})
}

// TestBinaryDistributedLimits runs two gateway processes sharing one redis-server: together they
// admit no more than the key's limit.
func TestBinaryDistributedLimits(t *testing.T) {
	bin := binaryOrSkip(t)
	addr, stop := testredis.Start(t)
	defer stop()
	up := newUpstream(t, simulator.Config{})
	ports := []int{freePort(t), freePort(t)}
	for i, port := range ports {
		cf := fmt.Sprintf(`{
	admin off
	auto_https off
}
:%d {
	ai_gateway {
		key %s {
			id shared
			rpm 60
		}
		model demo-llama {
			alias llama
			upstream %s
		}
		rate_limit {
			store redis redis://%s/0
		}
	}
	reverse_proxy {
		dynamic ai_gateway
	}
}
`, port, policy.FormatHash(policy.HashSecret(secretAll)), up.addr(), addr)
		path := filepath.Join(t.TempDir(), fmt.Sprintf("Caddyfile.%d", i))
		if err := os.WriteFile(path, []byte(cf), 0o600); err != nil {
			t.Fatal(err)
		}
		startBinary(t, bin, path)
	}
	chat := `{"model":"llama","messages":[{"role":"user","content":"hi"}],"max_tokens":1}`
	send := func(port int) int {
		req, _ := http.NewRequest(http.MethodPost, url(port, "/v1/chat/completions"), strings.NewReader(chat))
		req.Header.Set("Authorization", "Bearer "+secretAll)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	for _, port := range ports {
		waitFor(t, "both instances to answer", 30*time.Second, func() bool {
			return send(port) == 200
		})
	}
	start := time.Now()
	ok, refused := 2, 0 // the two readiness probes above were admitted
	for i := 0; i < 150; i++ {
		switch send(ports[i%2]) {
		case 200:
			ok++
		case 429:
			refused++
		default:
			t.Fatalf("request %d failed", i)
		}
	}
	refill := int(time.Since(start).Seconds()) + 1 // rpm 60 refills one request per second
	t.Logf("two instances: %d admitted, %d refused in %s", ok, refused, time.Since(start))
	if ok < 60 || ok > 60+refill {
		t.Errorf("two instances admitted %d requests together; the shared limit is 60 (+%d refilled)", ok, refill)
	}
}

// TestDemoCutsOffSlowClients: the demo config of `make run` (the root Caddyfile, its ports moved)
// ships server timeouts: clients dribbling their headers or body are cut off within read_header
// and read_body, while others are served (TestHardeningLongStreamOutlivesReadTimeout shows a
// stream outlives read_body).
func TestDemoCutsOffSlowClients(t *testing.T) {
	root := wiretest.RepoRoot(t)
	data, err := os.ReadFile(filepath.Join(root, "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	up := newUpstream(t, simulator.Config{})
	gw, sim, admin := freePort(t), freePort(t), freePort(t)
	cf := strings.NewReplacer(":8080", fmt.Sprintf(":%d", gw), "upstream localhost:8081", "upstream "+up.addr(),
		":8081", fmt.Sprintf(":%d", sim), "localhost:2019", fmt.Sprintf("localhost:%d", admin)).Replace(string(data))
	if !strings.Contains(cf, "read_header") || !strings.Contains(cf, "read_body") {
		t.Fatal("the demo sets no server timeouts")
	}
	startCaddy(t, cf)
	s := &usageSetup{port: gw, upstream: up}
	const demoKey = "sk-demo-gateway"
	send := func(body string) (*http.Response, []byte) {
		req, _ := http.NewRequest(http.MethodPost, url(gw, "/v1/chat/completions"), strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+demoKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	checkSlowClientsCutOff(t, gw, demoKey, 30*time.Second, func() {
		for i := 0; i < 3; i++ {
			if resp, body := send(chatBody); resp.StatusCode != 200 {
				t.Errorf("a normal client was not served while slow clients hang on: %d %s", resp.StatusCode, body)
			}
		}
	}, func() int { return len(s.upstream.requests()) }, 3)
}
