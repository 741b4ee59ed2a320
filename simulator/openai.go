package simulator

import (
	"encoding/json"
	"strconv"
)

// fingerprint is the system_fingerprint of every OpenAI-style response.
const fingerprint = "fp_simulator"

type toolFunction struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

type chatMessage struct {
	Role         string          `json:"role"`
	Content      json.RawMessage `json:"content"`
	Name         *string         `json:"name"`
	FunctionCall *toolFunction   `json:"function_call"`
	ToolCalls    []struct {
		Function toolFunction `json:"function"`
	} `json:"tool_calls"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

type chatRequest struct {
	Model               string          `json:"model"`
	Messages            []chatMessage   `json:"messages"`
	MaxTokens           *int            `json:"max_tokens"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	N                   *int            `json:"n"`
	Stream              bool            `json:"stream"`
	StreamOptions       *streamOptions  `json:"stream_options"`
	Tools               json.RawMessage `json:"tools"`
	Functions           json.RawMessage `json:"functions"`
	ToolChoice          json.RawMessage `json:"tool_choice"`
	Prompt              json.RawMessage `json:"prompt"` // /v1/completions
}

// gen is the plan of one generation: how many tokens, and why it stops.
type gen struct {
	id      string
	model   []byte // JSON-quoted model name
	created int64
	prompt  int       // prompt tokens
	tokens  int       // completion tokens per choice
	choices int       // number of choices
	cut     bool      // max_tokens or the window cut the natural length
	usage   bool      // usage is reported at all (not kind=no_usage)
	call    *chatCall // the tool the answer calls instead of answering in text
}

func badJSON(err error) *simError {
	return &simError{kind: errInvalid, msg: "We could not parse the JSON body of your request: " + err.Error()}
}

func missing(param string) *simError {
	return &simError{kind: errInvalid, msg: "Missing required parameter: '" + param + "'.", param: param,
		code: "missing_required_parameter"}
}

func belowMin(param string, got, min int) *simError {
	return &simError{kind: errInvalid, param: param, code: "integer_below_min_value",
		msg: "Invalid '" + param + "': integer below minimum value. Expected a value >= " + strconv.Itoa(min) +
			", but got " + strconv.Itoa(got) + " instead."}
}

// maxTokens picks max_completion_tokens, else max_tokens; 0 means not given.
func maxTokens(req *chatRequest) (int, *simError) {
	if v := req.MaxCompletionTokens; v != nil {
		if *v < 1 {
			return 0, belowMin("max_completion_tokens", *v, 1)
		}
		return *v, nil
	}
	if v := req.MaxTokens; v != nil {
		if *v < 1 {
			return 0, belowMin("max_tokens", *v, 1)
		}
		return *v, nil
	}
	return 0, nil
}

func choiceCount(req *chatRequest) (int, *simError) {
	if req.N == nil {
		return 1, nil
	}
	if *req.N < 1 {
		return 0, belowMin("n", *req.N, 1)
	}
	if *req.N > 128 {
		return 0, &simError{kind: errInvalid, param: "n", code: "integer_above_max_value",
			msg: "Invalid 'n': integer above maximum value. Expected a value <= 128, but got " + strconv.Itoa(*req.N) + " instead."}
	}
	return *req.N, nil
}

// chatPromptTokens applies the chat formula of the package documentation.
func (s *Server) chatPromptTokens(msgs []chatMessage) (int, *simError) {
	total := 3
	for i := range msgs {
		m := &msgs[i]
		if m.Role == "" {
			return 0, missing("messages[" + strconv.Itoa(i) + "].role")
		}
		content, err := s.contentTokens(m.Content, false)
		if err != nil {
			return 0, &simError{kind: errInvalid, param: "messages[" + strconv.Itoa(i) + "].content",
				msg: "Invalid 'messages[" + strconv.Itoa(i) + "].content': " + err.Error() + "."}
		}
		total += 3 + s.count(m.Role) + content
		if m.Name != nil {
			total += s.count(*m.Name) + 1
		}
		if f := m.FunctionCall; f != nil {
			total += s.count(f.Name) + s.count(f.Arguments)
		}
		for _, tc := range m.ToolCalls {
			total += s.count(tc.Function.Name) + s.count(tc.Function.Arguments)
		}
	}
	return total, nil
}

