package main

import (
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
	// Pending, when set, lists the scenario without running it and says why.
	Pending string
	// Path is the request path. Default: /v1/chat/completions.
	Path string
	// StreamDone is what a complete stream contains when it does not end with [DONE] (typed
	// Responses streams).
	StreamDone []byte
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
	// RequestsPerSecond, when set, bounds every run by a request count instead of its duration:
	// this many per second of the round's (or warm-up's) duration, with four times the
	// duration as a cap. A closed loop that meets cheap 429s would otherwise send ever more
	// requests; a fixed count keeps each key's demand, and so the share of 429s, known.
	RequestsPerSecond float64
	// DataDir, when set, turns accounting on (a priced model, a label budget on the key) with
	// the embedded store in this directory.
	DataDir string
}

// scenarios is the benchmark's workload list, run in this order. A new workload (the cache
// scenario "e" once the response cache exists) is one more entry here: set body, and gateway
// for the options it needs (e.g. a cache block in templates/gateway.Caddyfile).
func scenarios() []scenario {
	return []scenario{
		{ID: "a", Name: "JSON chat, 1 KB body, 50 connections", Conns: 50, body: chatBody},
		{ID: "b", Name: "JSON chat, 1 KB body, 1 connection (latency)", Conns: 1, body: chatBody},
		{ID: "c", Name: "SSE stream, 20 chunks, 50 connections", Conns: 50, Stream: true, body: streamBody},
		{ID: "d", Name: "multi-turn (turns 1..20), cl100k_base exact counting, tpm key, 50 connections", Conns: 50,
			body: multiTurnBody,
			gateway: func(*runEnv) (gatewayOptions, error) {
				return gatewayOptions{Tokenizer: "cl100k_base", KeyTPM: 10_000_000_000}, nil
			}},
		{ID: "e", Name: "cache hits: 64 distinct deterministic 1 KB chats, 50 connections", Conns: 50, body: cachedBody,
			gateway: func(*runEnv) (gatewayOptions, error) {
				return gatewayOptions{Cache: true, Note: "gateway with `cache`: after the warm-up every request is a hit; direct and plain Caddy reach the simulator"}, nil
			}},
		{ID: "f", Name: "1000 keys with rpm limits near saturation, 50 connections", Conns: 50,
			body: chatBody, keys: manyKeys, gateway: manyKeysGateway},
		{ID: "l", Name: "scenario a with accounting: usage ledger, priced model, label budget", Conns: 50, body: chatBody,
			gateway: func(env *runEnv) (gatewayOptions, error) {
				dir, err := filepath.Abs(filepath.Join(env.outDir, "data-g"))
				if err != nil {
					return gatewayOptions{}, err
				}
				_ = os.RemoveAll(dir)
				return gatewayOptions{DataDir: dir, Note: "compare with a: the ledger's and the budget's cost"}, nil
			}},
		{ID: "k", Name: "Responses SSE stream (typed events), 20 tokens, 50 connections", Conns: 50, Stream: true,
			Path: "/v1/responses", StreamDone: []byte("event: response.completed\n"), body: responsesStreamBody},
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
	type entry struct {
		ID     string `json:"id"`
		Secret string `json:"secret"`
		RPM    int64  `json:"rpm"`
	}
	doc := struct {
		Keys []entry `json:"keys"`
	}{Keys: make([]entry, numKeys)}
	for i := range doc.Keys {
		sum := sha256.Sum256([]byte(manyKeySecret(i)))
		doc.Keys[i] = entry{ID: fmt.Sprintf("k%04d", i), Secret: "sha256:" + hex.EncodeToString(sum[:]), RPM: rpm}
	}
	data, err := json.Marshal(doc)
	if err != nil {
		return gatewayOptions{}, fmt.Errorf("encoding keys file: %w", err)
	}
	path, err := filepath.Abs(filepath.Join(env.outDir, "keys-f.json"))
	if err != nil {
		return gatewayOptions{}, fmt.Errorf("writing keys file: %w", err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return gatewayOptions{}, fmt.Errorf("writing keys file: %w", err)
	}
	return gatewayOptions{KeysFile: path, RequestsPerSecond: rps,
		Note: fmt.Sprintf("%d keys, rpm %d each; every run sends %.0f requests per second of its duration (scenario a's gateway req/s)", numKeys, rpm, rps)}, nil
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

// responsesStreamBody is a 1 KB streamed Responses request for 20 tokens, not stored (the
// gateway then writes no ownership record), to compare with (c).
func responsesStreamBody() loadgen.Body {
	head := `{"model":"` + model + `","stream":true,"store":false,"max_output_tokens":20,"instructions":"You are a helpful assistant.","input":"`
	tail := `"}`
	return seqBody(head+filler(1024-len(head)-len(tail)-18, 0)+" (request ", ")"+tail)
}

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
