package wire

import (
	"net/http"
	"strings"
)

// Endpoint is the operation a request addresses: an index into the endpoint table. Everything
// the pipeline needs to know about an endpoint is in its row (Spec); code reads the row instead
// of switching on the endpoint.
type Endpoint uint8

// The endpoints the gateway understands. EndpointUnknown is a path under /v1 the gateway does
// not serve; EndpointBadVersion is a path under another API version prefix (/v2/...).
const (
	EndpointUnknown Endpoint = iota
	EndpointBadVersion
	EndpointChatCompletions
	EndpointCompletions
	EndpointEmbeddings
	EndpointImagesGenerations
	EndpointMessages
	EndpointMessagesCountTokens
	EndpointModels
	EndpointModel
	EndpointFiles
	EndpointFile
	EndpointFileContent
	EndpointBatches
	EndpointBatch
	EndpointBatchCancel
	EndpointMessageBatches
	EndpointMessageBatch
	EndpointMessageBatchCancel
	EndpointMessageBatchResults
	EndpointUsage
	EndpointResponses
	EndpointResponse
	EndpointResponseCancel
	EndpointResponseInputItems
	EndpointModelPredict
	EndpointPredict
	EndpointFineTuningJobs
	EndpointFineTuningJob
	EndpointFineTuningJobCancel
	EndpointFineTuningJobPause
	EndpointFineTuningJobResume
	EndpointFineTuningJobEvents
	EndpointFineTuningJobCheckpoints
	numEndpoints
)

// Dialect is the request and response format an endpoint speaks. It selects the validator, the
// rewriting and content rules, the token counter and the stream parser of a body endpoint.
type Dialect uint8

// The dialects.
const (
	DialectNone       Dialect = iota // no JSON body
	DialectChat                      // OpenAI chat completions
	DialectCompletion                // OpenAI legacy completions
	DialectEmbedding                 // OpenAI embeddings
	DialectImage                     // OpenAI image generation
	DialectMessages                  // Anthropic messages
	DialectResponses                 // OpenAI Responses
	DialectPredict                   // a predict model's body (package predict)
)

// StreamFormat is how an endpoint's SSE stream is framed and how it ends properly. It selects
// the stream tap's event handling and the frames the gateway ends a broken stream with.
type StreamFormat uint8

// The stream formats.
const (
	// StreamBySurface is the surface's chat stream: OpenAI chunks ending with `data: [DONE]`,
	// Anthropic events ending with message_stop.
	StreamBySurface StreamFormat = iota
	// StreamTyped is the Responses stream: named events whose data carries type and
	// sequence_number, ending with response.completed, response.incomplete or
	// response.failed, and no [DONE]. A broken stream ends with response.failed (when the
	// response was announced) and an error event.
	StreamTyped
)

// Answer says who answers an endpoint's requests.
type Answer uint8

// The answers.
const (
	AnswerNone     Answer = iota // not served: 404 (or 405 when the path is known)
	AnswerUpstream               // proxied to the model's pool
	AnswerGateway                // answered by the gateway itself
)