// plan checks the context window and sizes the completion. It writes the
// error and returns false when the request cannot be served.
func (x *exchange) plan(model string, prompt, maxTok, choices int, field string) (gen, bool) {
	s := x.s
	window := s.cfg.ContextWindow
	forced := x.fault.Kind == FaultContext
	over := window > 0 && prompt+maxTok > window
	if forced || over {
		if !forced && x.shape == ShapeOllama && x.route != routeMessages {
			// Ollama silently truncates the prompt to its window.
			prompt = min(prompt, window)
		} else {
			n := window
			if n == 0 {
				n = max(1, prompt+maxTok-1)
			}
			x.fail(&simError{kind: errContext, window: n, prompt: prompt, maxTokens: maxTok, field: field})
			return gen{}, false
		}
	}
	g := gen{
		model:   appendJSONString(nil, model),
		created: s.now().Unix(),
		prompt:  prompt,
		tokens:  s.cfg.ResponseTokens,
		choices: choices,
		usage:   x.fault.Kind != FaultNoUsage,
	}
	if maxTok > 0 && maxTok < g.tokens {
		g.tokens, g.cut = maxTok, true
	}
	if window > 0 && x.shape != ShapeOllama {
		if room := max(window-prompt, 0); room < g.tokens {
			g.tokens, g.cut = room, true
		}
	}
	s.promptTokens.Add(int64(prompt))
	return g, true
}

func (g *gen) finish() string {
	if g.cut {
		return "length"
	}
	return "stop"
}

func appendUsage(b []byte, prompt, completion int) []byte {
	b = append(b, `{"prompt_tokens":`...)
	b = appendInt(b, prompt)
	b = append(b, `,"completion_tokens":`...)
	b = appendInt(b, completion)
	b = append(b, `,"total_tokens":`...)
	b = appendInt(b, prompt+completion)
	return append(b, '}')
}

// appendHead appends `{"id":...,"object":...,"created":...,"model":...,"system_fingerprint":...,"choices":[`.
func (g *gen) appendHead(b []byte, object string) []byte {
	b = append(b, `{"id":"`...)
	b = append(b, g.id...)
	b = append(b, `","object":"`...)
	b = append(b, object...)
	b = append(b, `","created":`...)
	b = strconv.AppendInt(b, g.created, 10)
	b = append(b, `,"model":`...)
	b = append(b, g.model...)
	b = append(b, `,"system_fingerprint":"`+fingerprint+`","choices":[`...)
	return b
}

func (s *Server) serveChat(x *exchange, body []byte) {
	var req chatRequest
	if err := json.Unmarshal(body, &req); err != nil {
		x.fail(badJSON(err))
		return
	}
	if req.Model == "" {
		x.fail(&simError{kind: errInvalid, msg: "you must provide a model parameter"})
		return
	}
	if len(req.Messages) == 0 {
		x.fail(missing("messages"))
		return
	}
	prompt, e := s.chatPromptTokens(req.Messages)
	prompt += s.rawArrayTokens(req.Tools) + s.rawArrayTokens(req.Functions)
	if e == nil {
		var maxTok, n int
		if maxTok, e = maxTokens(&req); e == nil {
			if n, e = choiceCount(&req); e == nil {
				g, ok := x.plan(req.Model, prompt, maxTok, n, "messages")
				if !ok {
					return
				}
				g.id = s.nextID("chatcmpl-")
				x.w.Header().Set("X-Request-Id", g.id)
				s.planCall(&req, &g, maxTok)
				if req.Stream {
					s.streamChat(x, &g, req.StreamOptions != nil && req.StreamOptions.IncludeUsage)
				} else {
					s.jsonChat(x, &g)
				}
				return
			}
		}
	}
	x.fail(e)
}

