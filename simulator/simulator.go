package simulator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tiktoken-go/tokenizer"
)

// maxBodyBytes bounds every request body the simulator reads.
const maxBodyBytes = 32 << 20

// Config configures a Server. The zero value is a fast, error-free server
// that serves "sim-model" in the OpenAI error shape.
type Config struct {
	// TTFT is the delay before the first token of a stream, and before the
	// answer to an embeddings request. Default: 0.
	TTFT time.Duration
	// TokensPerSecond paces generated tokens after the first, streamed or not:
	// a JSON answer of n tokens comes after TTFT + (n-1)/TokensPerSecond, when
	// its stream would end. Default: 0, as fast as possible.
	TokensPerSecond float64
	// ResponseTokens is the natural length of a completion in tokens, used
	// when max_tokens allows it. Default: 16.
	ResponseTokens int
	// ContextWindow is the model's window in tokens; a request whose prompt
	// plus max_tokens is over it gets the shape's context error (Ollama
	// silently truncates instead). Default: 0, unlimited.
	ContextWindow int
	// ErrorShape is the shape of every error: "openai", "vllm", "vllm_flat",
	// "tgi", "llamacpp", "ollama" or "text". /v1/messages always answers in
	// Anthropic's shape. Default: "openai".
	ErrorShape string
	// Models are the ids listed by GET /v1/models. Default: ["sim-model"].
	Models []string
	// Fault is the fault spec applied to every request without an X-Sim-Fault
	// header, in the syntax of ParseFault. Default: "", none.
	Fault string
	// Now is the clock used for `created` timestamps. Default: time.Now.
	Now func() time.Time
	// TrainingStep is how long a simulated fine-tuning job stays in each of validating_files,
	// queued and running before it succeeds. Default: 2s.
	TrainingStep time.Duration
}

// Server is a simulated OpenAI-compatible model server. It is safe for
// concurrent use.
type Server struct {
	cfg      Config
	shape    string
	fault    Fault
	codec    tokenizer.Codec
	now      func() time.Time
	interval time.Duration // between streamed tokens
	created  int64         // `created` of the listed models

	// sleep waits d or until ctx is done; tests replace it.
	sleep func(ctx context.Context, d time.Duration) error

	train     *trainingState // the simulated training service's files and jobs
	trainOnce sync.Once

	hook atomic.Pointer[func(*http.Request, []byte)]
	seq  atomic.Uint64

	requests         [numRoutes]atomic.Int64
	inFlight         atomic.Int64
	running          atomic.Int64
	waiting          atomic.Int64
	cancelled        atomic.Int64
	promptTokens     atomic.Int64
	completionTokens atomic.Int64

	responses responseStore // stored Responses answers
}

// Stats is a snapshot of a Server's counters.
type Stats struct {
	// Requests counts requests by endpoint: the route pattern such as
	// "/v1/chat/completions" or "/v1/models/{id}", or "unknown".
	Requests map[string]int64
	// InFlight is the number of requests being served now.
	InFlight int64
	// Running is the number of generation requests (chat, completions,
	// embeddings, messages) being served now.
	Running int64
	// Cancelled counts requests whose client went away before the end.
	Cancelled int64
	// PromptTokens is the total of prompt tokens of accepted requests.
	PromptTokens int64
	// CompletionTokens is the total of completion tokens sent.
	CompletionTokens int64
}

// New validates cfg, fills in defaults and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.TTFT < 0 {
		return nil, fmt.Errorf("validating config: negative ttft %s", cfg.TTFT)
	}
	if cfg.TokensPerSecond < 0 {
		return nil, fmt.Errorf("validating config: negative tokens_per_second %g", cfg.TokensPerSecond)
	}
	if cfg.ResponseTokens < 0 {
		return nil, fmt.Errorf("validating config: negative response_tokens %d", cfg.ResponseTokens)
	}
	if cfg.ContextWindow < 0 {
		return nil, fmt.Errorf("validating config: negative context_window %d", cfg.ContextWindow)
	}
	if cfg.ResponseTokens == 0 {
		cfg.ResponseTokens = 16
	}
	if cfg.ErrorShape == "" {
		cfg.ErrorShape = ShapeOpenAI
	}
	if !oneOf(cfg.ErrorShape, validShapes[:]) {
		return nil, fmt.Errorf("validating config: unknown error shape %q", cfg.ErrorShape)
	}
	if len(cfg.Models) == 0 {
		cfg.Models = []string{"sim-model"}
	} else {
		cfg.Models = append([]string(nil), cfg.Models...)
	}
	for _, m := range cfg.Models {
		if m == "" {
			return nil, errors.New("validating config: empty model id")
		}
	}
	fault, err := ParseFault(cfg.Fault)
	if err != nil {
		return nil, fmt.Errorf("validating config: %w", err)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	codec, err := tokenizer.Get(tokenizer.Cl100kBase)
	if err != nil {
		return nil, fmt.Errorf("loading tokenizer: %w", err)
	}
	s := &Server{
		cfg:     cfg,
		shape:   cfg.ErrorShape,
		fault:   fault,
		codec:   codec,
		now:     cfg.Now,
		created: cfg.Now().Unix(),
		sleep:   sleepContext,
	}
	if cfg.TokensPerSecond > 0 {
		s.interval = time.Duration(float64(time.Second) / cfg.TokensPerSecond)
	}
	return s, nil
}

