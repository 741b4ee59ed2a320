package policy

import (
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/caddyai/gateway/internal/jsonscan"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/tidwall/gjson"
)

// RequestInfo is what validation learns about a request, used by later stages (no re-parse).
type RequestInfo struct {
	// Model is the requested model name, as sent.
	Model string
	// Stream is true when the client asked for a streamed (SSE) response.
	Stream bool
	// IncludeUsage is stream_options.include_usage.
	IncludeUsage bool
	// StreamOptions is true when the body has a top-level stream_options, whatever its value:
	// when it is false, the gateway can add one without looking for it.
	StreamOptions bool
	// MaxTokens is the requested maximum output length (max_tokens, max_completion_tokens or
	// Anthropic's max_tokens; the larger when a chat request sends both); 0 means absent.
	MaxTokens int
	// MaxTokensField names the field that carried MaxTokens ("max_tokens",
	// "max_completion_tokens"), or "" when absent. When absent, Rewriter.Apply may set it to the
	// field the upstream expects, so that SetMaxTokens writes that field.
	MaxTokensField string
	// N is the number of choices (or images) requested; 1 when absent.
	N int
	// BestOf is a completions request's best_of (the server generates that many and returns
	// N); 0 when absent.
	BestOf int
	// Prompts is how many prompts a completions request sends (an array of strings or of
	// token arrays); each gets its own choices. 0 (one prompt) otherwise.
	Prompts int
	// HasTools is true when the request offers tools (or legacy functions) to the model.
	HasTools bool
	// Temperature is the sampling temperature, nil when absent or null.
	Temperature *float64
	// Seed is true when the request carries a seed.
	Seed bool
	// NoStore is true when a Responses request says store: false (a response is stored by
	// default).
	NoStore bool
	// PreviousResponseID is a Responses request's previous_response_id, "" when absent.
	PreviousResponseID string
}

// Field names shared by validation and rewriting.
const (
	fieldMaxTokens           = "max_tokens"
	fieldMaxCompletionTokens = "max_completion_tokens"
)

// maxInt32 is the largest value OpenAI accepts for integer parameters such as max_tokens.
const maxInt32 = math.MaxInt32

// Validate checks a request body for the endpoint it addresses and returns what later stages
// need to know about it. The body is parsed once; every rejection is a 400
// invalid_request_error whose Param names the offending field exactly (messages[2].role) and
// whose message is worded for the endpoint's surface.
//
// Unknown top-level parameters are allowed (model servers add their own); a top-level key sent
// twice is rejected, as is a repeated key inside a message or content part, because the gateway
// and the upstream's parser could read different copies.
func Validate(e wire.Endpoint, body []byte) (RequestInfo, *wire.Error) {
	v := newValidator(e)
	if !e.HasBody() {
		return RequestInfo{}, wire.InvalidCode(CodeInvalidValue, "", "The endpoint %s does not take a JSON request body.", e)
	}
	if err := checkDocument(body, v.errs); err != nil {
		return RequestInfo{}, err
	}
	root := gjson.Parse(view(body))
	jsonscan.ForEach(root, func(k, val gjson.Result) bool {
		if !v.noteKey(k.Str) {
			return false
		}
		v.noteRequired(k.Str)
		if k.Str == "stream_options" {
			v.info.StreamOptions = true
		}
		return v.topKey(k.Str, val)
	})
	if v.err != nil {
		return RequestInfo{}, v.err
	}
	if !v.finish() {
		return RequestInfo{}, v.err
	}
	v.info.Model = strings.Clone(v.info.Model)
	v.info.PreviousResponseID = strings.Clone(v.info.PreviousResponseID)
	return v.info, nil
}

