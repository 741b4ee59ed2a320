package caddymodule

import (
	"context"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/caddyai/gateway/routing"
)

func init() {
	caddy.RegisterModule(LeastLoad{})
}

// LeastLoad is a reverse_proxy selection policy for GPU pools: it picks the available upstream
// with the fewest outstanding tokens (the prompt plus reserved output of its in-flight requests,
// released as each finishes), ties broken at random. With metrics_path set it also scrapes each
// upstream's Prometheus endpoint in the background (vLLM's waiting/running requests and KV-cache
// usage, TGI's queue size) and weighs them in; stale metrics fall back to the token count.
type LeastLoad struct {
	// MetricsPath is the path of the upstreams' Prometheus endpoint, e.g. /metrics. Empty: no
	// scraping, outstanding tokens only.
	MetricsPath string `json:"metrics_path,omitempty"`
	// ScrapeInterval is how often metrics are scraped. Default: 2s.
	ScrapeInterval caddy.Duration `json:"scrape_interval,omitempty"`
	// ScrapeTimeout bounds one scrape. Default: 1s.
	ScrapeTimeout caddy.Duration `json:"scrape_timeout,omitempty"`

	tracker *routing.Tracker
	seen    *sync.Map // dial addresses selected from, for the scraper
	logger  *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (LeastLoad) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.selection_policies.ai_least_load",
		New: func() caddy.Module { return new(LeastLoad) },
	}
}

// trackerPool holds the one load tracker, shared by every config and kept across reloads so
// in-flight requests are still counted after one.
var trackerPool = caddy.NewUsagePool()

type trackerHandle struct {
	tracker *routing.Tracker
	seen    *sync.Map
}

func (trackerHandle) Destruct() error { return nil }

// Provision loads the shared tracker and starts the scraper, tied to the config's context.
func (l *LeastLoad) Provision(ctx caddy.Context) error {
	l.logger = ctx.Logger()
	val, _, err := trackerPool.LoadOrNew("tracker", func() (caddy.Destructor, error) {
		return trackerHandle{tracker: routing.NewTracker(routing.TrackerOptions{}), seen: new(sync.Map)}, nil
	})
	if err != nil {
		return err
	}
	h := val.(trackerHandle)
	l.tracker, l.seen = h.tracker, h.seen
	if l.MetricsPath != "" {
		scraper := routing.NewScraper(&http.Client{}, l.tracker, routing.ScraperOptions{
			Interval: time.Duration(l.ScrapeInterval),
			Timeout:  time.Duration(l.ScrapeTimeout),
			Path:     l.MetricsPath,
			OnError: func(upstream string, err error) {
				l.logger.Debug("scraping upstream metrics", zap.String("upstream", upstream), zap.Error(err))
			},
		})
		go func() {
			defer logPanic(l.logger, "metrics scraper panicked")
			scraper.Run(ctx, l.upstreams)
		}()
	}
	return nil
}

func (l *LeastLoad) upstreams() []string {
	var out []string
	l.seen.Range(func(k, _ any) bool {
		out = append(out, k.(string))
		return true
	})
	sort.Strings(out)
	return out
}

// Select picks the available upstream with the least load and charges it the request's tokens
// until the request ends.
func (l *LeastLoad) Select(pool reverseproxy.UpstreamPool, r *http.Request, _ http.ResponseWriter) *reverseproxy.Upstream {
	var buf [16]string
	var idx [16]int
	names, index := buf[:0], idx[:0]
	for i, u := range pool {
		if u.Available() {
			names = append(names, u.Dial)
			index = append(index, i)
		}
	}
	if len(names) == 0 {
		return nil
	}
	pick := l.tracker.Pick(names, nil)
	if pick < 0 {
		return nil
	}
	up := pool[index[pick]]
	if _, loaded := l.seen.Load(up.Dial); !loaded {
		l.seen.Store(up.Dial, struct{}{})
	}
	if ex := exchangeFrom(r); ex != nil {
		ex.releases = append(ex.releases, l.tracker.Acquire(up.Dial, int64(ex.promptTokens+ex.reservedOutput)))
	}
	return up
}

