package wire

// (These imports are upstream.go's too: both files word and time errors; nothing to share.)
import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tidwall/gjson"
)

// Error is every refusal the gateway makes, whatever stage makes it. A surface renders it into
// its own envelope (AppendOpenAI, AppendAnthropic, Write); no stage writes a response itself.
type Error struct {
	// Status is the HTTP status code.
	Status int
	// Type is the OpenAI error type (invalid_request_error, permission_error, requests, ...).
	Type string
	// Code is the OpenAI error code; empty renders as null.
	Code string
	// Param names the offending request field (e.g. "messages[2].role"); empty renders as null.
	Param string
	// Message is the text a person reads. It never contains a secret or prompt text.
	Message string
	// RetryAfter, when positive, is sent as Retry-After (whole seconds, at least 1) and
	// retry-after-ms.
	RetryAfter time.Duration
	// NoRetry sends x-should-retry: false, telling SDKs not to retry (long waits, quotas).
	NoRetry bool
	// Reason is a short low-cardinality word for logs and metrics (e.g. "invalid_api_key").
	// Empty means Code, or Type when Code is empty.
	Reason string
}

// Error implements error.
func (e *Error) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Status, e.ReasonOrCode(), e.Message)
}

// ReasonOrCode returns the word logs and metrics use for this error.
func (e *Error) ReasonOrCode() string {
	switch {
	case e.Reason != "":
		return e.Reason
	case e.Code != "":
		return e.Code
	}
	return e.Type
}

// The OpenAI error types the gateway uses.
const (
	TypeInvalidRequest    = "invalid_request_error"
	TypePermission        = "permission_error"
	TypeRequests          = "requests"
	TypeTokens            = "tokens"
	TypeInsufficientQuota = "insufficient_quota"
	TypeServer            = "server_error"
)

// Errorf returns an invalid_request_error with the given status, code and param.
func Errorf(status int, code, param, format string, args ...any) *Error {
	return &Error{Status: status, Type: TypeInvalidRequest, Code: code, Param: param, Message: fmt.Sprintf(format, args...)}
}

// InvalidRequest is a 400 invalid_request_error naming the offending param.
func InvalidRequest(param, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Param: param, Message: fmt.Sprintf(format, args...), Reason: "invalid_request"}
}

// InvalidCode is InvalidRequest with an error code.
func InvalidCode(code, param, format string, args ...any) *Error {
	e := InvalidRequest(param, format, args...)
	e.Code = code
	return e
}

// MissingParam is the 400 missing_required_parameter for param, in OpenAI's wording.
func MissingParam(param string) *Error {
	return InvalidCode("missing_required_parameter", param, "Missing required parameter: '%s'.", param)
}

// BadType is the 400 invalid_type for param, which should be want ("a string"), in OpenAI's
// wording.
func BadType(param, want string, got gjson.Result) *Error {
	return InvalidCode("invalid_type", param, "Invalid type for '%s': expected %s, but got %s instead.", param, want, Describe(got))
}

// InvalidAPIKey is the 401 for a missing, unknown, disabled or expired key.
func InvalidAPIKey(message string) *Error {
	return &Error{Status: http.StatusUnauthorized, Type: TypeInvalidRequest, Code: "invalid_api_key", Message: message}
}

// maxEchoedName bounds how much of a client-supplied name an error message repeats.
const maxEchoedName = 256

// echoName shortens a client-supplied name for an error message (valid UTF-8, "…" when cut).
func echoName(s string) string { return Shorten(s, maxEchoedName) }

// Shorten bounds a client-sent string that an error message repeats: at most max bytes, valid
// UTF-8, "…" when cut.
func Shorten(s string, max int) string {
	if len(s) <= max {
		return s
	}
	return strings.ToValidUTF8(s[:max], "") + "…"
}

// ModelNotFound is the 404 for a model the gateway does not serve.
func ModelNotFound(model string) *Error {
	model = echoName(model)
	return &Error{Status: http.StatusNotFound, Type: TypeInvalidRequest, Code: "model_not_found", Param: "model",
		Message: fmt.Sprintf("The model `%s` does not exist or you do not have access to it.", model)}
}

