package caddymodule_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/openai/openai-go/v3"
	"github.com/tidwall/gjson"

	"github.com/caddyai/gateway/internal/testredis"
	"github.com/caddyai/gateway/policy"
)

// The built binary running batches through crashes, several instances and reloads (item 8 of
// the batches issue, "nothing lost"): the upstream is the test's own, so it sees every request
// each line made (a unique marker per line in the prompt, echoed in the answer).

// binaryBatchLease is the batch_lease of these tests: how long a killed instance's lines wait
// before they are run again.
const binaryBatchLease = 3 * time.Second

// batchWorkers is the runner's cap on the lines one instance runs at a time, set by the tests'
// `batches { workers }`: at most that many lines are in flight when an instance is killed.
const batchWorkers = 4

// upstreamSend is one request the counting upstream received.
type upstreamSend struct {
	instance int // which upstream port, one per gateway instance
	marker   string
	at       time.Time
	answered bool // the answer was written in full
}

// countingUpstream is a model server speaking OpenAI chat completions and Anthropic messages
// on one port per gateway instance: each request waits delay, then is answered with
// "answer to <marker>", where the marker is the prompt.
type countingUpstream struct {
	delay   time.Duration
	pad     int // bytes of padding added to each answer
	servers []*httptest.Server

	mu    sync.Mutex
	sends []*upstreamSend
}

func newCountingUpstream(t *testing.T, delay time.Duration, instances int) *countingUpstream {
	u := &countingUpstream{delay: delay}
	for i := range instances {
		srv := httptest.NewServer(u.handler(i))
		t.Cleanup(srv.Close)
		u.servers = append(u.servers, srv)
	}
	return u
}

func (u *countingUpstream) addr(instance int) string {
	return strings.TrimPrefix(u.servers[instance].URL, "http://")
}

// Token counts the upstream reports for every answer.
const upstreamPromptTokens, upstreamCompletionTokens = 7, 3

func (u *countingUpstream) handler(instance int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		msg := gjson.GetBytes(body, "messages.0.content")
		marker := msg.Str
		if msg.IsArray() {
			marker = msg.Get("0.text").Str
		}
		s := &upstreamSend{instance: instance, marker: marker, at: time.Now()}
		u.mu.Lock()
		u.sends = append(u.sends, s)
		u.mu.Unlock()
		select {
		case <-time.After(u.delay):
		case <-r.Context().Done():
			return
		}
		model := gjson.GetBytes(body, "model").Str
		var answer any
		text := "answer to " + marker
		if u.pad > 0 {
			text += " " + strings.Repeat("x", u.pad)
		}
		switch r.URL.Path {
		case "/v1/chat/completions":
			answer = map[string]any{"id": "chatcmpl-" + marker, "object": "chat.completion", "created": time.Now().Unix(), "model": model,
				"choices": []any{map[string]any{"index": 0, "finish_reason": "stop",
					"message": map[string]any{"role": "assistant", "content": text}}},
				"usage": map[string]any{"prompt_tokens": upstreamPromptTokens, "completion_tokens": upstreamCompletionTokens,
					"total_tokens": upstreamPromptTokens + upstreamCompletionTokens}}
		case "/v1/messages":
			answer = map[string]any{"id": "msg_" + marker, "type": "message", "role": "assistant", "model": model,
				"content":     []any{map[string]any{"type": "text", "text": text}},
				"stop_reason": "end_turn", "stop_sequence": nil,
				"usage": map[string]any{"input_tokens": upstreamPromptTokens, "output_tokens": upstreamCompletionTokens}}
		default:
			http.NotFound(w, r)
			return
		}
		data, _ := json.Marshal(answer)
		w.Header().Set("Content-Type", "application/json")
		if _, err := w.Write(data); err == nil {
			u.mu.Lock()
			s.answered = true
			u.mu.Unlock()
		}
	})
}

// snapshot returns a copy of the sends so far.
func (u *countingUpstream) snapshot() []upstreamSend {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make([]upstreamSend, len(u.sends))
	for i, s := range u.sends {
		out[i] = *s
	}
	return out
}

