package policy

import "github.com/caddyai/gateway/internal/wire"

// The documented top-level params of each endpoint. Validation allows any param; these lists
// only decide which endpoints a configured default applies to.
var (
	knownChat = setOf("model", "messages", "stream", "stream_options", "user", "temperature", "top_p", "n",
		"max_tokens", "max_completion_tokens", "presence_penalty", "frequency_penalty", "logprobs",
		"top_logprobs", "parallel_tool_calls", "store", "seed", "stop", "tools", "functions",
		"tool_choice", "function_call", "response_format", "logit_bias", "metadata", "modalities",
		"audio", "prediction", "reasoning_effort", "service_tier", "verbosity", "web_search_options",
		"safety_identifier", "prompt_cache_key")
	knownCompletions = setOf("model", "prompt", "stream", "stream_options", "user", "temperature", "top_p",
		"n", "max_tokens", "presence_penalty", "frequency_penalty", "logprobs", "echo", "best_of",
		"suffix", "seed", "stop", "logit_bias")
	knownEmbeddings = setOf("model", "input", "user", "encoding_format", "dimensions")
	knownImages     = setOf("model", "prompt", "stream", "user", "n", "size", "quality", "style",
		"background", "output_format", "output_compression", "moderation", "response_format",
		"partial_images")
	knownMessages = setOf("model", "messages", "max_tokens", "stream", "system", "temperature", "top_p",
		"top_k", "stop_sequences", "tools", "tool_choice", "metadata", "thinking", "service_tier",
		"container", "mcp_servers", "context_management")
	knownCountTokens = setOf("model", "messages", "system", "tools", "tool_choice", "thinking",
		"mcp_servers", "context_management")
)

func setOf(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// knownParam reports whether param is a documented top-level param of endpoint e.
func knownParam(e wire.Endpoint, param string) bool {
	switch e {
	case wire.EndpointChatCompletions:
		return knownChat[param]
	case wire.EndpointCompletions:
		return knownCompletions[param]
	case wire.EndpointEmbeddings:
		return knownEmbeddings[param]
	case wire.EndpointImagesGenerations:
		return knownImages[param]
	case wire.EndpointMessages:
		return knownMessages[param]
	case wire.EndpointMessagesCountTokens:
		return knownCountTokens[param]
	}
	return false
}
