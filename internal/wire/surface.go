// Package wire holds what the gateway knows about the wire formats it speaks: the two client API
// surfaces (OpenAI and Anthropic), their error envelopes, request ids, and the endpoints a
// request can address. It knows nothing of Caddy; policy, cache, the simulator's tests and
// caddymodule share it.
package wire

import "strings"

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

// Endpoint is the operation a request addresses.
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
)

var endpointNames = [...]string{
	EndpointUnknown:             "unknown",
	EndpointBadVersion:          "bad_version",
	EndpointChatCompletions:     "chat_completions",
	EndpointCompletions:         "completions",
	EndpointEmbeddings:          "embeddings",
	EndpointImagesGenerations:   "images_generations",
	EndpointMessages:            "messages",
	EndpointMessagesCountTokens: "messages_count_tokens",
	EndpointModels:              "models",
	EndpointModel:               "model",
}

// String returns the endpoint's snake_case name, as used in logs and metrics.
func (e Endpoint) String() string {
	if int(e) < len(endpointNames) {
		return endpointNames[e]
	}
	return "unknown"
}

// Surface returns the API surface of the endpoint.
func (e Endpoint) Surface() Surface {
	if e == EndpointMessages || e == EndpointMessagesCountTokens {
		return Anthropic
	}
	return OpenAI
}

// HasBody reports whether requests to the endpoint carry a JSON body with a model.
func (e Endpoint) HasBody() bool {
	switch e {
	case EndpointChatCompletions, EndpointCompletions, EndpointEmbeddings,
		EndpointImagesGenerations, EndpointMessages, EndpointMessagesCountTokens:
		return true
	}
	return false
}

// Route classifies a request path. The model id of /v1/models/{id} is returned as modelID.
// A trailing slash is tolerated, as the SDKs never send one but proxies sometimes add it.
func Route(path string) (e Endpoint, modelID string) {
	rest, ok := strings.CutPrefix(path, "/v1/")
	if !ok {
		if path == "/v1" {
			return EndpointUnknown, ""
		}
		if isVersionPrefix(path) {
			return EndpointBadVersion, ""
		}
		return EndpointUnknown, ""
	}
	rest = strings.TrimSuffix(rest, "/")
	switch rest {
	case "chat/completions":
		return EndpointChatCompletions, ""
	case "completions":
		return EndpointCompletions, ""
	case "embeddings":
		return EndpointEmbeddings, ""
	case "images/generations":
		return EndpointImagesGenerations, ""
	case "messages":
		return EndpointMessages, ""
	case "messages/count_tokens":
		return EndpointMessagesCountTokens, ""
	case "models":
		return EndpointModels, ""
	}
	if id, ok := strings.CutPrefix(rest, "models/"); ok && id != "" {
		return EndpointModel, id
	}
	return EndpointUnknown, ""
}

// SurfaceOf returns the surface a path belongs to: Anthropic for /v1/messages and below, OpenAI
// for everything else.
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