// answered counts the answers written in full, for markers with prefix and, when instance >= 0,
// on that instance's port.
func (u *countingUpstream) answered(prefix string, instance int) int {
	n := 0
	for _, s := range u.snapshot() {
		if s.answered && strings.HasPrefix(s.marker, prefix) && (instance < 0 || s.instance == instance) {
			n++
		}
	}
	return n
}

// sendStats sums up the sends: every marker's sends in order, and the markers sent more than once.
type sendStats struct {
	total    int
	byMarker map[string][]upstreamSend
	resent   []string
}

func (u *countingUpstream) stats() sendStats {
	st := sendStats{byMarker: map[string][]upstreamSend{}}
	for _, s := range u.snapshot() {
		st.total++
		st.byMarker[s.marker] = append(st.byMarker[s.marker], s)
	}
	for m, ss := range st.byMarker {
		if len(ss) > 1 {
			st.resent = append(st.resent, m)
		}
	}
	slices.Sort(st.resent)
	return st
}

// checkResends checks that the only markers sent more than once are lines a killed instance
// had in flight: sent at most twice, the first send started on the killed instance before its
// kill, the second after it; at most batchWorkers of them per kill. It returns how many were
// resent.
func checkResends(t *testing.T, st sendStats, kills []instanceKill) int {
	t.Helper()
	perKill := make([]int, len(kills))
	for _, m := range st.resent {
		ss := st.byMarker[m]
		if len(ss) > 2 {
			t.Errorf("%s was sent %d times", m, len(ss))
			continue
		}
		k := slices.IndexFunc(kills, func(k instanceKill) bool {
			return ss[0].instance == k.instance && ss[0].at.Before(k.at) && ss[1].at.After(k.at) &&
				(k.since.IsZero() || ss[0].at.After(k.since))
		})
		if k < 0 {
			t.Errorf("%s was sent twice with no kill in between: %+v", m, ss)
			continue
		}
		perKill[k]++
	}
	for i, n := range perKill {
		if n > batchWorkers {
			t.Errorf("kill %d: %d lines sent again, but at most %d were in flight", i+1, n, batchWorkers)
		}
	}
	return len(st.resent)
}

// instanceKill is a SIGKILL of the instance sending to upstream port instance, at at; since is
// when that process started (zero: the test's start).
type instanceKill struct {
	instance  int
	since, at time.Time
}

// gatewayProc is the built binary running a Caddyfile, with its logs kept.
type gatewayProc struct {
	cmd     *exec.Cmd
	started time.Time
	mu      sync.Mutex
	logs    strings.Builder
	done    chan struct{}
}

// runGateway starts the built binary on caddyfile with home as its HOME and XDG directories
// (the same home across a restart), and stops it (SIGKILL) when the test ends. The logs are
// shown if the test fails and must never hold the test's secrets.
func runGateway(t *testing.T, bin, caddyfile, home string) *gatewayProc {
	t.Helper()
	p := &gatewayProc{done: make(chan struct{})}
	p.cmd = exec.Command(bin, "run", "--config", caddyfile, "--adapter", "caddyfile")
	p.cmd.Env = append(os.Environ(), "HOME="+home, "XDG_DATA_HOME="+filepath.Join(home, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(home, "config"))
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.logs.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		p.kill()
		p.mu.Lock()
		logs := p.logs.String()
		p.mu.Unlock()
		if t.Failed() {
			t.Logf("caddy logs (%s):\n%s", filepath.Base(caddyfile), logs)
		}
		if strings.Contains(logs, secretAll) {
			t.Error("the key's secret appears in the logs")
		}
		if strings.Contains(logs, "panic") {
			t.Errorf("a panic in the logs of %s", filepath.Base(caddyfile))
		}
	})
	return p
}

// kill sends SIGKILL and waits for the process to be gone; it returns when it was gone, so
// every request the upstream saw start earlier came from this process or an earlier one.
func (p *gatewayProc) kill() time.Time {
	if p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Kill()
		<-p.done
		_ = p.cmd.Wait()
	}
	return time.Now()
}

// stop sends SIGTERM (Caddy's graceful stop) and waits at most wait for the process to exit; it
// returns when it was gone.
func (p *gatewayProc) stop(t *testing.T, wait time.Duration) time.Time {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		_ = p.cmd.Wait()
	case <-time.After(wait):
		t.Fatalf("the gateway did not stop within %s of SIGTERM", wait)
	}
	return time.Now()
}

