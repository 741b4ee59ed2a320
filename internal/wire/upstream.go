package wire

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tidwall/gjson"
)

// MaxUpstreamMessage is the longest upstream error text, in bytes, the gateway passes on.
const MaxUpstreamMessage = 512

// Retry delays the gateway suggests when an upstream is out of capacity.
const (
	// OverloadedRetryAfter is the Retry-After of model_overloaded and of upstream 429s that did
	// not say how long to wait.
	OverloadedRetryAfter = time.Second
	// LoadingRetryAfter is the Retry-After of model_loading.
	LoadingRetryAfter = 5 * time.Second
)

// Messages of the errors the gateway makes of upstream failures.
const (
	msgUpstreamAuth       = "upstream rejected the gateway's credential"
	msgOverloaded         = "The model is overloaded. Please retry after a short wait."
	msgLoading            = "The model is loading. Please retry after a short wait."
	msgStreamIncomplete   = "upstream stream ended before completion"
	msgContextLengthShort = "This model's maximum context length was exceeded. Please reduce the length of the messages."
)

// upstreamFields is what an upstream error body says, whatever its shape.
type upstreamFields struct {
	message   string
	typ       string // error.type / type (OpenAI, vLLM, llama.cpp, Anthropic)
	code      string // a string code
	param     string
	errorType string // TGI error_type
	numCode   int    // an integer code (vLLM, llama.cpp)
	nPrompt   int64  // llama.cpp n_prompt_tokens
	nCtx      int64  // llama.cpp n_ctx
	found     bool   // the body was a JSON object with an error field or message
}

// NormalizeUpstreamError turns an upstream's error response into the gateway's Error, to be
// rendered later in the client's surface. It understands the bodies of vLLM (nested and flat,
// integer codes), TGI ({"error":"text","error_type":...}), llama.cpp server, Ollama (/api and
// /v1), Anthropic- and OpenAI-shaped upstreams, plain text, HTML, SSE-framed and empty bodies.
//
// Context overflows become 400 context_length_exceeded (param messages), keeping the
// upstream's numbers; TGI validation errors (422) become 400; overload becomes 503
// model_overloaded and model loading 503 model_loading, with Retry-After; an upstream 429 stays
// 429 with a 1s Retry-After (the caller replaces it with the upstream's own Retry-After when
// there is one, see ParseRetryAfter); 401/403 become 502 because the client's own key was fine;
// other 4xx keep their status as invalid_request_error; other 5xx become 502 server_error.
// Messages are cut at MaxUpstreamMessage bytes of valid UTF-8 and codes are always strings.
// The result never aliases body.
func NormalizeUpstreamError(status int, contentType string, body []byte) *Error {
	f := parseUpstreamBody(contentType, body)
	return classifyUpstream(status, &f)
}

// NormalizeStreamError turns the JSON of an error event inside an upstream SSE stream into the
// gateway's Error: vLLM `{"error":{...,"code":400}}`, TGI `{"error":"text","error_type":...}`,
// llama.cpp `{"error":{"code":500,...}}` or its older bare `{"code":500,"message":...}`, Ollama
// and OpenAI `{"error":{...}}`, Anthropic `{"type":"error","error":{...}}`. The status is taken
// from the error's integer code or type (default 500, which renders as 502).
func NormalizeStreamError(data []byte) *Error {
	f := parseUpstreamJSON(bytes.TrimSpace(data))
	return classifyUpstream(statusOf(&f), &f)
}

