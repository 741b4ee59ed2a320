package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/caddyai/gateway/bench/loadgen"
)

// model is the model name every target serves.
const model = "bench-model"

// benchSecret is the bearer key of the gateway's inline key (a throwaway, loopback only).
const benchSecret = "sk-bench-gateway"

// scenario is one workload run against every target.
type scenario struct {
	// ID is the short name used on the command line (-scenarios a,c).
	ID string
	// Name describes the workload in the table.
	Name string
	// Conns is the number of concurrent connections.
	Conns int
	// Stream expects SSE responses and records the time to first byte.
	Stream bool
	// Path is the request path. Default: /v1/chat/completions.
	Path string
	// StreamDone is what a complete stream contains when it does not end with [DONE] (typed
	// Responses events end with response.completed).
	StreamDone []byte
	// Pending, when set, lists the scenario without running it and says why.
	Pending string
	// Upstream is the model server behind every target.
	Upstream upstreamSpec
	// NoDirect leaves out the direct target (the upstream alone).
	NoDirect bool
	// MinRounds, when more than -rounds, is this scenario's number of rounds (not with
	// BENCH_QUICK): a comparison of two gateways needs more pairs than one against plain Caddy.
	MinRounds int
	// Second adds a second gateway to the rounds, its options changed from the first's.
	Second *secondGateway
	// Peer adds the peer gateway given with -peer (make bench-peers).
	Peer bool
	// SideBySide adds, after the rounds, as many runs with the gateway and plain Caddy loaded
	// at once (half the connections each): both meet the same machine at the same moment, so
	// their req/s ratio does not move with the machine's drift between rounds.
	SideBySide bool
	// run, when set, runs a scenario of its own shape instead of the rounds of runScenario.
	run func(ctx context.Context, env *runEnv, o options, sc scenario) (*scenarioResult, error)
	// body builds the request bodies.
	body func() loadgen.Body
	// keys returns the bearer keys spread over the requests; nil sends benchSecret.
	keys func(env *runEnv) ([]string, error)
	// gateway returns the gateway options of the scenario.
	gateway func(env *runEnv) (gatewayOptions, error)
}

// gatewayOptions fill templates/gateway.Caddyfile beyond ports and the key.
type gatewayOptions struct {
	Tokenizer string
	KeyTPM    int64
	KeysFile  string
	// Note is printed under the scenario (e.g. the per-key limit chosen).
	Note string
	// Cache turns the gateway's response cache on.
	Cache bool
	// RPM is the rpm of every key of KeysFile (checked: no key gets more).
	RPM int64
	// RedisURL puts the rate limits in Redis (rate_limit { store redis }).
	RedisURL string
	// MaxConcurrent and Queue set the model's admission gate.
	MaxConcurrent, Queue int
	// StorageDir is the store of files and batches.
	StorageDir string
	// Accounting turns the usage ledger on (in StorageDir), with a priced model and a label
	// budget the bench key shares.
	Accounting bool
	// RequestsPerSecond, when set, bounds every run by a request count instead of its duration:
	// this many per second of the round's (or warm-up's) duration, with four times the
	// duration as a cap. A closed loop that meets cheap 429s would otherwise send ever more
	// requests; a fixed count keeps each key's demand, and so the share of 429s, known.
	RequestsPerSecond float64
}

// secondGateway is a gateway run beside the first in the same rounds, with one thing changed,
// so that the two compare without the drift between scenarios.
type secondGateway struct {
	// Name is the target's name (gateway-redis); the scenario reports Name/gateway.
	Name string
	// Redis starts a redis-server on loopback for it (the scenario is pending without one).
	Redis bool
	// SideBySide adds, after the rounds, as many runs with both gateways loaded at once (half
	// the connections each), reported as the median of their req/s ratios.
	SideBySide bool
	// Options changes the first gateway's options; redisURL is set when Redis is.
	Options func(env *runEnv, first gatewayOptions, redisURL string) (gatewayOptions, error)
}