// batchCaddyfile is the config of one gateway instance: admin is "off" or an address, storage
// the lines of the storage block besides batch_lease, extra more ai_gateway lines.
func batchCaddyfile(admin string, port int, upstream, storage, extra string) string {
	return fmt.Sprintf(`{
	admin %s
	auto_https off
	persist_config off
}
:%d {
	ai_gateway {
		key %s {
			id batch-owner
		}
		model demo-llama {
			alias llama
			upstream %s
		}
		storage {
			%s
			batch_lease %s
		}
		batches {
			workers %d
		}
		%s
	}
	reverse_proxy {
		dynamic ai_gateway
	}
}
`, admin, port, policy.FormatHash(policy.HashSecret(secretAll)), upstream, storage, binaryBatchLease, batchWorkers, extra)
}

func writeCaddyfile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// markedChatLines is an input file of n chat lines whose prompts are prefix + the line number.
func markedChatLines(prefix string, n int) string {
	var sb strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&sb, `{"custom_id":"req-%d","method":"POST","url":"/v1/chat/completions","body":{"model":"llama","messages":[{"role":"user","content":"%s%d"}],"max_tokens":8}}`+"\n", i, prefix, i)
	}
	return sb.String()
}

// checkOpenAIResults checks a completed batch of markedChatLines(prefix, n): each custom_id once
// in the output, no error file, every answer the one for its line, the counts and usage those of
// n answers (each line counted once).
func checkOpenAIResults(t *testing.T, c openai.Client, b *openai.Batch, prefix string, n int) {
	t.Helper()
	if b.Status != openai.BatchStatusCompleted || b.RequestCounts.Completed != int64(n) || b.RequestCounts.Failed != 0 ||
		b.RequestCounts.Total != int64(n) {
		t.Fatalf("batch: %s", b.RawJSON())
	}
	if b.ErrorFileID != "" {
		t.Errorf("an error file %s: %v", b.ErrorFileID, fileLines(t, c, b.ErrorFileID))
	}
	if b.Usage.InputTokens != int64(n*upstreamPromptTokens) || b.Usage.OutputTokens != int64(n*upstreamCompletionTokens) {
		t.Errorf("usage %s, want %d answers' worth", b.Usage.RawJSON(), n)
	}
	lines := fileLines(t, c, b.OutputFileID) // fails on a repeated custom_id
	if len(lines) != n {
		t.Errorf("%d output lines, want %d", len(lines), n)
	}
	for i := 1; i <= n; i++ {
		l, ok := lines[fmt.Sprintf("req-%d", i)]
		want := fmt.Sprintf("answer to %s%d", prefix, i)
		if content := l.Get("response.body.choices.0.message.content").Str; !ok || l.Get("response.status_code").Int() != 200 ||
			content != want && !strings.HasPrefix(content, want+" ") { // the answer, maybe padded
			t.Errorf("req-%d: %.300s, want %q", i, l.Raw, want)
		}
	}
}

// markedMsgRequests are n message batch requests whose prompts are prefix + the request number.
func markedMsgRequests(prefix string, n int) []anthropic.MessageBatchNewParamsRequest {
	reqs := make([]anthropic.MessageBatchNewParamsRequest, n)
	for i := range reqs {
		reqs[i] = anthropic.MessageBatchNewParamsRequest{CustomID: fmt.Sprintf("msg-%d", i+1),
			Params: anthropic.MessageBatchNewParamsRequestParams{Model: "llama", MaxTokens: 8,
				Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(fmt.Sprintf("%s%d", prefix, i+1)))}}}
	}
	return reqs
}