// ParseRetryAfter reads a Retry-After header value: delay-seconds or an HTTP date (measured from
// now). ok is false for an empty or malformed value or one in the past.
func ParseRetryAfter(value string, now time.Time) (d time.Duration, ok bool) {
	value = strings.TrimSpace(value)
	if value == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(value, 10, 64); err == nil {
		if secs <= 0 || secs > int64(24*time.Hour/time.Second) {
			return 0, false
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(value)
	if err != nil {
		return 0, false
	}
	if d = t.Sub(now); d <= 0 {
		return 0, false
	}
	return d, true
}

// parseUpstreamBody extracts the fields of an error body of any shape.
func parseUpstreamBody(contentType string, body []byte) upstreamFields {
	b := bytes.TrimSpace(body)
	if len(b) == 0 {
		return upstreamFields{}
	}
	switch {
	case b[0] == '{':
		if f := parseUpstreamJSON(b); f.found {
			return f
		}
		return upstreamFields{}
	case b[0] == '<' || strings.Contains(strings.ToLower(contentType), "html"):
		// An HTML error page from a proxy: nothing in it is worth showing.
		return upstreamFields{}
	case hasSSEPrefix(b):
		if data := firstSSEData(b); len(data) > 0 {
			if f := parseUpstreamJSON(data); f.found {
				return f
			}
		}
		return upstreamFields{}
	}
	if !utf8.Valid(b) && !isMostlyText(b) {
		return upstreamFields{}
	}
	return upstreamFields{message: cleanMessage(string(b)), found: true}
}

func hasSSEPrefix(b []byte) bool {
	return bytes.HasPrefix(b, []byte("data:")) || bytes.HasPrefix(b, []byte("event:")) || bytes.HasPrefix(b, []byte("error:"))
}

// firstSSEData returns the value of the first data: (or llama.cpp error:) line of an SSE body.
func firstSSEData(b []byte) []byte {
	for len(b) > 0 {
		line := b
		if i := bytes.IndexAny(b, "\r\n"); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		for _, p := range [...]string{"data:", "error:"} {
			if v, ok := bytes.CutPrefix(line, []byte(p)); ok {
				return bytes.TrimSpace(v)
			}
		}
	}
	return nil
}

// isMostlyText reports whether invalid UTF-8 is still mostly printable ASCII (a Latin-1 page).
func isMostlyText(b []byte) bool {
	printable := 0
	for _, c := range b {
		if c >= 0x20 && c < 0x7f || c == '\n' || c == '\r' || c == '\t' {
			printable++
		}
	}
	return printable*10 >= len(b)*9
}

// parseUpstreamJSON reads an error object. Strings are copied: nothing aliases js.
func parseUpstreamJSON(js []byte) upstreamFields {
	var f upstreamFields
	root := gjson.Parse(view(js))
	if !root.IsObject() {
		return f
	}
	var inner gjson.Result
	root.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "error":
			switch v.Type {
			case gjson.String:
				f.message, f.found = v.Str, true
			case gjson.JSON:
				if v.IsObject() {
					inner = v
				}
			}
		case "error_type":
			if v.Type == gjson.String {
				f.errorType = v.Str
			}
		case "detail":
			// FastAPI's default error bodies: {"detail":"Not Found"} or a validation list.
			if f.message == "" {
				if v.Type == gjson.String {
					f.message, f.found = v.Str, true
				} else if m := v.Get("0.msg"); m.Type == gjson.String {
					f.message, f.found = m.Str, true
				}
			}
		default:
			f.field(k.Str, v)
		}
		return true
	})
	if inner.Exists() {
		// The nested object is the error; the top-level type of Anthropic's envelope is just "error".
		f.typ, f.code, f.numCode = "", "", 0
		inner.ForEach(func(k, v gjson.Result) bool {
			f.field(k.Str, v)
			return true
		})
		f.found = true
	}
	if f.message != "" {
		f.found = true
	}
	f.message = strings.Clone(f.message)
	f.typ = strings.Clone(f.typ)
	f.code = strings.Clone(f.code)
	f.param = strings.Clone(f.param)
	f.errorType = strings.Clone(f.errorType)
	return f
}

// field reads one key of an error object.
func (f *upstreamFields) field(key string, v gjson.Result) {
	switch key {
	case "message":
		if v.Type == gjson.String {
			f.message = v.Str
		}
	case "type":
		if v.Type == gjson.String {
			f.typ = v.Str
		}
	case "code":
		switch v.Type {
		case gjson.String:
			if n, err := strconv.Atoi(v.Str); err == nil {
				f.numCode = n
			} else {
				f.code = v.Str
			}
		case gjson.Number:
			f.numCode = int(v.Int())
		}
	case "param":
		if v.Type == gjson.String {
			f.param = v.Str
		}
	case "n_prompt_tokens":
		f.nPrompt = count(v)
	case "n_ctx":
		f.nCtx = count(v)
	}
}

