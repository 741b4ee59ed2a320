package policy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyai/gateway/ratelimit"
)

func mustKeys(t *testing.T, keys ...*Key) *KeyTable {
	t.Helper()
	kt, err := NewKeyTable(keys)
	if err != nil {
		t.Fatal(err)
	}
	return kt
}

func TestKeyLookup(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	kt := mustKeys(t,
		&Key{ID: "ok", Hash: HashSecret("sk-ok")},
		&Key{ID: "off", Hash: HashSecret("sk-off"), Disabled: true},
		&Key{ID: "old", Hash: HashSecret("sk-old"), ExpiresAt: now},
		&Key{ID: "later", Hash: HashSecret("sk-later"), ExpiresAt: now.Add(time.Second)},
	)
	tests := []struct {
		secret string
		id     string
		want   Status
	}{
		{"", "", KeyMissing},
		{"sk-nope", "", KeyUnknown},
		{"sk-ok", "ok", KeyOK},
		{"sk-ok ", "", KeyUnknown},
		{"sk-off", "off", KeyDisabled},
		{"sk-old", "old", KeyExpired},
		{"sk-later", "later", KeyOK},
	}
	for _, tt := range tests {
		t.Run(tt.secret, func(t *testing.T) {
			k, st := kt.Lookup(tt.secret, now)
			if st != tt.want {
				t.Fatalf("status %v, want %v", st, tt.want)
			}
			if (k == nil && tt.id != "") || (k != nil && k.ID != tt.id) {
				t.Fatalf("key %+v, want id %q", k, tt.id)
			}
		})
	}
}

func TestKeyTableRejectsDuplicates(t *testing.T) {
	if _, err := NewKeyTable([]*Key{{ID: "a", Hash: HashSecret("x")}, {ID: "a", Hash: HashSecret("y")}}); err == nil {
		t.Error("duplicate id accepted")
	}
	if _, err := NewKeyTable([]*Key{{ID: "a", Hash: HashSecret("x")}, {ID: "b", Hash: HashSecret("x")}}); err == nil {
		t.Error("duplicate secret accepted")
	}
	if _, err := NewKeyTable([]*Key{{ID: "a", Hash: HashSecret("x"), Models: []string{"[bad"}}}); err == nil {
		t.Error("bad pattern accepted")
	}
}

func TestParseHash(t *testing.T) {
	h := HashSecret("sk-demo-gateway")
	got, err := ParseHash(FormatHash(h))
	if err != nil || got != h {
		t.Fatalf("round trip: %v", err)
	}
	upper := "sha256:" + strings.ToUpper(FormatHash(h)[7:])
	if got, err := ParseHash(upper); err != nil || got != h {
		t.Errorf("upper-case hex: %v", err)
	}
	for _, bad := range []string{"", "sha256:", "md5:abcd", "sha256:zz" + strings.Repeat("0", 62), "sha256:" + strings.Repeat("0", 63)} {
		if _, err := ParseHash(bad); err == nil {
			t.Errorf("ParseHash(%q) accepted", bad)
		}
	}
}

func TestAllowsModel(t *testing.T) {
	m := &Model{Name: "llama-3.1-8b-2025-07-01", Aliases: []string{"llama"}}
	tests := []struct {
		patterns []string
		want     bool
	}{
		{nil, true},
		{[]string{"*"}, true},
		{[]string{"llama"}, true},
		{[]string{"llama-3.1-*"}, true},
		{[]string{"qwen*", "mistral"}, false},
	}
	for _, tt := range tests {
		k := &Key{ID: "k", Models: tt.patterns}
		if got := k.AllowsModel(m); got != tt.want {
			t.Errorf("patterns %v: got %v", tt.patterns, got)
		}
	}
}

func TestParseKeysFile(t *testing.T) {
	h := FormatHash(HashSecret("sk-team-a"))
	good := `{"keys":[{"id":"team-a","secret":"` + h + `","models":["llama*"],"expires_at":"2027-01-01T00:00:00Z","labels":{"team":"a"},"rpm":60,"tpm":1000,"max_concurrent":4,"pins":{"llama":"llama-old"},"priority":2},
	{"id":"team-b","secret":"` + FormatHash(HashSecret("sk-team-b")) + `"}]}`
	keys, err := ParseKeysFile([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	k := keys[0]
	if k.ID != "team-a" || k.Limits.RPM != 60 || k.Limits.TPM != 1000 || k.Limits.MaxConcurrent != 4 || k.Labels["team"] != "a" ||
		k.ExpiresAt.Year() != 2027 || k.Pins["llama"] != "llama-old" || k.Priority != 2 || k.Hash != HashSecret("sk-team-a") {
		t.Errorf("parsed %+v", k)
	}
	bad := map[string]string{
		"not json":      `{`,
		"no keys":       `{}`,
		"unknown field": `{"keys":[{"id":"a","secret":"` + h + `","rmp":5}]}`,
		"missing id":    `{"keys":[{"secret":"` + h + `"}]}`,
		"bad hash":      `{"keys":[{"id":"a","secret":"sha256:12"}]}`,
		"dup":           `{"keys":[{"id":"a","secret":"` + h + `"},{"id":"a","secret":"` + h + `"}]}`,
		"negative":      `{"keys":[{"id":"a","secret":"` + h + `","tpm":-1}]}`,
		"trailing":      `{"keys":[]} {}`,
		"bad time":      `{"keys":[{"id":"a","secret":"` + h + `","expires_at":"tomorrow"}]}`,
		"bare hex":      `{"keys":[{"id":"a","secret":"` + h[len("sha256:"):] + `"}]}`,
		"literal":       `{"keys":[{"id":"a","secret":"sk-team-a"}]}`,
		"placeholder":   `{"keys":[{"id":"a","secret":"{env.KEY}"}]}`,
		"old field":     `{"keys":[{"id":"a","sha256":"` + h + `"}]}`,
		"huge limit":    `{"keys":[{"id":"a","secret":"` + h + `","rpm":50000000001}]}`,
	}
	if _, err := ParseKeysFile([]byte(bad["old field"])); err == nil || !strings.Contains(err.Error(), `"secret": "sha256:<hex>"`) {
		t.Errorf("the error for the old sha256 field does not name its replacement: %v", err)
	}
	for name, doc := range bad {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseKeysFile([]byte(doc)); err == nil {
				t.Error("accepted")
			} else if strings.Contains(err.Error(), "sk-team-a") {
				t.Errorf("error leaks a secret: %v", err)
			}
		})
	}
}