// Spec is one row of the endpoint table.
type Spec struct {
	// Endpoint is the row's index.
	Endpoint Endpoint
	// Name is the snake_case name used in logs, metrics and placeholders.
	Name string
	// Path is the path pattern under /v1/. A segment in braces is the pattern's one parameter:
	// last ("models/{model}"), it takes the rest of the path, '/' included; in the middle
	// ("files/{file_id}/content"), exactly one non-empty segment.
	Path string
	// Methods are the HTTP methods served; any other gets 405.
	Methods []string
	// Surface is the API family, which decides the error envelope.
	Surface Surface
	// Dialect is the body format; DialectNone for endpoints without a JSON body.
	Dialect Dialect
	// Answer says whether the gateway answers the request or an upstream does.
	Answer Answer
	// Required are the top-level body fields that must be present.
	Required []string
	// Params are the endpoint's documented top-level body params, Required among them.
	// Validation allows any param; the list says which endpoints a configured default applies
	// to and whether a param such as stream or max_completion_tokens belongs to the endpoint.
	Params []string
	// ContextParam is the param a context_length_exceeded refusal names.
	ContextParam string
	// ExactCount says the prompt is counted with the model's tokenizer when a limit or the
	// context window needs the number; otherwise (images) the byte bound stands in.
	ExactCount bool
	// AlwaysCount says the exact count is the answer itself (count_tokens), so it is never
	// replaced by the bound.
	AlwaysCount bool
	// AnswerText are the gjson paths of the generated text in a JSON answer, counted when the
	// upstream reports no usage. Empty: the answer has no generated text (embeddings), its
	// usage is the prompt's.
	AnswerText []string
	// Cacheable says answers may be cached (subject to the request's determinism).
	Cacheable bool
	// Streams says the endpoint answers SSE streams the cache can rebuild and replay.
	Streams bool
	// InjectStreamUsage says the gateway asks the upstream for the stream usage chunk
	// (stream_options.include_usage) and strips it when the client did not ask for it.
	InjectStreamUsage bool
	// MaxTokens says the body's output length field can be set (fit_max_tokens,
	// cap_max_tokens_to_budget).
	MaxTokens bool
	// AnthropicNotFound says a request the Anthropic SDK made (FromAnthropicSDK) gets an
	// Anthropic-envelope 404 instead of this OpenAI endpoint's answer: the Anthropic SDK's files
	// beta calls the same paths (/v1/files) with another protocol, which must not be misread.
	AnthropicNotFound bool
	// StreamFormat is how the endpoint's streams are framed and end.
	StreamFormat StreamFormat
	// MaxTokensParam is the body's output length field when it is not max_tokens
	// (max_output_tokens for Responses).
	MaxTokensParam string
	// ParamSlashes says the parameter in the middle of the path may contain '/' (model ids such
	// as org/model in models/{model_id}/predict): the pattern's suffix is matched, not the first
	// '/'.
	ParamSlashes bool
}

var (
	post        = []string{http.MethodPost}
	getHead     = []string{http.MethodGet, http.MethodHead}
	postGetHead = []string{http.MethodPost, http.MethodGet, http.MethodHead}
	getHeadDel  = []string{http.MethodGet, http.MethodHead, http.MethodDelete}
)

// The documented top-level params of each body endpoint.
var (
	chatParams = []string{"model", "messages", "stream", "stream_options", "user", "temperature", "top_p", "n",
		"max_tokens", "max_completion_tokens", "presence_penalty", "frequency_penalty", "logprobs",
		"top_logprobs", "parallel_tool_calls", "store", "seed", "stop", "tools", "functions",
		"tool_choice", "function_call", "response_format", "logit_bias", "metadata", "modalities",
		"audio", "prediction", "reasoning_effort", "service_tier", "verbosity", "web_search_options",
		"safety_identifier", "prompt_cache_key"}
	completionParams = []string{"model", "prompt", "stream", "stream_options", "user", "temperature", "top_p",
		"n", "max_tokens", "presence_penalty", "frequency_penalty", "logprobs", "echo", "best_of",
		"suffix", "seed", "stop", "logit_bias"}
	embeddingParams = []string{"model", "input", "user", "encoding_format", "dimensions"}
	imageParams     = []string{"model", "prompt", "stream", "user", "n", "size", "quality", "style",
		"background", "output_format", "output_compression", "moderation", "response_format",
		"partial_images"}
	messagesParams = []string{"model", "messages", "max_tokens", "stream", "system", "temperature", "top_p",
		"top_k", "stop_sequences", "tools", "tool_choice", "metadata", "thinking", "service_tier",
		"container", "mcp_servers", "context_management"}
	responsesParams = []string{"model", "input", "instructions", "max_output_tokens", "temperature", "top_p",
		"tools", "tool_choice", "parallel_tool_calls", "text", "stream", "stream_options", "store",
		"previous_response_id", "metadata", "truncation", "reasoning", "user", "include", "background",
		"max_tool_calls", "prompt", "prompt_cache_key", "safety_identifier", "service_tier", "top_logprobs",
		"conversation", "prompt_cache_retention"}
	countTokensParams = []string{"model", "messages", "system", "tools", "tool_choice", "thinking",
		"mcp_servers", "context_management"}
)

