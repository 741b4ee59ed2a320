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
// Nothing here imports Caddy; caddymodule wraps it in a selection policy and the handler.
package routing
