package policy

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/caddyai/gateway/ratelimit"
)

// KeyConfig is one API key as configured. Inline keys (the gateway's "keys" array) and the
// entries of a keys file share this schema, and NewKeys turns both into Keys.
type KeyConfig struct {
	// ID names the key in logs, metrics and placeholders. Required, unique.
	ID string `json:"id"`
	// Secret identifies the key: "sha256:<hex>", the SHA-256 of the secret (the secret itself
	// never appears in the config; the only form a keys file accepts). Inline keys may also
	// give a placeholder such as {env.GATEWAY_KEY} or {file./run/secrets/key}, resolved once at
	// load, or a literal secret (accepted with a warning; the Caddyfile adapter stores its hash
	// instead).
	Secret string `json:"secret"`
	// Models are the model names or aliases (path.Match patterns, e.g. "llama-*") the key may
	// use. Default: every model.
	Models []string `json:"models,omitempty"`
	// Disabled refuses the key with 401 and a distinct message.
	Disabled bool `json:"disabled,omitempty"`
	// NoBatches bars the key from creating batches (403); its live requests are unaffected.
	NoBatches bool `json:"no_batches,omitempty"`
	// ExpiresAt (an RFC 3339 time) refuses the key with 401 and a distinct message from that
	// instant on. Default: never.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	// Labels are free-form operator labels (team, tenant, cost centre).
	Labels map[string]string `json:"labels,omitempty"`
	// Pins map a model alias to the snapshot (model name) this key keeps using when the alias
	// moves on.
	Pins map[string]string `json:"pins,omitempty"`
	// Priority orders this key's requests in a model's admission queue; higher goes first.
	// Default: 0.
	Priority int `json:"priority,omitempty"`
	// Limits are the key's own rate limits (rpm, tpm, rpd, tpd, max_concurrent).
	ratelimit.Limits
}

// ResolveSecret turns a key secret that is not a sha256:<hex> hash (a placeholder or a literal)
// into the secret itself. id is the key's id, for the caller's own warnings.
type ResolveSecret func(id, secret string) (string, error)