// table is the endpoint table, indexed by Endpoint.
var table = [numEndpoints]Spec{
	EndpointUnknown:    {Name: "unknown"},
	EndpointBadVersion: {Name: "bad_version"},
	EndpointChatCompletions: {Name: "chat_completions", Path: "chat/completions", Methods: post, Surface: OpenAI,
		Dialect: DialectChat, Answer: AnswerUpstream, Required: []string{"model", "messages"}, Params: chatParams,
		ContextParam: "messages", ExactCount: true, AnswerText: []string{"choices.#.message.content"},
		Cacheable: true, Streams: true, InjectStreamUsage: true, MaxTokens: true},
	EndpointCompletions: {Name: "completions", Path: "completions", Methods: post, Surface: OpenAI,
		Dialect: DialectCompletion, Answer: AnswerUpstream, Required: []string{"model", "prompt"},
		Params: completionParams, ContextParam: "prompt", ExactCount: true, AnswerText: []string{"choices.#.text"},
		Cacheable: true, Streams: true, InjectStreamUsage: true, MaxTokens: true},
	EndpointEmbeddings: {Name: "embeddings", Path: "embeddings", Methods: post, Surface: OpenAI,
		Dialect: DialectEmbedding, Answer: AnswerUpstream, Required: []string{"model", "input"}, Params: embeddingParams,
		ContextParam: "input", ExactCount: true, Cacheable: true},
	EndpointImagesGenerations: {Name: "images_generations", Path: "images/generations", Methods: post, Surface: OpenAI,
		Dialect: DialectImage, Answer: AnswerUpstream, Required: []string{"model", "prompt"}, Params: imageParams,
		ContextParam: "prompt"},
	EndpointMessages: {Name: "messages", Path: "messages", Methods: post, Surface: Anthropic,
		Dialect: DialectMessages, Answer: AnswerUpstream, Required: []string{"model", "max_tokens", "messages"},
		Params: messagesParams, ContextParam: "messages", ExactCount: true, AnswerText: []string{"content.#.text"},
		Cacheable: true, Streams: true, MaxTokens: true},
	EndpointMessagesCountTokens: {Name: "messages_count_tokens", Path: "messages/count_tokens", Methods: post,
		Surface: Anthropic, Dialect: DialectMessages, Answer: AnswerGateway, Required: []string{"model", "messages"},
		Params: countTokensParams, ContextParam: "messages", ExactCount: true, AlwaysCount: true},
	EndpointModels: {Name: "models", Path: "models", Methods: getHead, Surface: OpenAI, Answer: AnswerGateway},
	EndpointModel:  {Name: "model", Path: "models/{model}", Methods: getHead, Surface: OpenAI, Answer: AnswerGateway},
	// The Files API: POST uploads (multipart, streamed to the store), GET lists; the file's
	// object (GET, DELETE) and its bytes. The gateway answers them from its store.
	EndpointFiles: {Name: "files", Path: "files", Methods: postGetHead, Surface: OpenAI, Answer: AnswerGateway,
		AnthropicNotFound: true},
	EndpointFile: {Name: "file", Path: "files/{file_id}", Methods: getHeadDel, Surface: OpenAI, Answer: AnswerGateway,
		AnthropicNotFound: true},
	EndpointFileContent: {Name: "file_content", Path: "files/{file_id}/content", Methods: getHead, Surface: OpenAI,
		Answer: AnswerGateway, AnthropicNotFound: true},
	// The Batches API: POST creates a batch from an uploaded file, GET lists; the batch's object
	// and its cancellation. The gateway answers them from its store and runs the lines itself.
	EndpointBatches: {Name: "batches", Path: "batches", Methods: postGetHead, Surface: OpenAI, Answer: AnswerGateway},
	EndpointBatch:   {Name: "batch", Path: "batches/{batch_id}", Methods: getHead, Surface: OpenAI, Answer: AnswerGateway},
	EndpointBatchCancel: {Name: "batch_cancel", Path: "batches/{batch_id}/cancel", Methods: post, Surface: OpenAI,
		Answer: AnswerGateway},
	EndpointMessageBatches: {Name: "message_batches", Path: "messages/batches", Methods: postGetHead, Surface: Anthropic,
		Answer: AnswerGateway},
	EndpointMessageBatch: {Name: "message_batch", Path: "messages/batches/{message_batch_id}", Methods: getHeadDel,
		Surface: Anthropic, Answer: AnswerGateway},
	EndpointMessageBatchCancel: {Name: "message_batch_cancel", Path: "messages/batches/{message_batch_id}/cancel",
		Methods: post, Surface: Anthropic, Answer: AnswerGateway},
	EndpointMessageBatchResults: {Name: "message_batch_results", Path: "messages/batches/{message_batch_id}/results",
		Methods: getHead, Surface: Anthropic, Answer: AnswerGateway},
	// The key's own usage and budgets, from the usage ledger (accounting).
	EndpointUsage: {Name: "usage", Path: "usage", Methods: getHead, Surface: OpenAI, Answer: AnswerGateway},
	// The Responses API: POST creates a response (JSON or a typed stream) upstream; the stored
	// response (GET, DELETE), its cancellation and its input items are proxied to the model that
	// made it, for the key that made it only.
	EndpointResponses: {Name: "responses", Path: "responses", Methods: post, Surface: OpenAI,
		Dialect: DialectResponses, Answer: AnswerUpstream, Required: []string{"model"}, Params: responsesParams,
		ContextParam: "input", ExactCount: true,
		AnswerText: []string{"output.#.content.#.text|@flatten", "output.#.arguments", "output.#.summary.#.text|@flatten"},
		Cacheable:  true, MaxTokens: true, StreamFormat: StreamTyped, MaxTokensParam: "max_output_tokens"},
	EndpointResponse: {Name: "response", Path: "responses/{response_id}", Methods: getHeadDel, Surface: OpenAI,
		Answer: AnswerUpstream},
	EndpointResponseCancel: {Name: "response_cancel", Path: "responses/{response_id}/cancel", Methods: post,
		Surface: OpenAI, Answer: AnswerUpstream},
	EndpointResponseInputItems: {Name: "response_input_items", Path: "responses/{response_id}/input_items",
		Methods: getHead, Surface: OpenAI, Answer: AnswerUpstream},
	// Predict models (classifiers, rankers, tabular and vision models): the model in the path or
	// in the body, validated against the model's input schema and sent in the model's protocol.
	EndpointModelPredict: {Name: "model_predict", Path: "models/{model_id}/predict", Methods: post, Surface: OpenAI,
		Dialect: DialectPredict, Answer: AnswerUpstream, Cacheable: true, ParamSlashes: true},
	EndpointPredict: {Name: "predict", Path: "predict", Methods: post, Surface: OpenAI, Dialect: DialectPredict,
		Answer: AnswerUpstream, Required: []string{"model"}, Params: []string{"model"}, Cacheable: true},
	// Fine-tuning jobs, passed through to the training service and owned per key
	// (/v1/fine-tuning/... is the same API: see Route).
	EndpointFineTuningJobs: {Name: "fine_tuning_jobs", Path: "fine_tuning/jobs", Methods: postGetHead, Surface: OpenAI,
		Answer: AnswerGateway},
	EndpointFineTuningJob: {Name: "fine_tuning_job", Path: "fine_tuning/jobs/{job_id}", Methods: getHead, Surface: OpenAI,
		Answer: AnswerGateway},
	EndpointFineTuningJobCancel: {Name: "fine_tuning_job_cancel", Path: "fine_tuning/jobs/{job_id}/cancel", Methods: post,
		Surface: OpenAI, Answer: AnswerGateway},
	EndpointFineTuningJobPause: {Name: "fine_tuning_job_pause", Path: "fine_tuning/jobs/{job_id}/pause", Methods: post,
		Surface: OpenAI, Answer: AnswerGateway},
	EndpointFineTuningJobResume: {Name: "fine_tuning_job_resume", Path: "fine_tuning/jobs/{job_id}/resume", Methods: post,
		Surface: OpenAI, Answer: AnswerGateway},
	EndpointFineTuningJobEvents: {Name: "fine_tuning_job_events", Path: "fine_tuning/jobs/{job_id}/events", Methods: getHead,
		Surface: OpenAI, Answer: AnswerGateway},
	EndpointFineTuningJobCheckpoints: {Name: "fine_tuning_job_checkpoints", Path: "fine_tuning/jobs/{job_id}/checkpoints",
		Methods: getHead, Surface: OpenAI, Answer: AnswerGateway},
}

