package simulator

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
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
	rg.id = randomID("resp_")
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

func simItoa(i int) string { return string(appendInt(nil, i)) }

// randomID returns prefix and 24 random hex digits. Response ids are random, as real servers'
// are: a gateway records which key owns each id, so an id must never come back after a restart.
func randomID(prefix string) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}
