package simulator

import (
	"bytes"
	"encoding/json"
	"strconv"
)

type anthropicMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

type messagesRequest struct {
	Model     string             `json:"model"`
	MaxTokens *int               `json:"max_tokens"`
	Messages  []anthropicMessage `json:"messages"`
	System    json.RawMessage    `json:"system"`
	Stream    bool               `json:"stream"`
	Tools     json.RawMessage    `json:"tools"`
}

func anthropicInvalid(msg string) *simError {
	return &simError{kind: errInvalid, msg: msg}
}

// messagesPromptTokens applies the Anthropic formula of the package documentation.
func (s *Server) messagesPromptTokens(req *messagesRequest) (int, *simError) {
	total := 3
	for i, m := range req.Messages {
		if m.Role == "" {
			return 0, anthropicInvalid("messages." + strconv.Itoa(i) + ".role: Field required")
		}
		content, err := s.contentTokens(m.Content, true)
		if err != nil {
			return 0, anthropicInvalid("messages." + strconv.Itoa(i) + ".content: " + err.Error())
		}
		total += 3 + s.count(m.Role) + content
	}
	if sys := bytes.TrimSpace(req.System); len(sys) > 0 && string(sys) != "null" {
		n, err := s.contentTokens(sys, true)
		if err != nil {
			return 0, anthropicInvalid("system: " + err.Error())
		}
		total += n + 3
	}
	return total + s.rawArrayTokens(req.Tools), nil
}

func (s *Server) serveMessages(x *exchange, body []byte) {
	var req messagesRequest
	if err := json.Unmarshal(body, &req); err != nil {
		x.fail(anthropicInvalid("invalid JSON body: " + err.Error()))
		return
	}
	switch {
	case req.Model == "":
		x.fail(anthropicInvalid("model: Field required"))
		return
	case req.MaxTokens == nil:
		x.fail(anthropicInvalid("max_tokens: Field required"))
		return
	case *req.MaxTokens < 1:
		x.fail(anthropicInvalid("max_tokens: Input should be greater than or equal to 1"))
		return
	case len(req.Messages) == 0:
		x.fail(anthropicInvalid("messages: Field required"))
		return
	}
	prompt, e := s.messagesPromptTokens(&req)
	if e != nil {
		x.fail(e)
		return
	}
	g, ok := x.plan(req.Model, prompt, *req.MaxTokens, 1, "messages")
	if !ok {
		return
	}
	g.id = s.nextID("msg_")
	x.requestID()
	if req.Stream {
		s.streamMessages(x, &g)
		return
	}
	if !x.wait(s.answerTime(g.tokens)) {
		return
	}
	b := make([]byte, 0, 256+g.tokens*9)
	b = append(b, `{"id":"`...)
	b = append(b, g.id...)
	b = append(b, `","type":"message","role":"assistant","model":`...)
	b = append(b, g.model...)
	b = append(b, `,"content":[{"type":"text","text":"`...)
	for i := range g.tokens {
		b = append(b, tokenAt(0, i)...)
	}
	b = append(b, `"}],"stop_reason":"`...)
	b = append(b, g.stopReason()...)
	b = append(b, `","stop_sequence":null`...)
	if g.usage {
		b = append(b, `,"usage":{"input_tokens":`...)
		b = appendInt(b, g.prompt)
		b = append(b, `,"output_tokens":`...)
		b = appendInt(b, g.tokens)
		b = append(b, '}')
	}
	b = append(b, '}')
	s.completionTokens.Add(int64(g.tokens))
	x.writeJSON(b)
}

func (g *gen) stopReason() string {
	if g.cut {
		return "max_tokens"
	}
	return "end_turn"
}

// event builds `event: <name>\ndata: <data>\n\n` in x.buf.
func (x *exchange) event(name string, data func([]byte) []byte) []byte {
	b := append(x.buf[:0], "event: "...)
	b = append(b, name...)
	b = append(b, "\ndata: "...)
	b = data(b)
	b = append(b, "\n\n"...)
	x.buf = b
	return b
}

func constData(s string) func([]byte) []byte {
	return func(b []byte) []byte { return append(b, s...) }
}

func (s *Server) streamMessages(x *exchange, g *gen) {
	if !x.startStream() || !x.wait(s.cfg.TTFT) {
		return
	}
	x.buf = make([]byte, 0, 512)
	start := func(b []byte) []byte {
		b = append(b, `{"type":"message_start","message":{"id":"`...)
		b = append(b, g.id...)
		b = append(b, `","type":"message","role":"assistant","model":`...)
		b = append(b, g.model...)
		b = append(b, `,"content":[],"stop_reason":null,"stop_sequence":null`...)
		if g.usage {
			b = append(b, `,"usage":{"input_tokens":`...)
			b = appendInt(b, g.prompt)
			b = append(b, `,"output_tokens":1}`...)
		}
		return append(b, "}}"...)
	}
	if !x.frame(x.event("message_start", start)) ||
		!x.frame(x.event("content_block_start", constData(`{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`))) ||
		!x.frame(x.event("ping", constData(`{"type":"ping"}`))) {
		return
	}
	var i int
	delta := func(b []byte) []byte {
		b = append(b, `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"`...)
		b = append(b, tokenAt(0, i)...)
		return append(b, `"}}`...)
	}
	for i = range g.tokens {
		if i > 0 && s.interval > 0 && !x.wait(s.interval) {
			return
		}
		if !x.frame(x.event("content_block_delta", delta)) {
			return
		}
		s.completionTokens.Add(1)
	}
	end := func(b []byte) []byte {
		b = append(b, `{"type":"message_delta","delta":{"stop_reason":"`...)
		b = append(b, g.stopReason()...)
		b = append(b, `","stop_sequence":null}`...)
		if g.usage {
			b = append(b, `,"usage":{"output_tokens":`...)
			b = appendInt(b, g.tokens)
			b = append(b, '}')
		}
		return append(b, '}')
	}
	if !x.frame(x.event("content_block_stop", constData(`{"type":"content_block_stop","index":0}`))) ||
		!x.frame(x.event("message_delta", end)) ||
		!x.frame(x.event("message_stop", constData(`{"type":"message_stop"}`))) {
		return
	}
	// A cut or midstream_error fault whose count was not reached still acts.
	x.final = true
	x.checkStreamFault()
}
