// Package caddymodule is the only package of the gateway that imports Caddy. It registers the
// ai_gateway handler, the ai_gateway dynamic upstreams, and the ai_simulator handler, parses
// their Caddyfile directives, and wires the pure packages (policy, ratelimit, internal/wire)
// into one request pipeline that can be read top to bottom in Gateway.ServeHTTP.
package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/tidwall/sjson"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddyai/gateway/cache"
	"github.com/caddyai/gateway/internal/wire"
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
	// Keys are API keys given inline.
	Keys []KeyConfig `json:"keys,omitempty"`
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
	// replace them field by field.
	policy.RewriteConfig
	// Cache is the exact-match response cache. Optional.
	Cache *CacheConfig `json:"cache,omitempty"`
	// AuthFailures limits failed key checks per client IP (brute-force protection).
	AuthFailures *AuthGuard `json:"auth_failures,omitempty"`
	// ContentPolicy refuses prompts matching any of its rules with 422 content_policy_violation
	// (naming the rule, never echoing the text). Optional.
	ContentPolicy *ContentPolicyConfig `json:"content_policy,omitempty"`
	// MetricsKeyID adds the key id as a label of the requests and tokens metrics. Off by
	// default: with many keys it makes many series.
	MetricsKeyID bool `json:"metrics_key_id,omitempty"`

	versions         *policy.APIVersions
	content          *policy.ContentPolicy
	cache            *responseCache
	guard            *ratelimit.MemoryStore
	guardHeld        bool
	memoHeld         bool
	accessLogWarning *sync.Once
	cacheKey         string
	keys             *atomic.Pointer[policy.KeyTable]
	limiter          *ratelimit.Limiter
	storeKey         string
	admissionKeys    []string
	globalLimits     policy.Limits
	metrics          *gatewayMetrics
	memo             *tokens.Memo
	inline           *policy.KeyTable
	catalog          *policy.Catalog
	routes           map[*policy.Model]*modelRoute
	anthropic        map[string]struct{}
	created          int64
	now              func() time.Time
	logger           *zap.Logger
	ctx              caddy.Context
}

// KeyConfig is one inline API key.
type KeyConfig struct {
	// Secret identifies the key: "sha256:<hex>" (preferred: the secret itself never appears in
	// the config), a placeholder such as {env.GATEWAY_KEY} or {file./run/secrets/key} resolved
	// once at load, or a literal secret (accepted with a warning).
	Secret string `json:"secret"`
	// ID names the key in logs, metrics and placeholders. Required, unique.
	ID string `json:"id"`
	// Models are the model names or aliases (path.Match patterns, e.g. "llama-*") the key may
	// use. Empty allows every model.
	Models []string `json:"models,omitempty"`
	// Disabled refuses the key with 401 and a distinct message.
	Disabled bool `json:"disabled,omitempty"`
	// ExpiresAt (RFC 3339) refuses the key from that instant.
	ExpiresAt string `json:"expires_at,omitempty"`
	// Labels are free-form operator labels.
	Labels map[string]string `json:"labels,omitempty"`
	// Pins map a model alias to the snapshot (model name) this key keeps using when the alias
	// moves on.
	Pins map[string]string `json:"pins,omitempty"`
	// Priority orders this key's requests in a model's admission queue; higher goes first.
	Priority int `json:"priority,omitempty"`
	// Limits are the key's own rate limits (rpm, tpm, rpd, tpd, max_concurrent).
	Limits
}

// ModelConfig is one model the gateway serves.
type ModelConfig struct {
	// Name is the model's canonical name: sent upstream and reported in responses. For a dated
	// snapshot, its full snapshot name.
	Name string `json:"name"`
	// Aliases are other names clients may use for the model.
	Aliases []string `json:"alias,omitempty"`
	// ContextWindow is the model's context length in tokens. 0 = not checked.
	ContextWindow int `json:"context_window,omitempty"`
	// MaxOutputTokens caps the completion length in tokens. 0 = no cap.
	MaxOutputTokens int `json:"max_output_tokens,omitempty"`
	// Upstreams are the dial addresses (host:port, or http://host:port) of the model servers
	// that serve the model. reverse_proxy receives them through `dynamic ai_gateway`. With none,
	// reverse_proxy uses its own static upstreams.
	Upstreams []string `json:"upstream,omitempty"`
	// UpstreamKey is the credential sent upstream as "Authorization: Bearer <key>"; may be a
	// placeholder such as {env.VLLM_API_KEY}, resolved once at load.
	UpstreamKey string `json:"upstream_key,omitempty"`
	// UpstreamName is the name the model server knows the model by (vLLM's
	// --served-model-name), when it differs from Name.
	UpstreamName string `json:"upstream_name,omitempty"`
	// Tokenizer counts the model's prompt tokens: estimate (a fast upper bound), cl100k_base,
	// o200k_base, or "hf <path to tokenizer.json>" for the model's own vocabulary.
	// Default: cl100k_base.
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
	// Fallback are models tried in order when this model's pool is unavailable or overloaded;
	// the response's model says which answered and x-gateway-fallback names this one.
	Fallback []string `json:"fallback,omitempty"`
	// RewriteConfig holds the model's own rewriting rules; each field set here replaces the
	// gateway-wide one.
	policy.RewriteConfig
	// Limits are the model's rate limits, summed over all keys.
	Limits
}

