package simulator

import (
	"net/http"
	"strconv"
)

// errKind is what went wrong, independent of how a shape spells it.
type errKind uint8

const (
	errInvalid       errKind = iota // malformed or incomplete request (400)
	errNotFound                     // unknown path (404)
	errModelNotFound                // unknown model id (404)
	errMethod                       // wrong method (405)
	errGeneric                      // fault kind=error with a chosen status
	errOverloaded                   // fault kind=overloaded
	errLoading                      // fault kind=loading
	errContext                      // prompt + max_tokens over the window
	errMidstream                    // failure after a stream started
)

// status is the HTTP status of the kinds whose status does not depend on the shape.
func (k errKind) status() int {
	switch k {
	case errNotFound, errModelNotFound:
		return http.StatusNotFound
	case errMethod:
		return http.StatusMethodNotAllowed
	}
	return http.StatusBadRequest
}

// simError describes one error response before a shape renders it.
type simError struct {
	kind   errKind
	status int    // errGeneric only
	msg    string // errInvalid, errNotFound, errMethod
	param  string // OpenAI param, "" = null
	code   string // OpenAI code, "" = null
	model  string // errModelNotFound

	// errContext figures.
	window    int    // context window N
	prompt    int    // prompt tokens M
	maxTokens int    // requested output tokens K, 0 when not given
	field     string // "messages", "prompt" or "input"
}

// rendered is an error ready to be written.
type rendered struct {
	status      int
	contentType string
	body        []byte
}

const (
	ctJSON = "application/json"
	ctText = "text/plain; charset=utf-8"
)

// render spells e in the given shape.
func (e *simError) render(shape string) rendered {
	switch shape {
	case ShapeVLLM, ShapeVLLMFlat:
		return e.renderVLLM(shape == ShapeVLLMFlat)
	case ShapeTGI:
		return e.renderTGI()
	case ShapeLlamaCpp:
		return e.renderLlamaCpp()
	case ShapeOllama:
		return e.renderOllama()
	case ShapeText:
		return e.renderText()
	default:
		return e.renderOpenAI()
	}
}

func (e *simError) genericStatus() int {
	if e.status == 0 {
		return http.StatusInternalServerError
	}
	return e.status
}

func statusMessage(status int) string {
	if t := http.StatusText(status); t != "" {
		return t
	}
	return "Error " + strconv.Itoa(status)
}

// openAIEnvelope builds {"error":{"message","type","param","code"}}.
func openAIEnvelope(msg, typ, param, code string) []byte {
	b := make([]byte, 0, 96+len(msg))
	b = append(b, `{"error":{"message":`...)
	b = appendJSONString(b, msg)
	b = append(b, `,"type":`...)
	b = appendJSONString(b, typ)
	b = append(b, `,"param":`...)
	b = appendNullableString(b, param)
	b = append(b, `,"code":`...)
	b = appendNullableString(b, code)
	return append(b, "}}"...)
}

func openAIType(status int) (typ, code string) {
	switch {
	case status == http.StatusUnauthorized:
		return "invalid_request_error", "invalid_api_key"
	case status == http.StatusForbidden:
		return "permission_error", ""
	case status == http.StatusTooManyRequests:
		return "requests", "rate_limit_exceeded"
	case status >= 500:
		return "server_error", ""
	default:
		return "invalid_request_error", ""
	}
}

func (e *simError) openAIContextMessage() string {
	n, m, k := strconv.Itoa(e.window), strconv.Itoa(e.prompt), strconv.Itoa(e.maxTokens)
	in := "messages"
	if e.field != "" && e.field != "messages" {
		in = e.field
	}
	if e.maxTokens > 0 {
		return "This model's maximum context length is " + n + " tokens. However, you requested " +
			strconv.Itoa(e.prompt+e.maxTokens) + " tokens (" + m + " in the " + in + ", " + k +
			" in the completion). Please reduce the length of the " + in + " or completion."
	}
	return "This model's maximum context length is " + n + " tokens. However, your " + in +
		" resulted in " + m + " tokens. Please reduce the length of the " + in + "."
}