// UnmarshalCaddyfile sets up the policy. Syntax:
//
//	lb_policy ai_least_load {
//	    metrics_path <path>
//	    scrape_interval <duration>
//	    scrape_timeout <duration>
//	}
func (l *LeastLoad) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	if d.NextArg() {
		return d.ArgErr()
	}
	return newSubdirectives("ai_least_load").each(d, func(name string) (err error) {
		switch name {
		case "metrics_path":
			l.MetricsPath, err = stringArg(d)
		case "scrape_interval":
			l.ScrapeInterval, err = durationArg(d)
		case "scrape_timeout":
			l.ScrapeTimeout, err = durationArg(d)
		default:
			return d.Errf("unrecognized ai_least_load subdirective %q", name)
		}
		return err
	})
}

// Cleanup releases the config's hold on the shared tracker.
func (l *LeastLoad) Cleanup() error {
	_, err := trackerPool.Delete("tracker")
	return err
}

// admissionPool holds each model's admission gate across reloads, so queued and in-flight
// requests are not forgotten; a reload applies new limits to the same gate.
var admissionPool = caddy.NewUsagePool()

type admissionHandle struct{ gate *routing.Admission }

func (admissionHandle) Destruct() error { return nil }

// provisionAdmission loads (or creates) the gate of a model with max_concurrent.
func (g *Gateway) provisionAdmission(route *modelRoute, mc ModelConfig) error {
	if mc.MaxConcurrent == 0 {
		return nil
	}
	key := "model:" + mc.Name
	val, _, err := admissionPool.LoadOrNew(key, func() (caddy.Destructor, error) {
		gate := routing.NewAdmission(int(mc.MaxConcurrent), mc.Queue, time.Duration(mc.QueueTimeout))
		gate.OnFree(slotsFreed.Notify)
		return admissionHandle{gate: gate}, nil
	})
	if err != nil {
		return err
	}
	gate := val.(admissionHandle).gate
	gate.SetLimits(int(mc.MaxConcurrent), mc.Queue, time.Duration(mc.QueueTimeout))
	route.gate = gate
	g.admissionKeys = append(g.admissionKeys, key)
	return nil
}

// admitToModel waits for a slot of the model's admission gate (in its queue, by the key's priority).
func (g *Gateway) admitToModel(ctx context.Context, ex *exchange) *wire.Error {
	if werr := ex.route.poolRefusal(); werr != nil {
		return werr // no host can take it: answered at once, never queued
	}
	gate := ex.route.gate
	if gate == nil {
		return nil
	}
	if ex.batchLine != nil {
		// a batch line takes spare capacity only: a free slot nobody is waiting for, beyond the
		// reserve left to interactive arrivals
		release, ok := gate.TryAcquire(ex.route.batchReserve)
		if !ok {
			return batchDeferred(ex.route.model.Name, batchDeferRetry)
		}
		ex.releases = append(ex.releases, release)
		return nil
	}
	priority := 0
	if ex.key != nil {
		priority = ex.key.Priority
	}
	waitStart := g.now()
	release, err := gate.Acquire(ctx, priority)
	outcome := "admitted"
	if err != nil {
		outcome = "refused"
	}
	g.metrics.queueWait.WithLabelValues(ex.route.model.Name, outcome).Observe(g.now().Sub(waitStart).Seconds())
	if err != nil {
		if reason, ok := routing.RefusalReason(err); ok {
			return wire.ModelOverloaded(ex.route.model.Name, reason, gate.RetryAfter())
		}
		return wire.ClientClosed()
	}
	ex.releases = append(ex.releases, release)
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner     = (*LeastLoad)(nil)
	_ caddy.CleanerUpper    = (*LeastLoad)(nil)
	_ reverseproxy.Selector = (*LeastLoad)(nil)
	_ caddyfile.Unmarshaler = (*LeastLoad)(nil)
)
