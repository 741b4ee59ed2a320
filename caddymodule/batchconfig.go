package caddymodule

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddyai/gateway/batch"
)

// BatchesConfig configures the batch runner and the Batches and Message Batches APIs.
type BatchesConfig struct {
	// PublicURL is the gateway's absolute base URL as clients reach it, e.g.
	// https://ai.example.com (with the site's path prefix, if any): a message batch's
	// results_url is PublicURL + /v1/messages/batches/{id}/results. Default: the create
	// request's scheme and host (X-Forwarded-Proto and X-Forwarded-Host when the request came
	// from one of the server's trusted_proxies) and the site's path prefix. May be a placeholder
	// such as {env.PUBLIC_URL}.
	PublicURL string `json:"public_url,omitempty"`
	// Workers is how many batch lines each instance runs at once, over all models (each still
	// only when its model has spare capacity). Default: 16.
	Workers int `json:"workers,omitempty"`
	// Retention is how long an OpenAI batch is kept from its creation; then it is gone (404,
	// out of lists). At least 25h (the 24 h window and a margin). Its output and error files
	// expire on their own (OutputExpiry). Default: 720h (30 days).
	Retention caddy.Duration `json:"retention,omitempty"`
	// OutputExpiry is how long a batch's output and error files are kept from when they are
	// written, unless the create request set output_expires_after. Default: 720h (30 days).
	OutputExpiry caddy.Duration `json:"output_expiry,omitempty"`
	// ResultsRetention is how long a message batch and its results are kept from its creation,
	// as Anthropic keeps results for 29 days. At least 25h. Default: 696h (29 days).
	ResultsRetention caddy.Duration `json:"results_retention,omitempty"`
}

// Defaults of BatchesConfig.
const (
	defaultBatchWorkers          = 16
	defaultBatchRetention        = 30 * 24 * time.Hour
	defaultBatchOutputExpiry     = 30 * 24 * time.Hour
	defaultBatchResultsRetention = 29 * 24 * time.Hour
	minBatchRetention            = batch.Window + time.Hour
)

// runnerSettings are the settings of the runner of a store, set by the configs using it (the
// last one provisioned wins).
type runnerSettings struct {
	workers      int
	outputExpiry time.Duration
	metrics      *gatewayMetrics
}

// provisionBatches sets the batches defaults and hands the runner its settings.
func (g *Gateway) provisionBatches(repl *caddy.Replacer) error {
	if g.Batches == nil {
		g.Batches = new(BatchesConfig)
	}
	bc := g.Batches
	if bc.Workers == 0 {
		bc.Workers = defaultBatchWorkers
	}
	if bc.Retention == 0 {
		bc.Retention = caddy.Duration(defaultBatchRetention)
	}
	if bc.OutputExpiry == 0 {
		bc.OutputExpiry = caddy.Duration(defaultBatchOutputExpiry)
	}
	if bc.ResultsRetention == 0 {
		bc.ResultsRetention = caddy.Duration(defaultBatchResultsRetention)
	}
	u, err := repl.ReplaceOrErr(bc.PublicURL, true, true)
	if err != nil {
		return fmt.Errorf("batches: resolving public_url: %w", err)
	}
	bc.PublicURL = strings.TrimSuffix(u, "/")
	if g.backend != nil && g.backend.runner != nil {
		g.backend.runner.settings.Store(&runnerSettings{workers: bc.Workers, outputExpiry: time.Duration(bc.OutputExpiry), metrics: g.metrics})
	}
	return nil
}

// validateBatches checks the batches settings.
func (g *Gateway) validateBatches() error {
	bc := g.Batches
	if bc.PublicURL != "" {
		u, err := url.Parse(bc.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("batches: public_url must be an absolute http or https URL without query, got %q", bc.PublicURL)
		}
	}
	switch {
	case bc.Workers < 0:
		return errors.New("batches: workers must be positive")
	case time.Duration(bc.Retention) < minBatchRetention:
		return fmt.Errorf("batches: retention must be at least %s", minBatchRetention)
	case time.Duration(bc.ResultsRetention) < minBatchRetention:
		return fmt.Errorf("batches: results_retention must be at least %s", minBatchRetention)
	case bc.OutputExpiry < 0:
		return errors.New("batches: output_expiry must not be negative")
	}
	return nil
}

// settingsOf returns the runner's settings, or the defaults when no config set them.
func (r *batchRunner) settingsOf() runnerSettings {
	if s := r.settings.Load(); s != nil {
		return *s
	}
	return runnerSettings{workers: r.workers, outputExpiry: defaultBatchOutputExpiry}
}

// concurrency is how many lines the runner claims and runs at once.
func (r *batchRunner) concurrency() int {
	if s := r.settings.Load(); s != nil && s.workers > 0 {
		return s.workers
	}
	return r.workers
}

// parseBatches parses the batches block:
//
//	batches {
//	    public_url <url>
//	    workers <n>
//	    retention <duration>
//	    output_expiry <duration>
//	    results_retention <duration>
//	}
func parseBatches(d *caddyfile.Dispenser) (*BatchesConfig, error) {
	if err := noArgs(d); err != nil {
		return nil, err
	}
	bc := new(BatchesConfig)
	err := newSubdirectives("batches").each(d, func(name string) (err error) {
		switch name {
		case "public_url":
			bc.PublicURL, err = stringArg(d)
		case "workers":
			if bc.Workers, err = intArg(d); err == nil && bc.Workers == 0 {
				err = d.Err("workers: expected a positive integer")
			}
		case "retention":
			bc.Retention, err = durationArg(d)
		case "output_expiry":
			bc.OutputExpiry, err = durationArg(d)
		case "results_retention":
			bc.ResultsRetention, err = durationArg(d)
		default:
			return d.Errf("unrecognized batches subdirective %q", name)
		}
		return err
	})
	return bc, err
}