// checkDocument rejects bodies that are not a JSON object of bounded depth.
func checkDocument(body []byte, x errs) *wire.Error {
	c := firstByte(body)
	if c == 0 {
		return x.custom(CodeInvalidJSON, "", "We could not parse the JSON body of your request: the body is empty. The API expects a JSON object.")
	}
	// One pass checks both; a body that is not valid JSON may still nest too deep further on,
	// and that error comes first.
	valid, deep := jsonscan.Check(body, MaxDepth)
	if deep || !valid && jsonscan.NestedTooDeep(body, MaxDepth) {
		return x.custom(CodeNestingTooDeep, "", "The JSON body of your request nests objects and arrays deeper than %d levels.", MaxDepth)
	}
	if !valid {
		return x.custom(CodeInvalidJSON, "", "We could not parse the JSON body of your request: it is not valid JSON. The API expects a JSON object.")
	}
	if c != '{' {
		return x.custom(CodeInvalidType, "", "The request body must be a JSON object, but got %s instead.", wire.Describe(gjson.Parse(view(body))))
	}
	return nil
}

// validator holds the state of one validation.
type validator struct {
	errs
	spec    *wire.Spec
	params  map[string]bool // the endpoint's documented params
	info    RequestInfo
	err     *wire.Error
	has     uint32 // bit i: spec.Required[i] was seen
	keys    [32]string
	nkeys   int
	more    map[string]struct{}
	streamO gjson.Result // stream_options, checked once stream is known
}

// newValidator returns a validator for a body of endpoint e.
func newValidator(e wire.Endpoint) validator {
	v := validator{spec: e.Spec(), errs: errs{anthropic: e.Surface() == wire.Anthropic}}
	if int(e) < len(knownParams) {
		v.params = knownParams[e]
	}
	v.info.N = 1
	return v
}

// fail records the first error and returns false, so that it can end a ForEach.
func (v *validator) fail(err *wire.Error) bool {
	if v.err == nil {
		v.err = err
	}
	return false
}

// noteKey rejects a top-level key seen before.
func (v *validator) noteKey(k string) bool {
	for i := 0; i < v.nkeys; i++ {
		if v.keys[i] == k {
			return v.fail(v.duplicate(k))
		}
	}
	if v.nkeys < len(v.keys) {
		v.keys[v.nkeys] = k
		v.nkeys++
		return true
	}
	if v.more == nil {
		v.more = make(map[string]struct{})
	}
	if _, dup := v.more[k]; dup {
		return v.fail(v.duplicate(k))
	}
	v.more[k] = struct{}{}
	return true
}

// noteRequired records a top-level key that is one of the endpoint's required fields. A
// required field counts as present whatever its value; its validator rejects a wrong one.
func (v *validator) noteRequired(k string) {
	for i, r := range v.spec.Required {
		if r == k {
			v.has |= 1 << i
			return
		}
	}
}

// topKey validates one top-level member with the validator of the endpoint's dialect.
func (v *validator) topKey(k string, val gjson.Result) bool {
	if k == "stream" && !v.params[k] {
		return true // not a param of this endpoint (embeddings, count_tokens): never makes the answer a stream
	}
	if v.spec.Dialect == wire.DialectMessages {
		return v.anthropicKey(k, val)
	}
	// The OpenAI dialects: the members they share first; then an optional parameter may be
	// null, meaning "use the default", but a required one (messages, prompt, input) may not.
	if handled, ok := v.common(k, val); handled {
		return ok
	}
	if val.Type == gjson.Null && !slices.Contains(v.spec.Required, k) {
		return true
	}
	switch v.spec.Dialect {
	case wire.DialectChat:
		return v.chatKey(k, val)
	case wire.DialectCompletion:
		return v.completionsKey(k, val)
	case wire.DialectEmbedding:
		return v.embeddingsKey(k, val)
	case wire.DialectImage:
		return v.imagesKey(k, val)
	case wire.DialectResponses:
		return v.responsesKey(k, val)
	}
	return true
}

// finish checks required fields, in the row's order, and cross-field rules once every member
// was seen.
func (v *validator) finish() bool {
	for i, r := range v.spec.Required {
		if v.has&(1<<i) == 0 {
			return v.fail(v.missing(r))
		}
	}
	if v.streamO.Exists() && v.streamO.Type != gjson.Null {
		if !v.info.Stream {
			return v.fail(v.custom(CodeInvalidValue, "stream_options", "The 'stream_options' parameter is only allowed when 'stream' is enabled."))
		}
		if !v.streamOptions(v.streamO) {
			return false
		}
	}
	return true
}

