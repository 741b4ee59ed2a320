package simulator

import (
	"bytes"
	"encoding/json"
)

// text is the answer's text (or the call's arguments), cut to the planned tokens.
func (g *respGen) text() string {
	if g.call != nil {
		if g.cut {
			return g.args[:min(len(g.args), g.tokens)]
		}
		return g.args
	}
	return completionText(0, g.tokens)
}

// appendItem appends the answer's output item with status.
func (g *respGen) appendItem(b []byte, status string, text string) []byte {
	if g.call != nil {
		b = append(b, `{"id":"`...)
		b = append(b, g.itemID...)
		b = append(b, `","type":"function_call","status":"`...)
		b = append(b, status...)
		b = append(b, `","call_id":"`...)
		b = append(b, g.callID...)
		b = append(b, `","name":`...)
		b = appendJSONString(b, g.call.Name)
		b = append(b, `,"arguments":`...)
		b = appendJSONString(b, text)
		return append(b, '}')
	}
	b = append(b, `{"id":"`...)
	b = append(b, g.itemID...)
	b = append(b, `","type":"message","status":"`...)
	b = append(b, status...)
	b = append(b, `","role":"assistant","content":[`...)
	if status != "in_progress" {
		b = appendTextPart(b, text)
	}
	return append(b, "]}"...)
}

func appendTextPart(b []byte, text string) []byte {
	b = append(b, `{"type":"output_text","text":`...)
	b = appendJSONString(b, text)
	return append(b, `,"annotations":[],"logprobs":[]}`...)
}

// status is the final status of the answer.
func (g *respGen) status() string {
	if g.cut {
		return "incomplete"
	}
	return "completed"
}

