package caddymodule_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/caddyai/gateway/internal/testredis"
	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/simulator"
)

// gatewayProcess is a built binary run by a test that may kill it midway.
type gatewayProcess struct {
	cmd  *exec.Cmd
	logs *strings.Builder
	done chan struct{}
	mu   sync.Mutex
}

// runBinary starts the binary on a Caddyfile; it is killed when the test ends if still running.
func runBinary(t *testing.T, bin, caddyfile string) *gatewayProcess {
	t.Helper()
	path := writeCaddyfile(t, t.TempDir(), "Caddyfile", caddyfile)
	cmd := exec.Command(bin, "run", "--config", path, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "XDG_DATA_HOME="+t.TempDir())
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &gatewayProcess{cmd: cmd, logs: new(strings.Builder), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.logs.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(syscall.SIGKILL)
		if t.Failed() {
			p.mu.Lock()
			t.Logf("caddy logs:\n%s", p.logs.String())
			p.mu.Unlock()
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if strings.Contains(p.logs.String(), "sk-gw-") || strings.Contains(p.logs.String(), "sk-test-") {
			t.Error("a secret appears in the logs")
		}
	})
	return p
}

// stop sends sig and waits for the process to end.
func (p *gatewayProcess) stop(sig syscall.Signal) {
	_ = p.cmd.Process.Signal(sig)
	_ = p.cmd.Wait()
	<-p.done
}

// teamKeys returns n inline keys labelled team=ml (secrets sk-test-team-<i>).
func teamKeys(n int) (block string, secrets []string) {
	var b strings.Builder
	for i := range n {
		s := fmt.Sprintf("sk-test-team-%d", i)
		secrets = append(secrets, s)
		fmt.Fprintf(&b, "\t\tkey %s {\n\t\t\tid team-%d\n\t\t\tlabel team ml\n\t\t}\n", policy.FormatHash(policy.HashSecret(s)), i)
	}
	return b.String(), secrets
}

func binaryAccountingCaddyfile(port, admin int, keys, upstream, storage, budgets string) string {
	return fmt.Sprintf(`{
	admin localhost:%d
	auto_https off
	grace_period 2s
	log {
		level WARN
	}
}
:%d {
	ai_gateway {
%s		model demo-llama {
			alias llama
			upstream %s
			price {
				input 0.5
				output 1.5
			}
		}
		storage {
%s
		}
		accounting {
%s
		}
	}
	reverse_proxy {
		dynamic ai_gateway
	}
}
`, admin, port, keys, upstream, storage, budgets)
}

// loadResult sums what the clients of a load were told.
type loadResult struct {
	ok, refused, failed atomic.Int64
	tokens              atomic.Int64 // total_tokens of the answers received
	other               atomic.Value
}

// chatOnce sends one chat completion and adds its outcome to res.
func chatOnce(client *http.Client, port int, secret string, i int, res *loadResult) {
	body := fmt.Sprintf(`{"model":"llama","max_tokens":20,"messages":[{"role":"user","content":"request %d"}]}`, i)
	req, _ := http.NewRequest(http.MethodPost, url(port, "/v1/chat/completions"), strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+secret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		res.failed.Add(1)
		return
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	switch {
	case err != nil:
		res.failed.Add(1)
	case resp.StatusCode == 200:
		res.ok.Add(1)
		res.tokens.Add(gjson.GetBytes(b, "usage.total_tokens").Int())
	case resp.StatusCode == 429 && gjson.GetBytes(b, "error.code").String() == "insufficient_quota" &&
		resp.Header.Get("X-Should-Retry") == "false":
		res.refused.Add(1)
	default:
		res.failed.Add(1)
		res.other.Store(fmt.Sprintf("%d %s", resp.StatusCode, b))
	}
}

// reservation is what one request of chatOnce reserves at most: its prompt's byte bound plus
// max_tokens 20.
const reservation = 64

func adminGet(t *testing.T, admin int, path string) []byte {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url(admin, path), nil)
	resp, b := doRequest(t, req)
	if resp.StatusCode != 200 {
		t.Fatalf("admin %s: %d %s", path, resp.StatusCode, b)
	}
	return b
}