// common handles the members several endpoints share. ok is false when k is not one of them.
func (v *validator) common(k string, val gjson.Result) (handled, ok bool) {
	switch k {
	case "model":
		if val.Type != gjson.String {
			return true, v.fail(v.badType("model", "a string", val))
		}
		if val.Str == "" {
			return true, v.fail(v.emptyString("model"))
		}
		if !utf8.ValidString(val.Str) {
			// a name no route can hold, and one logs, headers and metric labels cannot carry
			return true, v.fail(v.custom(CodeInvalidValue, "model", "The model name is not valid UTF-8."))
		}
		v.info.Model = val.Str
		return true, true
	case "stream":
		b, ok := v.boolean(k, val)
		v.info.Stream = b
		return true, ok
	case "user":
		return true, v.str(k, val)
	}
	return false, true
}

// chatKey validates a member of a chat completions request, other than those topKey handles.
func (v *validator) chatKey(k string, val gjson.Result) bool {
	if handled, ok := v.sampling(k, val); handled {
		return ok
	}
	switch k {
	case "messages":
		return v.chatMessages(val)
	case fieldMaxTokens, fieldMaxCompletionTokens:
		return v.maxTokens(k, val, 1)
	case "logprobs", "parallel_tool_calls", "store":
		_, ok := v.boolean(k, val)
		return ok
	case "top_logprobs":
		_, ok := v.integer(k, val, 0, 20)
		return ok
	case "tools":
		return v.chatTools(val)
	case "functions":
		if !val.IsArray() {
			return v.fail(v.badType(k, "an array", val))
		}
		v.info.HasTools = v.info.HasTools || nonEmpty(val)
		return true
	case "tool_choice":
		return v.chatToolChoice(val)
	case "response_format":
		return v.responseFormat(val)
	case "metadata":
		return v.object(k, val)
	}
	return true
}

// completionsKey validates a member of a legacy completions request, other than those topKey
// handles.
func (v *validator) completionsKey(k string, val gjson.Result) bool {
	if handled, ok := v.sampling(k, val); handled {
		return ok
	}
	switch k { // alike in shape to chatKey's: what both read is in sampling, these differ
	case "prompt":
		return v.prompt(val)
	case fieldMaxTokens:
		// OpenAI allows 0 here: with echo it scores the prompt without generating.
		return v.maxTokens(k, val, 0)
	case "logprobs":
		_, ok := v.integer(k, val, 0, 5)
		return ok
	case "echo":
		_, ok := v.boolean(k, val)
		return ok
	case "best_of":
		n, ok := v.integer(k, val, 0, 20)
		v.info.BestOf = int(n)
		return ok
	case "suffix":
		return v.str(k, val)
	}
	return true
}

// sampling validates the non-null members chat and completions requests share: sampling
// parameters, n, stop, stream_options and logit_bias. handled is false when k is not one.
func (v *validator) sampling(k string, val gjson.Result) (handled, ok bool) {
	switch k {
	case "temperature":
		return true, v.temperature(val, 2)
	case "top_p":
		_, ok := v.number(k, val, 0, 1)
		return true, ok
	case "n":
		return true, v.choices(val, 128)
	case "presence_penalty", "frequency_penalty":
		_, ok := v.number(k, val, -2, 2)
		return true, ok
	case "seed":
		v.info.Seed = true
		_, ok := v.integer(k, val, math.MinInt64, math.MaxInt64)
		return true, ok
	case "stop":
		return true, v.stop(val)
	case "stream_options":
		v.streamO = val
		return true, true
	case "logit_bias":
		return true, v.logitBias(val)
	}
	return false, true
}

var encodingFormats = []string{"float", "base64"}

