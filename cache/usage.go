package cache

import (
	"unsafe"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
)

// MarkCached rewrites the usage of a cached JSON response served as a hit so it says every
// prompt token came from a cache: on the OpenAI surface (chat completions and completions)
// usage.prompt_tokens_details.cached_tokens is set to usage.prompt_tokens; on the Anthropic
// surface cache_read_input_tokens becomes the whole prompt (input + cache read + cache
// creation) and input_tokens and cache_creation_input_tokens become 0, which leaves the prompt
// total unchanged. Embeddings (whose usage has no such field), bodies without a usage object and
// bodies that do not parse are returned unchanged. body itself is never modified.
func MarkCached(e wire.Endpoint, s wire.Surface, body []byte) []byte {
	js := unsafe.String(unsafe.SliceData(body), len(body))
	usage := gjson.Get(js, "usage")
	if !usage.IsObject() {
		return body
	}
	d := e.Spec().Dialect
	if s == wire.Anthropic || d == wire.DialectMessages {
		in, read, create := usage.Get("input_tokens"), usage.Get("cache_read_input_tokens"), usage.Get("cache_creation_input_tokens")
		if in.Type != gjson.Number && read.Type != gjson.Number {
			return body
		}
		total := max(in.Int(), 0) + max(read.Int(), 0) + max(create.Int(), 0)
		out, err := sjson.SetBytes(body, "usage.cache_read_input_tokens", total)
		if err != nil {
			return body
		}
		if out, err = sjson.SetBytes(out, "usage.input_tokens", 0); err != nil {
			return body
		}
		if create.Exists() {
			if out, err = sjson.SetBytes(out, "usage.cache_creation_input_tokens", 0); err != nil {
				return body
			}
		}
		return out
	}
	if d == wire.DialectResponses {
		in := usage.Get("input_tokens")
		if in.Type != gjson.Number {
			return body
		}
		out, err := sjson.SetBytes(body, "usage.input_tokens_details.cached_tokens", max(in.Int(), 0))
		if err != nil {
			return body
		}
		return out
	}
	if d != wire.DialectChat && d != wire.DialectCompletion {
		return body
	}
	prompt := usage.Get("prompt_tokens")
	if prompt.Type != gjson.Number {
		return body
	}
	out, err := sjson.SetBytes(body, "usage.prompt_tokens_details.cached_tokens", max(prompt.Int(), 0))
	if err != nil {
		return body
	}
	return out
}
