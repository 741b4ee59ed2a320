package bridge

import (
	"bytes"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/caddyai/gateway/internal/wire"
)

// Stream translates a chat completions stream into the Responses stream, chunk by chunk: the
// first chunk announces the response (response.created, response.in_progress); content deltas
// open a message item and become response.output_text.delta; tool call deltas open a
// function_call item each and become response.function_call_arguments.delta; [DONE] closes the
// open items and ends with response.completed (response.incomplete when the chat answer stopped
// at its length limit), with the usage of the chat stream's usage chunk. An error chunk becomes
// an error event; an unreadable one, an error event of its own. A chat stream that stops
// before [DONE] makes no terminal event: the gateway's typed stream tap ends it (response.failed
// and an error event). A Stream is not safe for concurrent use.
type Stream struct {
	a       answer
	seq     int
	started bool
	msg     *item
	calls   map[int64]*item // by the chat tool call index
	done    bool
}

// NewStream returns the translator of a chat stream answering req.
func NewStream(req *Request) *Stream {
	return &Stream{a: answer{req: req, id: NewID("resp_")}}
}

// Done reports whether the translated stream has its terminal event.
func (s *Stream) Done() bool { return s.done }

// event appends `event: typ` with data {"type":typ,"sequence_number":N<rest>}.
func (s *Stream) event(dst []byte, typ string, rest func([]byte) []byte) []byte {
	dst = append(dst, "event: "...)
	dst = append(dst, typ...)
	dst = append(dst, "\ndata: {\"type\":\""...)
	dst = append(dst, typ...)
	dst = append(dst, `","sequence_number":`...)
	dst = strconv.AppendInt(dst, int64(s.seq), 10)
	s.seq++
	if rest != nil {
		dst = rest(dst)
	}
	return append(dst, "}\n\n"...)
}

func (s *Stream) withResponse(final bool) func([]byte) []byte {
	return func(b []byte) []byte {
		b = append(b, `,"response":`...)
		return s.a.appendResponse(b, final)
	}
}

// index is an item's output_index.
func (s *Stream) index(it *item) int {
	for i, x := range s.a.items {
		if x == it {
			return i
		}
	}
	return -1
}

func (s *Stream) ids(it *item) func([]byte) []byte {
	return func(b []byte) []byte {
		b = append(b, `,"item_id":"`...)
		b = append(b, it.id...)
		b = append(b, `","output_index":`...)
		return strconv.AppendInt(b, int64(s.index(it)), 10)
	}
}

// open adds an item and announces it.
func (s *Stream) open(dst []byte, it *item) []byte {
	s.a.items = append(s.a.items, it)
	it.open = true
	dst = s.event(dst, "response.output_item.added", func(b []byte) []byte {
		b = append(b, `,"output_index":`...)
		b = strconv.AppendInt(b, int64(s.index(it)), 10)
		b = append(b, `,"item":`...)
		return it.appendItem(b, "in_progress")
	})
	if !it.call {
		dst = s.event(dst, "response.content_part.added", func(b []byte) []byte {
			b = append(s.ids(it)(b), `,"content_index":0,"part":`...)
			return appendTextPart(b, "")
		})
	}
	return dst
}

// close finishes an open item.
func (s *Stream) close(dst []byte, it *item, status string) []byte {
	it.open = false
	text := it.text.String()
	if it.call {
		dst = s.event(dst, "response.function_call_arguments.done", func(b []byte) []byte {
			b = append(s.ids(it)(b), `,"name":`...)
			b = wire.AppendString(b, it.name)
			b = append(b, `,"arguments":`...)
			return wire.AppendString(b, text)
		})
	} else {
		dst = s.event(dst, "response.output_text.done", func(b []byte) []byte {
			b = append(s.ids(it)(b), `,"content_index":0,"text":`...)
			b = wire.AppendString(b, text)
			return append(b, `,"logprobs":[]`...)
		})
		dst = s.event(dst, "response.content_part.done", func(b []byte) []byte {
			b = append(s.ids(it)(b), `,"content_index":0,"part":`...)
			return appendTextPart(b, text)
		})
	}
	return s.event(dst, "response.output_item.done", func(b []byte) []byte {
		b = append(b, `,"output_index":`...)
		b = strconv.AppendInt(b, int64(s.index(it)), 10)
		b = append(b, `,"item":`...)
		return it.appendItem(b, status)
	})
}

