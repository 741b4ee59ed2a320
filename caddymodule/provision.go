package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddyai/gateway/cache"
	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/policy/tokens"
)

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
	metrics, err := sharedMetrics()
	if err != nil {
		return err
	}
	g.metrics, g.metricsHeld = metrics, true
	if err := g.metrics.register(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	memo, _, err := memoPool.LoadOrNew("memo", func() (caddy.Destructor, error) {
		return memoHandle{memo: tokens.NewMemo(1 << 16), inflight: tokens.NewInflight(maxCountingBytes, maxCountingWait)}, nil
	})
	if err != nil {
		return err
	}
	g.memo, g.inflight, g.memoHeld = memo.(memoHandle).memo, memo.(memoHandle).inflight, true
	g.metrics.registerCountingEstimates(ctx.GetMetricsRegistry(), g.inflight)
	if g.RateLimit == nil {
		g.RateLimit = new(RateLimit)
	}
	g.globalLimits = g.RateLimit.Limits
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
	if err := g.provisionStorage(repl); err != nil {
		return err
	}
	if err := g.provisionBatches(repl); err != nil {
		return err
	}
	g.keySources = new(gatewayKeys)
	if err := g.provisionAccounting(); err != nil {
		return err
	}
	if err := g.provisionFineTuning(repl); err != nil {
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
	g.syncKeys()
	return nil
}

// provisionKeys builds the table of the inline keys. Placeholders in secrets are resolved here,
// once; a literal secret is accepted with a warning (the Caddyfile adapter never leaves one).
func (g *Gateway) provisionKeys(repl *caddy.Replacer) (*policy.KeyTable, error) {
	keys, err := policy.NewKeys(g.Keys, func(id, s string) (string, error) {
		secret, err := repl.ReplaceOrErr(s, true, true)
		if err != nil {
			return "", fmt.Errorf("resolving secret: %w", err)
		}
		if secret == s {
			g.logger.Warn("API key given as a literal secret in the config; prefer sha256:<hex> or a placeholder such as {env.GATEWAY_KEY}",
				zap.String("key_id", id))
		}
		return secret, nil
	})
	if err != nil {
		return nil, err
	}
	return policy.NewKeyTable(keys)
}

func (g *Gateway) mergeFileKeys(keys []*policy.Key) (*policy.KeyTable, error) {
	file, err := policy.NewKeyTable(keys)
	if err != nil {
		return nil, err
	}
	if g.acct != nil {
		return g.mergeAdminKeys(file)
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
			Limits:          mc.Limits,
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
		counter, err := newCounter(spec)
		if err != nil {
			return fmt.Errorf("model %q: %w", mc.Name, err)
		}
		rewriter, err := policy.CompileRewrite(g.RewriteConfig, mc.RewriteConfig)
		if err != nil {
			return fmt.Errorf("model %q: %w", mc.Name, err)
		}
		pc := g.metrics.promptCounts
		route := &modelRoute{
			streamUsage: new(atomic.Int32),
			model:       m,
			scopeID:     "model:" + mc.Name,
			counter:     counter,
			chat:        &tokens.ChatCounter{Counter: counter, Memo: g.memo, Inflight: g.inflight, Validated: true}, // policy.Validate checked the body
			rewriter:    rewriter,
			counted: promptCounts{pc.WithLabelValues(mc.Name, "bound"), pc.WithLabelValues(mc.Name, "lower_bound"),
				pc.WithLabelValues(mc.Name, "partial"), pc.WithLabelValues(mc.Name, "exact")},
			series: newRouteSeries(g.metrics, mc.Name),
		}
		if err := provisionBridge(route, mc, g.RewriteConfig); err != nil {
			return fmt.Errorf("model %q: %w", mc.Name, err)
		}
		for _, u := range mc.Upstreams {
			dial, err := dialAddress(u)
			if err != nil {
				return fmt.Errorf("model %q: %w", mc.Name, err)
			}
			route.dials = append(route.dials, dial)
		}
		if mc.UpstreamKey != "" {
			if !hasPlaceholder(mc.UpstreamKey) {
				// never the value: it is a credential, and the config JSON is all that holds it
				g.logger.Warn("upstream_key given as a literal: it stays in the config JSON (caddy adapt output, the admin API); "+
					"prefer a placeholder such as {env.VLLM_API_KEY} or {file./run/secrets/vllm}", zap.String("model", mc.Name))
			}
			key, err := repl.ReplaceOrErr(mc.UpstreamKey, false, true)
			if err != nil {
				return fmt.Errorf("model %q: resolving upstream_key: %w", mc.Name, err)
			}
			if key = strings.TrimSpace(key); key == "" {
				g.logger.Warn("upstream_key resolves to an empty value; no credential is sent upstream", zap.String("model", mc.Name))
			} else {
				route.authorization = "Bearer " + key
				route.secrets = []string{key}
			}
		}
		if mc.Cache != nil {
			route.cacheOff = mc.Cache.Off
			route.cache = cache.Policy{TTL: time.Duration(mc.Cache.TTL), Scope: mc.Cache.Scope, When: mc.Cache.When}
		}
		if err := g.provisionPool(route, mc); err != nil {
			return fmt.Errorf("model %q: %w", mc.Name, err)
		}
		if err := g.provisionAdmission(route, mc); err != nil {
			return fmt.Errorf("model %q: %w", mc.Name, err)
		}
		if err := g.provisionBatchModel(route, mc); err != nil {
			return fmt.Errorf("model %q: %w", mc.Name, err)
		}
		if err := g.provisionPredict(route, mc); err != nil {
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
		for _, name := range mc.Fallbacks {
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
	if g.keys.Load().Len() == 0 && g.KeysFile == "" && g.Accounting == nil {
		return errors.New("no API keys: add a key or a keys_file")
	}
	if err := g.globalLimits.Validate(); err != nil {
		return fmt.Errorf("rate_limit: %w", err)
	}
	for _, m := range g.catalog.Models() {
		if err := m.Limits.Validate(); err != nil {
			return fmt.Errorf("model %q: %w", m.Name, err)
		}
	}
	for _, mc := range g.Models {
		if (mc.Queue > 0 || mc.QueueTimeout > 0) && mc.MaxConcurrent == 0 {
			return fmt.Errorf("model %q: queue needs max_concurrent", mc.Name)
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
	if err := g.validateAccounting(); err != nil {
		return err
	}
	if err := g.validateStorage(); err != nil {
		return err
	}
	return g.validateBatches()
}

// logPanic, deferred at the top of a background goroutine, recovers a panic and logs it with the
// stack where it happened, so a bug in a background task is seen and never takes Caddy down.
func logPanic(logger *zap.Logger, msg string) {
	if v := recover(); v != nil {
		logger.Error(msg, zap.Any("panic", v), zap.Stack("stack"))
	}
}

// memoPool holds the token-count memo (bounded, 64k texts) across config reloads: counts of
// texts do not depend on the config (keys include the tokenizer's name), and one memo instead of
// one per config keeps a reload from holding a second copy. The bound on text counted at once
// lives beside it, one per process.
var memoPool = caddy.NewUsagePool()

// At most maxCountingBytes of long texts are counted exactly at once (eight 4 MiB prompts); a
// text that finds no room within maxCountingWait is estimated with the upper bound instead, so
// concurrent huge prompts cannot take the memory of the process.
const (
	maxCountingBytes = 32 << 20
	maxCountingWait  = 50 * time.Millisecond
)

type memoHandle struct {
	memo     *tokens.Memo
	inflight *tokens.Inflight
}

func (memoHandle) Destruct() error { return nil }
