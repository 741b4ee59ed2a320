package routing

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Defaults of ScraperOptions.
const (
	// DefaultInterval is the time between two scrapes of an upstream.
	DefaultInterval = 2 * time.Second
	// DefaultScrapeTimeout bounds one scrape.
	DefaultScrapeTimeout = time.Second
	// DefaultMetricsPath is the metrics endpoint of vLLM, TGI and llama.cpp server.
	DefaultMetricsPath = "/metrics"
)

// ScraperOptions configures a Scraper. Zero values take the defaults.
type ScraperOptions struct {
	// Interval is the time between two scrapes of every upstream. Default: 2s.
	Interval time.Duration
	// Timeout bounds one scrape, from connecting to reading the whole page. Default: 1s.
	Timeout time.Duration
	// Path is the path of the metrics endpoint. Default: /metrics.
	Path string
	// Scheme is http or https. Default: http.
	Scheme string
	// URL, when set, returns the metrics URL of an upstream dial address, replacing Scheme and
	// Path (for example to scrape a separate metrics port). Returning "" skips the upstream.
	URL func(upstream string) string
	// OnError, when set, is called with each failed scrape (for logging). It must be quick and
	// safe for concurrent use.
	OnError func(upstream string, err error)
}

// ErrUnixUpstream is returned for a unix socket upstream without a ScraperOptions.URL.
var ErrUnixUpstream = errors.New("cannot scrape a unix socket upstream without a metrics URL")

// Scraper polls each upstream's metrics endpoint on an interval and feeds a Tracker. Scrapes run
// in their own goroutines, never on the request path; a failed scrape (error, timeout, status
// other than 200, unreadable page) marks the upstream's metrics stale at once.
type Scraper struct {
	client  *http.Client
	tracker *Tracker
	opts    ScraperOptions
}

// NewScraper returns a Scraper that fetches with client (nil: http.DefaultClient) and records
// into tracker.
func NewScraper(client *http.Client, tracker *Tracker, opts ScraperOptions) *Scraper {
	if client == nil {
		client = http.DefaultClient
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultScrapeTimeout
	}
	if opts.Path == "" {
		opts.Path = DefaultMetricsPath
	} else if !strings.HasPrefix(opts.Path, "/") {
		opts.Path = "/" + opts.Path
	}
	if opts.Scheme == "" {
		opts.Scheme = "http"
	}
	return &Scraper{client: client, tracker: tracker, opts: opts}
}

// Run scrapes the upstreams returns, at once and then every Interval, until ctx is done. It
// blocks: start it with `go` (from Provision, with a context that ends in Cleanup). upstreams is
// called before each round, so the set may change over time.
func (s *Scraper) Run(ctx context.Context, upstreams func() []string) {
	if upstreams == nil {
		return
	}
	ticker := time.NewTicker(s.opts.Interval)
	defer ticker.Stop()
	for {
		if ctx.Err() != nil {
			return
		}
		s.ScrapeAll(ctx, upstreams())
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// ScrapeAll scrapes every upstream concurrently, each within Timeout, and returns when all are
// done.
func (s *Scraper) ScrapeAll(ctx context.Context, upstreams []string) {
	var wg sync.WaitGroup
	for _, u := range upstreams {
		wg.Go(func() {
			// A panic in a scrape (a broken URL func, say) must not take the gateway down.
			defer func() {
				if r := recover(); r != nil {
					s.tracker.MarkStale(u)
					s.report(u, fmt.Errorf("scraping metrics of %s: panic: %v", u, r))
				}
			}()
			if err := s.Scrape(ctx, u); err != nil {
				s.report(u, err)
			}
		})
	}
	wg.Wait()
}

func (s *Scraper) report(upstream string, err error) {
	if s.opts.OnError != nil && !errors.Is(err, context.Canceled) {
		s.opts.OnError(upstream, err)
	}
}

// Scrape reads one upstream's metrics within Timeout and records them in the tracker, or marks
// them stale and returns the error. An upstream the URL option skips has no metrics and no error.
// When ctx itself ends the metrics are left as they were and ctx's error is returned.
func (s *Scraper) Scrape(ctx context.Context, upstream string) error {
	m, err := s.fetch(ctx, upstream)
	if err != nil {
		if ctx.Err() != nil {
			// Stopped (shutdown or reload), not a failure of the upstream: a new scraper
			// sharing the tracker keeps its metrics.
			return fmt.Errorf("scraping metrics of %s: %w", upstream, ctx.Err())
		}
		s.tracker.MarkStale(upstream)
		if errors.Is(err, errSkipped) {
			return nil
		}
		return fmt.Errorf("scraping metrics of %s: %w", upstream, err)
	}
	m.At = s.tracker.now()
	s.tracker.Observe(upstream, m)
	return nil
}

// fetch GETs and parses the upstream's metrics page.
func (s *Scraper) fetch(ctx context.Context, upstream string) (Metrics, error) {
	url, err := s.url(upstream)
	if err != nil {
		return Metrics{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Metrics{}, err
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4;q=1,*/*;q=0.1")
	resp, err := s.client.Do(req)
	if err != nil {
		return Metrics{}, err
	}
	defer func() {
		// Drain a little so the connection can be reused, then close.
		_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
		_ = resp.Body.Close()
	}()
	if resp.StatusCode != http.StatusOK {
		return Metrics{}, fmt.Errorf("status %d", resp.StatusCode)
	}
	return ParsePrometheus(resp.Body)
}

// url returns the metrics URL of upstream.
func (s *Scraper) url(upstream string) (string, error) {
	if s.opts.URL != nil {
		u := s.opts.URL(upstream)
		if u == "" {
			return "", errSkipped
		}
		return u, nil
	}
	if strings.HasPrefix(upstream, "unix/") {
		return "", ErrUnixUpstream
	}
	return s.opts.Scheme + "://" + upstream + s.opts.Path, nil
}

// errSkipped marks an upstream the URL option chose not to scrape.
var errSkipped = errors.New("no metrics URL for this upstream")
