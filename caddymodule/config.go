package caddymodule

import (
	"github.com/caddyserver/caddy/v2"

	"github.com/caddyai/gateway/ledger"
	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/predict"
	"github.com/caddyai/gateway/ratelimit"
)

// ModelConfig is one model the gateway serves.
type ModelConfig struct {
	// Name is the model's canonical name: sent upstream and reported in responses. For a dated
	// snapshot, its full snapshot name.
	Name string `json:"name"`
	// Aliases are other names clients may use for the model.
	Aliases []string `json:"aliases,omitempty"`
	// ContextWindow is the model's context length in tokens. 0 = not checked.
	ContextWindow int `json:"context_window,omitempty"`
	// MaxOutputTokens caps the completion length in tokens. 0 = no cap.
	MaxOutputTokens int `json:"max_output_tokens,omitempty"`
	// Upstreams are the dial addresses (host:port, or http://host:port) of the model servers
	// that serve the model. reverse_proxy receives them through `dynamic ai_gateway`. With none,
	// reverse_proxy uses its own static upstreams.
	Upstreams []string `json:"upstreams,omitempty"`
	// UpstreamKey is the credential sent upstream as "Authorization: Bearer <key>". Give it as a
	// placeholder such as {env.VLLM_API_KEY} or {file./run/secrets/vllm}, resolved once at load:
	// a literal is accepted with a warning (which never prints it), but stays in the config.
	UpstreamKey string `json:"upstream_key,omitempty"`
	// UpstreamName is the name the model server knows the model by (vLLM's
	// --served-model-name), when it differs from Name.
	UpstreamName string `json:"upstream_name,omitempty"`
	// UpstreamAPI is the API the model's servers speak for Responses requests: "responses"
	// (they serve /v1/responses) or "chat_completions" (the gateway bridges each Responses
	// request to /v1/chat/completions and the answer back, stateless: store and
	// previous_response_id are refused). Default: responses.
	UpstreamAPI string `json:"upstream_api,omitempty"`
	// Tokenizer counts the model's prompt tokens: estimate (a fast upper bound), cl100k_base,
	// o200k_base, "hf <path to tokenizer.json>" for the model's own vocabulary, or "upstream
	// [vllm|tgi|llamacpp]" to ask the model server's own /tokenize (in that server's dialect,
	// default vllm) when a check needs the exact number. Default: cl100k_base.
	Tokenizer string `json:"tokenizer,omitempty"`
	// Deprecated (RFC 3339) marks the model as deprecated: responses carry Deprecation and
	// Link headers.
	Deprecated string `json:"deprecated,omitempty"`
	// Sunset (RFC 3339) is when the model stops being served: requests get 410 model_sunset
	// from then on, unless ServeAfterSunset.
	Sunset string `json:"sunset,omitempty"`
	// DeprecationLink is a document about the deprecation (Link: <url>; rel="deprecation").
	DeprecationLink string `json:"deprecation_link,omitempty"`
	// ServeAfterSunset keeps serving the model after its sunset date.
	ServeAfterSunset bool `json:"serve_after_sunset,omitempty"`
	// Queue is how many requests may wait for a slot when the model has max_concurrent requests
	// in flight; beyond it (or after QueueTimeout) requests get 503 model_overloaded with
	// Retry-After (Anthropic: 529). Waiting requests go by their key's priority, then in order.
	// Default: 0 (no waiting).
	Queue int `json:"queue,omitempty"`
	// QueueTimeout is the longest a request waits in the queue. Default: 0 (until a slot frees).
	QueueTimeout caddy.Duration `json:"queue_timeout,omitempty"`
	// Cache overrides the gateway's cache settings for this model (ttl, scope, when), or turns
	// the cache off for it.
	Cache *CacheConfig `json:"cache,omitempty"`
	// Fallbacks are models tried in order when this model's pool is unavailable or overloaded;
	// the response's model says which answered and x-gateway-fallback names this one.
	Fallbacks []string `json:"fallbacks,omitempty"`
	// HealthCheck probes each of the model's upstreams in the background and keeps the ones
	// that are down or still loading out of its pool. Optional.
	HealthCheck *HealthCheckConfig `json:"health_check,omitempty"`
	// RewriteConfig holds the model's own rewriting rules. They merge with the gateway-wide
	// ones: deny and strip lists add to them, clamps and defaults replace them per param, and
	// allow_params or "off" lifts one explicitly (see policy.RewriteConfig).
	policy.RewriteConfig
	// Limits are the model's rate limits, summed over all keys. The model's max_concurrent is
	// its admission gate: requests past it wait in the queue (see Queue), then get 503.
	ratelimit.Limits
	// Batch bounds the model's batch lines: a cap on those in flight, a dispatch rate and a
	// priority for vLLM's priority scheduling. Optional.
	Batch *BatchModelConfig `json:"batch,omitempty"`
	// Price is what the model costs per million input, cached-input and output tokens and per
	// request, in the accounting currency (decimals, kept exactly in micro-units). Needs
	// accounting. Default: free.
	Price *ledger.Price `json:"price,omitempty"`
	// Kind is what the model is: "chat" (an LLM, served on chat completions, completions,
	// embeddings and messages) or "predict" (a classifier, ranker, tabular or vision model, served
	// on POST /v1/models/{id}/predict and POST /v1/predict). Default: chat.
	Kind string `json:"kind,omitempty"`
	// Config is a predict model's protocol, input schema and tensors (kind predict only; see
	// predict.Config). A predict model counts tokens only when Tokenizer is set.
	predict.Config
}

// ContentPolicyConfig lists the content rules: RE2 regular expressions (linear time) applied to
// the text of prompts and messages, all content parts included.
type ContentPolicyConfig struct {
	// Rules are the inline rules; a rule without an id is named rule-<n>.
	Rules []policy.ContentRule `json:"rules,omitempty"`
	// DenyFile is a file of rules, one per line: "<id> <regex>" or "<regex>"; # comments.
	DenyFile string `json:"deny_file,omitempty"`
}

// APIVersionConfig configures a date-based API version header. (Its fields are like
// ModelConfig's in shape only: other settings, nothing to share.)
type APIVersionConfig struct {
	// Header is the request header carrying the version; the effective version is echoed in the
	// response header of the same name. Required.
	Header string `json:"header"`
	// Supported lists the versions (YYYY-MM-DD) clients may ask for.
	Supported []string `json:"supported,omitempty"`
	// Default is the version of requests without the header. Default: the newest supported.
	Default string `json:"default,omitempty"`
	// Required refuses requests without the header (400).
	Required bool `json:"required,omitempty"`
	// Versions hold per-version settings (renames, deprecation); each must be in Supported.
	Versions []APIVersionSettings `json:"versions,omitempty"`
}

// APIVersionSettings are the settings of one API version.
type APIVersionSettings struct {
	// Version is the date of the version.
	Version string `json:"version"`
	// RenameParams rename request parameters for clients of this version, [from, to] pairs
	// (e.g. ["max_tokens", "max_completion_tokens"]), so old clients keep working.
	RenameParams [][2]string `json:"rename_params,omitempty"`
	// Deprecated (RFC 3339) marks the version as deprecated.
	Deprecated string `json:"deprecated,omitempty"`
	// Sunset (RFC 3339) is when the version stops being served (410 api_version_sunset).
	Sunset string `json:"sunset,omitempty"`
	// DeprecationLink documents the deprecation.
	DeprecationLink string `json:"deprecation_link,omitempty"`
	// ServeAfterSunset keeps serving the version after its sunset date.
	ServeAfterSunset bool `json:"serve_after_sunset,omitempty"`
}