// appendResponse appends the Response object in state status ("in_progress" or final).
func (g *respGen) appendResponse(b []byte, s *Server, final bool) []byte {
	req := g.req
	status := "in_progress"
	if final {
		status = g.status()
	}
	b = append(b, `{"id":"`...)
	b = append(b, g.id...)
	b = append(b, `","object":"response","created_at":`...)
	b = appendInt(b, int(g.created))
	b = append(b, `,"status":"`...)
	b = append(b, status...)
	b = append(b, `","completed_at":`...)
	if final && status == "completed" {
		b = appendInt(b, int(s.now().Unix()))
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"error":null,"incomplete_details":`...)
	if final && g.cut {
		b = append(b, `{"reason":"max_output_tokens"}`...)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"instructions":`...)
	if req.Instructions != nil {
		b = appendJSONString(b, *req.Instructions)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"max_output_tokens":`...)
	if req.MaxOutputTokens != nil {
		b = appendInt(b, *req.MaxOutputTokens)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"model":`...)
	b = append(b, g.model...)
	b = append(b, `,"output":[`...)
	if final {
		b = g.appendItem(b, itemStatus(g.cut), g.text())
	}
	b = append(b, `],"parallel_tool_calls":true,"previous_response_id":`...)
	if req.PreviousResponseID != nil {
		b = appendJSONString(b, *req.PreviousResponseID)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"reasoning":{"effort":null,"summary":null},"store":`...)
	if g.store {
		b = append(b, "true"...)
	} else {
		b = append(b, "false"...)
	}
	b = append(b, `,"temperature":`...)
	b = appendNumber(b, req.Temperature)
	b = append(b, `,"text":`...)
	b = appendRawOr(b, req.Text, '{', `{"format":{"type":"text"}}`)
	b = append(b, `,"tool_choice":`...)
	if tc := bytes.TrimSpace(req.ToolChoice); len(tc) > 0 && (tc[0] == '"' || tc[0] == '{') {
		b = append(b, tc...)
	} else {
		b = append(b, `"auto"`...)
	}
	b = append(b, `,"tools":`...)
	b = appendTools(b, req.Tools)
	b = append(b, `,"top_p":`...)
	b = appendNumber(b, req.TopP)
	b = append(b, `,"truncation":"disabled"`...)
	if final && g.usage { // the spec types usage as an object: absent until known
		b = append(b, `,"usage":`...)
		b = g.appendUsage(b)
	}
	b = append(b, `,"metadata":`...)
	b = appendRawOr(b, req.Metadata, '{', `{}`)
	return append(b, '}')
}

func itemStatus(cut bool) string {
	if cut {
		return "incomplete"
	}
	return "completed"
}

func (g *respGen) appendUsage(b []byte) []byte {
	b = append(b, `{"input_tokens":`...)
	b = appendInt(b, g.prompt)
	b = append(b, `,"input_tokens_details":{"cached_tokens":0,"cache_write_tokens":0},"output_tokens":`...)
	b = appendInt(b, g.tokens)
	b = append(b, `,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":`...)
	b = appendInt(b, g.prompt+g.tokens)
	return append(b, '}')
}

func appendNumber(b []byte, v *float64) []byte {
	if v == nil {
		return append(b, '1')
	}
	out, _ := json.Marshal(*v)
	return append(b, out...)
}

// appendRawOr appends raw when it is a JSON value opening with open, else def.
func appendRawOr(b []byte, raw json.RawMessage, open byte, def string) []byte {
	if r := bytes.TrimSpace(raw); len(r) > 0 && r[0] == open {
		return append(b, r...)
	}
	return append(b, def...)
}

// appendTools appends the request's function tools as a Response lists them (name,
// description, parameters, strict); other tools are left out.
func appendTools(b []byte, raw json.RawMessage) []byte {
	var tools []responsesTool
	_ = json.Unmarshal(raw, &tools)
	b = append(b, '[')
	n := 0
	for _, t := range tools {
		if t.Type != "function" {
			continue
		}
		if n > 0 {
			b = append(b, ',')
		}
		n++
		b = append(b, `{"type":"function","name":`...)
		b = appendJSONString(b, t.Name)
		if t.Description != nil {
			b = append(b, `,"description":`...)
			b = appendJSONString(b, *t.Description)
		}
		b = append(b, `,"parameters":`...)
		b = appendRawOr(b, t.Parameters, '{', "null")
		b = append(b, `,"strict":`...)
		if t.Strict == nil || *t.Strict {
			b = append(b, "true"...)
		} else {
			b = append(b, "false"...)
		}
		b = append(b, '}')
	}
	return append(b, ']')
}

// keep stores a finished response for the stored-response calls.
func (s *Server) keep(g *respGen, body []byte) {
	if !g.store {
		return
	}
	in := bytes.TrimSpace(g.req.Input)
	var items []json.RawMessage
	switch {
	case len(in) > 0 && in[0] == '"':
		b := append([]byte(`{"type":"message","role":"user","content":[{"type":"input_text","text":`), in...)
		items = append(items, append(b, "}]}"...))
	case len(in) > 0 && in[0] == '[':
		_ = json.Unmarshal(in, &items)
	}
	list := []byte{'['}
	for i, it := range items {
		if i > 0 {
			list = append(list, ',')
		}
		var m map[string]any
		if json.Unmarshal(it, &m) != nil {
			continue
		}
		if _, ok := m["id"]; !ok {
			m["id"] = s.nextID("msg_")
		}
		if _, ok := m["type"]; !ok {
			m["type"] = "message"
		}
		if m["type"] == "message" {
			if _, ok := m["status"]; !ok {
				m["status"] = "completed"
			}
			if str, ok := m["content"].(string); ok {
				m["content"] = []any{map[string]any{"type": "input_text", "text": str}}
			}
		}
		out, _ := json.Marshal(m)
		list = append(list, out...)
	}
	s.responses.put(g.id, append([]byte(nil), body...), append(list, ']'))
}

func (s *Server) jsonResponse(x *exchange, g *respGen) {
	if !x.wait(s.cfg.TTFT) {
		return
	}
	b := g.appendResponse(make([]byte, 0, 1024+g.tokens*9), s, true)
	s.completionTokens.Add(int64(g.tokens))
	s.keep(g, b)
	x.writeJSON(b)
}

// typedEvent builds `event: <typ>\ndata: {"type":"<typ>","sequence_number":N<rest>}\n\n` in x.buf.
func (x *exchange) typedEvent(typ string, seq *int, rest func([]byte) []byte) []byte {
	b := append(x.buf[:0], "event: "...)
	b = append(b, typ...)
	b = append(b, "\ndata: {\"type\":\""...)
	b = append(b, typ...)
	b = append(b, `","sequence_number":`...)
	b = appendInt(b, *seq)
	*seq++
	b = rest(b)
	b = append(b, "}\n\n"...)
	x.buf = b
	return b
}