// statusOf guesses the HTTP status of an error event that came inside a stream.
func statusOf(f *upstreamFields) int {
	if f.numCode >= 400 && f.numCode <= 599 {
		return f.numCode
	}
	switch f.typ {
	case "invalid_request_error", "exceed_context_size_error", "BadRequestError":
		return http.StatusBadRequest
	case "authentication_error":
		return http.StatusUnauthorized
	case "permission_error":
		return http.StatusForbidden
	case "not_found_error", "NotFoundError":
		return http.StatusNotFound
	case "request_too_large":
		return http.StatusRequestEntityTooLarge
	case "rate_limit_error":
		return http.StatusTooManyRequests
	case "overloaded_error":
		return 529
	case "unavailable_error":
		return http.StatusServiceUnavailable
	}
	switch f.errorType {
	case "validation":
		return http.StatusUnprocessableEntity
	case "overloaded":
		return http.StatusTooManyRequests
	}
	return http.StatusInternalServerError
}

// classifyUpstream applies the normalising rules to what the upstream said.
func classifyUpstream(status int, f *upstreamFields) *Error {
	msg := cleanMessage(f.message)
	lower := strings.ToLower(msg)
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return &Error{Status: http.StatusBadGateway, Type: TypeServer, Message: msgUpstreamAuth, Reason: "upstream_auth"}
	case isContextOverflow(status, f, lower):
		if f.nCtx > 0 && f.nPrompt > 0 {
			msg = fmt.Sprintf("This model's maximum context length is %d tokens. However, your messages resulted in %d tokens. Please reduce the length of the messages.", f.nCtx, f.nPrompt)
		} else if msg == "" {
			msg = msgContextLengthShort
		}
		return &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Code: "context_length_exceeded", Param: "messages",
			Message: msg, Reason: "upstream_context_length"}
	case isLoading(status, f, lower):
		return &Error{Status: http.StatusServiceUnavailable, Type: TypeServer, Code: "model_loading", Message: msgLoading,
			RetryAfter: LoadingRetryAfter, Reason: "upstream_loading"}
	case isOverloaded(status, f, lower):
		return &Error{Status: http.StatusServiceUnavailable, Type: TypeServer, Code: "model_overloaded", Message: msgOverloaded,
			RetryAfter: OverloadedRetryAfter, Reason: "upstream_overloaded"}
	case status == http.StatusTooManyRequests:
		code := codeWord(f.code)
		if code == "" {
			code = "rate_limit_exceeded"
		}
		typ := TypeRequests
		if f.typ == TypeTokens || f.typ == TypeInsufficientQuota {
			typ = f.typ
		}
		if msg == "" {
			msg = "The upstream server is rate limiting requests. Please retry after a short wait."
		}
		return &Error{Status: http.StatusTooManyRequests, Type: typ, Code: code, Message: msg,
			RetryAfter: OverloadedRetryAfter, Reason: "upstream_rate_limited"}
	case status == http.StatusUnprocessableEntity && (f.errorType == "validation" || strings.HasPrefix(lower, "input validation error")):
		return &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Code: codeWord(f.code), Param: paramWord(f.param),
			Message: orDefault(msg, status), Reason: "upstream_bad_request"}
	case status >= 400 && status < 500 && f.errorType != "generation" && f.errorType != "incomplete_generation":
		e := &Error{Status: status, Type: TypeInvalidRequest, Code: codeWord(f.code), Param: paramWord(f.param),
			Message: orDefault(msg, status), Reason: "upstream_bad_request"}
		if f.typ == TypePermission || f.typ == TypeTokens || f.typ == TypeRequests || f.typ == TypeInsufficientQuota {
			e.Type = f.typ
		}
		if status == http.StatusNotFound {
			e.Reason = "upstream_not_found"
			if e.Code == "" && strings.Contains(lower, "model") {
				e.Code = "model_not_found"
				if e.Param == "" {
					e.Param = "model"
				}
			}
		}
		return e
	}
	// Other 5xx, TGI generation failures (424), and statuses that are no error at all.
	st := status
	if st < 400 || st > 599 {
		st = http.StatusBadGateway
	}
	return &Error{Status: http.StatusBadGateway, Type: TypeServer, Code: codeWord(f.code), Message: orDefault(msg, st), Reason: "upstream_error"}
}