// Fail ends the stream with an error event carrying e (an upstream error the caller saw in
// the chat stream's framing), unless it has its terminal event already.
func (s *Stream) Fail(dst []byte, e *wire.Error) []byte {
	if s.done {
		return dst
	}
	return s.fail(dst, e)
}

// fail ends the stream with an error event carrying e.
func (s *Stream) fail(dst []byte, e *wire.Error) []byte {
	s.done = true
	return wire.AppendTypedError(dst, e, int64(s.seq))
}

// Event translates one chat stream event's data and appends the Responses events it makes.
// data may alias the caller's buffers (a stream tap's): it is read only during the call, and
// what the Stream keeps of it for later events (the model, a call's id and name, the finish
// reason) is copied.
func (s *Stream) Event(dst, data []byte) []byte {
	if s.done {
		return dst
	}
	d := bytes.TrimSpace(data)
	if string(d) == "[DONE]" {
		return s.complete(dst)
	}
	js := view(d)
	if len(d) == 0 || d[0] != '{' || !gjson.Valid(js) {
		return s.fail(dst, &wire.Error{Status: 502, Type: wire.TypeServer, Code: "upstream_invalid_response",
			Message: "The model server sent a stream event the gateway could not read."})
	}
	root := gjson.Parse(js)
	if e := root.Get("error"); e.Exists() && e.Type != gjson.Null {
		s.done = true
		dst = append(dst, "event: error\ndata: "...)
		for _, c := range d { // the typed stream tap normalises it; valid JSON has no line break in a string
			if c == '\n' || c == '\r' {
				c = ' '
			}
			dst = append(dst, c)
		}
		return append(dst, "\n\n"...)
	}
	if !s.started {
		s.started = true
		if m := root.Get("model"); m.Type == gjson.String {
			s.a.model = strings.Clone(m.Raw)
		}
		s.a.createdAt = root.Get("created").Int()
		dst = s.event(dst, "response.created", s.withResponse(false))
		dst = s.event(dst, "response.in_progress", s.withResponse(false))
	}
	if u := root.Get("usage"); u.IsObject() {
		s.a.usage = usageOf(u)
	}
	ch := root.Get("choices.0")
	if !ch.IsObject() {
		return dst
	}
	delta := ch.Get("delta")
	if c := delta.Get("content"); c.Type == gjson.String && c.Str != "" {
		if s.msg == nil {
			s.msg = &item{id: NewID("msg_")}
			dst = s.open(dst, s.msg)
		}
		s.msg.text.WriteString(c.Str)
		dst = s.event(dst, "response.output_text.delta", func(b []byte) []byte {
			b = append(s.ids(s.msg)(b), `,"content_index":0,"delta":`...)
			b = append(b, c.Raw...)
			return append(b, `,"logprobs":[]`...)
		})
	}
	delta.Get("tool_calls").ForEach(func(_, tc gjson.Result) bool {
		idx := tc.Get("index").Int()
		it := s.calls[idx]
		if it == nil {
			if s.calls == nil {
				s.calls = make(map[int64]*item)
			}
			it = &item{id: NewID("fc_"), call: true, callID: strings.Clone(tc.Get("id").Str), name: strings.Clone(tc.Get("function.name").Str)}
			if it.callID == "" {
				it.callID = NewID("call_")
			}
			s.calls[idx] = it
			dst = s.open(dst, it)
		}
		if a := tc.Get("function.arguments"); a.Type == gjson.String && a.Str != "" {
			it.text.WriteString(a.Str)
			dst = s.event(dst, "response.function_call_arguments.delta", func(b []byte) []byte {
				b = append(s.ids(it)(b), `,"delta":`...)
				return append(b, a.Raw...)
			})
		}
		return true
	})
	if f := ch.Get("finish_reason"); f.Type == gjson.String {
		s.a.finish = strings.Clone(f.Str)
	}
	return dst
}

// complete closes the open items and appends the terminal event.
func (s *Stream) complete(dst []byte) []byte {
	if !s.started {
		s.started = true
		dst = s.event(dst, "response.created", s.withResponse(false))
	}
	status := "completed"
	if s.a.status() == "incomplete" {
		status = "incomplete"
	}
	if len(s.a.items) == 0 {
		s.msg = &item{id: NewID("msg_")}
		dst = s.open(dst, s.msg)
	}
	for _, it := range s.a.items {
		if it.open {
			dst = s.close(dst, it, status)
		}
	}
	s.done = true
	final := "response.completed"
	if status == "incomplete" {
		final = "response.incomplete"
	}
	return s.event(dst, final, s.withResponse(true))
}