// TestNewKeysInline checks the conversion of inline keys, the path keys files share: hashes are
// taken as they are, anything else goes through resolve and is hashed, trimmed of spaces.
func TestNewKeysInline(t *testing.T) {
	var resolved []string
	resolve := func(id, secret string) (string, error) {
		resolved = append(resolved, id)
		switch secret {
		case "{env.KEY}":
			return " sk-from-env\n", nil
		case "{env.EMPTY}":
			return "", nil
		case "{env.BAD}":
			return "", errors.New("resolving secret: unrecognized placeholder {env.BAD}")
		}
		return secret, nil
	}
	expires := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	keys, err := NewKeys([]KeyConfig{
		{ID: "hashed", Secret: FormatHash(HashSecret("sk-hashed")), ExpiresAt: expires, Limits: ratelimit.Limits{TPM: 10}},
		{ID: "env", Secret: "{env.KEY}"},
		{ID: "literal", Secret: "sk-literal"},
	}, resolve)
	if err != nil {
		t.Fatal(err)
	}
	if keys[0].Hash != HashSecret("sk-hashed") || !keys[0].ExpiresAt.Equal(expires) || keys[0].Limits.TPM != 10 {
		t.Errorf("hashed key: %+v", keys[0])
	}
	if keys[1].Hash != HashSecret("sk-from-env") || keys[2].Hash != HashSecret("sk-literal") {
		t.Error("resolved secrets are not hashed as given")
	}
	if len(resolved) != 2 || resolved[0] != "env" || resolved[1] != "literal" {
		t.Errorf("resolve called for %v, want env and literal only", resolved)
	}
	bad := map[string]KeyConfig{
		"no id":          {Secret: "sk-x"},
		"no secret":      {ID: "a"},
		"empty resolved": {ID: "a", Secret: "{env.EMPTY}"},
		"resolve error":  {ID: "a", Secret: "{env.BAD}"},
		"bad hash":       {ID: "a", Secret: "sha256:12"},
		"negative limit": {ID: "a", Secret: "sk-x", Limits: ratelimit.Limits{RPM: -1}},
	}
	for name, c := range bad {
		t.Run(name, func(t *testing.T) {
			if _, err := NewKeys([]KeyConfig{c}, resolve); err == nil {
				t.Error("accepted")
			} else if strings.Contains(err.Error(), "sk-x") {
				t.Errorf("error leaks a secret: %v", err)
			}
		})
	}
}

func TestKeyFileReloadsOnlyOnChange(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "keys.json")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	doc := func(id string) string {
		return `{"keys":[{"id":"` + id + `","secret":"` + FormatHash(HashSecret(id)) + `"}]}`
	}
	kf := &KeyFile{Path: p}
	write(doc("a"))
	keys, changed, err := kf.Load()
	if err != nil || !changed || keys[0].ID != "a" {
		t.Fatalf("first load: %v %v %v", keys, changed, err)
	}
	if keys, changed, err = kf.Load(); err != nil || changed || keys != nil {
		t.Fatalf("unchanged file reported as changed: %v %v", changed, err)
	}
	write("garbage")
	if _, changed, err = kf.Load(); err == nil || changed {
		t.Fatal("garbage accepted")
	}
	// the same broken content is not parsed again: the same error comes back (the watcher logs
	// a trouble once, when it starts)
	if _, changed, again := kf.Load(); again != err || changed {
		t.Fatalf("the same broken content: %v, want the first error %v", again, err)
	}
	write(doc("a"))
	if _, changed, err = kf.Load(); err != nil || changed {
		t.Fatalf("restoring the last good content is not a change: %v %v", changed, err)
	}
	write(doc("b"))
	if keys, changed, err = kf.Load(); err != nil || !changed || keys[0].ID != "b" {
		t.Fatalf("new content: %v %v %v", keys, changed, err)
	}
	os.Remove(p)
	if _, _, err = kf.Load(); err == nil {
		t.Fatal("missing file accepted")
	}
}

func FuzzParseKeysFile(f *testing.F) {
	f.Add([]byte(`{"keys":[{"id":"a","secret":"` + FormatHash(HashSecret("a")) + `","rpm":1}]}`))
	f.Add([]byte(`{"keys":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		keys, err := ParseKeysFile(data)
		if err != nil {
			return
		}
		if _, err := NewKeyTable(keys); err != nil {
			t.Fatalf("parsed keys do not build a table: %v", err)
		}
	})
}