// isContextOverflow recognises the context-length errors of vLLM, TGI, llama.cpp, Ollama and OpenAI.
func isContextOverflow(status int, f *upstreamFields, lower string) bool {
	if f.typ == "exceed_context_size_error" || f.code == "context_length_exceeded" {
		return true
	}
	if status != http.StatusBadRequest && status != http.StatusRequestEntityTooLarge && status != http.StatusUnprocessableEntity {
		return false
	}
	switch {
	case strings.Contains(lower, "maximum context length"), // vLLM, OpenAI
		strings.Contains(lower, "exceeds the available context size"),                       // llama.cpp
		strings.Contains(lower, "longer than the maximum model length"),                     // vLLM prompt check
		strings.Contains(lower, "context length exceeded"),                                  // generic
		strings.Contains(lower, "exceed context limit"),                                     // Anthropic: input + max_tokens
		strings.HasPrefix(lower, "prompt is too long"),                                      // Anthropic: input alone
		strings.Contains(lower, "input length exceeds the context length"),                  // Ollama
		strings.Contains(lower, "tokens") && strings.Contains(lower, "must be <="),          // TGI
		strings.Contains(lower, "must have less than") && strings.Contains(lower, "tokens"): // TGI
		return true
	}
	return false
}

// isLoading recognises a model that is still loading (llama.cpp "Loading model", start-up 503s).
func isLoading(status int, f *upstreamFields, lower string) bool {
	if status != http.StatusServiceUnavailable {
		return false
	}
	for _, w := range [...]string{"loading", "starting", "start-up", "startup", "not ready", "initializ", "warming up"} {
		if strings.Contains(lower, w) {
			return true
		}
	}
	return false
}

// isOverloaded recognises an upstream out of capacity: TGI 429 "Model is overloaded",
// Anthropic overloaded_error / 529, and any other 503.
func isOverloaded(status int, f *upstreamFields, lower string) bool {
	switch {
	case status == http.StatusServiceUnavailable || status == 529:
		return true
	case f.typ == "overloaded_error" || f.errorType == "overloaded":
		return true
	case status == http.StatusTooManyRequests && strings.Contains(lower, "overloaded"):
		return true
	}
	return false
}

// cleanMessage trims s, makes it valid UTF-8 and cuts it on a rune boundary so that, with the
// ellipsis that marks the cut, it fits in MaxUpstreamMessage bytes.
func cleanMessage(s string) string {
	s = strings.TrimSpace(s)
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if len(s) > MaxUpstreamMessage {
		cut := MaxUpstreamMessage - len("…")
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = strings.TrimSpace(s[:cut]) + "…"
	}
	return s
}

// orDefault returns msg, or a generic message for the status when the upstream gave none.
func orDefault(msg string, status int) string {
	if msg != "" {
		return msg
	}
	if status >= 500 {
		return fmt.Sprintf("The upstream server failed with HTTP %d.", status)
	}
	return fmt.Sprintf("The upstream server rejected the request with HTTP %d.", status)
}

// codeWord keeps a string code that looks like one (letters, digits, _ . -, up to 64 bytes).
func codeWord(s string) string {
	if s == "" || len(s) > 64 {
		return ""
	}
	digits := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_', c == '.', c == '-':
			digits = false
		default:
			return ""
		}
	}
	if digits {
		return "" // an HTTP status as code says nothing the status does not
	}
	return s
}

// paramWord keeps a param name of printable ASCII up to 128 bytes.
func paramWord(s string) string {
	if len(s) > 128 {
		return ""
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return ""
		}
	}
	return s
}

// StreamIncomplete is the error a stream gets when the upstream stopped before its end
// ([DONE] or message_stop) without saying why.
func StreamIncomplete() *Error {
	return &Error{Status: http.StatusBadGateway, Type: TypeServer, Code: "stream_incomplete", Message: msgStreamIncomplete}
}
