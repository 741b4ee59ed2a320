// Package wire holds what the gateway knows about the wire formats it speaks: the two client API
// surfaces (OpenAI and Anthropic), their error envelopes, request ids, and the endpoints a
// request can address. It knows nothing of Caddy; policy, cache, the simulator's tests and
// caddymodule share it.
package wire

// Surface is the API family a request came in on. Every response the gateway makes itself uses the
// envelope of the request's surface.
type Surface uint8

const (
	// OpenAI is the OpenAI-compatible surface (/v1/chat/completions, /v1/embeddings, ...).
	OpenAI Surface = iota
	// Anthropic is the Anthropic Messages surface (/v1/messages...).
	Anthropic
)

// String returns "openai" or "anthropic".
func (s Surface) String() string {
	if s == Anthropic {
		return "anthropic"
	}
	return "openai"
}
