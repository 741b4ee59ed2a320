package caddymodule

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/redis/go-redis/v9"
	"github.com/tidwall/sjson"
	"go.uber.org/zap"

	"github.com/caddyai/gateway/cache"
	"github.com/caddyai/gateway/internal/wire"
)

// CacheConfig configures the exact-match response cache.
type CacheConfig struct {
	// TTL is how long an answer is served from the cache. Default: 1h.
	TTL caddy.Duration `json:"ttl,omitempty"`
	// MaxSize bounds the in-memory cache, in bytes (the Caddyfile takes sizes such as 256MiB, at
	// most 1TiB, like max_body). Default: 64 MiB.
	MaxSize int64 `json:"max_size,omitempty"`
	// Scope is "key" (default: each API key has its own entries) or "global" (all keys share).
	Scope string `json:"scope,omitempty"`
	// When is "deterministic" (default: only temperature 0 or a seed, n 1, no tools) or "always".
	When string `json:"when,omitempty"`
	// Store is "memory" (default; kept across config reloads) or "redis" (shared by instances).
	Store string `json:"store,omitempty"`
	// RedisURL is the Redis URL for store redis; may be a placeholder.
	RedisURL string `json:"redis_url,omitempty"`
	// Off disables the cache (for a model under a gateway-wide cache).
	Off bool `json:"off,omitempty"`
}

const defaultCacheSize = 64 << 20

// cachePool holds response caches across config reloads, keyed by store and size.
var cachePool = caddy.NewUsagePool()

type cacheHandle struct {
	store  cache.Store
	memory *cache.MemoryStore
	client *redis.Client
	group  *cache.Group
}

func (h *cacheHandle) Destruct() error {
	if h.memory != nil {
		h.memory.Close()
	}
	if h.client != nil {
		return h.client.Close()
	}
	return nil
}

// responseCache is a gateway's view of its cache: the shared store and the policy.
type responseCache struct {
	*cacheHandle
	policy cache.Policy
}

// provisionCache loads the cache store shared across reloads.
func (g *Gateway) provisionCache(repl *caddy.Replacer) error {
	cfg := g.Cache
	if cfg == nil || cfg.Off {
		return nil
	}
	pol := cache.Policy{TTL: time.Duration(cfg.TTL), Scope: cfg.Scope, When: cfg.When}.WithDefaults()
	if err := pol.Validate(); err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	size := cfg.MaxSize
	if size == 0 {
		size = defaultCacheSize
	}
	var key string
	var opts *redis.Options
	switch cfg.Store {
	case "", "memory":
		key = "memory|" + strconv.FormatInt(size, 10)
	case "redis":
		u, err := repl.ReplaceOrErr(cfg.RedisURL, true, true)
		if err != nil {
			return fmt.Errorf("cache: resolving redis url: %w", err)
		}
		if opts, err = redis.ParseURL(u); err != nil {
			return fmt.Errorf("cache: parsing redis url: invalid URL")
		}
		opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout = 500*time.Millisecond, 500*time.Millisecond, 500*time.Millisecond
		key = "redis|" + u
	default:
		return fmt.Errorf("cache: store must be memory or redis, got %q", cfg.Store)
	}
	val, _, err := cachePool.LoadOrNew(key, func() (caddy.Destructor, error) {
		h := &cacheHandle{group: new(cache.Group)}
		if opts != nil {
			h.client = redis.NewClient(opts)
			h.store = cache.NewRedisStore(h.client, "")
			return h, nil
		}
		mem, err := cache.NewMemoryStore(size)
		if err != nil {
			return nil, err
		}
		h.memory, h.store = mem, mem
		return h, nil
	})
	if err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	g.cacheKey = key
	g.cache = &responseCache{cacheHandle: val.(*cacheHandle), policy: pol}
	return nil
}

// The cache states reported in x-cache and {http.ai_gateway.cache}.
const (
	cacheHit    = "HIT"
	cacheMiss   = "MISS"
	cacheBypass = "BYPASS"
)

// prepareCache decides whether the request may use the cache and derives its key. It returns
// whether a lookup should be made (false for Cache-Control: no-cache, which refreshes).
func (g *Gateway) prepareCache(ex *exchange, r *http.Request) (lookup bool) {
	if g.cache == nil || ex.route.cacheOff || !ex.spec.Cacheable {
		return false
	}
	ex.cacheState = cacheBypass
	cc := strings.ToLower(r.Header.Get("Cache-Control"))
	if strings.Contains(cc, "no-store") {
		g.metrics.cache.WithLabelValues("bypass").Inc()
		return false
	}
	pol := g.cache.policy.Override(ex.route.cache)
	body := ex.body.bytes()
	if ok, _ := cache.Cacheable(ex.endpoint, body, pol.When); !ok {
		g.metrics.cache.WithLabelValues("bypass").Inc()
		return false
	}
	version := ""
	if ex.apiVersion != nil {
		version = ex.apiVersion.Date
	} else if ex.surface == wire.Anthropic {
		version = r.Header.Get("Anthropic-Version")
	}
	key, err := cache.Key(cache.KeyInput{Endpoint: ex.endpoint, Surface: ex.surface, Model: ex.route.model.Name,
		APIVersion: version, Scope: pol.ScopeID(ex.keyID()), Body: body})
	if err != nil {
		return false
	}
	ex.cacheKey, ex.cacheable, ex.cacheState, ex.cacheTTL = key, true, cacheMiss, pol.TTL
	return !strings.Contains(cc, "no-cache")
}