func init() {
	for i := range table {
		table[i].Endpoint = Endpoint(i)
	}
}

// Spec returns the endpoint's row of the table.
func (e Endpoint) Spec() *Spec {
	if int(e) < len(table) {
		return &table[e]
	}
	return &table[EndpointUnknown]
}

// Specs returns every row of the table, in Endpoint order.
func Specs() []Spec { return table[:] }

// String returns the endpoint's snake_case name, as used in logs and metrics.
func (e Endpoint) String() string { return e.Spec().Name }

// Surface returns the API surface of the endpoint.
func (e Endpoint) Surface() Surface { return e.Spec().Surface }

// HasBody reports whether requests to the endpoint carry a JSON body with a model.
func (e Endpoint) HasBody() bool { return e.Spec().Dialect != DialectNone }

// Allows reports whether the endpoint serves the HTTP method.
func (s *Spec) Allows(method string) bool {
	for _, m := range s.Methods {
		if m == method {
			return true
		}
	}
	return false
}

// Route classifies a request path by the table. The parameter of a pattern such as
// models/{model} (which may contain '/') or files/{file_id}/content (one segment) is returned
// as param. Patterns whose parameter sits in the middle are tried before those that take the
// rest of the path, so files/x/content is never file "x/content". A trailing slash is
// tolerated, as the SDKs never send one but proxies sometimes add it.
func Route(path string) (e Endpoint, param string) {
	rest, ok := strings.CutPrefix(path, "/v1/")
	if !ok {
		if path != "/v1" && isVersionPrefix(path) {
			return EndpointBadVersion, ""
		}
		return EndpointUnknown, ""
	}
	rest = strings.TrimSuffix(rest, "/")
	if r, ok := strings.CutPrefix(rest, "fine-tuning/"); ok {
		rest = "fine_tuning/" + r // our users' spelling of OpenAI's fine_tuning
	}
	for _, tail := range [...]bool{false, true} {
		for i := range table {
			s := &table[i]
			if s.Path == "" || strings.HasSuffix(s.Path, "}") != tail {
				continue
			}
			if p, ok := match(s.Path, rest, s.ParamSlashes); ok {
				return s.Endpoint, p
			}
		}
	}
	return EndpointUnknown, ""
}