// NewKeys turns key configs into keys, checking each. With a nil resolve only sha256:<hex>
// secrets are accepted (a keys file holds hashes only). The keys are not checked against each
// other; NewKeyTable does that.
func NewKeys(configs []KeyConfig, resolve ResolveSecret) ([]*Key, error) {
	keys := make([]*Key, 0, len(configs))
	for i, c := range configs {
		if c.ID == "" {
			return nil, fmt.Errorf("keys[%d]: id is required", i)
		}
		k, err := c.key(resolve)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", c.ID, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func (c KeyConfig) key(resolve ResolveSecret) (*Key, error) {
	k := &Key{ID: c.ID, Models: c.Models, Disabled: c.Disabled, NoBatches: c.NoBatches, ExpiresAt: c.ExpiresAt, Labels: c.Labels,
		Limits: c.Limits, Pins: c.Pins, Priority: c.Priority}
	switch {
	case c.Secret == "":
		return nil, errors.New("secret is required")
	case strings.HasPrefix(c.Secret, "sha256:"):
		h, err := ParseHash(c.Secret)
		if err != nil {
			return nil, err
		}
		k.Hash = h
	case resolve == nil:
		return nil, errors.New(`want "secret": "sha256:<hex>" (a keys file holds only hashes)`)
	default:
		secret, err := resolve(c.ID, c.Secret)
		if err != nil {
			return nil, err
		}
		if secret = strings.TrimSpace(secret); secret == "" {
			return nil, errors.New("secret resolves to an empty value")
		}
		k.Hash = HashSecret(secret)
	}
	if err := c.Limits.Validate(); err != nil {
		return nil, err
	}
	return k, nil
}

// Key is one API key as the gateway holds it: never the secret, only its SHA-256.
type Key struct {
	// ID names the key in logs, metrics and placeholders. Required, unique.
	ID string
	// Hash is SHA-256 of the secret.
	Hash [sha256.Size]byte
	// Models are path.Match patterns of the model names (or aliases) the key may use.
	// Empty allows every model.
	Models []string
	// Disabled keys are refused with a distinct message.
	Disabled bool
	// NoBatches keys may not create batches.
	NoBatches bool
	// ExpiresAt, when set, is the instant from which the key is refused.
	ExpiresAt time.Time
	// Labels are free-form operator labels (team, tenant, cost centre).
	Labels map[string]string
	// Limits are the key's own rate limits.
	Limits ratelimit.Limits
	// Pins map a model alias to the snapshot this key keeps using.
	Pins map[string]string
	// Priority orders queued requests; higher goes first.
	Priority int

	scope string // "key:" + ID, set when a KeyTable takes the key
}

// ScopeID names the key's rate limit scope: "key:" + ID.
func (k *Key) ScopeID() string {
	if k.scope != "" {
		return k.scope
	}
	return "key:" + k.ID
}

// Status is the outcome of a key lookup.
type Status uint8

// Key lookup outcomes.
const (
	KeyOK Status = iota
	KeyMissing
	KeyUnknown
	KeyDisabled
	KeyExpired
)

// HashSecret returns the SHA-256 of a key secret.
func HashSecret(secret string) [sha256.Size]byte { return sha256.Sum256([]byte(secret)) }

// ParseHash parses "sha256:<64 hex digits>".
func ParseHash(s string) ([sha256.Size]byte, error) {
	var h [sha256.Size]byte
	hexPart, ok := strings.CutPrefix(s, "sha256:")
	if !ok {
		return h, fmt.Errorf("parsing key hash: want sha256:<hex>, got a value without the sha256: prefix")
	}
	if len(hexPart) != 2*sha256.Size {
		return h, fmt.Errorf("parsing key hash: want %d hex digits, got %d", 2*sha256.Size, len(hexPart))
	}
	if _, err := hex.Decode(h[:], []byte(strings.ToLower(hexPart))); err != nil {
		return h, fmt.Errorf("parsing key hash: %w", err)
	}
	return h, nil
}

// FormatHash renders a hash as "sha256:<hex>".
func FormatHash(h [sha256.Size]byte) string { return "sha256:" + hex.EncodeToString(h[:]) }

// AllowsModel reports whether the key may use a model, given its canonical name and aliases.
func (k *Key) AllowsModel(m *Model) bool {
	if len(k.Models) == 0 {
		return true
	}
	for _, p := range k.Models {
		if match(p, m.Name) {
			return true
		}
		for _, a := range m.Aliases {
			if match(p, a) {
				return true
			}
		}
	}
	return false
}

func match(pattern, name string) bool {
	if pattern == "*" || pattern == name {
		return true
	}
	ok, _ := path.Match(pattern, name)
	return ok
}

// KeyTable finds keys by the hash of the presented secret. It is immutable once built; a new
// table replaces it when the key file changes.
type KeyTable struct {
	byHash map[[sha256.Size]byte]*Key
	byID   map[string]*Key
}

// NewKeyTable builds a table. Duplicate ids or hashes are errors.
func NewKeyTable(keys []*Key) (*KeyTable, error) {
	t := &KeyTable{byHash: make(map[[sha256.Size]byte]*Key, len(keys)), byID: make(map[string]*Key, len(keys))}
	for _, k := range keys {
		if k.ID == "" {
			return nil, errors.New("building key table: a key has no id")
		}
		if _, dup := t.byID[k.ID]; dup {
			return nil, fmt.Errorf("building key table: duplicate key id %q", k.ID)
		}
		if other, dup := t.byHash[k.Hash]; dup {
			return nil, fmt.Errorf("building key table: keys %q and %q have the same secret", other.ID, k.ID)
		}
		for _, p := range k.Models {
			if _, err := path.Match(p, ""); err != nil {
				return nil, fmt.Errorf("building key table: key %q: bad model pattern %q: %w", k.ID, p, err)
			}
		}
		if k.scope == "" {
			k.scope = "key:" + k.ID // before the table is published: built once, not per request
		}
		t.byHash[k.Hash] = k
		t.byID[k.ID] = k
	}
	return t, nil
}

// Len returns the number of keys.
func (t *KeyTable) Len() int { return len(t.byHash) }

// ByID returns the key with the given id.
func (t *KeyTable) ByID(id string) *Key { return t.byID[id] }

// Lookup authenticates a presented secret. Only its SHA-256 is compared, so the time taken
// reveals nothing about how close a guess is: the map is keyed by a digest the caller cannot
// steer, and the final comparison is constant-time.
func (t *KeyTable) Lookup(secret string, now time.Time) (*Key, Status) {
	if secret == "" {
		return nil, KeyMissing
	}
	h := HashSecret(secret)
	k, ok := t.byHash[h]
	if !ok || subtle.ConstantTimeCompare(k.Hash[:], h[:]) != 1 {
		return nil, KeyUnknown
	}
	if k.Disabled {
		return k, KeyDisabled
	}
	if !k.ExpiresAt.IsZero() && !now.Before(k.ExpiresAt) {
		return k, KeyExpired
	}
	return k, KeyOK
}

// Merge returns a table of the keys of t followed by those of other. A key in both (same id or
// same secret) is an error.
func (t *KeyTable) Merge(other *KeyTable) (*KeyTable, error) {
	keys := make([]*Key, 0, t.Len()+other.Len())
	for _, k := range t.byID {
		keys = append(keys, k)
	}
	for _, k := range other.byID {
		keys = append(keys, k)
	}
	return NewKeyTable(keys)
}

// IDs returns the ids of the table's keys, sorted.
func (t *KeyTable) IDs() []string {
	ids := make([]string, 0, len(t.byID))
	for id := range t.byID {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}