func (e *simError) renderOpenAI() rendered {
	var status int
	var msg, typ, param, code string
	switch e.kind {
	case errInvalid, errNotFound, errMethod:
		status = e.kind.status()
		msg, typ, param, code = e.msg, "invalid_request_error", e.param, e.code
	case errModelNotFound:
		status, typ, code = 404, "invalid_request_error", "model_not_found"
		msg = "The model `" + e.model + "` does not exist or you do not have access to it."
	case errGeneric:
		status = e.genericStatus()
		typ, code = openAIType(status)
		msg = statusMessage(status)
	case errOverloaded:
		status, typ = 503, "server_error"
		msg = "That model is currently overloaded with other requests. You can retry your request, or contact us through our help center at help.openai.com if the error persists."
	case errLoading:
		status, typ = 503, "server_error"
		msg = "The model is currently loading. Please try again later."
	case errContext:
		status, typ, code = 400, "invalid_request_error", "context_length_exceeded"
		param = e.field
		msg = e.openAIContextMessage()
	case errMidstream:
		status, typ = 500, "server_error"
		msg = "The server had an error while processing your request. Sorry about that!"
	}
	return rendered{status, ctJSON, openAIEnvelope(msg, typ, param, code)}
}

func vllmType(status int) string {
	switch status {
	case 400:
		return "BadRequestError"
	case 401:
		return "AuthenticationError"
	case 403:
		return "PermissionDeniedError"
	case 404:
		return "NotFoundError"
	case 405:
		return "MethodNotAllowedError"
	case 422:
		return "UnprocessableEntityError"
	case 429:
		return "RateLimitError"
	case 501:
		return "NotImplementedError"
	case 503:
		return "ServiceUnavailableError"
	}
	if status >= 500 {
		return "InternalServerError"
	}
	return "BadRequestError"
}

func (e *simError) renderVLLM(flat bool) rendered {
	var status int
	var msg, param string
	switch e.kind {
	case errInvalid, errMethod:
		status = e.kind.status()
		msg, param = e.msg, e.param
	case errNotFound:
		status, msg = 404, "Not Found"
	case errModelNotFound:
		status, msg = 404, "The model `"+e.model+"` does not exist."
	case errGeneric:
		status = e.genericStatus()
		msg = statusMessage(status)
	case errOverloaded:
		status, msg = 503, "The server is overloaded: too many requests are waiting. Please retry later."
	case errLoading:
		status, msg = 503, "The model is still loading. Please retry later."
	case errContext:
		status = 400
		n, m := strconv.Itoa(e.window), strconv.Itoa(e.prompt)
		if e.prompt >= e.window || e.maxTokens == 0 {
			msg = "This model's maximum context length is " + n + " tokens. However, your request has " + m +
				" input tokens. Please reduce the length of the input messages."
		} else {
			k := strconv.Itoa(e.maxTokens)
			msg = "'max_tokens' or 'max_completion_tokens' is too large: " + k +
				". This model's maximum context length is " + n + " tokens and your request has " + m +
				" input tokens (" + k + " > " + n + " - " + m + ")."
		}
	case errMidstream:
		status, msg = 500, "The engine failed while generating the response."
	}
	b := make([]byte, 0, 128+len(msg))
	if flat {
		b = append(b, `{"object":"error","message":`...)
	} else {
		b = append(b, `{"error":{"message":`...)
	}
	b = appendJSONString(b, msg)
	b = append(b, `,"type":`...)
	b = appendJSONString(b, vllmType(status))
	b = append(b, `,"param":`...)
	b = appendNullableString(b, param)
	b = append(b, `,"code":`...)
	b = appendInt(b, status)
	if flat {
		b = append(b, '}')
	} else {
		b = append(b, "}}"...)
	}
	return rendered{status, ctJSON, b}
}