// waitReady waits until the gateway on port answers the key with its secret.
func waitReady(t *testing.T, port int, secret string) {
	t.Helper()
	waitFor(t, "the gateway to answer", 30*time.Second, func() bool {
		req, _ := http.NewRequest(http.MethodGet, url(port, "/v1/models"), nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// TestBinaryAccountingBudget: 1,000 concurrent requests from 20 keys sharing a label budget
// spend no more than the budget plus one request's reservation; the ledger's totals equal the
// sum of the usage the clients received; after a crash (SIGKILL) and a restart the ledger and
// the spent budget are still there.
func TestBinaryAccountingBudget(t *testing.T) {
	bin := binaryOrSkip(t)
	up := newUpstream(t, simulator.Config{})
	keys, secrets := teamKeys(20)
	port, admin, dir := freePort(t), freePort(t), t.TempDir()
	const budget = 6000
	cf := binaryAccountingCaddyfile(port, admin, keys, up.addr(), "\t\t\tdir "+dir,
		fmt.Sprintf("\t\t\tbudget label team=ml {\n\t\t\t\tdaily_tokens %d\n\t\t\t}", budget))
	p := runBinary(t, bin, cf)
	waitReady(t, port, secrets[0])

	var res loadResult
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1000}, Timeout: 60 * time.Second}
	burst := func(n int) (ok int64) {
		before := res.ok.Load()
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				chatOnce(client, port, secrets[i%len(secrets)], i, &res)
			}()
		}
		close(start)
		wg.Wait()
		return res.ok.Load() - before
	}
	// 1,000 at once: in-flight reservations hold the budget; then bursts until none fits
	burst(1000)
	t.Logf("1000 at once: ok %d refused %d failed %d, %d tokens", res.ok.Load(), res.refused.Load(), res.failed.Load(), res.tokens.Load())
	for i := 0; i < 50 && burst(200) > 0; i++ {
	}
	t.Logf("until spent: ok %d refused %d failed %d, %d tokens", res.ok.Load(), res.refused.Load(), res.failed.Load(), res.tokens.Load())
	if res.failed.Load() != 0 || res.refused.Load() == 0 || res.ok.Load() == 0 {
		t.Fatalf("outcomes: ok %d refused %d failed %d (%v)", res.ok.Load(), res.refused.Load(), res.failed.Load(), res.other.Load())
	}
	if got := res.tokens.Load(); got > budget+reservation || got < budget-2*reservation {
		t.Fatalf("spent %d tokens of a budget of %d (one reservation is at most %d)", got, budget, reservation)
	}
	var total gjson.Result
	waitFor(t, "the ledger to be written", 5*time.Second, func() bool {
		total = gjson.GetBytes(adminGet(t, admin, "/ai_gateway/usage?label=team=ml"), "total")
		return total.Get("requests").Int() == res.ok.Load()
	})
	if total.Get("prompt_tokens").Int()+total.Get("completion_tokens").Int() != res.tokens.Load() {
		t.Fatalf("ledger %s, clients received %d tokens", total.Raw, res.tokens.Load())
	}

	// a crash: what was written survives, and the budget stays spent
	p.stop(syscall.SIGKILL)
	runBinary(t, bin, cf)
	waitReady(t, port, secrets[0])
	again := gjson.GetBytes(adminGet(t, admin, "/ai_gateway/usage?label=team=ml"), "total")
	if again.Raw != total.Raw {
		t.Fatalf("after a restart the ledger says %s, before %s", again.Raw, total.Raw)
	}
	var after loadResult
	chatOnce(client, port, secrets[3], 0, &after)
	if after.refused.Load() != 1 {
		t.Fatalf("after a restart the spent budget admitted a request: %+v", after.other.Load())
	}
}

