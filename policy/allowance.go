package policy

import (
	"fmt"
	"net/http"

	"github.com/caddyai/gateway/internal/wire"
)

// DefaultOutputAllowance is the output reserved for a request that sets no max_tokens when
// neither the gateway nor the model says more.
const DefaultOutputAllowance = 1024

// OutputAllowance is how many output tokens a request may produce, for its token reservation:
// the request's own max_tokens when it sets one; else the gateway's default_max_tokens, else
// the model's max_output_tokens, else DefaultOutputAllowance, clamped to the context window
// (0: unknown) since nothing longer can be generated.
func OutputAllowance(requested, gatewayDefault, modelMax, window int) int {
	if requested > 0 {
		return requested
	}
	out := gatewayDefault
	if out <= 0 {
		out = modelMax
	}
	if out <= 0 {
		out = DefaultOutputAllowance
	}
	if window > 0 {
		out = min(out, window)
	}
	return out
}

// Generations is how many output sequences the request makes the server generate: its choices
// (n, or best_of when larger, since the server generates best_of and returns n) for each of its
// prompts.
func (i *RequestInfo) Generations() int {
	return max(i.N, i.BestOf, 1) * max(i.Prompts, 1)
}

// ReservedOutput is the output a request's token reservation holds: OutputAllowance for each
// sequence it makes the server generate, on an endpoint with an output length; 0 on the others
// (embeddings, images), whose usage is their prompt.
func ReservedOutput(e wire.Endpoint, i *RequestInfo, gatewayDefault, modelMax, window int) int {
	if !e.Spec().MaxTokens {
		return 0
	}
	return OutputAllowance(i.MaxTokens, gatewayDefault, modelMax, window) * i.Generations()
}

// ContextLengthExceeded is the refusal of a request whose prompt of prompt tokens plus the
// requested output (maxTokens, 0 when not set) does not fit a window of window tokens: 413
// context_length_exceeded (400 when status is 400, OpenAI's own choice), naming the endpoint's
// ContextParam, worded as OpenAI words it. atLeast says prompt is where counting stopped once
// the answer was known, not the whole count.
func ContextLengthExceeded(e wire.Endpoint, window, prompt, maxTokens, status int, atLeast bool) *wire.Error {
	least := ""
	if atLeast {
		least = "at least "
	}
	msg := fmt.Sprintf("This model's maximum context length is %d tokens. However, your messages resulted in %s%d tokens. Please reduce the length of the messages.", window, least, prompt)
	if maxTokens > 0 {
		msg = fmt.Sprintf("This model's maximum context length is %d tokens. However, you requested %s%d tokens (%s%d in the messages, %d in the completion). Please reduce the length of the messages or completion.",
			window, least, prompt+maxTokens, least, prompt, maxTokens)
	}
	if status != http.StatusBadRequest {
		status = http.StatusRequestEntityTooLarge
	}
	return &wire.Error{Status: status, Type: wire.TypeInvalidRequest, Code: "context_length_exceeded", Param: e.Spec().ContextParam, Message: msg}
}

// FitRoom is how many output tokens a request may be lowered to so that it fits its window
// (fit_max_tokens): window - prompt, when the request set max_tokens, its endpoint has one, and
// at least atLeast (> 0) tokens remain. ok is false when the request cannot be fitted.
func FitRoom(e wire.Endpoint, window, prompt, maxTokens, atLeast int) (room int, ok bool) {
	room = window - prompt
	if atLeast <= 0 || maxTokens <= 0 || !e.Spec().MaxTokens || room < atLeast {
		return 0, false
	}
	return room, true
}
