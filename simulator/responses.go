package simulator

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
)

// maxStoredResponses bounds the responses the simulator keeps for GET /v1/responses/{id}; the
// oldest goes first.
const maxStoredResponses = 4096

// responsesRequest is the part of a Responses request the simulator reads.
type responsesRequest struct {
	Model              string          `json:"model"`
	Input              json.RawMessage `json:"input"`
	Instructions       *string         `json:"instructions"`
	MaxOutputTokens    *int            `json:"max_output_tokens"`
	Stream             bool            `json:"stream"`
	Store              *bool           `json:"store"`
	PreviousResponseID *string         `json:"previous_response_id"`
	Tools              json.RawMessage `json:"tools"`
	ToolChoice         json.RawMessage `json:"tool_choice"`
	Text               json.RawMessage `json:"text"`
	Temperature        *float64        `json:"temperature"`
	TopP               *float64        `json:"top_p"`
	Metadata           json.RawMessage `json:"metadata"`
}

// responsesItem is one input item.
type responsesItem struct {
	Type      string          `json:"type"`
	Role      string          `json:"role"`
	Content   json.RawMessage `json:"content"`
	Name      string          `json:"name"`
	Arguments string          `json:"arguments"`
	Output    json.RawMessage `json:"output"`
	Summary   []struct {
		Text string `json:"text"`
	} `json:"summary"`
}

// responsesTool is one tool of a request.
type responsesTool struct {
	Type        string          `json:"type"`
	Name        string          `json:"name"`
	Description *string         `json:"description"`
	Parameters  json.RawMessage `json:"parameters"`
	Strict      *bool           `json:"strict"`
}

// storedResponse is a response kept for the stored-response calls.
type storedResponse struct {
	body  []byte // the Response object
	input []byte // the input items, as a JSON array of items with ids
	seq   uint64
}

// responseStore keeps stored responses in memory.
type responseStore struct {
	mu   sync.Mutex
	byID map[string]*storedResponse
	seq  uint64
}

func (st *responseStore) put(id string, body, input []byte) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.byID == nil {
		st.byID = make(map[string]*storedResponse)
	}
	if len(st.byID) >= maxStoredResponses {
		var oldest string
		var min uint64
		for k, v := range st.byID {
			if oldest == "" || v.seq < min {
				oldest, min = k, v.seq
			}
		}
		delete(st.byID, oldest)
	}
	st.seq++
	st.byID[id] = &storedResponse{body: body, input: input, seq: st.seq}
}

func (st *responseStore) get(id string) (*storedResponse, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	r, ok := st.byID[id]
	return r, ok
}

func (st *responseStore) delete(id string) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	_, ok := st.byID[id]
	delete(st.byID, id)
	return ok
}

// responsesPromptTokens applies the chat formula to the chat messages a Responses request
// stands for (see the package documentation): instructions as a system message, a string input
// as a user message, message items as messages, a function call as an assistant message (name
// and arguments), a function call output as a tool message, reasoning summaries as text, and
// the tools' raw JSON and a json_schema format's schema.
func (s *Server) responsesPromptTokens(req *responsesRequest) (int, *simError) {
	total := 3
	if req.Instructions != nil {
		total += 3 + s.count("system") + s.count(*req.Instructions)
	}
	in := bytes.TrimSpace(req.Input)
	switch {
	case len(in) == 0 || string(in) == "null":
	case in[0] == '"':
		var str string
		if err := json.Unmarshal(in, &str); err != nil {
			return 0, &simError{kind: errInvalid, param: "input", msg: "Invalid 'input': " + err.Error() + "."}
		}
		total += 3 + s.count("user") + s.count(str)
	default:
		var items []responsesItem
		if err := json.Unmarshal(in, &items); err != nil {
			return 0, &simError{kind: errInvalid, param: "input", msg: "Invalid 'input': expected a string or an array of input items."}
		}
		for i, it := range items {
			switch it.Type {
			case "", "message":
				if it.Role == "" {
					return 0, missing("input[" + simItoa(i) + "].role")
				}
				n, err := s.responsesContentTokens(it.Content)
				if err != nil {
					return 0, &simError{kind: errInvalid, param: "input[" + simItoa(i) + "].content",
						msg: "Invalid 'input[" + simItoa(i) + "].content': " + err.Error() + "."}
				}
				total += 3 + s.count(it.Role) + n
			case "function_call":
				total += 3 + s.count("assistant") + s.count(it.Name) + s.count(it.Arguments)
			case "function_call_output":
				n, err := s.responsesContentTokens(it.Output)
				if err != nil {
					return 0, &simError{kind: errInvalid, param: "input[" + simItoa(i) + "].output",
						msg: "Invalid 'input[" + simItoa(i) + "].output': " + err.Error() + "."}
				}
				total += 3 + s.count("tool") + n
			case "reasoning":
				var sb strings.Builder
				for _, p := range it.Summary {
					sb.WriteString(p.Text)
				}
				total += s.count(sb.String())
			}
		}
	}
	total += s.rawArrayTokens(req.Tools)
	var text struct {
		Format struct {
			Type   string          `json:"type"`
			Schema json.RawMessage `json:"schema"`
		} `json:"format"`
	}
	if len(req.Text) > 0 && json.Unmarshal(req.Text, &text) == nil && text.Format.Type == "json_schema" {
		if sch := bytes.TrimSpace(text.Format.Schema); len(sch) > 0 && sch[0] == '{' {
			total += s.count(string(sch))
		}
	}
	return total, nil
}