// match matches rest against one pattern and returns its parameter.
func match(pattern, rest string, slashes bool) (param string, ok bool) {
	open := strings.IndexByte(pattern, '{')
	if open < 0 {
		return "", rest == pattern
	}
	closing := strings.IndexByte(pattern[open:], '}') + open
	prefix, suffix := pattern[:open], pattern[closing+1:]
	p, ok := strings.CutPrefix(rest, prefix)
	if !ok {
		return "", false
	}
	if suffix == "" {
		return p, p != ""
	}
	p, ok = strings.CutSuffix(p, suffix)
	if !ok || p == "" || !slashes && strings.IndexByte(p, '/') >= 0 {
		return "", false
	}
	return p, true
}

// FromAnthropicSDK reports whether a request was made by an Anthropic SDK on a path both APIs
// use: it carries anthropic-version or an anthropic-beta header, or the beta SDKs' ?beta=true.
// The OpenAI SDKs send none of them.
func FromAnthropicSDK(r *http.Request) bool {
	if r.Header.Get("Anthropic-Version") != "" || r.Header.Get("Anthropic-Beta") != "" {
		return true
	}
	return r.URL.Query().Get("beta") == "true"
}

// SurfaceOf returns the surface a path belongs to: Anthropic for /v1/messages and below, OpenAI
// for everything else (a mistyped Anthropic path still gets the Anthropic envelope).
func SurfaceOf(path string) Surface {
	if path == "/v1/messages" || strings.HasPrefix(path, "/v1/messages/") {
		return Anthropic
	}
	return OpenAI
}

// isVersionPrefix reports whether path starts with /v<digits>/ (or is exactly /v<digits>).
func isVersionPrefix(path string) bool {
	if len(path) < 3 || path[0] != '/' || path[1] != 'v' {
		return false
	}
	i := 2
	for i < len(path) && path[i] >= '0' && path[i] <= '9' {
		i++
	}
	return i > 2 && (i == len(path) || path[i] == '/')
}