func tgiErrorType(status int) string {
	switch status {
	case 424:
		return "generation"
	case 429:
		return "overloaded"
	case 503:
		return "unhealthy"
	}
	if status >= 500 {
		return "incomplete_generation"
	}
	return "validation"
}

func (e *simError) renderTGI() rendered {
	var status int
	var msg, typ string
	switch e.kind {
	case errInvalid, errMethod:
		status = e.kind.status()
		msg, typ = e.msg, tgiErrorType(status)
	case errNotFound:
		status, msg, typ = 404, "Not Found", "not_found"
	case errModelNotFound:
		status, typ = 404, "validation"
		msg = "Model `" + e.model + "` not found"
	case errGeneric:
		status = e.genericStatus()
		msg, typ = statusMessage(status), tgiErrorType(status)
	case errOverloaded:
		status, msg, typ = 429, "Model is overloaded", "overloaded"
	case errLoading:
		status, msg, typ = 503, "unhealthy", "healthcheck"
	case errContext:
		status, typ = 422, "validation"
		msg = "Input validation error: `inputs` tokens + `max_new_tokens` must be <= " + strconv.Itoa(e.window) +
			". Given: " + strconv.Itoa(e.prompt) + " `inputs` tokens and " + strconv.Itoa(e.maxTokens) + " `max_new_tokens`"
	case errMidstream:
		status, msg, typ = 500, "Request failed during generation: Server error: CUDA out of memory", "generation"
	}
	b := make([]byte, 0, 48+len(msg))
	b = append(b, `{"error":`...)
	b = appendJSONString(b, msg)
	b = append(b, `,"error_type":`...)
	b = appendJSONString(b, typ)
	return rendered{status, ctJSON, append(b, '}')}
}

func llamaCppType(status int) string {
	switch status {
	case 401:
		return "authentication_error"
	case 403:
		return "permission_error"
	case 404:
		return "not_found_error"
	case 501:
		return "not_supported_error"
	case 503:
		return "unavailable_error"
	}
	if status >= 500 {
		return "server_error"
	}
	return "invalid_request_error"
}

func (e *simError) renderLlamaCpp() rendered {
	var status int
	var msg string
	typ := ""
	switch e.kind {
	case errInvalid, errMethod:
		status = e.kind.status()
		msg = e.msg
	case errNotFound:
		status, msg = 404, "File Not Found"
	case errModelNotFound:
		status, msg = 404, "model not found"
	case errGeneric:
		status = e.genericStatus()
		msg = statusMessage(status)
	case errOverloaded:
		status, msg = 503, "Server is busy, please try again later."
	case errLoading:
		status, msg = 503, "Loading model"
	case errContext:
		status, msg, typ = 400, "the request exceeds the available context size, try increasing it", "exceed_context_size_error"
	case errMidstream:
		status, msg = 500, "failed to decode the batch"
	}
	if typ == "" {
		typ = llamaCppType(status)
	}
	b := make([]byte, 0, 96+len(msg))
	b = append(b, `{"error":{"code":`...)
	b = appendInt(b, status)
	b = append(b, `,"message":`...)
	b = appendJSONString(b, msg)
	b = append(b, `,"type":`...)
	b = appendJSONString(b, typ)
	if e.kind == errContext {
		b = append(b, `,"n_prompt_tokens":`...)
		b = appendInt(b, e.prompt)
		b = append(b, `,"n_ctx":`...)
		b = appendInt(b, e.window)
	}
	return rendered{status, ctJSON, append(b, "}}"...)}
}

func ollamaType(status int) string {
	switch status {
	case 400:
		return "invalid_request_error"
	case 404:
		return "not_found_error"
	}
	return "api_error"
}

