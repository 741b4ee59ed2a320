package wire_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/caddyai/gateway/internal/wiretest"
)

// typedStream is a Responses stream as the simulator sends it (abridged to the events the tap
// reads), without its final event.
const typedStream = "event: response.created\n" +
	`data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_1","object":"response","created_at":1,"status":"in_progress","error":null,"incomplete_details":null,"instructions":null,"model":"up-model","output":[],"parallel_tool_calls":true,"metadata":{},"tool_choice":"auto","temperature":1,"top_p":1,"tools":[]}}` + "\n\n" +
	"event: response.output_text.delta\n" +
	`data: {"type":"response.output_text.delta","sequence_number":1,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hello","logprobs":[]}` + "\n\n" +
	"event: response.function_call_arguments.delta\n" +
	`data: {"type":"response.function_call_arguments.delta","sequence_number":2,"item_id":"fc_1","output_index":1,"delta":"{}"}` + "\n\n"

const typedCompleted = "event: response.completed\n" +
	`data: {"type":"response.completed","sequence_number":3,"response":{"id":"resp_1","object":"response","created_at":1,"status":"completed","error":null,"incomplete_details":null,"instructions":null,"model":"up-model","output":[],"parallel_tool_calls":true,"metadata":{},"tool_choice":"auto","temperature":1,"top_p":1,"tools":[],"usage":{"input_tokens":12,"input_tokens_details":{"cached_tokens":4,"cache_write_tokens":0},"output_tokens":7,"output_tokens_details":{"reasoning_tokens":2},"total_tokens":19}}}` + "\n\n"

func TestTypedStreamTap(t *testing.T) {
	for _, sizes := range splits {
		var texts []string
		opts := wire.TapOptions{Format: wire.StreamTyped, OnText: func(s string) { texts = append(texts, strings.Clone(s)) }}
		in := []byte(typedStream + typedCompleted + "data: [DONE]\n\n")
		out, fin, tap := runTap(t, wire.OpenAI, opts, in, sizes, nil)
		if want := typedStream + typedCompleted; string(out) != want || len(fin) != 0 {
			t.Fatalf("%v: got %q + %q", sizes, out, fin)
		}
		u, ok := tap.Usage()
		if !ok || !tap.Done() || u != (wire.Usage{PromptTokens: 12, CompletionTokens: 7, TotalTokens: 19, CachedTokens: 4, ReasoningTokens: 2}) {
			t.Errorf("%v: usage %+v %v, done %v", sizes, u, ok, tap.Done())
		}
		if strings.Join(texts, "|") != "Hello|{}" || tap.ResponseID() != "resp_1" {
			t.Errorf("texts %q, id %q", texts, tap.ResponseID())
		}
	}
}

func TestTypedStreamTapModel(t *testing.T) {
	out, _, _ := runTap(t, wire.OpenAI, wire.TapOptions{Format: wire.StreamTyped, Model: "gw-model"}, []byte(typedStream+typedCompleted), nil, nil)
	if strings.Contains(string(out), "up-model") || strings.Count(string(out), `"model":"gw-model"`) != 2 {
		t.Errorf("model not rewritten: %s", out)
	}
}

