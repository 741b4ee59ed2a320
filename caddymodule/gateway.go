// Package caddymodule is the only package of the gateway that imports Caddy. It registers five
// modules:
//
//   - http.handlers.ai_gateway (Gateway, this file): the gateway itself;
//   - http.reverse_proxy.upstreams.ai_gateway (Upstreams, upstreams.go): hands reverse_proxy the
//     pool of the model a request was routed to (`dynamic ai_gateway`);
//   - http.reverse_proxy.selection_policies.ai_least_load (LeastLoad, routing.go): picks the
//     upstream with the least work in flight;
//   - http.handlers.ai_simulator (Simulator, simulator.go): the built-in model server stand-in;
//   - admin.api.ai_gateway (AdminAPI, admin.go): keys, usage and budgets in Caddy's admin API.
//
// It parses their Caddyfile directives (caddyfile.go) and wires the pure packages (policy,
// ratelimit, routing, cache, internal/wire) into one request pipeline that reads top to bottom
// in Gateway.ServeHTTP (serve.go): config.go holds the configuration types, provision.go turns
// them into the compiled state a request reads.
package caddymodule

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/policy/tokens"
	"github.com/caddyai/gateway/ratelimit"
)

func init() {
	caddy.RegisterModule(Gateway{})
}

// Gateway is an HTTP handler that authenticates, validates and routes AI API requests (OpenAI-
// and Anthropic-style) before they are proxied to model servers by reverse_proxy. Every refusal
// is answered in the wire format of the client's API surface.
type Gateway struct {
	// Keys are API keys given inline, in the schema of the keys file's entries.
	Keys []policy.KeyConfig `json:"keys,omitempty"`
	// KeysFile is the path of a JSON keys file, re-read whenever its content changes on disk
	// (no config reload needed). A broken file keeps the last good key set and logs an error.
	KeysFile string `json:"keys_file,omitempty"`
	// KeysFileInterval is how often the keys file is checked for changes. Default: 2s.
	KeysFileInterval caddy.Duration `json:"keys_file_interval,omitempty"`
	// Models are the models the gateway serves. A request for any other model gets 404
	// model_not_found.
	Models []ModelConfig `json:"models,omitempty"`
	// MaxBody is the largest request body accepted, in bytes; larger ones get 413
	// request_too_large without being read further. Default: 4 MiB.
	MaxBody int64 `json:"max_body,omitempty"`
	// AnthropicVersions are the anthropic-version header values accepted on /v1/messages.
	// Default: 2023-06-01 and 2026-10-21.
	AnthropicVersions []string `json:"anthropic_versions,omitempty"`
	// RateLimit holds the gateway-wide limits and the limiter's store. Per-key and per-model
	// limits are set on keys and models; all scopes apply at once.
	RateLimit *RateLimit `json:"rate_limit,omitempty"`
	// APIVersion negotiates a date-based API version header. Optional.
	APIVersion *APIVersionConfig `json:"api_version,omitempty"`
	// ContextStatus is the HTTP status of context_length_exceeded refusals: 413 (default) or
	// 400 (OpenAI's own status).
	ContextStatus int `json:"context_status,omitempty"`
	// FitMaxTokens, when positive, lowers a request's max_tokens to what still fits the context
	// window instead of refusing it, provided at least this many output tokens remain.
	FitMaxTokens int `json:"fit_max_tokens,omitempty"`
	// RewriteConfig holds the request rewriting rules that apply to every model (defaults,
	// clamps, deny_params, strip_params, system_prompt, max_tokens_field); a model's own rules
	// merge with them (see policy.RewriteConfig).
	policy.RewriteConfig
	// Cache is the exact-match response cache. Optional.
	Cache *CacheConfig `json:"cache,omitempty"`
	// AuthFailures limits failed key checks per client IP (brute-force protection).
	AuthFailures *AuthGuard `json:"auth_failures,omitempty"`
	// ContentPolicy refuses prompts matching any of its rules with 422 content_policy_violation
	// (naming the rule, never echoing the text). Optional.
	ContentPolicy *ContentPolicyConfig `json:"content_policy,omitempty"`
	// Storage says where uploaded files are kept: by default a bbolt file and a directory
	// under Caddy's data directory, nothing to install; with store redis, metadata in Redis and
	// the bytes in a directory every instance mounts.
	Storage *StorageConfig `json:"storage,omitempty"`
	// Files bounds the Files API (/v1/files): file size, lines of a batch file, default expiry.
	Files *FilesConfig `json:"files,omitempty"`
	// Batches configures the batch runner and the Batches and Message Batches APIs: the public
	// URL of results_url, the lines run at once, how long batches and their files are kept.
	Batches *BatchesConfig `json:"batches,omitempty"`
	// FineTuning passes the fine-tuning jobs API (/v1/fine_tuning/jobs, also spelled
	// /v1/fine-tuning/jobs) through to a training service, each job owned by the key that
	// created it. Without it those paths are 404.
	FineTuning *FineTuningConfig `json:"fine_tuning,omitempty"`
	// MetricsKeyID adds the key id as a label of the requests and tokens metrics. Off by
	// default: with many keys it makes many series.
	MetricsKeyID bool `json:"metrics_key_id,omitempty"`
	// ReadinessPath is the path of the readiness endpoint for load balancers and Kubernetes
	// (GET or HEAD, no key needed): 200 while a model can be served, 503 when no model has a
	// healthy upstream; with a valid key, per model the healthy and loading hosts and the queue.
	// Empty: no readiness endpoint.
	ReadinessPath string `json:"readiness_path,omitempty"`
	// Accounting turns on the usage ledger (per key, label, model and day, in the store), the
	// budgets, the keys of the admin API and GET /v1/usage. Optional.
	Accounting *AccountingConfig `json:"accounting,omitempty"`

	versions         *policy.APIVersions
	content          *policy.ContentPolicy
	cache            *responseCache
	guard            *ratelimit.MemoryStore
	guardHeld        bool
	memoHeld         bool
	metricsHeld      bool
	accessLogWarning *sync.Once
	cacheKey         string
	keys             *atomic.Pointer[policy.KeyTable]
	limiter          *ratelimit.Limiter
	quotas           *ratelimit.QuotaMemo // the last reserved token quota per key and model, with a remote store
	storeKey         string
	backendKey       string
	backend          *backendHandle
	acct             *accounting
	keySources       *gatewayKeys
	admissionKeys    []string
	batchModelKeys   []string
	globalLimits     ratelimit.Limits
	metrics          *gatewayMetrics
	predictMetrics   *predictMetrics // registered with the first predict model
	fineTuning       *fineTuning     // nil without fine_tuning
	memo             *tokens.Memo
	inflight         *tokens.Inflight
	inline           *policy.KeyTable
	catalog          *policy.Catalog
	routes           map[*policy.Model]*modelRoute
	anthropic        map[string]struct{}
	created          int64
	now              func() time.Time
	logger           *zap.Logger
	ctx              caddy.Context
	ops              opsState
}