// responsesContentTokens counts a Responses content value: a string, or parts whose texts
// (input_text, output_text, refusal) are concatenated and counted once, images adding
// imageTokens.
func (s *Server) responsesContentTokens(raw json.RawMessage) (int, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	if raw[0] == '"' {
		var str string
		if err := json.Unmarshal(raw, &str); err != nil {
			return 0, err
		}
		return s.count(str), nil
	}
	var parts []struct {
		Type    string `json:"type"`
		Text    string `json:"text"`
		Refusal string `json:"refusal"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return 0, errBadContent
	}
	var sb strings.Builder
	extra := 0
	for _, p := range parts {
		switch p.Type {
		case "input_text", "output_text":
			sb.WriteString(p.Text)
		case "refusal":
			sb.WriteString(p.Refusal)
		case "input_image":
			extra += imageTokens
		}
	}
	return s.count(sb.String()) + extra, nil
}

// respGen is the plan of one Responses answer.
type respGen struct {
	gen
	req     *responsesRequest
	call    *responsesTool // the function the answer calls, nil for a text answer
	args    string         // the call's arguments
	itemID  string
	callID  string
	store   bool
	created int64
}

func (s *Server) serveResponses(x *exchange, body []byte) {
	var req responsesRequest
	if err := json.Unmarshal(body, &req); err != nil {
		x.fail(badJSON(err))
		return
	}
	if req.Model == "" {
		x.fail(missing("model"))
		return
	}
	prompt, e := s.responsesPromptTokens(&req)
	if e != nil {
		x.fail(e)
		return
	}
	if req.PreviousResponseID != nil && *req.PreviousResponseID != "" {
		prev, ok := s.responses.get(*req.PreviousResponseID)
		if !ok {
			x.fail(&simError{kind: errInvalid, param: "previous_response_id", code: "previous_response_not_found",
				msg: "Previous response with id '" + *req.PreviousResponseID + "' not found."})
			return
		}
		var u struct {
			Usage struct {
				InputTokens  int `json:"input_tokens"`
				OutputTokens int `json:"output_tokens"`
			} `json:"usage"`
		}
		_ = json.Unmarshal(prev.body, &u)
		prompt += u.Usage.InputTokens + u.Usage.OutputTokens
	}
	maxTok := 0
	if v := req.MaxOutputTokens; v != nil {
		if *v < 1 {
			x.fail(belowMin("max_output_tokens", *v, 1))
			return
		}
		maxTok = *v
	}
	g, ok := x.plan(req.Model, prompt, maxTok, 1, "input")
	if !ok {
		return
	}
	rg := &respGen{gen: g, req: &req, store: req.Store == nil || *req.Store, created: g.created}
	rg.id = s.nextID("resp_")
	if t := functionToCall(&req); t != nil {
		rg.call = t
		rg.args = callArguments(t.Parameters)
		rg.tokens = max(s.count(rg.args), 1)
		rg.cut = false
		if maxTok > 0 && maxTok < rg.tokens {
			rg.tokens, rg.cut = maxTok, true
		}
		rg.itemID, rg.callID = s.nextID("fc_"), s.nextID("call_")
	} else {
		rg.itemID = s.nextID("msg_")
	}
	x.w.Header().Set("X-Request-Id", s.nextID("req_"))
	if req.Stream {
		s.streamResponse(x, rg)
	} else {
		s.jsonResponse(x, rg)
	}
}

// functionToCall is the function tool the simulated model calls: the first function tool,
// unless tool_choice is "none" or the input ends with a function call's output (the model has
// its result and answers in text).
func functionToCall(req *responsesRequest) *responsesTool {
	var tools []responsesTool
	if len(req.Tools) == 0 || json.Unmarshal(req.Tools, &tools) != nil {
		return nil
	}
	if string(bytes.TrimSpace(req.ToolChoice)) == `"none"` {
		return nil
	}
	var items []responsesItem
	if in := bytes.TrimSpace(req.Input); len(in) > 0 && in[0] == '[' && json.Unmarshal(in, &items) == nil &&
		len(items) > 0 && items[len(items)-1].Type == "function_call_output" {
		return nil
	}
	for i := range tools {
		if tools[i].Type == "function" && tools[i].Name != "" {
			return &tools[i]
		}
	}
	return nil
}

// callArguments builds the arguments of a simulated call: each property of the parameters
// schema set to "sim" (strings), 1 (numbers and integers), true (booleans) or null.
func callArguments(params json.RawMessage) string {
	var schema struct {
		Properties map[string]struct {
			Type any `json:"type"`
		} `json:"properties"`
	}
	if json.Unmarshal(params, &schema) != nil || len(schema.Properties) == 0 {
		return "{}"
	}
	keys := make([]string, 0, len(schema.Properties))
	for k := range schema.Properties {
		keys = append(keys, k)
	}
	sortStrings(keys)
	b := []byte{'{'}
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, k)
		b = append(b, ':')
		t, _ := schema.Properties[k].Type.(string)
		switch t {
		case "string":
			b = append(b, `"sim"`...)
		case "number", "integer":
			b = append(b, '1')
		case "boolean":
			b = append(b, "true"...)
		default:
			b = append(b, "null"...)
		}
	}
	return string(append(b, '}'))
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

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

func simItoa(i int) string { return string(appendInt(nil, i)) }