// everything is the gateway of scenarios a, b and c: the key with a tpm limit (reserved and
// settled on every request), exact cl100k_base counting, validation, the context check and usage
// extraction.
func everything(*runEnv) (gatewayOptions, error) {
	return gatewayOptions{Tokenizer: "cl100k_base", KeyTPM: 10_000_000_000}, nil
}

// fixed is the fixed-reply upstream; sim the zero-latency simulator.
var (
	fixed = upstreamSpec{}
	sim   = upstreamSpec{Sim: true}
)

// scenarios is the benchmark's workload list, run in this order. A new workload is one more
// entry here: set body, and gateway for the options it needs.
func scenarios() []scenario {
	return []scenario{
		{ID: "a", Name: "JSON chat, 1 KB body, 50 connections, every feature on", Conns: 50, body: chatBody, gateway: everything, Peer: true, SideBySide: true},
		{ID: "b", Name: "JSON chat, 1 KB body, 1 connection (latency), every feature on", Conns: 1, body: chatBody, gateway: everything, Peer: true},
		{ID: "c", Name: "SSE stream, 20 chunks, 50 connections, every feature on", Conns: 50, Stream: true, body: streamBody, gateway: everything, Peer: true, SideBySide: true},
		{ID: "d", Name: "multi-turn (turns 1..20), cl100k_base exact counting, tpm key, 50 connections", Conns: 50,
			body: multiTurnBody, gateway: everything, SideBySide: true},
		{ID: "e", Name: "cache hits: 64 distinct deterministic 1 KB chats, 50 connections", Conns: 50, body: cachedBody, Upstream: sim,
			gateway: func(*runEnv) (gatewayOptions, error) {
				return gatewayOptions{Cache: true, Note: "gateway with `cache`: after the warm-up every request is a hit; direct and plain Caddy reach the simulator (a real answer costs the upstream ~100 µs of CPU here, a GPU far more)"}, nil
			}},
		{ID: "f", Name: "1000 keys with rpm limits near saturation, 50 connections", Conns: 50,
			body: chatBody, keys: manyKeys, gateway: manyKeysGateway},
		{ID: "g", Name: "1000 keys with rpm+tpm limits, memory store vs Redis store, 50 connections", Conns: 50, NoDirect: true,
			body: chatBody, keys: manyKeys, gateway: limitedKeysGateway,
			Second: &secondGateway{Name: "gateway-redis", Redis: true, SideBySide: true,
				Options: func(_ *runEnv, first gatewayOptions, redisURL string) (gatewayOptions, error) {
					first.RedisURL = redisURL
					return first, nil
				}}},
		{ID: "h", Name: "interactive chat beside a 5,000-line batch on the same model", Upstream: batchUpstream, run: runBatchScenario},
		{ID: "i", Name: "many slow streams (ttft 1 s, 20 tokens/s)", Upstream: slowStreams, run: runSlowStreams},
		{ID: "k", Name: "Responses SSE stream (typed events), 20 tokens, 50 connections", Conns: 50, Stream: true, Upstream: sim,
			Path: "/v1/responses", StreamDone: []byte("event: response.completed\n"), body: responsesStreamBody, gateway: everything,
		},
		{ID: "l", Name: "scenario a with and without accounting (usage ledger, priced model, label budget)", Conns: 50, body: chatBody,
			NoDirect: true, MinRounds: 8,
			gateway: func(env *runEnv) (gatewayOptions, error) {
				// the same store as the ledger gateway (its batch runner and file store run in
				// both), so that the two differ by the accounting alone
				opts, err := everything(env)
				if err != nil {
					return opts, err
				}
				dir, err := filepath.Abs(filepath.Join(env.outDir, "data-l-off"))
				if err != nil {
					return opts, err
				}
				_ = os.RemoveAll(dir)
				opts.StorageDir = dir
				return opts, nil
			},
			Second: &secondGateway{Name: "gateway-ledger", SideBySide: true,
				Options: func(env *runEnv, first gatewayOptions, _ string) (gatewayOptions, error) {
					dir, err := filepath.Abs(filepath.Join(env.outDir, "data-l"))
					if err != nil {
						return first, err
					}
					_ = os.RemoveAll(dir)
					first.StorageDir, first.Accounting = dir, true
					return first, nil
				}}},
	}
}

