package wire

import (
	"net/http"
	"time"
)

// ModelLoading is the 503 model_loading (529 overloaded_error on the Anthropic surface) of a
// model whose every reachable upstream is still loading its weights, answered by the gateway
// without trying them.
func ModelLoading(model string, retryAfter time.Duration) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Type: TypeServer, Code: "model_loading", Reason: "model_loading", RetryAfter: retryAfter,
		Message: "The model `" + echoName(model) + "` is loading. Please retry after a short wait."}
}

// ModelUnavailable is the 503 model_unavailable (529 on the Anthropic surface) of a model none of
// whose upstreams passes its health check.
func ModelUnavailable(model string, retryAfter time.Duration) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Type: TypeServer, Code: "model_unavailable", Reason: "model_unavailable", RetryAfter: retryAfter,
		Message: "No model server for `" + echoName(model) + "` is reachable right now. Please try again shortly."}
}