// ContentPolicyConfig lists the content rules: RE2 regular expressions (linear time) applied to
// the text of prompts and messages, all content parts included.
type ContentPolicyConfig struct {
	// Rules are the inline rules; a rule without an id is named rule-<n>.
	Rules []policy.ContentRule `json:"rules,omitempty"`
	// DenyFile is a file of rules, one per line: "<id> <regex>" or "<regex>"; # comments.
	DenyFile string `json:"deny_file,omitempty"`
}

// APIVersionConfig configures a date-based API version header.
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
	RenameParams [][2]string `json:"rename_param,omitempty"`
	// Deprecated (RFC 3339) marks the version as deprecated.
	Deprecated string `json:"deprecated,omitempty"`
	// Sunset (RFC 3339) is when the version stops being served (410 api_version_sunset).
	Sunset string `json:"sunset,omitempty"`
	// DeprecationLink documents the deprecation.
	DeprecationLink string `json:"deprecation_link,omitempty"`
	// ServeAfterSunset keeps serving the version after its sunset date.
	ServeAfterSunset bool `json:"serve_after_sunset,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (Gateway) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.ai_gateway",
		New: func() caddy.Module { return new(Gateway) },
	}
}

const defaultMaxBody = 4 << 20

var defaultAnthropicVersions = []string{"2023-06-01", "2026-10-21"}

// Provision sets defaults and compiles the configuration: key hashes, the model catalogue and
// routes. It does no network I/O.
func (g *Gateway) Provision(ctx caddy.Context) error {
	g.ctx = ctx
	g.logger = ctx.Logger()
	g.keys = new(atomic.Pointer[policy.KeyTable])
	g.accessLogWarning = new(sync.Once)
	if g.now == nil {
		g.now = time.Now
	}
	g.created = g.now().Unix()
	if g.MaxBody == 0 {
		g.MaxBody = defaultMaxBody
	}
	if g.KeysFileInterval == 0 {
		g.KeysFileInterval = caddy.Duration(2 * time.Second)
	}
	if len(g.AnthropicVersions) == 0 {
		g.AnthropicVersions = defaultAnthropicVersions
	}
	g.anthropic = make(map[string]struct{}, len(g.AnthropicVersions))
	for _, v := range g.AnthropicVersions {
		g.anthropic[v] = struct{}{}
	}
	repl := caddy.NewReplacer()
	g.metrics = newGatewayMetrics()
	if err := g.metrics.register(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	memo, _, err := memoPool.LoadOrNew("memo", func() (caddy.Destructor, error) {
		return memoHandle{tokens.NewMemo(1 << 16)}, nil
	})
	if err != nil {
		return err
	}
	g.memo, g.memoHeld = memo.(memoHandle).memo, true
	if g.RateLimit == nil {
		g.RateLimit = new(RateLimit)
	}
	g.globalLimits = g.RateLimit.Limits.policy()
	if err := g.provisionLimiter(repl); err != nil {
		return err
	}

	inline, err := g.provisionKeys(repl)
	if err != nil {
		return err
	}
	g.inline = inline
	if err := g.provisionModels(repl); err != nil {
		return err
	}
	if err := g.provisionAPIVersions(); err != nil {
		return err
	}
	if err := g.provisionContentPolicy(); err != nil {
		return err
	}
	if err := g.provisionCache(repl); err != nil {
		return err
	}
	if err := g.provisionAuthGuard(); err != nil {
		return err
	}
	table := inline
	if g.KeysFile != "" {
		kf := &policy.KeyFile{Path: g.KeysFile}
		keys, _, err := kf.Load()
		if err != nil {
			return fmt.Errorf("loading keys file %s: %w", g.KeysFile, err)
		}
		if table, err = g.mergeFileKeys(keys); err != nil {
			return err
		}
		go g.watchKeysFile(kf)
	}
	g.keys.Store(table)
	return nil
}

func (g *Gateway) provisionKeys(repl *caddy.Replacer) (*policy.KeyTable, error) {
	keys := make([]*policy.Key, 0, len(g.Keys))
	for i, kc := range g.Keys {
		if kc.ID == "" {
			return nil, fmt.Errorf("key %d: id is required", i)
		}
		k := &policy.Key{ID: kc.ID, Models: kc.Models, Disabled: kc.Disabled, Labels: kc.Labels, Limits: kc.Limits.policy(),
			Pins: kc.Pins, Priority: kc.Priority}
		switch {
		case strings.HasPrefix(kc.Secret, "sha256:"):
			h, err := policy.ParseHash(kc.Secret)
			if err != nil {
				return nil, fmt.Errorf("key %q: %w", kc.ID, err)
			}
			k.Hash = h
		case kc.Secret == "":
			return nil, fmt.Errorf("key %q: secret is required", kc.ID)
		default:
			secret, err := repl.ReplaceOrErr(kc.Secret, true, true)
			if err != nil {
				return nil, fmt.Errorf("key %q: resolving secret: %w", kc.ID, err)
			}
			secret = strings.TrimSpace(secret)
			if secret == "" {
				return nil, fmt.Errorf("key %q: secret resolves to an empty value", kc.ID)
			}
			if secret == kc.Secret {
				g.logger.Warn("API key given as a literal secret in the config; prefer sha256:<hex> or a placeholder",
					zap.String("key_id", kc.ID))
			}
			k.Hash = policy.HashSecret(secret)
		}
		if kc.ExpiresAt != "" {
			t, err := time.Parse(time.RFC3339, kc.ExpiresAt)
			if err != nil {
				return nil, fmt.Errorf("key %q: parsing expires_at: %w", kc.ID, err)
			}
			k.ExpiresAt = t
		}
		keys = append(keys, k)
	}
	table, err := policy.NewKeyTable(keys)
	if err != nil {
		return nil, err
	}
	return table, nil
}

func (g *Gateway) mergeFileKeys(keys []*policy.Key) (*policy.KeyTable, error) {
	file, err := policy.NewKeyTable(keys)
	if err != nil {
		return nil, err
	}
	return g.inline.Merge(file)
}

func (g *Gateway) provisionModels(repl *caddy.Replacer) error {
	models := make([]*policy.Model, 0, len(g.Models))
	routes := make(map[*policy.Model]*modelRoute, len(g.Models))
	for _, mc := range g.Models {
		m := &policy.Model{
			Name:            mc.Name,
			Aliases:         mc.Aliases,
			ContextWindow:   mc.ContextWindow,
			MaxOutputTokens: mc.MaxOutputTokens,
			UpstreamName:    mc.UpstreamName,
			Limits:          mc.Limits.policy(),
		}
		dep, err := parseDeprecation(mc.Deprecated, mc.Sunset, mc.DeprecationLink, mc.ServeAfterSunset)
		if err != nil {
			return fmt.Errorf("model %q: %w", mc.Name, err)
		}
		m.Deprecation = dep
		spec := mc.Tokenizer
		if spec == "" {
			spec = "cl100k_base"
		}
		counter, err := tokens.New(spec)
		if err != nil {
			return fmt.Errorf("model %q: %w", mc.Name, err)
		}
		rewriter, err := policy.CompileRewrite(g.RewriteConfig, mc.RewriteConfig)
		if err != nil {
			return fmt.Errorf("model %q: %w", mc.Name, err)
		}
		route := &modelRoute{model: m, scopeID: "model:" + mc.Name, counter: counter, chat: tokens.NewChatCounter(counter, g.memo), rewriter: rewriter}
		for _, u := range mc.Upstreams {
			dial, err := dialAddress(u)
			if err != nil {
				return fmt.Errorf("model %q: %w", mc.Name, err)
			}
			route.dials = append(route.dials, dial)
		}
		if mc.UpstreamKey != "" {
			key, err := repl.ReplaceOrErr(mc.UpstreamKey, false, true)
			if err != nil {
				return fmt.Errorf("model %q: resolving upstream_key: %w", mc.Name, err)
			}
			if key = strings.TrimSpace(key); key == "" {
				g.logger.Warn("upstream_key resolves to an empty value; no credential is sent upstream", zap.String("model", mc.Name))
			} else {
				route.authorization = "Bearer " + key
			}
		}
		if mc.Cache != nil {
			route.cacheOff = mc.Cache.Off
			route.cacheTTL, route.cacheScope, route.cacheWhen = time.Duration(mc.Cache.TTL), mc.Cache.Scope, mc.Cache.When
		}
		if err := g.provisionAdmission(route, mc); err != nil {
			return fmt.Errorf("model %q: %w", mc.Name, err)
		}
		models = append(models, m)
		routes[m] = route
	}
	catalog, err := policy.NewCatalog(models)
	if err != nil {
		return err
	}
	g.catalog, g.routes = catalog, routes
	for i, mc := range g.Models {
		route := routes[models[i]]
		for _, name := range mc.Fallback {
			fb, ok := catalog.Resolve(name)
			if !ok {
				return fmt.Errorf("model %q: fallback %q is not a configured model", mc.Name, name)
			}
			if fb == models[i] {
				return fmt.Errorf("model %q: a model cannot be its own fallback", mc.Name)
			}
			route.fallbacks = append(route.fallbacks, routes[fb])
		}
	}
	return nil
}

// provisionContentPolicy compiles the content rules once.
func (g *Gateway) provisionContentPolicy() error {
	cp := g.ContentPolicy
	if cp == nil {
		return nil
	}
	rules := append([]policy.ContentRule(nil), cp.Rules...)
	if cp.DenyFile != "" {
		data, err := os.ReadFile(cp.DenyFile)
		if err != nil {
			return fmt.Errorf("content_policy: reading deny_file: %w", err)
		}
		more, err := policy.ParseDenyFile(data)
		if err != nil {
			return fmt.Errorf("content_policy: %s: %w", cp.DenyFile, err)
		}
		rules = append(rules, more...)
	}
	p, err := policy.CompileContentPolicy(rules)
	if err != nil {
		return fmt.Errorf("content_policy: %w", err)
	}
	g.content = p
	return nil
}

// Validate checks the configuration for mistakes that Provision does not catch.
func (g *Gateway) Validate() error {
	if g.MaxBody < 0 {
		return errors.New("max_body must not be negative")
	}
	if len(g.Models) == 0 {
		return errors.New("at least one model is required")
	}
	if g.keys.Load().Len() == 0 && g.KeysFile == "" {
		return errors.New("no API keys: add a key or a keys_file")
	}
	if err := limitsOf(g.globalLimits).Validate(); err != nil {
		return fmt.Errorf("rate_limit: %w", err)
	}
	for _, m := range g.catalog.Models() {
		if err := limitsOf(m.Limits).Validate(); err != nil {
			return fmt.Errorf("model %q: %w", m.Name, err)
		}
	}
	for _, mc := range g.Models {
		if (mc.Queue > 0 || mc.QueueTimeout > 0) && mc.MaxConcurrent == 0 {
			return fmt.Errorf("model %q: queue needs max_concurrent", mc.Name)
		}
	}
	for _, k := range g.Keys {
		if err := limitsOf(k.Limits.policy()).Validate(); err != nil {
			return fmt.Errorf("key %q: %w", k.ID, err)
		}
	}
	if g.ContextStatus != 0 && g.ContextStatus != http.StatusBadRequest && g.ContextStatus != http.StatusRequestEntityTooLarge {
		return fmt.Errorf("context_status must be 400 or 413, got %d", g.ContextStatus)
	}
	if g.FitMaxTokens < 0 {
		return errors.New("fit_max_tokens must not be negative")
	}
	if g.RateLimit.DefaultMaxTokens < 0 {
		return errors.New("rate_limit: default_max_tokens must not be negative")
	}
	return nil
}

// ServeHTTP runs one request through the gateway's pipeline. Each stage either fills the
// request's exchange record or returns a *wire.Error, which is rendered once, in the envelope of
// the request's API surface. Admitted requests go to the next handler (reverse_proxy) through a
// response tap that completes usage, normalises errors and settles the rate-limit reservation.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	ex := newExchange(r, g.now())
	caddyhttp.SetVar(r.Context(), varExchange, ex)
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)

	if werr := g.admit(ex, r); werr != nil {
		g.refuse(w, ex, werr)
		g.record(ex, repl)
		return nil
	}
	if ex.endpoint == wire.EndpointModels || ex.endpoint == wire.EndpointModel {
		err := g.serveModels(w, r, ex)
		g.record(ex, repl)
		return err
	}

	if ex.endpoint == wire.EndpointMessagesCountTokens {
		err := g.serveCountTokens(w, ex)
		ex.body.release()
		g.settle(ex, 0)
		g.record(ex, repl)
		return err
	}
	if g.prepareCache(ex, r) {
		if entry := g.cacheGet(r.Context(), ex); entry != nil {
			err := g.serveHit(w, ex, entry)
			ex.body.release()
			g.settle(ex, 0) // a hit takes a request from the limits, not tokens
			g.record(ex, repl)
			return err
		}
	}
	if !ex.cacheable {
		return g.dispatch(w, r, next, ex, repl)
	}
	// a miss: identical requests arriving meanwhile wait for this one's answer (single flight)
	var ran bool
	var err error
	entry, _, gerr := g.cache.group.Do(r.Context(), ex.cacheKey, func() (*cache.Entry, error) {
		ran = true
		err = g.dispatch(w, r, next, ex, repl)
		return ex.cacheEntry, err
	})
	switch {
	case ran:
		return err
	case entry != nil:
		err = g.serveHit(w, ex, entry)
		ex.body.release()
		g.settle(ex, 0)
		g.record(ex, repl)
		return err
	case gerr != nil: // the client went away while waiting
		ex.body.release()
		g.settle(ex, 0)
		ex.status, ex.reject = 499, "client_closed"
		g.record(ex, repl)
		return nil
	}
	return g.dispatch(w, r, next, ex, repl)
}

// serveCountTokens answers Anthropic's /v1/messages/count_tokens from the gateway's own count
// with the model's tokenizer (model servers rarely implement it): {"input_tokens": N}.
func (g *Gateway) serveCountTokens(w http.ResponseWriter, ex *exchange) error {
	body := strconv.AppendInt([]byte(`{"input_tokens":`), int64(ex.promptTokens), 10)
	body = append(body, '}')
	ex.status = http.StatusOK
	h := w.Header()
	ex.setResponseHeaders(h)
	setRateLimitHeaders(h, ex.surface, ex.decision, ex.start)
	h["Content-Type"] = []string{"application/json"}
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(http.StatusOK)
	_, err := w.Write(body)
	return err
}

// dispatch takes a slot of the model's admission gate (or a fallback's), prepares the body for
// the upstream and forwards the request.
func (g *Gateway) dispatch(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, ex *exchange, repl *caddy.Replacer) error {
	werr := g.admitToModel(r.Context(), ex)
	for werr != nil && werr.Code == "model_overloaded" && g.switchToFallback(ex) {
		werr = g.admitToModel(r.Context(), ex)
	}
	if werr == nil {
		werr = g.handOff(ex, r)
	}
	if werr != nil {
		g.settle(ex, 0)
		g.refuse(w, ex, werr)
		g.record(ex, repl)
		return nil
	}
	return g.forward(w, r, next, ex, repl)
}

// forward hands the request to its model's upstream pool through the response tap, and to the
// model's fallbacks while the pool has no capacity and nothing has reached the client yet.
func (g *Gateway) forward(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, ex *exchange, repl *caddy.Replacer) error {
	defer ex.releaseAll()
	var (
		tap      *responseTap
		proxyErr error
	)
	for {
		if ex.route.authorization != "" {
			r.Header["Authorization"] = []string{ex.route.authorization}
		} else {
			delete(r.Header, "Authorization")
		}
		ex.setRequestPlaceholders(repl)
		tap = newResponseTap(g, w, ex)
		model := ex.route.model.Name
		g.metrics.inFlight.WithLabelValues(model).Inc()
		ex.handoff = g.now()
		proxyErr = g.proxy(tap, r, next)
		g.metrics.inFlight.WithLabelValues(model).Dec()
		g.metrics.upstream.WithLabelValues(model).Observe(g.now().Sub(ex.handoff).Seconds())
		if !g.tryFallback(ex, tap, proxyErr, r) {
			break
		}
	}
	usage, err := tap.finish(proxyErr)
	ex.usage = usage
	if ex.cacheable {
		g.fillCache(ex, tap.cacheBody())
	}
	ex.body.release()
	g.settle(ex, ex.usage.TotalTokens)
	g.record(ex, repl)
	if proxyErr == errAborted && ex.clientGone() {
		panic(http.ErrAbortHandler) // nobody is listening; let the server drop the connection
	}
	return err
}

// proxy runs the next handler. reverse_proxy aborts a response it cannot finish with
// http.ErrAbortHandler; that becomes errAborted so the tap can still end the response properly
// (an error frame, never a silent cut). Any other panic goes on up.
func (g *Gateway) proxy(tap *responseTap, r *http.Request, next caddyhttp.Handler) (err error) {
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				panic(v)
			}
			err = errAborted
		}
	}()
	return next.ServeHTTP(tap, r)
}

// tryFallback moves the request to the model's next usable fallback when the attempt failed for
// lack of capacity (no reachable upstream, or an overloaded or loading one) before anything
// reached the client and before any byte of the body reached an upstream.
func (g *Gateway) tryFallback(ex *exchange, tap *responseTap, proxyErr error, r *http.Request) bool {
	primary := ex.primaryRoute()
	if len(primary.fallbacks) == 0 || ex.clientGone() || !ex.body.untouched() {
		return false
	}
	unavailable := tap.mode == modeUnset && proxyErr != nil
	overloaded := tap.mode == modeError && (ex.status == http.StatusServiceUnavailable || ex.status == 529)
	if !unavailable && !overloaded {
		return false
	}
	for g.switchToFallback(ex) {
		ex.releaseAll()
		if werr := g.admitToModel(r.Context(), ex); werr != nil {
			continue
		}
		if werr := g.handOff(ex, r); werr != nil {
			return false
		}
		return true
	}
	return false
}

// switchToFallback makes the next fallback of the request's model (that its key may use) the
// request's route.
func (g *Gateway) switchToFallback(ex *exchange) bool {
	primary := ex.primaryRoute()
	for ex.fallbackIdx < len(primary.fallbacks) {
		fb := primary.fallbacks[ex.fallbackIdx]
		ex.fallbackIdx++
		if !ex.key.AllowsModel(fb.model) || fb.model.Deprecation.Gone(g.now()) {
			continue
		}
		ex.primary, ex.fallbackFrom, ex.route = primary, primary.model.Name, fb
		return true
	}
	return false
}

var errAborted = errors.New("upstream response aborted")

// memoPool holds the token-count memo (bounded, 64k texts) across config reloads: counts of
// texts do not depend on the config (keys include the tokenizer's name), and one memo instead of
// one per config keeps a reload from holding a second copy.
var memoPool = caddy.NewUsagePool()

type memoHandle struct{ memo *tokens.Memo }

func (memoHandle) Destruct() error { return nil }

// record publishes the outcome: placeholders, access-log fields and metrics.
func (g *Gateway) record(ex *exchange, repl *caddy.Replacer) {
	ex.setPlaceholders(repl)
	ex.logFields()
	model := ex.modelName()
	keyID := ""
	if g.MetricsKeyID {
		keyID = ex.keyID()
	}
	status := ex.status
	g.metrics.requests.WithLabelValues(model, strconv.Itoa(status), ex.reject, keyID).Inc()
	if ex.usage.PromptTokens > 0 {
		g.metrics.tokens.WithLabelValues(model, "prompt", keyID).Add(float64(ex.usage.PromptTokens))
	}
	if ex.usage.CompletionTokens > 0 {
		g.metrics.tokens.WithLabelValues(model, "completion", keyID).Add(float64(ex.usage.CompletionTokens))
	}
	if ex.usage.CachedTokens > 0 {
		g.metrics.tokens.WithLabelValues(model, "cached", keyID).Add(float64(ex.usage.CachedTokens))
	}
	if ex.streamIncomplete {
		g.metrics.incomplete.WithLabelValues(model).Inc()
		if c := g.logger.Check(zapcore.WarnLevel, "upstream stream ended before completion; the client got an error frame"); c != nil {
			c.Write(zap.String("request_id", ex.requestID), zap.String("model", model), zap.String("key_id", ex.keyID()))
		}
	}
}

// admit runs the stages that decide whether the request may go upstream: routing, credentials,
// API version, body, model. On success the exchange holds the key, the model and the rewritten
// body.
func (g *Gateway) admit(ex *exchange, r *http.Request) *wire.Error {
	secret, header := takeCredential(r.Header)
	if header != "Authorization" && header != "" {
		g.warnKeyInAccessLog(r, header)
	}
	if werr := g.guardBlocked(r); werr != nil {
		return werr
	}
	if werr := g.authenticate(ex, secret); werr != nil {
		if werr.Status == http.StatusUnauthorized {
			g.guardFailed(r, ex)
		}
		return werr
	}
	switch ex.endpoint {
	case wire.EndpointUnknown:
		return wire.InvalidURL(r.Method, r.URL.Path)
	case wire.EndpointBadVersion:
		return wire.Errorf(http.StatusNotFound, "unsupported_api_version", "",
			"The API version in the path %s is not supported. Supported versions: v1.", r.URL.Path)
	case wire.EndpointModels, wire.EndpointModel:
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			return wire.MethodNotAllowed(r.Method, r.URL.Path)
		}
		return nil
	}
	if r.Method != http.MethodPost {
		return wire.MethodNotAllowed(r.Method, r.URL.Path)
	}
	if ex.surface == wire.Anthropic {
		if werr := g.checkAnthropicVersion(r); werr != nil {
			return werr
		}
	} else if g.versions != nil {
		v, werr := g.versions.Negotiate(r.Header.Get(g.versions.Header), g.now())
		ex.apiVersion, ex.versionHeader = v, g.versions.Header
		if werr != nil {
			return werr
		}
	}
	if werr := ex.body.read(r, g.MaxBody); werr != nil {
		return werr
	}
	if ex.apiVersion != nil && len(ex.apiVersion.Renames) > 0 {
		out, err := ex.apiVersion.Apply(ex.body.bytes())
		if err != nil {
			return wire.InvalidRequest("", "API version %s: %s.", ex.apiVersion.Date, err)
		}
		ex.body.replace(out)
	}
	if werr := g.resolveModel(ex); werr != nil {
		return werr
	}
	if g.content != nil {
		if werr := g.content.Check(ex.endpoint, ex.body.bytes()); werr != nil {
			return werr
		}
	}
	if out, werr := ex.route.rewriter.Apply(ex.endpoint, ex.body.bytes(), &ex.info); werr != nil {
		return werr
	} else if len(out) != len(ex.body.bytes()) || &out[0] != &ex.body.bytes()[0] {
		ex.body.replace(out)
	}
	if werr := g.countPrompt(ex); werr != nil {
		return werr
	}
	return g.admitLimits(r.Context(), ex)
}

func (g *Gateway) authenticate(ex *exchange, secret string) *wire.Error {
	key, status := g.keys.Load().Lookup(secret, g.now())
	switch status {
	case policy.KeyMissing:
		if ex.surface == wire.Anthropic {
			return wire.InvalidAPIKey("x-api-key header is required")
		}
		return wire.InvalidAPIKey("You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
	case policy.KeyUnknown:
		return wire.InvalidAPIKey("Incorrect API key provided.")
	case policy.KeyDisabled:
		ex.key = key
		return &wire.Error{Status: http.StatusUnauthorized, Type: wire.TypeInvalidRequest, Code: "invalid_api_key", Reason: "key_disabled",
			Message: "This API key has been disabled."}
	case policy.KeyExpired:
		ex.key = key
		return &wire.Error{Status: http.StatusUnauthorized, Type: wire.TypeInvalidRequest, Code: "invalid_api_key", Reason: "key_expired",
			Message: "This API key has expired."}
	}
	ex.key = key
	return nil
}

func (g *Gateway) checkAnthropicVersion(r *http.Request) *wire.Error {
	v := r.Header.Get("Anthropic-Version")
	if v == "" {
		return wire.InvalidRequest("anthropic-version", "anthropic-version: header is required")
	}
	if _, ok := g.anthropic[v]; !ok {
		return wire.Errorf(http.StatusBadRequest, "unsupported_api_version", "anthropic-version",
			"anthropic-version: %q is not a supported version. Supported versions: %s.", v, strings.Join(g.AnthropicVersions, ", "))
	}
	return nil
}

// resolveModel validates the body (parsed once; what later stages need lands in ex.info),
// resolves the model (aliases, the key's pins) and checks the key's allow-list.
func (g *Gateway) resolveModel(ex *exchange) *wire.Error {
	info, werr := policy.Validate(ex.endpoint, ex.body.bytes())
	if werr != nil {
		return werr
	}
	ex.info = info
	ex.requestedModel, ex.bodyModel = info.Model, info.Model
	m, ok := g.catalog.ResolveFor(ex.key, info.Model)
	if !ok {
		return wire.ModelNotFound(info.Model)
	}
	if !ex.key.AllowsModel(m) {
		return wire.ModelNotAllowed(info.Model)
	}
	ex.route = g.routes[m]
	ex.stream = info.Stream
	if m.Deprecation.Gone(g.now()) {
		return policy.ModelSunset(m.Name, m.Deprecation)
	}
	return nil
}

// countPrompt counts the prompt's tokens and checks the model's context window. The exact count
// is skipped when a cheap upper bound already proves the request fits and no token limit needs
// the number.
func (g *Gateway) countPrompt(ex *exchange) *wire.Error {
	m := ex.route.model
	body := ex.body.bytes()
	out := ex.info.MaxTokens
	if out == 0 {
		out = g.RateLimit.DefaultMaxTokens
		if out == 0 {
			out = m.MaxOutputTokens
		}
		if out == 0 {
			out = defaultOutputAllowance
		}
		if m.ContextWindow > 0 && ex.info.MaxTokens == 0 {
			out = min(out, m.ContextWindow)
		}
	}
	ex.reservedOutput = out
	bound := tokens.UpperBound(body)
	if ex.endpoint == wire.EndpointImagesGenerations {
		ex.promptTokens = bound
		return nil
	}
	fits := m.ContextWindow == 0 || bound+ex.info.MaxTokens <= m.ContextWindow
	if fits && !g.tokenLimited(ex) && ex.endpoint != wire.EndpointMessagesCountTokens {
		ex.promptTokens = bound
		return nil
	}
	var n int
	var err error
	switch ex.endpoint {
	case wire.EndpointChatCompletions:
		n, err = ex.route.chat.CountChat(body)
	case wire.EndpointCompletions:
		n, err = ex.route.chat.CountCompletion(body)
	case wire.EndpointEmbeddings:
		n, err = ex.route.chat.CountEmbedding(body)
	case wire.EndpointMessages, wire.EndpointMessagesCountTokens:
		n, err = ex.route.chat.CountAnthropic(body)
	}
	if err != nil {
		return wire.InvalidRequest("messages", "The request's messages could not be read: %s", strings.TrimPrefix(err.Error(), "counting chat body: "))
	}
	ex.promptTokens = n
	if m.ContextWindow > 0 && n+ex.info.MaxTokens > m.ContextWindow {
		return g.fitOrRefuse(ex, m.ContextWindow, n)
	}
	return nil
}

// fitOrRefuse lowers max_tokens to what fits the window when fit_max_tokens allows it, else
// refuses with context_length_exceeded.
func (g *Gateway) fitOrRefuse(ex *exchange, window, prompt int) *wire.Error {
	room := window - prompt
	if g.FitMaxTokens > 0 && ex.info.MaxTokens > 0 && room >= g.FitMaxTokens && ex.endpoint != wire.EndpointEmbeddings {
		out, err := policy.SetMaxTokens(ex.endpoint, ex.body.bytes(), &ex.info, room)
		if err == nil {
			ex.body.replace(out)
			ex.reservedOutput = room
			ex.fitted = true
			return nil
		}
	}
	werr := contextLengthError(ex, window, prompt)
	if g.ContextStatus == http.StatusBadRequest {
		werr.Status = http.StatusBadRequest
	}
	return werr
}

// tokenLimited reports whether any scope of the request limits tokens.
func (g *Gateway) tokenLimited(ex *exchange) bool {
	l := g.globalLimits
	if l.TPM > 0 || l.TPD > 0 {
		return true
	}
	if l = ex.route.model.Limits; l.TPM > 0 || l.TPD > 0 {
		return true
	}
	l = ex.key.Limits
	return l.TPM > 0 || l.TPD > 0
}

// contextLengthError is the refusal of a prompt that does not fit the model's window.
func contextLengthError(ex *exchange, window, prompt int) *wire.Error {
	msg := fmt.Sprintf("This model's maximum context length is %d tokens. However, your messages resulted in %d tokens. Please reduce the length of the messages.", window, prompt)
	if out := ex.info.MaxTokens; out > 0 {
		msg = fmt.Sprintf("This model's maximum context length is %d tokens. However, you requested %d tokens (%d in the messages, %d in the completion). Please reduce the length of the messages or completion.",
			window, prompt+out, prompt, out)
	}
	param := "messages"
	switch ex.endpoint {
	case wire.EndpointCompletions, wire.EndpointImagesGenerations:
		param = "prompt"
	case wire.EndpointEmbeddings:
		param = "input"
	}
	return &wire.Error{Status: http.StatusRequestEntityTooLarge, Type: wire.TypeInvalidRequest, Code: "context_length_exceeded", Param: param, Message: msg}
}

// handOff rewrites the body for the upstream (its model name, stream usage) and installs it.
func (g *Gateway) handOff(ex *exchange, r *http.Request) *wire.Error {
	raw := ex.body.bytes()
	out := raw
	var err error
	if up := ex.route.model.Upstream(); up != ex.bodyModel {
		out, err = sjson.SetBytes(out, "model", up)
		ex.bodyModel = up
	}
	if err == nil && ex.stream && !ex.info.IncludeUsage && (ex.endpoint == wire.EndpointChatCompletions || ex.endpoint == wire.EndpointCompletions) {
		// ask for the usage chunk upstream; the tap removes it from what the client sees
		out, err = sjson.SetBytes(out, "stream_options.include_usage", true)
		ex.injectedUsage = err == nil
	}
	if err != nil {
		if c := g.logger.Check(zapcore.ErrorLevel, "rewriting request body"); c != nil {
			c.Write(zap.Error(err), zap.String("request_id", ex.requestID))
		}
		return wire.Internal()
	}
	if &out[0] != &raw[0] || len(out) != len(raw) {
		ex.body.replace(out)
	}
	ex.body.install(r)
	return nil
}

// refuse renders a gateway error in the surface's envelope and records why.
func (g *Gateway) refuse(w http.ResponseWriter, ex *exchange, werr *wire.Error) {
	ex.body.release()
	ex.reject = werr.ReasonOrCode()
	ex.status = werr.StatusFor(ex.surface)
	h := w.Header()
	ex.setResponseHeaders(h)
	setRateLimitHeaders(h, ex.surface, ex.decision, ex.start)
	h["X-Gateway-Overhead-Ms"] = []string{formatMS(g.now().Sub(ex.start))}
	if c := g.logger.Check(zapcore.DebugLevel, "request refused"); c != nil {
		c.Write(zap.String("request_id", ex.requestID), zap.String("key_id", ex.keyID()),
			zap.Int("status", ex.status), zap.String("reason", ex.reject))
	}
	if err := wire.Write(w, ex.surface, werr, ex.requestID); err != nil {
		if c := g.logger.Check(zapcore.DebugLevel, "writing refusal"); c != nil {
			c.Write(zap.String("request_id", ex.requestID), zap.Error(err))
		}
	}
}

// takeCredential returns the client's API key and the header that carried it, and removes every
// credential header so that it reaches neither the upstream nor a later handler.
func takeCredential(h http.Header) (secret, header string) {
	if v := h.Get("Authorization"); v != "" {
		if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
			secret, header = strings.TrimSpace(v[7:]), "Authorization"
		}
	}
	if secret == "" {
		if secret = strings.TrimSpace(h.Get("X-Api-Key")); secret != "" {
			header = "X-Api-Key"
		}
	}
	if secret == "" {
		if secret = strings.TrimSpace(h.Get("Api-Key")); secret != "" {
			header = "Api-Key"
		}
	}
	delete(h, "Authorization")
	delete(h, "X-Api-Key")
	delete(h, "Api-Key")
	return secret, header
}

// warnKeyInAccessLog warns once when a key arrives in x-api-key or api-key on a server that
// writes access logs: Caddy logs a copy of the request headers taken before any handler runs and
// redacts only Authorization and Cookie, so those headers must be filtered in the log config.
func (g *Gateway) warnKeyInAccessLog(r *http.Request, header string) {
	srv, _ := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	if srv == nil || srv.Logs == nil || srv.Logs.ShouldLogCredentials {
		return
	}
	g.accessLogWarning.Do(func() {
		g.logger.Warn("API keys arrive in the "+header+" header and this server writes access logs: Caddy redacts only "+
			"Authorization there, so add to the site's log block: format filter { request>headers>X-Api-Key delete; "+
			"request>headers>Api-Key delete } (see the README, Logs)", zap.String("header", header))
	})
}

// Cleanup releases what Provision acquired: its hold on the limiter store (the store itself
// lives on while a newer config uses it). The keys file watcher stops with the config's context.
func (g *Gateway) Cleanup() error {
	if g.memoHeld {
		if _, err := memoPool.Delete("memo"); err != nil {
			return fmt.Errorf("releasing token memo: %w", err)
		}
	}
	if g.guardHeld {
		if _, err := guardPool.Delete("auth"); err != nil {
			return fmt.Errorf("releasing auth guard: %w", err)
		}
	}
	if g.cacheKey != "" {
		if _, err := cachePool.Delete(g.cacheKey); err != nil {
			return fmt.Errorf("releasing cache: %w", err)
		}
	}
	for _, key := range g.admissionKeys {
		if _, err := admissionPool.Delete(key); err != nil {
			return fmt.Errorf("releasing admission gate: %w", err)
		}
	}
	if g.storeKey != "" {
		if _, err := storePool.Delete(g.storeKey); err != nil {
			return fmt.Errorf("releasing rate limit store: %w", err)
		}
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Gateway)(nil)
	_ caddy.Validator             = (*Gateway)(nil)
	_ caddy.CleanerUpper          = (*Gateway)(nil)
	_ caddyhttp.MiddlewareHandler = (*Gateway)(nil)
)
