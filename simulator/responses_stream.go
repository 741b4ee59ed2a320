package simulator

import (
	"bytes"
	"encoding/json"
	"net/http"
)

func (s *Server) streamResponse(x *exchange, g *respGen) {
	if !x.startStream() || !x.wait(s.cfg.TTFT) {
		return
	}
	x.buf = make([]byte, 0, 2048)
	seq := 0
	withResponse := func(final bool) func([]byte) []byte {
		return func(b []byte) []byte {
			b = append(b, `,"response":`...)
			return g.appendResponse(b, s, final)
		}
	}
	if !x.frame(x.typedEvent("response.created", &seq, withResponse(false))) ||
		!x.frame(x.typedEvent("response.in_progress", &seq, withResponse(false))) {
		return
	}
	item := func(status, text string) func([]byte) []byte {
		return func(b []byte) []byte {
			b = append(b, `,"output_index":0,"item":`...)
			return g.appendItem(b, status, text)
		}
	}
	ids := func(b []byte) []byte {
		b = append(b, `,"item_id":"`...)
		b = append(b, g.itemID...)
		return append(b, `","output_index":0`...)
	}
	if !x.frame(x.typedEvent("response.output_item.added", &seq, item("in_progress", ""))) {
		return
	}
	if g.call == nil {
		part := func(text string) func([]byte) []byte {
			return func(b []byte) []byte {
				b = append(ids(b), `,"content_index":0,"part":`...)
				return appendTextPart(b, text)
			}
		}
		if !x.frame(x.typedEvent("response.content_part.added", &seq, part(""))) {
			return
		}
		for i := range g.tokens {
			if i > 0 && s.interval > 0 && !x.wait(s.interval) {
				return
			}
			tok := tokenAt(0, i)
			if !x.frame(x.typedEvent("response.output_text.delta", &seq, func(b []byte) []byte {
				b = append(ids(b), `,"content_index":0,"delta":`...)
				b = appendJSONString(b, tok)
				return append(b, `,"logprobs":[]`...)
			})) {
				return
			}
			s.completionTokens.Add(1)
		}
		text := g.text()
		if !x.frame(x.typedEvent("response.output_text.done", &seq, func(b []byte) []byte {
			b = append(ids(b), `,"content_index":0,"text":`...)
			b = appendJSONString(b, text)
			return append(b, `,"logprobs":[]`...)
		})) || !x.frame(x.typedEvent("response.content_part.done", &seq, part(text))) {
			return
		}
	} else {
		args := g.text()
		// the arguments in pieces of up to 8 bytes, on rune boundaries
		for rest := args; rest != ""; {
			n := min(len(rest), 8)
			for n < len(rest) && rest[n]&0xC0 == 0x80 {
				n++
			}
			piece := rest[:n]
			rest = rest[n:]
			if !x.frame(x.typedEvent("response.function_call_arguments.delta", &seq, func(b []byte) []byte {
				b = append(ids(b), `,"delta":`...)
				return appendJSONString(b, piece)
			})) {
				return
			}
		}
		s.completionTokens.Add(int64(g.tokens))
		if !x.frame(x.typedEvent("response.function_call_arguments.done", &seq, func(b []byte) []byte {
			b = append(ids(b), `,"name":`...)
			b = appendJSONString(b, g.call.Name)
			b = append(b, `,"arguments":`...)
			return appendJSONString(b, args)
		})) {
			return
		}
	}
	if !x.frame(x.typedEvent("response.output_item.done", &seq, item(itemStatus(g.cut), g.text()))) {
		return
	}
	final := "response.completed"
	if g.cut {
		final = "response.incomplete"
	}
	x.final = true
	ev := x.typedEvent(final, &seq, withResponse(true))
	if s.keepFrom(g, ev); !x.frame(ev) {
		return
	}
}

// keepFrom stores the response carried by a final stream event.
func (s *Server) keepFrom(g *respGen, ev []byte) {
	if !g.store {
		return
	}
	i := bytes.Index(ev, []byte(`"response":`))
	if i < 0 {
		return
	}
	body := bytes.TrimSuffix(ev[i+len(`"response":`):], []byte("}\n\n"))
	s.keep(g, body)
}

// serveStoredResponse answers GET and DELETE /v1/responses/{id}, POST
// /v1/responses/{id}/cancel and GET /v1/responses/{id}/input_items.
func (s *Server) serveStoredResponse(x *exchange, id, action string) {
	r := x.r
	st, ok := s.responses.get(id)
	if !ok {
		x.fail(&simError{kind: errNotFound, msg: "No response found with id '" + id + "'."})
		return
	}
	switch {
	case action == "" && r.Method == http.MethodGet:
		x.writeBody(http.StatusOK, ctJSON, st.body)
	case action == "" && r.Method == http.MethodDelete:
		s.responses.delete(id)
		b := append([]byte(`{"id":`), appendJSONString(nil, id)...)
		x.writeBody(http.StatusOK, ctJSON, append(b, `,"object":"response","deleted":true}`...))
	case action == "cancel" && r.Method == http.MethodPost:
		// only background responses can be cancelled; every simulated response has finished
		x.fail(&simError{kind: errInvalid, msg: "Only background responses can be cancelled."})
	case action == "input_items" && r.Method == http.MethodGet:
		var items []json.RawMessage
		_ = json.Unmarshal(st.input, &items)
		b := append([]byte(nil), `{"object":"list","data":[`...)
		first, last := "", ""
		for i := len(items) - 1; i >= 0; i-- { // newest first, the API's default order
			if i < len(items)-1 {
				b = append(b, ',')
			}
			b = append(b, items[i]...)
			var idOf struct {
				ID string `json:"id"`
			}
			_ = json.Unmarshal(items[i], &idOf)
			if first == "" {
				first = idOf.ID
			}
			last = idOf.ID
		}
		b = append(b, `],"first_id":`...)
		b = appendNullableString(b, first)
		b = append(b, `,"last_id":`...)
		b = appendNullableString(b, last)
		x.writeBody(http.StatusOK, ctJSON, append(b, `,"has_more":false}`...))
	default:
		x.w.Header().Set("Allow", "GET, DELETE")
		x.fail(&simError{kind: errMethod, msg: "Method Not Allowed"})
	}
}
