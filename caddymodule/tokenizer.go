package caddymodule

import (
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyai/gateway/policy/tokens"
)

// tokenizeClient asks model servers for token counts (tokenizer upstream); it keeps a few
// connections per host open, since counts are asked on the request path.
var tokenizeClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8, IdleConnTimeout: 30 * time.Second}}

// upstreamTokenizer reads a tokenizer spec "upstream [vllm|tgi|llamacpp]": its flavour, and
// whether the spec is one.
func upstreamTokenizer(spec string) (flavour string, ok bool) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(spec), "upstream")
	if !ok || rest != "" && rest[0] != ' ' {
		return "", false
	}
	return strings.TrimSpace(rest), true
}

// newCounter returns the counter of a tokenizer spec. For "upstream" it returns the estimate,
// a stand-in that provisionUpstreamTokenizer replaces once the model's pool is known.
func newCounter(spec string) (tokens.Counter, error) {
	flavour, ok := upstreamTokenizer(spec)
	if !ok {
		return tokens.New(spec)
	}
	switch flavour {
	case "", tokens.FlavourVLLM, tokens.FlavourTGI, tokens.FlavourLlamaCpp:
		return tokens.Estimate(), nil
	}
	return nil, fmt.Errorf("tokenizer upstream: unknown server %q (want vllm, tgi or llamacpp)", flavour)
}

// provisionUpstreamTokenizer gives a model with tokenizer upstream its counter: the model
// server's /tokenize, asked of the pool's available hosts in turn, with the upstream credential;
// what it cannot count is estimated and counted in tokenize_fallbacks_total.
func (g *Gateway) provisionUpstreamTokenizer(route *modelRoute, mc ModelConfig) error {
	flavour, ok := upstreamTokenizer(mc.Tokenizer)
	if !ok {
		return nil
	}
	var bases []string
	var index []int
	for i, dial := range route.dials {
		if strings.HasPrefix(dial, "unix/") {
			continue
		}
		scheme := "http://"
		if strings.HasPrefix(mc.Upstreams[i], "https://") {
			scheme = "https://"
		}
		bases, index = append(bases, scheme+dial), append(index, i)
	}
	if len(bases) == 0 {
		return fmt.Errorf("tokenizer upstream needs an upstream host:port to ask (the model has none)")
	}
	var next atomic.Uint32
	endpoint := func() string {
		start := int(next.Add(1))
		for k := range bases {
			j := (start + k) % len(bases)
			if route.health.available(index[j]) {
				return bases[j]
			}
		}
		return ""
	}
	var header http.Header
	if route.authorization != "" {
		header = http.Header{"Authorization": {route.authorization}}
	}
	fallbacks := g.opsMetricsOf().tokenizeFallbacks
	model := mc.Name
	counter, err := tokens.NewUpstream(tokens.UpstreamOptions{
		Name:       "upstream:" + mc.Name,
		Flavour:    flavour,
		Model:      route.model.Upstream(),
		Endpoint:   endpoint,
		Client:     tokenizeClient,
		Header:     header,
		OnFallback: func(reason string) { fallbacks.WithLabelValues(model, reason).Inc() },
	})
	if err != nil {
		return err
	}
	route.counter, route.chat.Counter = counter, counter
	return nil
}
