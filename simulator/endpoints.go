package simulator

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"hash/fnv"
	"math"
	"net/http"
	"strconv"
	"strings"
)

const (
	defaultDimensions = 16
	maxDimensions     = 8192
)

type embeddingsRequest struct {
	Model          string          `json:"model"`
	Input          json.RawMessage `json:"input"`
	Dimensions     *int            `json:"dimensions"`
	EncodingFormat string          `json:"encoding_format"`
}

func (s *Server) serveEmbeddings(x *exchange, body []byte) {
	var req embeddingsRequest
	if err := json.Unmarshal(body, &req); err != nil {
		x.fail(badJSON(err))
		return
	}
	if req.Model == "" {
		x.fail(&simError{kind: errInvalid, msg: "you must provide a model parameter"})
		return
	}
	items, err := parsePromptList(req.Input)
	if err != nil {
		x.fail(&simError{kind: errInvalid, param: "input", msg: "Invalid 'input': " + err.Error() + "."})
		return
	}
	if len(items) == 0 {
		x.fail(missing("input"))
		return
	}
	dims := defaultDimensions
	if req.Dimensions != nil {
		if *req.Dimensions < 1 || *req.Dimensions > maxDimensions {
			x.fail(&simError{kind: errInvalid, param: "dimensions",
				msg: "Invalid 'dimensions': expected a value between 1 and " + strconv.Itoa(maxDimensions) + "."})
			return
		}
		dims = *req.Dimensions
	}
	b64 := false
	switch req.EncodingFormat {
	case "", "float":
	case "base64":
		b64 = true
	default:
		x.fail(&simError{kind: errInvalid, param: "encoding_format",
			msg: "Invalid 'encoding_format': expected 'float' or 'base64', got '" + req.EncodingFormat + "'."})
		return
	}

	total, longest := 0, 0
	counts := make([]int, len(items))
	for i, it := range items {
		n := it.tokens
		if !it.isTokens {
			n = s.count(it.text)
		}
		counts[i] = n
		total += n
		longest = max(longest, n)
	}
	window := s.cfg.ContextWindow
	if x.fault.Kind == FaultContext || (window > 0 && longest > window && x.shape != ShapeOllama) {
		n := window
		if n == 0 {
			n = max(1, longest-1)
		}
		x.fail(&simError{kind: errContext, window: n, prompt: longest, field: "input"})
		return
	}
	if window > 0 && x.shape == ShapeOllama {
		total = 0
		for _, n := range counts {
			total += min(n, window)
		}
	}
	s.promptTokens.Add(int64(total))
	if !x.wait(s.cfg.TTFT) {
		return
	}

	vec := make([]float32, dims)
	raw := make([]byte, 4*dims)
	b := make([]byte, 0, 128+len(items)*(dims*12+64))
	b = append(b, `{"object":"list","data":[`...)
	for i, it := range items {
		if i > 0 {
			b = append(b, ',')
		}
		embed(vec, it.text)
		b = append(b, `{"object":"embedding","index":`...)
		b = appendInt(b, i)
		b = append(b, `,"embedding":`...)
		if b64 {
			for j, f := range vec {
				binary.LittleEndian.PutUint32(raw[4*j:], math.Float32bits(f))
			}
			b = append(b, '"')
			b = base64.StdEncoding.AppendEncode(b, raw)
			b = append(b, '"')
		} else {
			b = append(b, '[')
			for j, f := range vec {
				if j > 0 {
					b = append(b, ',')
				}
				b = strconv.AppendFloat(b, float64(f), 'g', -1, 32)
			}
			b = append(b, ']')
		}
		b = append(b, '}')
	}
	b = append(b, `],"model":`...)
	b = appendJSONString(b, req.Model)
	if x.fault.Kind != FaultNoUsage {
		b = append(b, `,"usage":{"prompt_tokens":`...)
		b = appendInt(b, total)
		b = append(b, `,"total_tokens":`...)
		b = appendInt(b, total)
		b = append(b, '}')
	}
	b = append(b, '}')
	x.writeJSON(b)
}

// embed fills vec with a deterministic unit vector derived from key.
func embed(vec []float32, key string) {
	h := fnv.New64a()
	_, _ = h.Write([]byte(key))
	state := h.Sum64()
	var norm float64
	for i := range vec {
		// splitmix64
		state += 0x9e3779b97f4a7c15
		z := state
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		z ^= z >> 31
		f := float64(z>>11)/float64(1<<53)*2 - 1
		vec[i] = float32(f)
		norm += f * f
	}
	if norm == 0 {
		return
	}
	inv := 1 / math.Sqrt(norm)
	for i := range vec {
		vec[i] = float32(float64(vec[i]) * inv)
	}
}

func (s *Server) appendModel(b []byte, id string) []byte {
	b = append(b, `{"id":`...)
	b = appendJSONString(b, id)
	b = append(b, `,"object":"model","created":`...)
	b = strconv.AppendInt(b, s.created, 10)
	b = append(b, `,"owned_by":"simulator"`...)
	if s.cfg.ContextWindow > 0 {
		b = append(b, `,"max_model_len":`...)
		b = appendInt(b, s.cfg.ContextWindow)
	}
	return append(b, '}')
}

func (s *Server) serveModels(x *exchange) {
	b := append(make([]byte, 0, 128*len(s.cfg.Models)), `{"object":"list","data":[`...)
	for i, id := range s.cfg.Models {
		if i > 0 {
			b = append(b, ',')
		}
		b = s.appendModel(b, id)
	}
	x.writeJSON(append(b, "]}"...))
}

func (s *Server) serveModel(x *exchange, id string) {
	if !oneOf(id, s.cfg.Models) {
		x.fail(&simError{kind: errModelNotFound, model: id})
		return
	}
	x.writeJSON(s.appendModel(nil, id))
}