// embeddingsKey validates a member of an embeddings request, other than those topKey handles.
func (v *validator) embeddingsKey(k string, val gjson.Result) bool {
	switch k {
	case "input":
		return v.embeddingsInput(val)
	case "encoding_format":
		return v.enum(k, val, encodingFormats)
	case "dimensions":
		_, ok := v.integer(k, val, 1, maxInt32)
		return ok
	}
	return true
}

var imageResponseFormats = []string{"url", "b64_json"}

// imagesKey validates a member of an image generation request, other than those topKey handles.
func (v *validator) imagesKey(k string, val gjson.Result) bool {
	switch k {
	case "prompt":
		if val.Type != gjson.String {
			return v.fail(v.badType(k, "a string", val))
		}
		if val.Str == "" {
			return v.fail(v.emptyString(k))
		}
		return true
	case "n":
		return v.choices(val, 10)
	case "size", "quality", "style", "background", "output_format", "moderation":
		return v.str(k, val)
	case "response_format":
		return v.enum(k, val, imageResponseFormats)
	case "output_compression":
		_, ok := v.integer(k, val, 0, 100)
		return ok
	}
	return true
}

// temperature validates and records the sampling temperature.
func (v *validator) temperature(val gjson.Result, max float64) bool {
	t, ok := v.number("temperature", val, 0, max)
	if ok {
		v.info.Temperature = &t
	}
	return ok
}

// choices validates and records n.
func (v *validator) choices(val gjson.Result, max int64) bool {
	n, ok := v.integer("n", val, 1, max)
	if ok {
		v.info.N = int(n)
	}
	return ok
}

// maxTokens validates and records an output-length field. A chat request may carry both
// max_tokens and max_completion_tokens; the larger bounds the output (on a tie,
// max_completion_tokens is named).
func (v *validator) maxTokens(k string, val gjson.Result, min int64) bool {
	n, ok := v.integer(k, val, min, maxInt32)
	if !ok {
		return false
	}
	if v.info.MaxTokensField == "" || int(n) > v.info.MaxTokens || int(n) == v.info.MaxTokens && k == fieldMaxCompletionTokens {
		v.info.MaxTokens = int(n)
		v.info.MaxTokensField = k
	}
	return true
}

// number validates a number within [min, max].
func (v *validator) number(param string, val gjson.Result, min, max float64) (float64, bool) {
	if val.Type != gjson.Number {
		return 0, v.fail(v.badType(param, "a number", val))
	}
	if val.Num > max {
		return 0, v.fail(v.outOfRange(param, true, false, max, val.Raw))
	}
	if val.Num < min {
		return 0, v.fail(v.outOfRange(param, false, false, min, val.Raw))
	}
	return val.Num, true
}

// integer validates an integer literal within [min, max].
func (v *validator) integer(param string, val gjson.Result, min, max int64) (int64, bool) {
	if val.Type != gjson.Number || !wire.IsIntegerLiteral(val.Raw) {
		return 0, v.fail(v.badType(param, "an integer", val))
	}
	n, err := strconv.ParseInt(val.Raw, 10, 64)
	switch {
	case err != nil && val.Raw[0] == '-', err == nil && n < min:
		return 0, v.fail(v.outOfRange(param, false, true, float64(min), val.Raw))
	case err != nil, n > max:
		return 0, v.fail(v.outOfRange(param, true, true, float64(max), val.Raw))
	}
	return n, true
}

// boolean validates a boolean; null counts as false.
func (v *validator) boolean(param string, val gjson.Result) (bool, bool) {
	switch val.Type {
	case gjson.True:
		return true, true
	case gjson.False, gjson.Null:
		return false, true
	}
	return false, v.fail(v.badType(param, "a boolean", val))
}

// str validates an optional string (null allowed).
func (v *validator) str(param string, val gjson.Result) bool {
	if val.Type != gjson.String && val.Type != gjson.Null {
		return v.fail(v.badType(param, "a string", val))
	}
	return true
}

// object validates an object.
func (v *validator) object(param string, val gjson.Result) bool {
	if !val.IsObject() {
		return v.fail(v.badType(param, "an object", val))
	}
	return true
}

