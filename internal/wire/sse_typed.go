package wire

import (
	"bytes"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
)

// maxKeptResponse bounds the response object a typed stream's tap keeps from response.created,
// to end a broken stream with response.failed. A larger one (huge instructions or tools) is not
// kept: the stream then ends with the error event alone.
const maxKeptResponse = 64 << 10

// typedState is what a StreamTyped tap remembers across events.
type typedState struct {
	seq  int64  // the last sequence_number seen; meaningful once seen
	resp []byte // the response object of response.created / response.in_progress
	seen bool   // an event with a sequence_number was seen
	id   string // the response's id, from the first event that carries the response
}

// ResponseID returns the id of the response a Responses stream announced (response.created),
// or "" before that.
func (t *StreamTap) ResponseID() string { return t.typed.id }

// typedEvent handles one event of a Responses stream: response.created (kept, model rewritten),
// text and argument deltas, the terminal events (usage; the end of the stream) and error.
func (t *StreamTap) typedEvent(dst, ev []byte, f *eventFields) []byte {
	d := bytes.TrimSpace(f.data)
	js := view(f.data)
	if len(d) == 0 || d[0] != '{' || !gjson.Valid(js) {
		return t.unreadable(dst)
	}
	var typ, seq, resp, delta, errv gjson.Result
	gjson.Parse(js).ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "type":
			typ = v
		case "sequence_number":
			seq = v
		case "response":
			resp = v
		case "delta":
			delta = v
		case "error":
			errv = v
		}
		return true
	})
	if seq.Type == gjson.Number {
		t.typed.seq, t.typed.seen = seq.Int(), true
	}
	if typ.Str == "error" || errv.IsObject() && typ.Str == "" {
		return t.errorFrame(dst, f.data)
	}
	switch typ.Str {
	case "response.created", "response.in_progress", "response.queued":
		if resp.IsObject() {
			if id := resp.Get("id"); t.typed.id == "" && id.Type == gjson.String {
				t.typed.id = strings.Clone(id.Str)
			}
			t.usageKey = t.usageKey || resp.Get("usage").Exists()
			if len(resp.Raw) <= maxKeptResponse {
				t.typed.resp = append(t.typed.resp[:0], resp.Raw...)
			}
		}
	case "response.output_text.delta", "response.function_call_arguments.delta", "response.refusal.delta",
		"response.reasoning_text.delta", "response.reasoning_summary_text.delta", "response.custom_tool_call_input.delta":
		if t.opts.OnText != nil || !t.firstToken {
			t.text(delta)
		}
	case "response.completed", "response.incomplete", "response.failed":
		t.done = true
		if resp.IsObject() {
			u := resp.Get("usage")
			t.usageKey = t.usageKey || u.Exists()
			t.mergeUsage(u)
		}
	}
	if t.opts.Model != "" && !f.multi && resp.IsObject() {
		if m := gjson.Get(js, "response.model"); m.Type == gjson.String && m.Str != t.opts.Model && m.Index > resp.Index {
			return t.rewrite(dst, ev, f.dataOff+m.Index, len(m.Raw))
		}
	}
	return append(dst, ev...)
}

// typedTerminate ends a Responses stream that broke: response.failed with the announced
// response marked failed (when response.created came), then an error event. The error event
// carries the spec's fields (code, message, param, sequence_number) and the error object of
// the OpenAI envelope, on which every SDK raises.
func (t *StreamTap) typedTerminate(dst []byte, e *Error) []byte {
	seq := t.typed.seq + 1
	if !t.typed.seen {
		seq = 0
	}
	if len(t.typed.resp) > 0 {
		code := "server_error"
		if e.Code == "rate_limit_exceeded" {
			code = e.Code
		}
		resp := t.typed.resp
		var err error
		for _, set := range [...]struct {
			path string
			raw  []byte
		}{
			{"status", []byte(`"failed"`)},
			{"error", appendResponseError(nil, code, e.Message)},
		} {
			if resp, err = sjson.SetRawBytes(resp, set.path, set.raw); err != nil {
				break
			}
		}
		if err == nil {
			if t.opts.Model != "" {
				resp, _ = sjson.SetBytes(resp, "model", t.opts.Model)
			}
			dst = append(dst, "event: response.failed\ndata: {\"type\":\"response.failed\",\"sequence_number\":"...)
			dst = strconv.AppendInt(dst, seq, 10)
			dst = append(dst, `,"response":`...)
			dst = append(dst, resp...)
			dst = append(dst, "}\n\n"...)
			seq++
		}
		t.typed.resp = resp
	}
	return AppendTypedError(dst, e, seq)
}

// appendResponseError appends a Response's error object {"code":..,"message":..}.
func appendResponseError(dst []byte, code, message string) []byte {
	dst = append(dst, `{"code":`...)
	dst = AppendString(dst, code)
	dst = append(dst, `,"message":`...)
	dst = AppendString(dst, message)
	return append(dst, '}')
}

// AppendTypedError appends a Responses stream's error event for e with sequence number seq:
// `event: error` and data with type, code, message, param, sequence_number (the spec's
// ResponseErrorEvent) and error (the OpenAI envelope's object, which the SDKs raise on).
func AppendTypedError(dst []byte, e *Error, seq int64) []byte {
	dst = append(dst, "event: error\ndata: {\"type\":\"error\",\"code\":"...)
	dst = appendStringOrNull(dst, e.Code)
	dst = append(dst, `,"message":`...)
	dst = AppendString(dst, e.Message)
	dst = append(dst, `,"param":`...)
	dst = appendStringOrNull(dst, e.Param)
	dst = append(dst, `,"sequence_number":`...)
	dst = strconv.AppendInt(dst, seq, 10)
	dst = append(dst, `,"error":`...)
	dst = appendOpenAIInner(dst, e)
	return append(dst, "}\n\n"...)
}
