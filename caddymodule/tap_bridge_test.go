package caddymodule

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
	"go.uber.org/zap"

	"github.com/caddyai/gateway/bridge"
	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/simulator"
)

// splitReader returns its bytes in the pieces given, one per Read.
type splitReader struct{ pieces [][]byte }

func (r *splitReader) Read(p []byte) (int, error) {
	if len(r.pieces) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.pieces[0])
	if r.pieces[0] = r.pieces[0][n:]; len(r.pieces[0]) == 0 {
		r.pieces = r.pieces[1:]
	}
	return n, nil
}

// bridgedStream runs a healthy upstream chat stream through a bridged response tap the way the
// reverse proxy does (one reused buffer, a write count other than what was read is a failed
// copy) and returns what the client got.
func bridgedStream(t *testing.T, req *bridge.Request, pieces [][]byte) []byte {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/v1/responses", nil)
	ex := newExchange(r, time.Now())
	ex.stream, ex.promptExact, ex.info.NoStore = true, true, true
	g := &Gateway{now: time.Now, metrics: newGatewayMetrics(), logger: zap.NewNop()}
	ex.route = &modelRoute{model: &policy.Model{Name: "chat-only"}, series: newRouteSeries(g.metrics, "chat-only")}
	ex.bridged = &bridgeState{req: req}
	w := httptest.NewRecorder()
	tap := newResponseTap(g, w, ex)
	tap.Header().Set("Content-Type", "text/event-stream")
	tap.WriteHeader(http.StatusOK)
	buf := make([]byte, 32<<10)
	_, err := io.CopyBuffer(writerOnly{tap}, &splitReader{pieces: pieces}, buf) // as copyBuffer: nr != nw fails
	for i := range buf {
		buf[i] = 'x' // the proxy's buffer is reused: nothing may alias it past the Write
	}
	if _, ferr := tap.finish(err); err != nil || ferr != nil {
		t.Fatalf("copy: %v, finish: %v", err, ferr)
	}
	if ex.streamIncomplete || ex.reject != "" {
		t.Fatalf("a healthy stream declared cut: incomplete %v, reject %q\n%s", ex.streamIncomplete, ex.reject, w.Body.Bytes())
	}
	return w.Body.Bytes()
}

// checkBridged checks a bridged Responses stream: contiguous sequence numbers, no error, and
// response.completed last with the deltas' text and call.
func checkBridged(t *testing.T, out []byte, cut string) (types string) {
	t.Helper()
	var kinds []string
	var deltas strings.Builder
	var last string
	for i, ev := range strings.Split(strings.TrimSuffix(string(out), "\n\n"), "\n\n") {
		_, d, ok := strings.Cut(ev, "\ndata: ")
		if !ok || !gjson.Valid(d) || gjson.Get(d, "sequence_number").Int() != int64(i) {
			t.Fatalf("%s: event %d %q", cut, i, ev)
		}
		typ := gjson.Get(d, "type").Str
		kinds = append(kinds, typ)
		if strings.HasSuffix(typ, ".delta") {
			deltas.WriteString(gjson.Get(d, "delta").Str)
		}
		last = d
	}
	resp := gjson.Get(last, "response")
	var got strings.Builder
	for _, it := range resp.Get("output").Array() {
		got.WriteString(it.Get("content.0.text").Str + it.Get("arguments").Str)
		if it.Get("type").Str == "function_call" && (it.Get("name").Str != "get_weather" || !strings.HasPrefix(it.Get("call_id").Str, "call_")) {
			t.Fatalf("%s: call %s", cut, it.Raw)
		}
	}
	if gjson.Get(last, "type").Str != "response.completed" || resp.Get("model").Str != "chat-only" || got.String() != deltas.String() ||
		got.Len() == 0 || resp.Get("usage.output_tokens").Int() == 0 {
		t.Fatalf("%s: last %s, deltas %q", cut, last, deltas.String())
	}
	return strings.Join(kinds, " ")
}

// TestBridgedStreamSplits feeds the same upstream chat stream (text, then a tool call, each with
// the usage chunk and [DONE]) to the bridged tap whole, split at every byte, and a byte per
// Read: the client always gets the same complete Responses stream. A Write that reported the
// bridged bytes' count instead of the upstream's made the proxy abort the copy (a short write)
// and end a healthy stream as cut; a call id kept from the reused buffer came back garbled.
func TestBridgedStreamSplits(t *testing.T) {
	sim, err := simulator.New(simulator.Config{Models: []string{"chat-only"}, ResponseTokens: 5})
	if err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{
		`{"model":"chat-only","input":"Count.","stream":true}`,
		`{"model":"chat-only","input":"Weather in Paris?","stream":true,"tools":[{"type":"function","name":"get_weather",` +
			`"parameters":{"type":"object","properties":{"city":{"type":"string"}}}}]}`,
	} {
		chat, req, werr := bridge.ToChat([]byte(body), "")
		if werr != nil {
			t.Fatal(werr)
		}
		chat, _ = sjson.SetBytes(chat, "stream_options.include_usage", true)
		rec := httptest.NewRecorder()
		sim.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/chat/completions", bytes.NewReader(chat)))
		up := rec.Body.Bytes()
		if rec.Code != http.StatusOK || !bytes.Contains(up, []byte(`"usage":{`)) || !bytes.HasSuffix(up, []byte("data: [DONE]\n\n")) {
			t.Fatalf("upstream %d %s", rec.Code, up)
		}
		want := checkBridged(t, bridgedStream(t, req, [][]byte{up}), "whole")
		if tools := strings.Contains(body, "tools"); tools != strings.Contains(want, "function_call_arguments.delta") {
			t.Fatalf("events %s", want)
		}
		for i := 1; i < len(up); i++ {
			cut := "cut at " + up2str(up, i)
			if got := checkBridged(t, bridgedStream(t, req, [][]byte{up[:i:i], up[i:]}), cut); got != want {
				t.Fatalf("%s: events %s, want %s", cut, got, want)
			}
		}
		bytesEach := make([][]byte, len(up))
		for i := range up {
			bytesEach[i] = up[i : i+1]
		}
		if got := checkBridged(t, bridgedStream(t, req, bytesEach), "a byte per read"); got != want {
			t.Fatalf("a byte per read: events %s, want %s", got, want)
		}
	}
}

// up2str shows where a stream is cut.
func up2str(b []byte, i int) string {
	return strings.ReplaceAll(string(b[max(0, i-20):i])+"|"+string(b[i:min(len(b), i+20)]), "\n", `\n`)
}
