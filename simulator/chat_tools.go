package simulator

import (
	"bytes"
	"encoding/json"
)

// chatCall is a tool call a chat answer makes.
type chatCall struct {
	id, name, args string
}

// planCall makes a one-choice chat answer call the first function tool it is offered, as a
// model given tools does, unless tool_choice is "none" or the last message is a tool result
// (the model has the result and answers in text). Its completion tokens are those of the
// arguments.
func (s *Server) planCall(req *chatRequest, g *gen, maxTok int) {
	if g.choices != 1 || len(req.Tools) == 0 || string(bytes.TrimSpace(req.ToolChoice)) == `"none"` {
		return
	}
	if n := len(req.Messages); n > 0 && req.Messages[n-1].Role == "tool" {
		return
	}
	var tools []struct {
		Type     string `json:"type"`
		Function struct {
			Name       string          `json:"name"`
			Parameters json.RawMessage `json:"parameters"`
		} `json:"function"`
	}
	if json.Unmarshal(req.Tools, &tools) != nil {
		return
	}
	for _, t := range tools {
		if t.Type == "function" && t.Function.Name != "" {
			c := &chatCall{id: s.nextID("call_"), name: t.Function.Name, args: callArguments(t.Function.Parameters)}
			g.call, g.tokens, g.cut = c, max(s.count(c.args), 1), false
			if maxTok > 0 && maxTok < g.tokens {
				g.tokens, g.cut = maxTok, true
				c.args = c.args[:min(len(c.args), maxTok)]
			}
			return
		}
	}
}

func (g *gen) callFinish() string {
	if g.cut {
		return "length"
	}
	return "tool_calls"
}

// jsonChatCall answers with the tool call.
func (s *Server) jsonChatCall(x *exchange, g *gen) {
	c := g.call
	b := g.appendHead(make([]byte, 0, 512), "chat.completion")
	b = append(b, `{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"`...)
	b = append(b, c.id...)
	b = append(b, `","type":"function","function":{"name":`...)
	b = appendJSONString(b, c.name)
	b = append(b, `,"arguments":`...)
	b = appendJSONString(b, c.args)
	b = append(b, `}}],"refusal":null},"logprobs":null,"finish_reason":"`...)
	b = append(b, g.callFinish()...)
	b = append(b, `"}]`...)
	if g.usage {
		b = append(b, `,"usage":`...)
		b = appendUsage(b, g.prompt, g.tokens)
	}
	b = append(b, '}')
	s.completionTokens.Add(int64(g.tokens))
	x.writeJSON(b)
}

// streamChatCall streams the tool call: its name, then its arguments in pieces.
func (s *Server) streamChatCall(x *exchange, g *gen, includeUsage bool) {
	if !x.startStream() || !x.wait(s.cfg.TTFT) {
		return
	}
	c := g.call
	head := g.appendHead(make([]byte, 0, 160), "chat.completion.chunk")
	tail := "]}"
	if includeUsage {
		tail = `],"usage":null}`
	}
	x.buf = make([]byte, 0, 512)
	delta := func(d func([]byte) []byte, finish string) func([]byte) []byte {
		return func(b []byte) []byte {
			b = append(b, `{"index":0,"delta":`...)
			b = d(b)
			b = append(b, `,"logprobs":null,"finish_reason":`...)
			if finish == "" {
				return append(b, "null}"...)
			}
			return append(append(append(b, '"'), finish...), `"}`...)
		}
	}
	frames := []func([]byte) []byte{
		delta(func(b []byte) []byte {
			b = append(b, `{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"`...)
			b = append(b, c.id...)
			b = append(b, `","type":"function","function":{"name":`...)
			b = appendJSONString(b, c.name)
			return append(b, `,"arguments":""}}]}`...)
		}, ""),
	}
	for rest := c.args; rest != ""; {
		n := min(len(rest), 8)
		for n < len(rest) && rest[n]&0xC0 == 0x80 {
			n++
		}
		piece := rest[:n]
		rest = rest[n:]
		frames = append(frames, delta(func(b []byte) []byte {
			b = append(b, `{"tool_calls":[{"index":0,"function":{"arguments":`...)
			b = appendJSONString(b, piece)
			return append(b, "}}]}"...)
		}, ""))
	}
	frames = append(frames, delta(func(b []byte) []byte { return append(b, "{}"...) }, g.callFinish()))
	for _, f := range frames {
		if !x.frame(x.chunkFrame(head, tail, f)) {
			return
		}
	}
	s.completionTokens.Add(int64(g.tokens))
	if includeUsage {
		b := append(x.buf[:0], "data: "...)
		b = g.appendHead(b, "chat.completion.chunk")
		b = append(b, `],"usage":`...)
		b = appendUsage(b, g.prompt, g.tokens)
		b = append(b, "}\n\n"...)
		x.buf = b
		if !x.frame(b) {
			return
		}
	}
	x.done()
}