// numKeys is the number of keys of scenario f.
const numKeys = 1000

func manyKeySecret(i int) string { return fmt.Sprintf("sk-bench-%04d", i) }

func manyKeys(*runEnv) ([]string, error) {
	keys := make([]string, numKeys)
	for i := range keys {
		keys[i] = manyKeySecret(i)
	}
	return keys, nil
}

// manyKeysGateway writes the keys file of scenario f. Every run sends the gateway's throughput
// of scenario a (or 2000 req/s when a did not run) times its duration, spread evenly over the
// keys, and each key's rpm is chosen so that this demand is about 5/4 of what its bucket allows
// over the scenario: buckets start full and run dry during the rounds, and roughly a quarter
// to a third of the gateway's measured requests get 429 (the warm-up takes tokens too).
func manyKeysGateway(env *runEnv) (gatewayOptions, error) {
	rps := env.gatewayRPS["a"]
	if rps <= 0 {
		rps = 2000
	}
	// Demand per key over the scenario: the gateway's warm-up and rounds.
	perKey := rps * (env.duration.Seconds()*float64(env.rounds) + env.warmup.Seconds()) / numKeys
	// A bucket holds rpm and refills rpm per minute over the whole scenario (all targets).
	spanMin := (env.duration.Seconds()*float64(env.rounds) + env.warmup.Seconds()) * 3 / 60
	rpm := int64(math.Max(1, math.Round(0.8*perKey/(1+spanMin))))
	path, err := writeKeysFile(env, "keys-f.json", rpm, 0)
	if err != nil {
		return gatewayOptions{}, err
	}
	return gatewayOptions{KeysFile: path, RequestsPerSecond: rps, RPM: rpm,
		Note: fmt.Sprintf("%d keys, rpm %d each; every run sends %.0f requests per second of its duration (scenario a's gateway req/s)", numKeys, rpm, rps)}, nil
}

// limitedKeysGateway is scenario f's keys with a tpm limit too (twice what their rpm lets them
// spend, so rpm decides and the count of requests over the limit is exact; tpm is still reserved
// and settled in the store on every request), every run sending the same fixed number of
// requests to the memory-store gateway and to the Redis-store gateway.
func limitedKeysGateway(env *runEnv) (gatewayOptions, error) {
	opts, err := manyKeysGateway(env)
	if err != nil {
		return opts, err
	}
	tpm := opts.RPM * 2 * 400 // about 260 tokens a request (prompt, max_tokens 20)
	if opts.KeysFile, err = writeKeysFile(env, "keys-g.json", opts.RPM, tpm); err != nil {
		return opts, err
	}
	opts.Tokenizer = "cl100k_base"
	opts.Note = fmt.Sprintf("%d keys, rpm %d and tpm %d each, exact counting; every run sends %.0f requests per second of its duration to each gateway", numKeys, opts.RPM, tpm, opts.RequestsPerSecond)
	return opts, nil
}