// CaddyModule returns the Caddy module information.
func (Gateway) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.ai_gateway",
		New: func() caddy.Module { return new(Gateway) },
	}
}

// Cleanup releases what Provision acquired: its holds on the token memo, the auth guard, the
// cache, the admission gates, the limiter store and the file store (each lives on while a newer config uses it).
// Every hold is released even when one release fails. The keys file watcher stops with the
// config's context.
func (g *Gateway) Cleanup() error {
	var errs []error
	release := func(pool *caddy.UsagePool, key, what string) {
		if _, err := pool.Delete(key); err != nil {
			errs = append(errs, fmt.Errorf("releasing %s: %w", what, err))
		}
	}
	if g.memoHeld {
		release(memoPool, "memo", "token memo")
	}
	if g.metricsHeld {
		release(metricsPool, "metrics", "metrics")
	}
	if g.guardHeld {
		release(guardPool, "auth", "auth guard")
	}
	if g.cacheKey != "" {
		release(cachePool, g.cacheKey, "cache")
	}
	for _, key := range g.admissionKeys {
		release(admissionPool, key, "admission gate")
	}
	for _, key := range g.batchModelKeys {
		release(batchModelPool, key, "batch state")
	}
	if g.storeKey != "" {
		release(storePool, g.storeKey, "rate limit store")
	}
	if g.acct != nil && g.backend != nil {
		g.backend.unregister(g)
	}
	if g.backendKey != "" {
		release(backendPool, g.backendKey, "file store")
	}
	if g.ops.unwatch != nil {
		g.ops.unwatch()
	}
	if g.ops.healthHeld {
		release(healthPool, "health", "pool health")
	}
	if g.ops.metricsHeld {
		release(opsMetricsPool, "ops", "pool health and tokenizer metrics")
	}
	return errors.Join(errs...)
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Gateway)(nil)
	_ caddy.Validator             = (*Gateway)(nil)
	_ caddy.CleanerUpper          = (*Gateway)(nil)
	_ caddyhttp.MiddlewareHandler = (*Gateway)(nil)
)