// OnRequest installs fn, called with every request and its body (nil for
// bodiless requests) before the simulator answers. fn must be safe for
// concurrent use and must not keep body. A nil fn removes the hook.
func (s *Server) OnRequest(fn func(r *http.Request, body []byte)) {
	if fn == nil {
		s.hook.Store(nil)
		return
	}
	s.hook.Store(&fn)
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	st := Stats{
		Requests:         make(map[string]int64, numRoutes),
		InFlight:         s.inFlight.Load(),
		Running:          s.running.Load(),
		Cancelled:        s.cancelled.Load(),
		PromptTokens:     s.promptTokens.Load(),
		CompletionTokens: s.completionTokens.Load(),
	}
	for i := range s.requests {
		if n := s.requests[i].Load(); n > 0 {
			st.Requests[routes[i].pattern] = n
		}
	}
	return st
}

// route identifies an endpoint.
type route uint8

const (
	routeUnknown route = iota
	routeChat
	routeCompletions
	routeEmbeddings
	routeModels
	routeModel
	routeMessages
	routeTokenize
	routeImages
	routeHealth
	routeMetrics
	routeResponses
	routeStoredResponse
	routeKServePredict
	routeOIPInfer
	routeOIPReady
	routeOIPHealth
	routeTraining
	numRoutes
)

var routes = [numRoutes]struct {
	pattern    string
	method     string
	generation bool
}{
	routeUnknown:     {"unknown", "", false},
	routeChat:        {"/v1/chat/completions", http.MethodPost, true},
	routeCompletions: {"/v1/completions", http.MethodPost, true},
	routeEmbeddings:  {"/v1/embeddings", http.MethodPost, true},
	routeModels:      {"/v1/models", http.MethodGet, false},
	routeModel:       {"/v1/models/{id}", http.MethodGet, false},
	routeMessages:    {"/v1/messages", http.MethodPost, true},
	routeTokenize:    {"/tokenize", http.MethodPost, false},
	routeImages:      {"/v1/images/generations", http.MethodPost, true},
	routeHealth:      {"/health", http.MethodGet, false},
	routeMetrics:     {"/metrics", http.MethodGet, false},
	routeResponses:   {"/v1/responses", http.MethodPost, true},
	// the stored-response calls check their own methods
	routeStoredResponse: {"/v1/responses/{id}", "", false},

	routeKServePredict: {"/v1/models/{name}:predict", http.MethodPost, true},
	routeOIPInfer:      {"/v2/models/{name}/infer", http.MethodPost, true},
	routeOIPReady:      {"/v2/models/{name}/ready", http.MethodGet, false},
	routeOIPHealth:     {"/v2/health/ready", http.MethodGet, false},
	routeTraining:      {"/v1/fine_tuning/jobs", "", false},
}

// matchRoute maps a path to its route and, for /v1/models/{id}, the id.
func matchRoute(path string) (route, string) {
	switch path {
	case "/v1/chat/completions":
		return routeChat, ""
	case "/v1/completions":
		return routeCompletions, ""
	case "/v1/embeddings":
		return routeEmbeddings, ""
	case "/v1/models":
		return routeModels, ""
	case "/v1/messages":
		return routeMessages, ""
	case "/tokenize":
		return routeTokenize, ""
	case "/v1/images/generations":
		return routeImages, ""
	case "/health":
		return routeHealth, ""
	case "/metrics":
		return routeMetrics, ""
	case "/v2/health/ready":
		return routeOIPHealth, ""
	case "/v1/files", "/v1/fine_tuning/jobs":
		return routeTraining, ""
	}
	if strings.HasPrefix(path, "/v1/fine_tuning/jobs/") {
		return routeTraining, ""
	}
	if rest, ok := strings.CutPrefix(path, "/v2/models/"); ok {
		if name, ok := strings.CutSuffix(rest, "/infer"); ok && name != "" {
			return routeOIPInfer, name
		}
		if name, ok := strings.CutSuffix(rest, "/ready"); ok && name != "" {
			return routeOIPReady, name
		}
	}
	if rest, ok := strings.CutPrefix(path, "/v1/models/"); ok {
		if name, ok := strings.CutSuffix(rest, ":predict"); ok && name != "" {
			return routeKServePredict, name
		}
	}
	if id, ok := strings.CutPrefix(path, "/v1/models/"); ok && id != "" {
		return routeModel, id
	}
	if path == "/v1/responses" {
		return routeResponses, ""
	}
	if id, ok := strings.CutPrefix(path, "/v1/responses/"); ok && id != "" {
		return routeStoredResponse, id
	}
	return routeUnknown, ""
}