// checkMsgResults checks an ended message batch of markedMsgRequests(prefix, n).
func checkMsgResults(t *testing.T, c anthropic.Client, m *anthropic.MessageBatch, prefix string, n int) {
	t.Helper()
	if m.RequestCounts.Succeeded != int64(n) || m.RequestCounts.Errored+m.RequestCounts.Canceled+m.RequestCounts.Expired != 0 {
		t.Fatalf("message batch: %s", m.RawJSON())
	}
	results := msgResults(t, c, m.ID) // fails on a repeated custom_id
	if len(results) != n {
		t.Errorf("%d results, want %d", len(results), n)
	}
	for i := 1; i <= n; i++ {
		r, ok := results[fmt.Sprintf("msg-%d", i)]
		want := fmt.Sprintf("answer to %s%d", prefix, i)
		if !ok || r.Result.Type != "succeeded" || len(r.Result.Message.Content) != 1 || r.Result.Message.Content[0].Text != want {
			t.Errorf("msg-%d: %s, want %q", i, r.RawJSON(), want)
		}
	}
}

// TestBinaryBatchKillRestart: the built binary with its embedded store runs a Message Batch and
// an OpenAI batch, is killed (SIGKILL) in the middle of each and started again on the same
// data: both complete, every custom_id once with its own answer, and the only lines sent twice
// are those in flight at a kill.
func TestBinaryBatchKillRestart(t *testing.T) {
	bin := binaryOrSkip(t)
	const nChat, nMsg = 150, 60
	u := newCountingUpstream(t, 40*time.Millisecond, 1)
	tmp, home := t.TempDir(), t.TempDir()
	port := freePort(t)
	cf := writeCaddyfile(t, tmp, "Caddyfile", batchCaddyfile("off", port, u.addr(0), "dir "+filepath.Join(tmp, "store"), ""))
	p := runGateway(t, bin, cf, home)
	waitReady(t, port, secretAll)

	oc, ac := filesClient(port, secretAll), msgClient(port, secretAll)
	m, err := ac.Messages.Batches.New(context.Background(), anthropic.MessageBatchNewParams{Requests: markedMsgRequests("kr-msg-", nMsg)})
	if err != nil {
		t.Fatalf("creating the message batch: %v", err)
	}
	f := uploadBatch(t, oc, "in.jsonl", markedChatLines("kr-chat-", nChat))
	b := newBatch(t, oc, f.ID)

	var kills []instanceKill
	kill := func(what string, enough func() bool) {
		waitFor(t, what, 20*time.Second, enough)
		kills = append(kills, instanceKill{instance: 0, since: p.started, at: p.kill()})
		p = runGateway(t, bin, cf, home)
		waitReady(t, port, secretAll)
	}
	kill("a third of the message batch answered", func() bool { return u.answered("kr-msg-", -1) >= nMsg/3 })
	kill("a third of the OpenAI batch answered", func() bool { return u.answered("kr-chat-", -1) >= nChat/3 })
	restarted := time.Now()

	checkMsgResults(t, ac, waitMsgBatch(t, ac, m.ID), "kr-msg-", nMsg)
	checkOpenAIResults(t, oc, waitBatch(t, oc, b.ID), "kr-chat-", nChat)
	st := u.stats()
	resent := checkResends(t, st, kills)
	if len(st.byMarker) != nChat+nMsg {
		t.Errorf("%d lines reached the upstream, want %d", len(st.byMarker), nChat+nMsg)
	}
	if st.total > nChat+nMsg+len(kills)*batchWorkers {
		t.Errorf("%d sends for %d lines and %d kills", st.total, nChat+nMsg, len(kills))
	}
	t.Logf("%d lines, %d sends, %d sent again after %d kills (lease %s); finished %s after the last restart",
		nChat+nMsg, st.total, resent, len(kills), binaryBatchLease, time.Since(restarted).Round(time.Millisecond))
}