// TestBinaryAccountingRedis: two instances share a real Redis (ledger and budgets); a key
// created on one through the admin API works there at once and on the other too, its
// disabling reaches the other within a second, and its rotation too; one instance is killed
// (SIGKILL) midway through a load; the ledger's totals equal the sum of the usage the clients
// received, the shared label budget is not overspent, and the CSV's totals match.
func TestBinaryAccountingRedis(t *testing.T) {
	bin := binaryOrSkip(t)
	addr, _ := testredis.Start(t)
	up := newUpstream(t, simulator.Config{TTFT: 5 * time.Millisecond})
	keys, secrets := teamKeys(10)
	dir := t.TempDir()
	const budget = 4000
	ports, admins := []int{freePort(t), freePort(t)}, []int{freePort(t), freePort(t)}
	var procs []*gatewayProcess
	for i := range ports {
		cf := binaryAccountingCaddyfile(ports[i], admins[i], keys, up.addr(),
			fmt.Sprintf("\t\t\tdir %s\n\t\t\tstore redis redis://%s/0", dir, addr),
			fmt.Sprintf("\t\t\tbudget label team=ml {\n\t\t\t\tdaily_tokens %d\n\t\t\t}", budget))
		procs = append(procs, runBinary(t, bin, cf))
	}
	for _, port := range ports {
		waitReady(t, port, secrets[0])
	}

	// the admin API across instances
	post := func(admin int, path, body string) gjson.Result {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, url(admin, path), strings.NewReader(body))
		resp, b := doRequest(t, req)
		if resp.StatusCode/100 != 2 {
			t.Fatalf("admin %s: %d %s", path, resp.StatusCode, b)
		}
		return gjson.ParseBytes(b)
	}
	status := func(port int, secret string) int {
		req, _ := http.NewRequest(http.MethodGet, url(port, "/v1/usage"), nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, _ := doRequest(t, req)
		return resp.StatusCode
	}
	secret := post(admins[0], "/ai_gateway/keys", `{"id":"ops"}`).Get("secret").String()
	if got := status(ports[0], secret); got != 200 {
		t.Fatalf("created key at once: %d", got)
	}
	waitFor(t, "the other instance to accept the new key", time.Second, func() bool { return status(ports[1], secret) == 200 })
	post(admins[0], "/ai_gateway/keys/ops/disable", "")
	t0 := time.Now()
	waitFor(t, "the other instance to refuse the disabled key", time.Second, func() bool { return status(ports[1], secret) == 401 })
	t.Logf("disabled on the other instance after %s", time.Since(t0).Round(time.Millisecond))
	post(admins[0], "/ai_gateway/keys/ops/enable", "")
	rotated := post(admins[1], "/ai_gateway/keys/ops/rotate", "").Get("secret").String()
	waitFor(t, "the rotation to reach both instances", time.Second, func() bool {
		return status(ports[0], secret) == 401 && status(ports[0], rotated) == 200 && status(ports[1], rotated) == 200
	})

	// the load: both instances, one killed midway
	var res loadResult
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 100}, Timeout: 60 * time.Second}
	var wg sync.WaitGroup
	var sent atomic.Int64
	for w := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < 800; i += 40 {
				port := ports[i%2]
				if n := sent.Add(1); n == 300 {
					procs[1].stop(syscall.SIGKILL)
				}
				chatOnce(client, port, secrets[i%len(secrets)], i, &res)
			}
		}()
	}
	wg.Wait()
	t.Logf("ok %d refused %d failed %d (the killed instance's), %d tokens", res.ok.Load(), res.refused.Load(), res.failed.Load(), res.tokens.Load())
	if res.refused.Load() == 0 || res.ok.Load() == 0 {
		t.Fatalf("outcomes: ok %d refused %d failed %d (%v)", res.ok.Load(), res.refused.Load(), res.failed.Load(), res.other.Load())
	}
	if got := res.tokens.Load(); got > budget+reservation {
		t.Fatalf("spent %d tokens of a budget of %d", got, budget)
	}
	// Every answer a client received is in the ledger (written before the gateway let it go).
	// The killed instance may have written answers it then could not deliver: at most the
	// requests it cut off, each at most one reservation.
	total := gjson.GetBytes(adminGet(t, admins[0], "/ai_gateway/usage?label=team=ml"), "total")
	extra := total.Get("requests").Int() - res.ok.Load()
	extraTokens := total.Get("prompt_tokens").Int() + total.Get("completion_tokens").Int() - res.tokens.Load()
	t.Logf("ledger: %d requests, %d tokens more than the clients received", extra, extraTokens)
	if extra < 0 || extraTokens < 0 || extra > res.failed.Load() || extraTokens > extra*reservation || (extra == 0) != (extraTokens == 0) {
		t.Fatalf("ledger %s, clients received %d answers of %d tokens (%d cut off by the kill)", total.Raw, res.ok.Load(), res.tokens.Load(), res.failed.Load())
	}
	csvBody := string(adminGet(t, admins[0], "/ai_gateway/usage?format=csv&label=team=ml"))
	lines := strings.Split(strings.TrimSpace(csvBody), "\n")
	var csvRequests int64
	for _, l := range lines[1:] {
		var n int64
		fmt.Sscan(strings.Split(l, ",")[4], &n)
		csvRequests += n
	}
	if csvRequests != total.Get("requests").Int() {
		t.Fatalf("csv says %d requests, json %d:\n%s", csvRequests, total.Get("requests").Int(), csvBody)
	}
}
