// Package cache is the gateway's response cache: it decides which requests may be answered from
// the cache (Cacheable), derives a key that holds every parameter able to change the answer
// (Key), stores complete JSON responses in memory or Redis (MemoryStore, RedisStore), replays a
// cached answer as an SSE stream for a client that asked for one (AppendStream), rebuilds the
// JSON answer from a stream that passed through so a streaming miss can fill the cache
// (Assembler), and lets concurrent identical misses share one upstream call (Group).
//
// It knows nothing of Caddy or HTTP servers; caddymodule wires it into the request path.
package cache

import (
	"bytes"
	"fmt"
	"time"
	"unsafe"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/tidwall/gjson"
)

// DefaultTTL is how long an entry lives when the policy sets no TTL.
const DefaultTTL = time.Hour

// Scopes: who shares entries.
const (
	// ScopeKey keeps entries per API key id: tenants never see each other's answers. Default.
	ScopeKey = "key"
	// ScopeGlobal shares entries between every caller of the gateway.
	ScopeGlobal = "global"
)

// When values: which requests are cached.
const (
	// WhenDeterministic caches only requests whose answer is reproducible: temperature
	// explicitly 0 or a seed set, at most one choice, no tools. Default.
	WhenDeterministic = "deterministic"
	// WhenAlways caches every well-formed request, sampled or not: a repeated request gets the
	// first answer again.
	WhenAlways = "always"
)

// Reasons Cacheable gives for refusing a request. They are low-cardinality words for logs and
// metrics.
const (
	ReasonEndpoint    = "endpoint"
	ReasonBody        = "body"
	ReasonTemperature = "temperature"
	ReasonN           = "n"
	ReasonTools       = "tools"
	// ReasonStored is a Responses request that is stored (store not false) or streamed: its
	// answer names a response id that belongs to the key that made it.
	ReasonStored = "stored"
)

// Policy is how the cache treats the requests of a route.
type Policy struct {
	// TTL is how long an entry is served. Default: 1h.
	TTL time.Duration
	// Scope is "key" (entries are per API key id) or "global". Default: "key".
	Scope string
	// When is "deterministic" or "always". Default: "deterministic".
	When string
}

// WithDefaults returns p with its zero fields set to their defaults.
func (p Policy) WithDefaults() Policy {
	if p.TTL <= 0 {
		p.TTL = DefaultTTL
	}
	if p.Scope == "" {
		p.Scope = ScopeKey
	}
	if p.When == "" {
		p.When = WhenDeterministic
	}
	return p
}

// Validate reports a policy field with an unknown value. Zero fields are valid (defaults).
func (p Policy) Validate() error {
	switch p.Scope {
	case "", ScopeKey, ScopeGlobal:
	default:
		return fmt.Errorf("validating cache policy: unknown scope %q (want %q or %q)", p.Scope, ScopeKey, ScopeGlobal)
	}
	switch p.When {
	case "", WhenDeterministic, WhenAlways:
	default:
		return fmt.Errorf("validating cache policy: unknown when %q (want %q or %q)", p.When, WhenDeterministic, WhenAlways)
	}
	if p.TTL < 0 {
		return fmt.Errorf("validating cache policy: negative ttl %s", p.TTL)
	}
	return nil
}

// Override returns p with each field that o sets (non-zero) replaced by o's: a model's own cache
// settings over the gateway's, field by field.
func (p Policy) Override(o Policy) Policy {
	if o.TTL > 0 {
		p.TTL = o.TTL
	}
	if o.Scope != "" {
		p.Scope = o.Scope
	}
	if o.When != "" {
		p.When = o.When
	}
	return p
}

// ScopeID returns the scope string for KeyInput.Scope: the caller's API key id under the "key"
// scope, one shared value under "global". The two can never collide, whatever the key id.
func (p Policy) ScopeID(keyID string) string {
	if p.Scope == ScopeGlobal {
		return "g"
	}
	return "k:" + keyID
}

// Cacheable decides from the raw request body whether a request may be served from, and stored
// in, the cache under when ("deterministic" or "always"; anything else is treated as
// "deterministic", the strict choice).
//
// Chat completions, completions and Anthropic messages are deterministic when temperature is
// explicitly 0 or a seed is set, n is absent, null or 1, and there are no tools (tools or the
// legacy functions, a non-empty array) unless when is "always". Embeddings and predict answers are always
// deterministic. Under "always" every well-formed request of those endpoints is cacheable.
// Other endpoints never are. reason is empty when ok, else one of the Reason constants.
func Cacheable(e wire.Endpoint, body []byte, when string) (ok bool, reason string) {
	spec := e.Spec()
	if !spec.Cacheable {
		return false, ReasonEndpoint
	}
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return false, ReasonBody
	}
	js := unsafe.String(unsafe.SliceData(body), len(body))
	if !gjson.Valid(js) {
		return false, ReasonBody
	}
	if spec.Dialect == wire.DialectResponses && !unstoredJSON(js) {
		return false, ReasonStored
	}
	if spec.Dialect == wire.DialectEmbedding || spec.Dialect == wire.DialectPredict || when == WhenAlways {
		// an embedding is not sampled, nor is a predict model's answer (a classifier's, a ranker's)
		return true, ""
	}
	// One pass over the top-level members.
	var temp, seed, n, tools, functions gjson.Result
	gjson.Parse(js).ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "temperature":
			temp = v
		case "seed":
			seed = v
		case "n":
			n = v
		case "tools":
			tools = v
		case "functions":
			functions = v
		}
		return true
	})
	if n.Exists() && n.Type != gjson.Null && (n.Type != gjson.Number || n.Float() != 1) {
		return false, ReasonN
	}
	if nonEmptyArray(tools) || nonEmptyArray(functions) {
		return false, ReasonTools
	}
	zeroTemp := temp.Type == gjson.Number && temp.Float() == 0
	seeded := spec.Dialect != wire.DialectMessages && seed.Exists() && seed.Type != gjson.Null // Anthropic has no seed
	if !zeroTemp && !seeded {
		return false, ReasonTemperature
	}
	return true, ""
}

// unstoredJSON reports whether a Responses body asks for a JSON answer that is not stored
// (store: false, stream absent or false): only such an answer may be given to another request.
func unstoredJSON(js string) bool {
	r := gjson.GetMany(js, "store", "stream")
	return r[0].Type == gjson.False && (r[1].Type == gjson.False || !r[1].Exists() || r[1].Type == gjson.Null)
}

// nonEmptyArray reports whether v is an array with at least one element, or any other non-null
// value (a malformed tools field is not ignored).
func nonEmptyArray(v gjson.Result) bool {
	if !v.Exists() || v.Type == gjson.Null {
		return false
	}
	if !v.IsArray() {
		return true
	}
	empty := true
	v.ForEach(func(_, _ gjson.Result) bool {
		empty = false
		return false
	})
	return !empty
}
