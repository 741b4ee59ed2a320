package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// maxKeysFileSize bounds how much of a keys file is read.
const maxKeysFileSize = 64 << 20

// KeyFile tracks a keys file on disk so that a poller can re-read it only when its content
// changes (by content hash, so atomic renames, editors and clock skew are all handled).
type KeyFile struct {
	// Path is the file's path.
	Path   string
	sum    [sha256.Size]byte
	bad    [sha256.Size]byte
	badErr error // the parse error of the content whose digest is bad
	seen   bool
}

// Load reads and parses the file. changed is false (and keys nil) when the content is the same as
// at the last successful load. A read or parse error leaves the last good state untouched, so the
// caller keeps serving the last good key set; the same broken content is parsed only once and
// returns the same error.
func (f *KeyFile) Load() (keys []*Key, changed bool, err error) {
	file, err := os.Open(f.Path)
	if err != nil {
		return nil, false, fmt.Errorf("reading keys file: %w", err)
	}
	defer file.Close()
	data, err := io.ReadAll(io.LimitReader(file, maxKeysFileSize+1))
	if err != nil {
		return nil, false, fmt.Errorf("reading keys file: %w", err)
	}
	if len(data) > maxKeysFileSize {
		return nil, false, fmt.Errorf("reading keys file: larger than %d bytes", maxKeysFileSize)
	}
	sum := sha256.Sum256(data)
	if f.seen && sum == f.sum {
		return nil, false, nil
	}
	if f.badErr != nil && sum == f.bad {
		return nil, false, f.badErr // the same broken content: the same error, not parsed again
	}
	keys, err = ParseKeysFile(data)
	if err != nil {
		f.bad, f.badErr = sum, err
		return nil, false, err
	}
	f.sum, f.seen = sum, true
	return keys, true, nil
}

// ParseKeysFile parses a keys file: {"keys": [...]}, each entry a KeyConfig ({"id": ...,
// "secret": "sha256:<hex>", "models": [...], "disabled": bool, "expires_at": RFC 3339,
// "labels": {...}, "pins": {...}, "priority": n, "rpm": n, "tpm": n, "rpd": n, "tpd": n,
// "max_concurrent": n}), the schema of inline keys. Unknown fields are errors, so a typo never
// silently drops a limit. Secrets in clear and placeholders are not accepted here: only hashes.
func ParseKeysFile(data []byte) ([]*Key, error) {
	var doc struct {
		Keys []KeyConfig `json:"keys"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		if strings.Contains(err.Error(), `unknown field "sha256"`) {
			return nil, fmt.Errorf(`parsing keys file: %w (the hash is now "secret": "sha256:<hex>", as for inline keys)`, err)
		}
		return nil, fmt.Errorf("parsing keys file: %w", err)
	}
	if dec.More() {
		return nil, errors.New("parsing keys file: trailing data after the JSON document")
	}
	if doc.Keys == nil {
		return nil, errors.New(`parsing keys file: no "keys" array`)
	}
	keys, err := NewKeys(doc.Keys, nil)
	if err != nil {
		return nil, fmt.Errorf("parsing keys file: %w", err)
	}
	if _, err := NewKeyTable(keys); err != nil {
		return nil, fmt.Errorf("parsing keys file: %w", err)
	}
	return keys, nil
}