// Chat-format token ids of cl100k_base used by /tokenize for the per-message overhead.
const (
	tokIMStart   = 100264
	tokIMEnd     = 100265
	tokIMSep     = 100266
	tokColon     = 25
	tokAssistant = 78191
)

type tokenizeRequest struct {
	Prompt   *string         `json:"prompt"`
	Messages []chatMessage   `json:"messages"`
	Tools    json.RawMessage `json:"tools"`
	Inputs   *string         `json:"inputs"`  // TGI
	Content  *string         `json:"content"` // llama.cpp server
}

// serveTokenize answers POST /tokenize in the shape of the server whose request it gets: TGI's
// {"inputs"} and llama.cpp server's {"content"} (see tokenize.go), else vLLM's {"prompt"} or
// {"messages"}. For messages, count is the
// chat formula and tokens the chat layout
// <|im_start|> role <|im_sep|> text [name :] [tool calls] <|im_end|> ... <|im_start|> assistant <|im_sep|>,
// whose length equals count unless images or tool definitions are present
// (they are counted but not listed).
func (s *Server) serveTokenize(x *exchange, body []byte) {
	var req tokenizeRequest
	if err := json.Unmarshal(body, &req); err != nil {
		x.fail(badJSON(err))
		return
	}
	var tokens []uint
	var count int
	encode := func(text string) {
		if text == "" {
			return
		}
		ids, _, _ := s.codec.Encode(text)
		tokens = append(tokens, ids...)
	}
	switch {
	case req.Inputs != nil && req.Prompt == nil && len(req.Messages) == 0:
		s.serveTokenizeTGI(x, *req.Inputs)
		return
	case req.Content != nil && req.Prompt == nil && len(req.Messages) == 0:
		s.serveTokenizeLlamaCpp(x, *req.Content)
		return
	case req.Prompt != nil:
		encode(*req.Prompt)
		count = len(tokens)
	case len(req.Messages) > 0:
		for i := range req.Messages {
			m := &req.Messages[i]
			text, err := contentText(m.Content)
			if err != nil {
				x.fail(&simError{kind: errInvalid, param: "messages", msg: "Invalid 'messages[" + strconv.Itoa(i) + "].content': " + err.Error() + "."})
				return
			}
			tokens = append(tokens, tokIMStart)
			encode(m.Role)
			tokens = append(tokens, tokIMSep)
			encode(text)
			if m.Name != nil {
				encode(*m.Name)
				tokens = append(tokens, tokColon)
			}
			if f := m.FunctionCall; f != nil {
				encode(f.Name)
				encode(f.Arguments)
			}
			for _, tc := range m.ToolCalls {
				encode(tc.Function.Name)
				encode(tc.Function.Arguments)
			}
			tokens = append(tokens, tokIMEnd)
		}
		tokens = append(tokens, tokIMStart, tokAssistant, tokIMSep)
		n, e := s.chatPromptTokens(req.Messages)
		if e != nil {
			x.fail(e)
			return
		}
		count = n + s.rawArrayTokens(req.Tools)
	default:
		x.fail(&simError{kind: errInvalid, msg: "Either 'prompt' or 'messages' must be given."})
		return
	}
	b := append(make([]byte, 0, 48+len(tokens)*7), `{"count":`...)
	b = appendInt(b, count)
	b = append(b, `,"max_model_len":`...)
	b = appendInt(b, s.cfg.ContextWindow)
	b = append(b, `,"tokens":[`...)
	for i, t := range tokens {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, uint64(t), 10)
	}
	x.writeJSON(append(b, "]}"...))
}

// serveHealth answers 200 {} unless a loading fault is active; close and
// stall faults apply too.
func (s *Server) serveHealth(x *exchange) {
	switch x.fault.Kind {
	case FaultLoading, FaultClose, FaultStall:
		if !x.preFault() {
			return
		}
	}
	x.writeBody(http.StatusOK, ctJSON, []byte("{}"))
}

// kvCapacity is the nominal number of running requests that fill the KV cache.
const kvCapacity = 64

// serveMetrics answers GET /metrics in the Prometheus text format with vLLM's names.
func (s *Server) serveMetrics(x *exchange) {
	running := float64(s.running.Load())
	label := `{model_name="` + escapeLabel(s.cfg.Models[0]) + `"} `
	var b []byte
	gauge := func(name, help string, v float64) {
		b = append(b, "# HELP "+name+" "+help+"\n# TYPE "+name+" gauge\n"+name+label...)
		b = appendPromFloat(b, v)
		b = append(b, '\n')
	}
	counter := func(name, help string, v float64) {
		b = append(b, "# HELP "+name+" "+help+"\n# TYPE "+name+" counter\n"+name+label...)
		b = appendPromFloat(b, v)
		b = append(b, '\n')
	}
	gauge("vllm:num_requests_running", "Number of requests in model execution batches.", running)
	gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", float64(s.waiting.Load()))
	gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", min(running/kvCapacity, 1))
	counter("vllm:prompt_tokens_total", "Number of prefill tokens processed.", float64(s.promptTokens.Load()))
	counter("vllm:generation_tokens_total", "Number of generation tokens processed.", float64(s.completionTokens.Load()))
	x.writeBody(http.StatusOK, "text/plain; version=0.0.4; charset=utf-8", b)
}

// appendPromFloat formats v the way Python's prometheus_client does (1.0, 0.25).
func appendPromFloat(b []byte, v float64) []byte {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		b = strconv.AppendFloat(b, v, 'f', 0, 64)
		return append(b, ".0"...)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func escapeLabel(s string) string { return labelEscaper.Replace(s) }
