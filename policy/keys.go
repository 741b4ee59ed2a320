package policy

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/caddyai/gateway/ratelimit"
)

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

// keyFileEntry is one key in a keys file.
type keyFileEntry struct {
	ID        string            `json:"id"`
	SHA256    string            `json:"sha256"`
	Models    []string          `json:"models,omitempty"`
	Disabled  bool              `json:"disabled,omitempty"`
	ExpiresAt *time.Time        `json:"expires_at,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	Pins      map[string]string `json:"pins,omitempty"`
	Priority  int               `json:"priority,omitempty"`
	ratelimit.Limits
}

// ParseKeysFile parses a keys file: {"keys":[{"id":..., "sha256":"sha256:<hex>" or "<hex>",
// "models":[...], "disabled":bool, "expires_at":RFC 3339, "labels":{...}, "pins":{...},
// "priority":n, "rpm":n, "tpm":n, "rpd":n, "tpd":n, "max_concurrent":n}]}. Unknown fields are
// errors, so a typo never silently drops a limit. Secrets in clear are not accepted here.
func ParseKeysFile(data []byte) ([]*Key, error) {
	var doc struct {
		Keys []keyFileEntry `json:"keys"`
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("parsing keys file: %w", err)
	}
	if dec.More() {
		return nil, errors.New("parsing keys file: trailing data after the JSON document")
	}
	if doc.Keys == nil {
		return nil, errors.New(`parsing keys file: no "keys" array`)
	}
	keys := make([]*Key, 0, len(doc.Keys))
	for i, e := range doc.Keys {
		if e.ID == "" {
			return nil, fmt.Errorf("parsing keys file: keys[%d]: missing id", i)
		}
		hashText := e.SHA256
		if !strings.HasPrefix(hashText, "sha256:") {
			hashText = "sha256:" + hashText
		}
		h, err := ParseHash(hashText)
		if err != nil {
			return nil, fmt.Errorf("parsing keys file: key %q: %w", e.ID, err)
		}
		if e.Limits.RPM < 0 || e.Limits.TPM < 0 || e.Limits.RPD < 0 || e.Limits.TPD < 0 || e.Limits.MaxConcurrent < 0 {
			return nil, fmt.Errorf("parsing keys file: key %q: negative limit", e.ID)
		}
		k := &Key{ID: e.ID, Hash: h, Models: e.Models, Disabled: e.Disabled, Labels: e.Labels, Limits: e.Limits, Pins: e.Pins, Priority: e.Priority}
		if e.ExpiresAt != nil {
			k.ExpiresAt = *e.ExpiresAt
		}
		keys = append(keys, k)
	}
	if _, err := NewKeyTable(keys); err != nil {
		return nil, fmt.Errorf("parsing keys file: %w", err)
	}
	return keys, nil
}