// TestBinaryBatchTwoInstancesRedis: two gateway processes share one Redis store and file
// directory; a Message Batch created through B and an OpenAI batch created through A are run
// by both, A is killed midway and B finishes them, running A's lines in flight once their
// leases end. Both answer for the batches.
func TestBinaryBatchTwoInstancesRedis(t *testing.T) {
	bin := binaryOrSkip(t)
	const n, nMsg = 200, 40
	addr, stop := testredis.Start(t)
	defer stop()
	u := newCountingUpstream(t, 40*time.Millisecond, 2)
	tmp := t.TempDir()
	storage := fmt.Sprintf("store redis redis://%s/0\n\t\t\tdir %s", addr, filepath.Join(tmp, "shared"))
	ports := []int{freePort(t), freePort(t)}
	homes := []string{t.TempDir(), t.TempDir()}
	cfs := make([]string, 2)
	procs := make([]*gatewayProc, 2)
	for i := range ports {
		cfs[i] = writeCaddyfile(t, tmp, fmt.Sprintf("Caddyfile.%d", i), batchCaddyfile("off", ports[i], u.addr(i), storage, ""))
		procs[i] = runGateway(t, bin, cfs[i], homes[i])
	}
	for _, port := range ports {
		waitReady(t, port, secretAll)
	}
	ca, cb := filesClient(ports[0], secretAll), filesClient(ports[1], secretAll)
	acs := []anthropic.Client{msgClient(ports[0], secretAll), msgClient(ports[1], secretAll)}

	m, err := acs[1].Messages.Batches.New(context.Background(), anthropic.MessageBatchNewParams{Requests: markedMsgRequests("two-msg-", nMsg)})
	if err != nil {
		t.Fatalf("creating the message batch through B: %v", err)
	}
	f := uploadBatch(t, ca, "in.jsonl", markedChatLines("two-", n))
	b := newBatch(t, ca, f.ID)
	waitFor(t, "both instances running lines", 20*time.Second, func() bool {
		return u.answered("two-", 0) >= 10 && u.answered("two-", 1) >= 10 && u.answered("two-", -1) >= (n+nMsg)/3
	})
	// either instance answers for the batch while it runs
	for name, c := range map[string]openai.Client{"A": ca, "B": cb} {
		got, err := c.Batches.Get(context.Background(), b.ID)
		if err != nil || got.Status != openai.BatchStatusInProgress || got.RequestCounts.Completed == 0 {
			t.Fatalf("instance %s retrieving the batch: %v %s", name, err, got.RawJSON())
		}
		page, err := c.Batches.List(context.Background(), openai.BatchListParams{})
		if err != nil || len(page.Data) != 1 || page.Data[0].ID != b.ID {
			t.Fatalf("instance %s listing batches: %v %+v", name, err, page)
		}
	}
	t.Logf("before the kill: A %d chat %d msg, B %d chat %d msg", u.answered("two-", 0)-u.answered("two-msg-", 0), u.answered("two-msg-", 0),
		u.answered("two-", 1)-u.answered("two-msg-", 1), u.answered("two-msg-", 1))
	killedAt := procs[0].kill()
	doneByA := u.answered("two-", 0)

	b = waitBatch(t, cb, b.ID)
	checkOpenAIResults(t, cb, b, "two-", n)
	checkMsgResults(t, acs[1], waitMsgBatch(t, acs[1], m.ID), "two-msg-", nMsg)
	st := u.stats()
	resent := checkResends(t, st, []instanceKill{{instance: 0, at: killedAt}})
	if len(st.byMarker) != n+nMsg || st.total > n+nMsg+batchWorkers {
		t.Errorf("%d lines reached the upstream in %d sends, want %d lines in at most %d", len(st.byMarker), st.total, n+nMsg, n+nMsg+batchWorkers)
	}
	var takeover time.Duration
	for _, m := range st.resent {
		if d := st.byMarker[m][1].at.Sub(killedAt); takeover == 0 || d < takeover {
			takeover = d
		}
	}
	if takeover > binaryBatchLease+2*time.Second {
		t.Errorf("B took over A's lines %s after the kill; the lease is %s", takeover, binaryBatchLease)
	}

	// A started again answers for the batch and its files, and runs nothing more
	procs[0] = runGateway(t, bin, cfs[0], homes[0])
	waitReady(t, ports[0], secretAll)
	for name, c := range map[string]openai.Client{"A": ca, "B": cb} {
		got, err := c.Batches.Get(context.Background(), b.ID)
		if err != nil || got.Status != openai.BatchStatusCompleted || got.OutputFileID != b.OutputFileID {
			t.Errorf("instance %s retrieving the batch: %v %s", name, err, got.RawJSON())
		}
		page, err := c.Batches.List(context.Background(), openai.BatchListParams{})
		if err != nil || len(page.Data) != 1 || page.Data[0].ID != b.ID {
			t.Errorf("instance %s listing batches: %v %+v", name, err, page)
		}
		if lines := fileLines(t, c, b.OutputFileID); len(lines) != n {
			t.Errorf("instance %s: %d output lines, want %d", name, len(lines), n)
		}
	}
	for i, c := range acs {
		if results := msgResults(t, c, m.ID); len(results) != nMsg {
			t.Errorf("instance %d: %d message batch results, want %d", i, len(results), nMsg)
		}
		page, err := c.Messages.Batches.List(context.Background(), anthropic.MessageBatchListParams{})
		if err != nil || len(page.Data) != 1 || page.Data[0].ID != m.ID {
			t.Errorf("instance %d listing message batches: %v %+v", i, err, page)
		}
	}
	if after := u.stats().total; after != st.total {
		t.Errorf("%d more sends after the batch completed", after-st.total)
	}
	t.Logf("%d lines: A answered %d before its kill, B %d; %d sends, %d sent again; B took over %s after the kill (lease %s)",
		n+nMsg, doneByA, u.answered("two-", 1), st.total, resent, takeover.Round(time.Millisecond), binaryBatchLease)
}