func (s *Server) jsonChat(x *exchange, g *gen) {
	if !x.wait(s.answerTime(g.tokens)) {
		return
	}
	if g.call != nil {
		s.jsonChatCall(x, g)
		return
	}
	b := make([]byte, 0, 256+g.choices*(g.tokens*9+128))
	b = g.appendHead(b, "chat.completion")
	for c := range g.choices {
		if c > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"index":`...)
		b = appendInt(b, c)
		b = append(b, `,"message":{"role":"assistant","content":"`...)
		for i := range g.tokens {
			b = append(b, tokenAt(c, i)...)
		}
		b = append(b, `","refusal":null},"logprobs":null,"finish_reason":"`...)
		b = append(b, g.finish()...)
		b = append(b, `"}`...)
	}
	b = append(b, ']')
	if g.usage {
		b = append(b, `,"usage":`...)
		b = appendUsage(b, g.prompt, g.tokens*g.choices)
	}
	b = append(b, '}')
	s.completionTokens.Add(int64(g.tokens * g.choices))
	x.writeJSON(b)
}

// chunkFrame builds `data: <head><choice><tail>\n\n` in x.buf.
func (x *exchange) chunkFrame(head []byte, tail string, choice func([]byte) []byte) []byte {
	b := append(x.buf[:0], "data: "...)
	b = append(b, head...)
	b = choice(b)
	b = append(b, tail...)
	b = append(b, "\n\n"...)
	x.buf = b
	return b
}

func (s *Server) streamChat(x *exchange, g *gen, includeUsage bool) {
	includeUsage = includeUsage && g.usage
	if g.call != nil {
		s.streamChatCall(x, g, includeUsage)
		return
	}
	if !x.startStream() || !x.wait(s.cfg.TTFT) {
		return
	}
	head := g.appendHead(make([]byte, 0, 160), "chat.completion.chunk")
	tail := "]}"
	if includeUsage {
		tail = `],"usage":null}`
	}
	x.buf = make([]byte, 0, 512)
	var c, i int
	role := func(b []byte) []byte {
		b = append(b, `{"index":`...)
		b = appendInt(b, c)
		return append(b, `,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}`...)
	}
	token := func(b []byte) []byte {
		b = append(b, `{"index":`...)
		b = appendInt(b, c)
		b = append(b, `,"delta":{"content":"`...)
		b = append(b, tokenAt(c, i)...)
		return append(b, `"},"logprobs":null,"finish_reason":null}`...)
	}
	finish := func(b []byte) []byte {
		b = append(b, `{"index":`...)
		b = appendInt(b, c)
		b = append(b, `,"delta":{},"logprobs":null,"finish_reason":"`...)
		b = append(b, g.finish()...)
		return append(b, `"}`...)
	}
	for c = range g.choices {
		if !x.frame(x.chunkFrame(head, tail, role)) {
			return
		}
	}
	for i = range g.tokens {
		if i > 0 && s.interval > 0 && !x.wait(s.interval) {
			return
		}
		for c = range g.choices {
			if !x.frame(x.chunkFrame(head, tail, token)) {
				return
			}
			s.completionTokens.Add(1)
		}
	}
	for c = range g.choices {
		if !x.frame(x.chunkFrame(head, tail, finish)) {
			return
		}
	}
	if includeUsage {
		b := append(x.buf[:0], "data: "...)
		b = g.appendHead(b, "chat.completion.chunk")
		b = append(b, `],"usage":`...)
		b = appendUsage(b, g.prompt, g.tokens*g.choices)
		b = append(b, "}\n\n"...)
		x.buf = b
		if !x.frame(b) {
			return
		}
	}
	x.done()
}

func (s *Server) serveCompletions(x *exchange, body []byte) {
	var req chatRequest
	if err := json.Unmarshal(body, &req); err != nil {
		x.fail(badJSON(err))
		return
	}
	if req.Model == "" {
		x.fail(&simError{kind: errInvalid, msg: "you must provide a model parameter"})
		return
	}
	items, err := parsePromptList(req.Prompt)
	if err != nil {
		x.fail(&simError{kind: errInvalid, param: "prompt", msg: "Invalid 'prompt': " + err.Error() + "."})
		return
	}
	if len(items) == 0 {
		x.fail(missing("prompt"))
		return
	}
	prompt := 0
	for _, it := range items {
		if it.isTokens {
			prompt += it.tokens
		} else {
			prompt += s.count(it.text)
		}
	}
	req.MaxCompletionTokens = nil
	maxTok, e := maxTokens(&req)
	if e != nil {
		x.fail(e)
		return
	}
	n, e := choiceCount(&req)
	if e != nil {
		x.fail(e)
		return
	}
	g, ok := x.plan(req.Model, prompt, maxTok, n*len(items), "prompt")
	if !ok {
		return
	}
	g.id = s.nextID("cmpl-")
	x.w.Header().Set("X-Request-Id", g.id)
	if req.Stream {
		s.streamCompletions(x, &g, req.StreamOptions != nil && req.StreamOptions.IncludeUsage)
		return
	}
	if !x.wait(s.answerTime(g.tokens)) {
		return
	}
	b := make([]byte, 0, 256+g.choices*(g.tokens*9+96))
	b = g.appendHead(b, "text_completion")
	for c := range g.choices {
		if c > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"index":`...)
		b = appendInt(b, c)
		b = append(b, `,"text":"`...)
		for i := range g.tokens {
			b = append(b, tokenAt(c, i)...)
		}
		b = append(b, `","logprobs":null,"finish_reason":"`...)
		b = append(b, g.finish()...)
		b = append(b, `"}`...)
	}
	b = append(b, ']')
	if g.usage {
		b = append(b, `,"usage":`...)
		b = appendUsage(b, g.prompt, g.tokens*g.choices)
	}
	b = append(b, '}')
	s.completionTokens.Add(int64(g.tokens * g.choices))
	x.writeJSON(b)
}

func (s *Server) streamCompletions(x *exchange, g *gen, includeUsage bool) {
	includeUsage = includeUsage && g.usage
	if !x.startStream() || !x.wait(s.cfg.TTFT) {
		return
	}
	head := g.appendHead(make([]byte, 0, 160), "text_completion")
	tail := "]}"
	if includeUsage {
		tail = `],"usage":null}`
	}
	x.buf = make([]byte, 0, 512)
	var c, i int
	token := func(b []byte) []byte {
		b = append(b, `{"index":`...)
		b = appendInt(b, c)
		b = append(b, `,"text":"`...)
		b = append(b, tokenAt(c, i)...)
		return append(b, `","logprobs":null,"finish_reason":null}`...)
	}
	finish := func(b []byte) []byte {
		b = append(b, `{"index":`...)
		b = appendInt(b, c)
		b = append(b, `,"text":"","logprobs":null,"finish_reason":"`...)
		b = append(b, g.finish()...)
		return append(b, `"}`...)
	}
	for i = range g.tokens {
		if i > 0 && s.interval > 0 && !x.wait(s.interval) {
			return
		}
		for c = range g.choices {
			if !x.frame(x.chunkFrame(head, tail, token)) {
				return
			}
			s.completionTokens.Add(1)
		}
	}
	for c = range g.choices {
		if !x.frame(x.chunkFrame(head, tail, finish)) {
			return
		}
	}
	if includeUsage {
		b := append(x.buf[:0], "data: "...)
		b = g.appendHead(b, "text_completion")
		b = append(b, `],"usage":`...)
		b = appendUsage(b, g.prompt, g.tokens*g.choices)
		b = append(b, "}\n\n"...)
		x.buf = b
		if !x.frame(b) {
			return
		}
	}
	x.done()
}