// cacheGet looks the request up; store errors count as misses.
func (g *Gateway) cacheGet(ctx context.Context, ex *exchange) *cache.Entry {
	entry, ok, err := g.cache.store.Get(ctx, ex.cacheKey)
	if err != nil {
		g.logger.Warn("cache lookup failed", zap.String("request_id", ex.requestID), zap.Error(err))
		return nil
	}
	if !ok {
		g.metrics.cache.WithLabelValues("miss").Inc()
		return nil
	}
	return entry
}

// serveHit answers from a cached entry: as JSON, or replayed as a stream when the client asked
// for one. Its prompt tokens are reported as cached; the reservation is refunded.
func (g *Gateway) serveHit(w http.ResponseWriter, ex *exchange, entry *cache.Entry) error {
	ex.cacheState = cacheHit
	ex.status = http.StatusOK
	g.metrics.cache.WithLabelValues("hit").Inc()
	u := entry.Usage
	u.CachedTokens = u.PromptTokens
	ex.usage = u
	h := w.Header()
	ex.setResponseHeaders(h)
	setRateLimitHeaders(h, ex.surface, ex.decision, ex.start)
	h["X-Cache"] = []string{cacheHit}
	h["Age"] = []string{strconv.FormatInt(max(0, int64(g.now().Sub(entry.Created)/time.Second)), 10)}
	h["X-Gateway-Overhead-Ms"] = []string{formatMS(g.now().Sub(ex.start))}
	// the JSON hit and the replayed stream report the same usage: every prompt token cached
	// (marked when the entry was stored, or here for an entry an older instance stored)
	body := entry.Body
	if !entry.Marked {
		body = cache.MarkCached(ex.endpoint, ex.surface, body)
	}
	if ex.stream {
		marked := *entry
		marked.Body = body
		out, err := cache.AppendStream(nil, ex.endpoint, ex.surface, &marked, ex.info.IncludeUsage)
		if err != nil {
			return err
		}
		body = out
		h["Content-Type"] = []string{"text/event-stream"}
		h["Cache-Control"] = []string{"no-cache"}
	} else {
		h["Content-Type"] = []string{"application/json"}
		h["Content-Length"] = []string{strconv.Itoa(len(body))}
	}
	setUsageHeaders(h, u)
	w.WriteHeader(http.StatusOK)
	_, err := w.Write(body)
	return err
}

// fillCache stores a complete, successful answer.
func (g *Gateway) fillCache(ex *exchange, body []byte) {
	if !ex.cacheable || ex.status < 200 || ex.status > 299 || len(body) == 0 {
		return
	}
	if _, ok := wire.ExtractUsage(ex.surface, body); !ok && ex.usage.TotalTokens > 0 {
		if b, err := sjson.SetRawBytes(body, "usage", wire.AppendUsageJSON(nil, ex.surface, ex.usage)); err == nil {
			body = b
		}
	}
	// the body as every hit serves it: the cache key holds the endpoint and surface, so the
	// rewrite done once here is the one each hit would do
	entry := &cache.Entry{Body: cache.MarkCached(ex.endpoint, ex.surface, body), Created: g.now(), Usage: ex.usage,
		Model: ex.modelName(), Marked: true}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := g.cache.store.Set(ctx, ex.cacheKey, entry, ex.cacheTTL); err != nil {
		g.logger.Warn("cache fill failed", zap.String("request_id", ex.requestID), zap.Error(err))
		return
	}
	ex.cacheEntry = entry
	if g.cache.memory != nil {
		_, _, evictions, bytes := g.cache.memory.Metrics()
		g.metrics.cacheBytes.Set(float64(bytes))
		g.metrics.cacheEvictions.Set(float64(evictions))
	}
}

// parseCache parses:
//
//	cache [off] {
//	    ttl <duration>
//	    max_size <size>
//	    scope key|global
//	    when deterministic|always
//	    store memory|redis <url>
//	}
func parseCache(d *caddyfile.Dispenser) (*CacheConfig, error) {
	c := new(CacheConfig)
	if d.NextArg() {
		if d.Val() != "off" || d.NextArg() {
			return nil, d.Errf("cache: expected no argument or off, got %q", d.Val())
		}
		c.Off = true
	}
	err := newSubdirectives("cache").each(d, func(name string) (err error) {
		switch name {
		case "ttl":
			c.TTL, err = durationArg(d)
		case "max_size":
			c.MaxSize, err = sizeArg(d)
		case "scope":
			c.Scope, err = enumArg(d, "key", "global")
		case "when":
			c.When, err = enumArg(d, "deterministic", "always")
		case "store":
			c.Store, c.RedisURL, err = storeArg(d)
		default:
			return d.Errf("unrecognized cache subdirective %q", name)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}
