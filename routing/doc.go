// Package routing decides which upstream serves a request and whether a request may go upstream
// at all, from what the gateway knows about the load of its model servers.
//
// # Choosing an upstream
//
// A Tracker counts, per upstream dial address, the tokens of the requests the gateway has in
// flight there (Acquire before proxying, release when the response has ended) and keeps the load
// signals a Scraper reads from each server's Prometheus endpoint (vLLM, TGI, llama.cpp server).
// Pick returns the candidate with the lowest score:
//
//	score = outstanding + T × (Ww × (waiting + queue) + Wr × running + Wkv × kv)
//
// where outstanding is the gateway's own in-flight tokens on that upstream (each request counts
// at least one token), waiting/queue/running are the server's request counts and kv its KV-cache
// usage as a fraction in [0, 1]. The metrics term is only added while the last scrape is fresh
// (younger than StaleAfter); a failed scrape drops it at once, so an upstream whose metrics cannot
// be read is judged by the gateway's own count alone. T (TokensPerRequest, default 1000) turns
// request counts into tokens; the weights default to Ww = 2 (a queued request delays every new
// one), Wr = 1 and Wkv = 4 (a full KV cache counts like four running requests, since the server
// must preempt or queue). The gateway's own requests also appear in the server's counts; the
// double count is deliberate and harmless: it only matters relative to other upstreams, and the
// metrics term is what reveals load from other clients or gateway replicas. Ties (for example
// every upstream idle) are broken uniformly at random.
//
// # Admission
//
// Admission is a per-model gate: up to MaxConcurrent requests in flight, then a bounded queue
// served by priority (higher first) and in arrival order within a priority, each waiter for at
// most a timeout. Refusals (ErrQueueFull, ErrQueueTimeout) become 503 model_overloaded with a
// Retry-After estimated from the recent service rate (see Overloaded and Admission.RetryAfter).
//
// # Health
//
// A Prober GETs each upstream's health path on an interval, in its own goroutine, and records
// what it finds in a Health table (one HostHealth per probed URL, read with one atomic load on
// the request path). ClassifyProbe decides: 2xx is healthy, a 503 that says the model is loading
// (llama.cpp server's /health while it loads weights) is loading, anything else or no answer
// within the timeout is down; a host not probed yet counts as available. PoolStatus.Refusal
// says what a pool with no available host is answered: model_loading while a host loads, else
// model_unavailable. A probe cut short by its context (a reload) leaves the state as it was, so
// a Health table kept across reloads keeps what the probes found.
//
// Nothing here imports Caddy; caddymodule wraps it in a selection policy and the handler.
package routing