func (e *simError) renderOllama() rendered {
	var status int
	var msg string
	switch e.kind {
	case errInvalid, errMethod:
		status = e.kind.status()
		msg = e.msg
	case errNotFound:
		status, msg = 404, "404 page not found"
	case errModelNotFound:
		status, msg = 404, "model \""+e.model+"\" not found, try pulling it first"
	case errGeneric:
		status = e.genericStatus()
		msg = statusMessage(status)
	case errOverloaded:
		status, msg = 503, "server busy, please try again.  maximum pending requests exceeded"
	case errLoading:
		status, msg = 503, "model is loading, please try again"
	case errContext:
		status, msg = 400, "the input length exceeds the context length"
	case errMidstream:
		status, msg = 500, "an error was encountered while running the model: unexpected EOF"
	}
	return rendered{status, ctJSON, openAIEnvelope(msg, ollamaType(status), "", "")}
}

func (e *simError) renderText() rendered {
	var status int
	var msg string
	switch e.kind {
	case errInvalid, errNotFound, errMethod:
		status = e.kind.status()
		msg = e.msg
	case errModelNotFound:
		status, msg = 404, "model "+e.model+" not found"
	case errGeneric:
		status = e.genericStatus()
		msg = statusMessage(status)
	case errOverloaded:
		status, msg = 503, "Service Unavailable: server overloaded"
	case errLoading:
		status, msg = 503, "Service Unavailable: model loading"
	case errContext:
		status = 400
		msg = "context length exceeded: " + strconv.Itoa(e.prompt) + " prompt tokens + " + strconv.Itoa(e.maxTokens) +
			" max tokens > " + strconv.Itoa(e.window)
	case errMidstream:
		status, msg = 500, "upstream failure during generation"
	}
	return rendered{status, ctText, []byte(msg + "\n")}
}

func anthropicType(status int) string {
	switch status {
	case 401:
		return "authentication_error"
	case 403:
		return "permission_error"
	case 404:
		return "not_found_error"
	case 413:
		return "request_too_large"
	case 429:
		return "rate_limit_error"
	case 529:
		return "overloaded_error"
	}
	if status >= 500 {
		return "api_error"
	}
	return "invalid_request_error"
}

// renderAnthropic spells e in Anthropic's envelope; /v1/messages always uses it.
func (e *simError) renderAnthropic(requestID string) rendered {
	var status int
	var msg string
	switch e.kind {
	case errInvalid, errMethod:
		status = e.kind.status()
		msg = e.msg
	case errNotFound:
		status, msg = 404, "Not found"
	case errModelNotFound:
		status, msg = 404, "model: "+e.model
	case errGeneric:
		status = e.genericStatus()
		msg = statusMessage(status)
	case errOverloaded, errMidstream:
		status, msg = 529, "Overloaded"
	case errLoading:
		status, msg = 503, "The model is loading. Please try again later."
	case errContext:
		status = 400
		if e.prompt > e.window || e.maxTokens == 0 {
			msg = "prompt is too long: " + strconv.Itoa(e.prompt) + " tokens > " + strconv.Itoa(e.window) + " maximum"
		} else {
			msg = "input length and `max_tokens` exceed context limit: " + strconv.Itoa(e.prompt) + " + " +
				strconv.Itoa(e.maxTokens) + " > " + strconv.Itoa(e.window) +
				", decrease input length or `max_tokens` and try again"
		}
	}
	return rendered{status, ctJSON, anthropicEnvelope(anthropicType(status), msg, requestID)}
}

func anthropicEnvelope(typ, msg, requestID string) []byte {
	b := make([]byte, 0, 96+len(msg))
	b = append(b, `{"type":"error","error":{"type":`...)
	b = appendJSONString(b, typ)
	b = append(b, `,"message":`...)
	b = appendJSONString(b, msg)
	b = append(b, `},"request_id":`...)
	b = appendJSONString(b, requestID)
	return append(b, '}')
}