// writeKeysFile writes the keys file of the numKeys keys with these limits (tpm 0: none).
func writeKeysFile(env *runEnv, name string, rpm, tpm int64) (string, error) {
	type entry struct {
		ID     string `json:"id"`
		Secret string `json:"secret"`
		RPM    int64  `json:"rpm"`
		TPM    int64  `json:"tpm,omitempty"`
	}
	doc := struct {
		Keys []entry `json:"keys"`
	}{Keys: make([]entry, numKeys)}
	for i := range doc.Keys {
		sum := sha256.Sum256([]byte(manyKeySecret(i)))
		doc.Keys[i] = entry{ID: fmt.Sprintf("k%04d", i), Secret: "sha256:" + hex.EncodeToString(sum[:]), RPM: rpm, TPM: tpm}
	}
	data, err := json.Marshal(doc)
	if err != nil {
		return "", fmt.Errorf("encoding keys file: %w", err)
	}
	path, err := filepath.Abs(filepath.Join(env.outDir, name))
	if err != nil {
		return "", fmt.Errorf("writing keys file: %w", err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return "", fmt.Errorf("writing keys file: %w", err)
	}
	return path, nil
}

// words are common English words, so token counts look like real text.
var words = strings.Fields(`the quick brown fox jumps over a lazy dog while people talk about
time year way day thing man world life hand part child eye woman place work week case point
government company number group problem fact model server request answer question system
token stream cache limit gateway simple clear short long early late small large good new`)

// filler returns about n bytes of text made of words, starting at word salt.
func filler(n, salt int) string {
	var b strings.Builder
	for i := salt; b.Len() < n; i++ {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(words[i%len(words)])
	}
	return b.String()
}

// chatSized returns the parts of a chat body of about size bytes: head + seq + tail.
func chatSized(size int, extra string) (head, tail string) {
	head = `{"model":"` + model + `",` + extra + `"max_tokens":20,"messages":[` +
		`{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"`
	tail = `"}]}`
	// Leave room for " (request 123456)".
	text := filler(size-len(head)-len(tail)-18, 0)
	return head + text + " (request ", ")" + tail
}

func seqBody(head, tail string) loadgen.Body {
	return func(dst []byte, seq int64) []byte {
		dst = append(dst, head...)
		dst = strconv.AppendInt(dst, seq, 10)
		return append(dst, tail...)
	}
}

// chatBody is a 1 KB JSON chat request.
func chatBody() loadgen.Body { return seqBody(chatSized(1024, "")) }

// streamBody is a 1 KB streamed chat request for 20 tokens (20 content chunks).
func streamBody() loadgen.Body { return seqBody(chatSized(1024, `"stream":true,`)) }

// cachedBody cycles through 64 deterministic (temperature 0) 1 KB chat requests, so that after
// the warm-up the gateway answers every one from its cache.
func cachedBody() loadgen.Body {
	head, tail := chatSized(1024, `"temperature":0,`)
	return func(dst []byte, seq int64) []byte {
		dst = append(dst, head...)
		dst = strconv.AppendInt(dst, seq%64, 10)
		return append(dst, tail...)
	}
}

// maxTurns is the longest conversation of the multi-turn scenario.
const maxTurns = 20

// multiTurnBody is a conversation with a shared system prompt of about 1.5 KB and turn t (1 to
// 20, cycling with the request number) carrying the t-1 previous exchanges, then a new
// question that no other request asks.
func multiTurnBody() loadgen.Body {
	system := `{"role":"system","content":"` + filler(1500, 7) + `"}`
	heads := make([]string, maxTurns)
	history := ""
	for t := range maxTurns {
		heads[t] = `{"model":"` + model + `","max_tokens":20,"messages":[` + system + history +
			`,{"role":"user","content":"New question ` + strconv.Itoa(t+1) + ` (request `
		history += fmt.Sprintf(`,{"role":"user","content":"Question %d: %s"},{"role":"assistant","content":"Answer %d: %s"}`,
			t+1, filler(150, t), t+1, filler(250, 3*t))
	}
	tail := `): ` + filler(100, 11) + `"}]}`
	return func(dst []byte, seq int64) []byte {
		dst = append(dst, heads[seq%maxTurns]...)
		dst = strconv.AppendInt(dst, seq, 10)
		return append(dst, tail...)
	}
}

// responsesStreamBody is a 1 KB streamed Responses request for 20 tokens, not stored (the
// scenario measures the stream path, not the store write).
func responsesStreamBody() loadgen.Body {
	head := `{"model":"` + model + `","stream":true,"store":false,"max_output_tokens":20,"instructions":"You are a helpful assistant.","input":"`
	tail := `"}`
	return seqBody(head+filler(1024-len(head)-len(tail)-18, 0)+" (request ", ")"+tail)
}