// ModelNotAllowed is the 403 for a model the caller's key may not use.
func ModelNotAllowed(model string) *Error {
	model = echoName(model)
	return &Error{Status: http.StatusForbidden, Type: TypePermission, Code: "model_not_allowed", Param: "model",
		Message: fmt.Sprintf("This API key is not allowed to use the model `%s`.", model)}
}

// RequestTooLarge is the 413 for a body over the byte limit.
func RequestTooLarge(limit int64) *Error {
	return &Error{Status: http.StatusRequestEntityTooLarge, Type: TypeInvalidRequest, Code: "request_too_large",
		Message: fmt.Sprintf("The request body exceeds the limit of %d bytes.", limit)}
}

// InvalidURL is OpenAI's 404 for a path it does not serve.
func InvalidURL(method, path string) *Error {
	return &Error{Status: http.StatusNotFound, Type: TypeInvalidRequest, Message: fmt.Sprintf("Invalid URL (%s %s)", method, path), Reason: "invalid_url"}
}

// MethodNotAllowed is the 405 for a known path with the wrong method.
func MethodNotAllowed(method, path string) *Error {
	return &Error{Status: http.StatusMethodNotAllowed, Type: TypeInvalidRequest, Message: fmt.Sprintf("Method %s is not allowed for %s.", method, path), Reason: "method_not_allowed"}
}

// Redact replaces every occurrence of each secret in msg with "[redacted]" (an upstream that
// quotes the credential it was sent must not hand it to clients). Secrets shorter than 4 bytes
// are left alone: they would match ordinary words.
func Redact(msg string, secrets ...string) string {
	for _, s := range secrets {
		if len(s) >= 4 && strings.Contains(msg, s) {
			msg = strings.ReplaceAll(msg, s, "[redacted]")
		}
	}
	return msg
}

// ModelOverloaded is the 503 model_overloaded (529 overloaded_error on the Anthropic surface)
// of a model whose admission queue refused the request; reason says why (queue_full,
// queue_timeout).
func ModelOverloaded(model, reason string, retryAfter time.Duration) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Type: TypeServer, Code: "model_overloaded", Reason: reason, RetryAfter: retryAfter,
		Message: "The model `" + echoName(model) + "` is overloaded right now. Please try again shortly."}
}

// ClientClosed records a request whose client went away before it could be answered (nginx's
// 499); nobody reads its body.
func ClientClosed() *Error {
	return &Error{Status: 499, Type: TypeInvalidRequest, Message: "The client closed the request.", Reason: "client_closed"}
}

// Internal is the 500 for a fault of the gateway itself. The cause is logged, never sent.
func Internal() *Error {
	return &Error{Status: http.StatusInternalServerError, Type: TypeServer, Message: "The gateway had an internal error while processing your request.", Reason: "internal"}
}

// anthropicType maps an error to Anthropic's error type and the status Anthropic uses for it.
func anthropicType(e *Error) (string, int) {
	switch e.Status {
	case http.StatusUnauthorized:
		return "authentication_error", e.Status
	case http.StatusForbidden:
		return "permission_error", e.Status
	case http.StatusNotFound:
		return "not_found_error", e.Status
	case http.StatusRequestEntityTooLarge:
		return "request_too_large", e.Status
	case http.StatusTooManyRequests:
		return "rate_limit_error", e.Status
	case http.StatusServiceUnavailable, 529:
		return "overloaded_error", 529
	}
	if e.Status >= 500 {
		return "api_error", e.Status
	}
	return "invalid_request_error", e.Status
}

// StatusFor returns the status the error is sent with on a surface (Anthropic answers overload
// with 529).
func (e *Error) StatusFor(s Surface) int {
	if s == Anthropic {
		_, st := anthropicType(e)
		return st
	}
	return e.Status
}