// optObject validates an optional object (null allowed).
func (v *validator) optObject(param string, val gjson.Result) bool {
	if val.Type == gjson.Null {
		return true
	}
	return v.object(param, val)
}

// required validates a string member an object must give (present).
func (v *validator) required(param string, present bool, val gjson.Result) bool {
	if !present {
		return v.fail(v.missing(param))
	}
	if val.Type != gjson.String {
		return v.fail(v.badType(param, "a string", val))
	}
	return true
}

// enum validates a string from a fixed set.
func (v *validator) enum(param string, val gjson.Result, allowed []string) bool {
	if val.Type != gjson.String {
		return v.fail(v.badType(param, "a string", val))
	}
	for _, a := range allowed {
		if val.Str == a {
			return true
		}
	}
	return v.fail(v.badEnum(param, val.Str, allowed))
}

// stop validates a stop sequence: a string or an array of up to 4 strings.
func (v *validator) stop(val gjson.Result) bool {
	if val.Type == gjson.String {
		return true
	}
	n, ok := v.stringArray("stop", "a string or an array of strings", val)
	if ok && n > 4 {
		return v.fail(v.arrayTooLong("stop", 4, n))
	}
	return ok
}

// streamOptions validates stream_options once stream is known to be true.
func (v *validator) streamOptions(val gjson.Result) bool {
	if !val.IsObject() {
		return v.fail(v.badType("stream_options", "an object", val))
	}
	u := val.Get("include_usage")
	if !u.Exists() {
		return true
	}
	b, ok := v.boolean("stream_options.include_usage", u)
	v.info.IncludeUsage = b
	return ok
}

// logitBias validates a map of token ids to biases in [-100, 100].
func (v *validator) logitBias(val gjson.Result) bool {
	if !val.IsObject() {
		return v.fail(v.badType("logit_bias", "an object", val))
	}
	jsonscan.ForEach(val, func(k, b gjson.Result) bool {
		if b.Type != gjson.Number {
			return v.fail(v.badType("logit_bias."+k.Str, "a number", b))
		}
		if b.Num > 100 || b.Num < -100 {
			return v.fail(v.outOfRange("logit_bias."+k.Str, b.Num > 100, false, math.Copysign(100, b.Num), b.Raw))
		}
		return true
	})
	return v.err == nil
}

// elements calls check on each element of arr with its index, up to the first that fails, and
// returns how many passed.
func (v *validator) elements(arr gjson.Result, check func(i int, x gjson.Result) bool) (n int, ok bool) {
	jsonscan.ForEach(arr, func(_, x gjson.Result) bool {
		if !check(n, x) {
			return false
		}
		n++
		return true
	})
	return n, v.err == nil
}

// objects validates an array of objects, each with check (param names the array; want words
// the error when val is not an array), and returns how many passed.
func (v *validator) objects(param, want string, val gjson.Result, check func(i int, obj gjson.Result) bool) (int, bool) {
	if !val.IsArray() {
		return 0, v.fail(v.badType(param, want, val))
	}
	return v.elements(val, func(i int, x gjson.Result) bool {
		if !x.IsObject() {
			return v.fail(v.badType(at(param, i, ""), "an object", x))
		}
		return check(i, x)
	})
}

// once records that an object gave the member bit, and fails when it gave it before: the
// gateway and the upstream's parser could read different copies. path names the member.
func (v *validator) once(seen *uint8, bit uint8, path func() string) bool {
	if *seen&bit != 0 {
		return v.fail(v.duplicate(path()))
	}
	*seen |= bit
	return true
}

// noteTools records whether a tools array that passed (ok) offers any (n).
func (v *validator) noteTools(n int, ok bool) bool {
	v.info.HasTools = v.info.HasTools || ok && n > 0
	return ok
}

// nonEmpty reports whether an array has at least one element.
func nonEmpty(arr gjson.Result) bool {
	found := false
	jsonscan.ForEach(arr, func(_, _ gjson.Result) bool {
		found = true
		return false
	})
	return found
}