// ServeHTTP answers one request like a model server would, applying the
// request's fault (the X-Sim-Fault header, else Config.Fault).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rt, modelID := matchRoute(r.URL.Path)
	s.requests[rt].Add(1)
	s.inFlight.Add(1)
	defer s.inFlight.Add(-1)

	x := &exchange{s: s, w: w, r: r, ctx: r.Context(), route: rt, fault: s.fault, shape: s.shape}
	if spec := r.Header.Get(FaultHeader); spec != "" {
		f, err := ParseFault(spec)
		if err != nil {
			x.fail(&simError{kind: errInvalid, msg: "parsing " + FaultHeader + " header: " + err.Error()})
			return
		}
		x.fault = f
	}
	if x.fault.Shape != "" {
		x.shape = x.fault.Shape
	}

	switch rt {
	case routeMetrics:
		s.serveMetrics(x)
		return
	case routeHealth:
		s.serveHealth(x)
		return
	case routeUnknown:
		x.fail(&simError{kind: errNotFound, msg: "Invalid URL (" + r.Method + " " + r.URL.Path + ")"})
		return
	}
	if routes[rt].method != "" && r.Method != routes[rt].method {
		w.Header().Set("Allow", routes[rt].method)
		x.fail(&simError{kind: errMethod, msg: "Method Not Allowed"})
		return
	}

	var body []byte
	if r.Method == http.MethodPost {
		var err error
		body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
		if err != nil {
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				x.fail(&simError{kind: errGeneric, status: http.StatusRequestEntityTooLarge})
				return
			}
			x.cancel()
			return
		}
	}
	if fn := s.hook.Load(); fn != nil {
		(*fn)(r, body)
	}

	switch rt {
	case routeTraining:
		s.serveTraining(x, r.URL.Path, body)
		return
	case routeKServePredict, routeOIPInfer:
		s.running.Add(1)
		defer s.running.Add(-1)
		if rt == routeKServePredict {
			s.servePredictKServe(x, modelID, body)
		} else {
			s.servePredictOIP(x, modelID, body)
		}
		return
	case routeOIPReady:
		s.servePredictReady(x, modelID)
		return
	}
	if !x.preFault() {
		return
	}
	if routes[rt].generation {
		s.running.Add(1)
		defer s.running.Add(-1)
	}

	switch rt {
	case routeChat:
		s.serveChat(x, body)
	case routeCompletions:
		s.serveCompletions(x, body)
	case routeEmbeddings:
		s.serveEmbeddings(x, body)
	case routeMessages:
		s.serveMessages(x, body)
	case routeModels:
		s.serveModels(x)
	case routeModel:
		s.serveModel(x, modelID)
	case routeTokenize:
		s.serveTokenize(x, body)
	case routeImages:
		s.serveImages(x, body)
	case routeResponses:
		s.serveResponses(x, body)
	case routeStoredResponse:
		id, action, _ := strings.Cut(modelID, "/")
		s.serveStoredResponse(x, id, action)
	case routeOIPHealth:
		x.writeJSON([]byte(`{"ready":true}`))
	}
}

// count returns the number of cl100k_base tokens of text.
func (s *Server) count(text string) int {
	if text == "" {
		return 0
	}
	n, _ := s.codec.Count(text)
	return n
}

// nextID returns a fresh response id with the given prefix.
func (s *Server) nextID(prefix string) string {
	const digits = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	n := s.seq.Add(1)
	var buf [24]byte
	for i := len(buf) - 1; i >= 0; i-- {
		buf[i] = digits[n%uint64(len(digits))]
		n /= uint64(len(digits))
	}
	return prefix + "sim" + string(buf[:])
}

// sleepContext waits d, or returns ctx's error as soon as ctx is done.
func sleepContext(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
