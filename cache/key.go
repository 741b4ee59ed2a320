package cache

import (
	"crypto/sha256"
	"encoding/binary"
	"sync"

	"github.com/caddyai/gateway/internal/wire"
)

// keyVersion is hashed into every key. Change it whenever the key derivation or the canonical
// form changes, so entries written under the old rules are never read under the new ones.
const keyVersion = "caddyai-cache-v1"

// KeyInput is everything a cache key is derived from.
type KeyInput struct {
	// Endpoint is the operation the request addresses.
	Endpoint wire.Endpoint
	// Surface is the API surface the request came in on (its answer's wire format).
	Surface wire.Surface
	// Model is the resolved model snapshot the request is sent to (not the alias the client
	// named), so an alias moved to a new snapshot never serves the old snapshot's answers.
	Model string
	// APIVersion is the API version the client asked for (anthropic-version), empty if none.
	APIVersion string
	// Scope isolates tenants: Policy.ScopeID of the caller.
	Scope string
	// Body is the raw JSON request body.
	Body []byte
}

// keyScratch is the reusable state of one Key call.
type keyScratch struct {
	c   canonicalizer
	buf []byte
}

var keyPool = sync.Pool{New: func() any {
	s := &keyScratch{buf: make([]byte, 0, 4096)}
	s.c.drop = dropTopLevel
	return s
}}

// maxPooledBuf keeps a huge body's buffers from staying in the pool.
const maxPooledBuf = 1 << 20

// dropTopLevel names the top-level request fields left out of the key: stream and
// stream_options change only the framing (a cached answer is replayed as a stream), user is an
// end-user id for abuse tracking, and model is hashed as the resolved snapshot instead.
func dropTopLevel(key []byte) bool {
	switch string(key) {
	case "stream", "stream_options", "user", "model":
		return true
	}
	return false
}

// Key derives the cache key of a request: SHA-256 over a version tag, the endpoint, the
// surface, the resolved model snapshot, the API version and the scope id (each length-prefixed,
// so no two inputs run together) and the canonical body. The canonical body is the JSON with
// object keys sorted at every depth, insignificant whitespace removed, strings re-encoded from
// their decoded value and numbers kept as written (1 and 1.0 give different keys; see
// canonicalizer), without the top-level stream, stream_options, user and model. Every other
// parameter counts. It fails when the body is not a well-formed JSON object.
func Key(k KeyInput) ([32]byte, error) {
	s := keyPool.Get().(*keyScratch)
	defer func() {
		if cap(s.buf) <= maxPooledBuf && cap(s.c.tmp) <= maxPooledBuf {
			keyPool.Put(s)
		}
	}()
	b := s.buf[:0]
	b = appendField(b, keyVersion)
	b = append(b, byte(k.Endpoint), byte(k.Surface))
	b = appendField(b, k.Model)
	b = appendField(b, k.APIVersion)
	b = appendField(b, k.Scope)
	b, err := s.c.canonical(b, k.Body, true)
	s.buf = b[:0]
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(b), nil
}

// appendField appends s prefixed with its length.
func appendField(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendCanonical appends the canonical form of the JSON value src to dst (no fields dropped).
// It is what Key hashes, minus the top-level removals.
func appendCanonical(dst, src []byte) ([]byte, error) {
	var c canonicalizer
	return c.canonical(dst, src, false)
}