// TestBinaryBatchReload: config reloads through the admin API (the same config with a key
// added and a shorter batch_lease) while a batch runs neither interrupt it nor send any line
// twice.
func TestBinaryBatchReload(t *testing.T) {
	bin := binaryOrSkip(t)
	const n = 120
	u := newCountingUpstream(t, 40*time.Millisecond, 1)
	tmp := t.TempDir()
	port, admin := freePort(t), freePort(t)
	adminAddr := fmt.Sprintf("localhost:%d", admin)
	storage := "dir " + filepath.Join(tmp, "store")
	cf := writeCaddyfile(t, tmp, "Caddyfile", batchCaddyfile(adminAddr, port, u.addr(0), storage, ""))
	runGateway(t, bin, cf, t.TempDir())
	waitReady(t, port, secretAll)
	c := filesClient(port, secretAll)
	f := uploadBatch(t, c, "in.jsonl", markedChatLines("reload-", n))
	b := newBatch(t, c, f.ID)

	reload := func(i int) {
		extra := fmt.Sprintf("key %s {\n\t\t\tid added-%d\n\t\t}", policy.FormatHash(policy.HashSecret(fmt.Sprintf("sk-added-%d", i))), i)
		changed := strings.Replace(batchCaddyfile(adminAddr, port, u.addr(0), storage, extra), "batch_lease "+binaryBatchLease.String(), "batch_lease 2s", 1)
		req, _ := http.NewRequest(http.MethodPost, "http://"+adminAddr+"/load", strings.NewReader(changed))
		req.Header.Set("Content-Type", "text/caddyfile")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("reload %d: %d %s", i, resp.StatusCode, body)
		}
	}
	waitFor(t, "a quarter of the lines answered", 20*time.Second, func() bool { return u.answered("reload-", -1) >= n/4 })
	reload(1)
	waitFor(t, "half of the lines answered", 20*time.Second, func() bool { return u.answered("reload-", -1) >= n/2 })
	reload(2)

	checkOpenAIResults(t, c, waitBatch(t, c, b.ID), "reload-", n)
	st := u.stats()
	if len(st.resent) > 0 || st.total != n {
		t.Errorf("%d sends for %d lines; sent more than once: %v", st.total, n, st.resent)
	}
	t.Logf("%d lines, %d sends across 2 reloads", n, st.total)
}