// AppendOpenAI appends the OpenAI envelope:
// {"error":{"message":...,"type":...,"param":...,"code":...}}.
func AppendOpenAI(dst []byte, e *Error) []byte {
	dst = append(dst, `{"error":`...)
	dst = appendOpenAIInner(dst, e)
	return append(dst, '}')
}

func appendOpenAIInner(dst []byte, e *Error) []byte {
	dst = append(dst, `{"message":`...)
	dst = AppendString(dst, e.Message)
	dst = append(dst, `,"type":`...)
	dst = AppendString(dst, e.Type)
	dst = append(dst, `,"param":`...)
	dst = appendStringOrNull(dst, e.Param)
	dst = append(dst, `,"code":`...)
	dst = appendStringOrNull(dst, e.Code)
	if secs := e.retryAfterSeconds(); secs > 0 {
		// the Retry-After header's value, for clients that read the body only
		dst = append(dst, `,"retry_after":`...)
		dst = strconv.AppendInt(dst, secs, 10)
	}
	return append(dst, '}')
}

// retryAfterSeconds is RetryAfter in whole seconds, rounded up and at least 1; 0 when unset.
func (e *Error) retryAfterSeconds() int64 {
	if e.RetryAfter <= 0 {
		return 0
	}
	return max(int64((e.RetryAfter+time.Second-1)/time.Second), 1)
}

// AppendAnthropic appends the Anthropic envelope:
// {"type":"error","error":{"type":...,"message":...},"request_id":...}.
func AppendAnthropic(dst []byte, e *Error, requestID string) []byte {
	typ, _ := anthropicType(e)
	dst = append(dst, `{"type":"error","error":{"type":`...)
	dst = AppendString(dst, typ)
	dst = append(dst, `,"message":`...)
	dst = AppendString(dst, e.Message)
	dst = append(dst, '}')
	if requestID != "" {
		dst = append(dst, `,"request_id":`...)
		dst = AppendString(dst, requestID)
	}
	return append(dst, '}')
}

// AppendStreamError appends the frame that reports an error inside an SSE stream: OpenAI
// `data: {"error":{...}}` and Anthropic `event: error` + `data: {"type":"error",...}`.
func AppendStreamError(dst []byte, s Surface, e *Error, requestID string) []byte {
	if s == Anthropic {
		dst = append(dst, "event: error\ndata: "...)
		dst = AppendAnthropic(dst, e, requestID)
		return append(dst, "\n\n"...)
	}
	dst = append(dst, "data: "...)
	dst = AppendOpenAI(dst, e)
	return append(dst, "\n\n"...)
}

// SetRetryHeaders sets Retry-After, retry-after-ms and x-should-retry as the error asks.
func SetRetryHeaders(h http.Header, e *Error) {
	if secs := e.retryAfterSeconds(); secs > 0 {
		h["Retry-After"] = []string{strconv.FormatInt(secs, 10)}
		ms := int64((e.RetryAfter + time.Millisecond - 1) / time.Millisecond)
		h["Retry-After-Ms"] = []string{strconv.FormatInt(ms, 10)}
	}
	if e.NoRetry {
		h["X-Should-Retry"] = []string{"false"}
	}
}

// Write sends the error as the complete response in the surface's envelope.
func Write(w http.ResponseWriter, s Surface, e *Error, requestID string) error {
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	h.Del("Content-Length")
	SetRetryHeaders(h, e)
	buf := make([]byte, 0, 256)
	if s == Anthropic {
		buf = AppendAnthropic(buf, e, requestID)
	} else {
		buf = AppendOpenAI(buf, e)
	}
	h["Content-Length"] = []string{strconv.Itoa(len(buf))}
	w.WriteHeader(e.StatusFor(s))
	_, err := w.Write(buf)
	return err
}

func appendStringOrNull(dst []byte, s string) []byte {
	if s == "" {
		return append(dst, "null"...)
	}
	return AppendString(dst, s)
}

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string. Invalid UTF-8 is replaced with U+FFFD, as
// encoding/json does; <, > and & are left as they are.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < 0x80 {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