// TestTypedStreamTapBroken: a cut stream, an unreadable event and an upstream error event
// each end with response.failed (the announced response, failed) and an error event that
// carries the envelope's error object, with the next sequence numbers; nothing after.
func TestTypedStreamTapBroken(t *testing.T) {
	for name, tc := range map[string]struct {
		in   string
		code string
	}{
		"cut":        {typedStream, "stream_incomplete"},
		"half event": {typedStream + "event: response.output_text.delta\ndata: {\"type\":\"resp", "stream_incomplete"},
		"unreadable": {typedStream + "data: not json\n\n" + typedCompleted, "upstream_invalid_response"},
		"error":      {typedStream + "event: error\ndata: {\"type\":\"error\",\"code\":\"server_error\",\"message\":\"boom\",\"param\":null,\"sequence_number\":3}\n\n" + typedCompleted, ""},
	} {
		t.Run(name, func(t *testing.T) {
			out, fin, _ := runTap(t, wire.OpenAI, wire.TapOptions{Format: wire.StreamTyped, Model: "gw"}, []byte(tc.in), []int{5}, nil)
			all := append(out, fin...)
			ds := dataPayloads(all[len(typedStream):])
			if len(ds) != 2 {
				t.Fatalf("want response.failed and error, got %q", all[len(typedStream):])
			}
			for _, d := range ds {
				wiretest.Validate(t, "ResponseStreamEvent", []byte(d))
			}
			failed, e := gjson.Parse(ds[0]), gjson.Parse(ds[1])
			if failed.Get("type").Str != "response.failed" || failed.Get("sequence_number").Int() != 3 ||
				failed.Get("response.status").Str != "failed" || failed.Get("response.error.code").Str != "server_error" ||
				failed.Get("response.model").Str != "gw" {
				t.Errorf("failed event %s", ds[0])
			}
			if e.Get("type").Str != "error" || e.Get("sequence_number").Int() != 4 || !e.Get("error.message").Exists() ||
				tc.code != "" && e.Get("code").Str != tc.code {
				t.Errorf("error event %s", ds[1])
			}
			if bytes.Contains(all, []byte("[DONE]")) {
				t.Error("a typed stream got [DONE]")
			}
		})
	}
	// before response.created: the error event alone, sequence number 0
	out, fin, _ := runTap(t, wire.OpenAI, wire.TapOptions{Format: wire.StreamTyped}, nil, nil, nil)
	if ds := dataPayloads(append(out, fin...)); len(ds) != 1 || gjson.Get(ds[0], "sequence_number").Int() != 0 {
		t.Errorf("empty stream: %q", fin)
	}
}

func FuzzTypedStreamTap(f *testing.F) {
	f.Add([]byte(typedStream+typedCompleted), uint8(7))
	f.Add([]byte(typedStream), uint8(1))
	f.Add([]byte("event: error\ndata: {\"type\":\"error\"}\n\n"), uint8(3))
	f.Fuzz(func(t *testing.T, in []byte, step uint8) {
		opts := wire.TapOptions{Format: wire.StreamTyped, MaxEventBytes: 4096, Model: "gw"}
		whole, wholeFin, tap := runTap(t, wire.OpenAI, opts, in, nil, nil)
		split, splitFin, _ := runTap(t, wire.OpenAI, opts, in, []int{int(step%16) + 1, int(step/16) + 1}, nil)
		if !bytes.Equal(whole, split) || !bytes.Equal(wholeFin, splitFin) {
			t.Fatalf("output depends on the split:\n%q + %q\n%q + %q", whole, wholeFin, split, splitFin)
		}
		// never silent: a stream that did not end properly ends with an error event
		if !tap.Done() {
			ds := dataPayloads(append(whole, wholeFin...))
			if len(ds) == 0 || gjson.Get(ds[len(ds)-1], "type").Str != "error" || !gjson.Get(ds[len(ds)-1], "error.message").Exists() {
				t.Fatalf("stream ended without an error event: %q + %q", whole, wholeFin)
			}
		}
	})
}

// BenchmarkTypedStreamTap taps a Responses stream of 20 text deltas, counting text as the
// gateway does when the upstream may not report usage.
func BenchmarkTypedStreamTap(b *testing.B) {
	var in []byte
	in = append(in, typedStream[:strings.Index(typedStream, "event: response.output_text.delta")]...)
	for i := range 20 {
		in = append(in, "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":"...)
		in = append(in, []byte(strings.Repeat("1", 1+i/10))...)
		in = append(in, ",\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\" word\",\"logprobs\":[]}\n\n"...)
	}
	in = append(in, typedCompleted...)
	n := 0
	out := make([]byte, 0, 8192)
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		tap := wire.NewStreamTap(wire.OpenAI, wire.TapOptions{Format: wire.StreamTyped, OnText: func(s string) { n += len(s) }})
		out = tap.Write(out[:0], in)
		out = tap.Finish(out, nil)
	}
}