// TestBinaryBatchKillWhileFinalizing: the built binary killed while it writes a batch's output
// file (big answers make that take a moment) ends the batch at once when started again, with
// one output file holding every line once, and nothing sent again.
func TestBinaryBatchKillWhileFinalizing(t *testing.T) {
	bin := binaryOrSkip(t)
	const n = 40
	u := newCountingUpstream(t, 5*time.Millisecond, 1)
	u.pad = 200 << 10
	tmp, home := t.TempDir(), t.TempDir()
	port := freePort(t)
	cf := writeCaddyfile(t, tmp, "Caddyfile", batchCaddyfile("off", port, u.addr(0), "dir "+filepath.Join(tmp, "store"), ""))
	p := runGateway(t, bin, cf, home)
	waitReady(t, port, secretAll)
	c := filesClient(port, secretAll)
	status := func(id string) string {
		req, _ := http.NewRequest(http.MethodGet, url(port, "/v1/batches/"+id), nil)
		req.Header.Set("Authorization", "Bearer "+secretAll)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return gjson.GetBytes(body, "status").Str
	}
	for attempt := 1; attempt <= 3; attempt++ {
		prefix := fmt.Sprintf("fin%d-", attempt)
		f := uploadBatch(t, c, "in.jsonl", markedChatLines(prefix, n))
		b := newBatch(t, c, f.ID)
		var seen string
		waitFor(t, "the batch finalizing or done", 20*time.Second, func() bool {
			seen = status(b.ID)
			return seen == "finalizing" || seen == "completed"
		})
		if seen != "finalizing" {
			t.Logf("attempt %d: the batch completed between two polls", attempt)
			continue
		}
		p.kill()
		sends := u.stats().total
		p = runGateway(t, bin, cf, home)
		start := time.Now()
		waitReady(t, port, secretAll)
		got := waitBatch(t, c, b.ID)
		took := time.Since(start)
		checkOpenAIResults(t, c, got, prefix, n)
		if after := u.stats().total; after != sends {
			t.Errorf("%d lines sent again after the kill while finalizing", after-sends)
		}
		if took > 10*time.Second {
			t.Errorf("the batch took %s to end after the restart", took)
		}
		page, err := c.Files.List(context.Background(), openai.FileListParams{Purpose: openai.String("batch_output")})
		if err != nil {
			t.Fatal(err)
		}
		for _, fo := range page.Data {
			if fo.ID != got.OutputFileID && strings.HasPrefix(fo.Filename, b.ID) {
				t.Errorf("a second output file %s (%s, %d bytes) beside the batch's %s", fo.ID, fo.Filename, fo.Bytes, got.OutputFileID)
			}
		}
		t.Logf("attempt %d: killed while finalizing, completed %s after the restart", attempt, took.Round(time.Millisecond))
		return
	}
	t.Log("never caught a batch finalizing: nothing checked")
}

// TestBinaryBatchStopRestart: the built binary stopped with SIGTERM mid-batch gives the lines it
// held back at once: started again, it finishes the batch without waiting for their leases
// (30 s here), each line once in the output, the only lines sent twice those in flight at
// the stop.
func TestBinaryBatchStopRestart(t *testing.T) {
	bin := binaryOrSkip(t)
	const n, lease = 120, 30 * time.Second
	u := newCountingUpstream(t, 40*time.Millisecond, 1)
	tmp, home := t.TempDir(), t.TempDir()
	port := freePort(t)
	cfg := strings.Replace(batchCaddyfile("off", port, u.addr(0), "dir "+filepath.Join(tmp, "store"), ""),
		"batch_lease "+binaryBatchLease.String(), "batch_lease "+lease.String(), 1)
	cf := writeCaddyfile(t, tmp, "Caddyfile", cfg)
	p := runGateway(t, bin, cf, home)
	waitReady(t, port, secretAll)
	c := filesClient(port, secretAll)
	f := uploadBatch(t, c, "in.jsonl", markedChatLines("stop-", n))
	b := newBatch(t, c, f.ID)
	waitFor(t, "a third of the lines answered", 20*time.Second, func() bool { return u.answered("stop-", -1) >= n/3 })
	stopped := instanceKill{instance: 0, since: p.started, at: p.stop(t, 10*time.Second)}
	runGateway(t, bin, cf, home)
	restarted := time.Now()
	waitReady(t, port, secretAll)
	got := waitBatch(t, c, b.ID)
	took := time.Since(restarted)
	checkOpenAIResults(t, c, got, "stop-", n)
	st := u.stats()
	resent := checkResends(t, st, []instanceKill{stopped})
	if took > lease/2 {
		t.Errorf("the batch took %s to finish after the restart: the stopped process's lines waited for their lease", took)
	}
	t.Logf("%d lines, %d sends, %d sent again after a SIGTERM; finished %s after the restart (lease %s)",
		n, st.total, resent, took.Round(time.Millisecond), lease)
}
