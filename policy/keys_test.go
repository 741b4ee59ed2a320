package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
	good := `{"keys":[{"id":"team-a","sha256":"` + h + `","models":["llama*"],"expires_at":"2027-01-01T00:00:00Z","labels":{"team":"a"},"rpm":60,"tpm":1000,"max_concurrent":4,"pins":{"llama":"llama-old"},"priority":2},
	{"id":"team-b","sha256":"` + FormatHash(HashSecret("sk-team-b"))[7:] + `"}]}`
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
		"unknown field": `{"keys":[{"id":"a","sha256":"` + h + `","rmp":5}]}`,
		"missing id":    `{"keys":[{"sha256":"` + h + `"}]}`,
		"bad hash":      `{"keys":[{"id":"a","sha256":"sha256:12"}]}`,
		"dup":           `{"keys":[{"id":"a","sha256":"` + h + `"},{"id":"a","sha256":"` + h + `"}]}`,
		"negative":      `{"keys":[{"id":"a","sha256":"` + h + `","tpm":-1}]}`,
		"trailing":      `{"keys":[]} {}`,
		"bad time":      `{"keys":[{"id":"a","sha256":"` + h + `","expires_at":"tomorrow"}]}`,
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
		return `{"keys":[{"id":"` + id + `","sha256":"` + FormatHash(HashSecret(id)) + `"}]}`
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
	if _, changed, err = kf.Load(); err != nil || changed {
		t.Fatalf("the same broken content is reported again: %v", err)
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
	f.Add([]byte(`{"keys":[{"id":"a","sha256":"` + FormatHash(HashSecret("a")) + `","rpm":1}]}`))
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
