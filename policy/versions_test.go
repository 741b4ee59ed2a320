package policy

import (
	"net/http"
	"testing"
	"time"
)

func TestDeprecationHeaders(t *testing.T) {
	dep := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	sun := time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC)
	h := http.Header{}
	Deprecation{Deprecated: dep, Sunset: sun, Link: "https://docs.example.com/models#llama-2"}.SetHeaders(h)
	if got := h.Get("Deprecation"); got != "@1780272000" {
		t.Errorf("Deprecation %q", got)
	}
	if got := h.Get("Sunset"); got != "Sun, 31 Jan 2027 00:00:00 GMT" {
		t.Errorf("Sunset %q", got)
	}
	if got := h.Get("Link"); got != `<https://docs.example.com/models#llama-2>; rel="deprecation"` {
		t.Errorf("Link %q", got)
	}
	// a second, earlier deprecation keeps the earliest dates and adds its link
	Deprecation{Deprecated: dep.AddDate(0, -1, 0), Sunset: sun.AddDate(0, -1, 0), Link: "https://x/v"}.SetHeaders(h)
	if h.Get("Deprecation") != "@1777593600" || h.Get("Sunset") != "Thu, 31 Dec 2026 00:00:00 GMT" || len(h.Values("Link")) != 2 {
		t.Errorf("merged headers %v", h)
	}
	h = http.Header{}
	Deprecation{}.SetHeaders(h)
	if len(h) != 0 {
		t.Errorf("no deprecation set headers %v", h)
	}
}

func TestAPIVersionNegotiation(t *testing.T) {
	now := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	versions := []*APIVersion{
		{Date: "2024-01-01", Deprecation: Deprecation{Deprecated: now.AddDate(-1, 0, 0), Sunset: now.AddDate(0, 0, -1)}},
		{Date: "2025-01-01", Deprecation: Deprecation{Deprecated: now.AddDate(0, -1, 0), Sunset: now.AddDate(0, 6, 0)},
			Renames: [][2]string{{"max_tokens", "max_completion_tokens"}}},
		{Date: "2026-06-01"},
	}
	a, err := NewAPIVersions("x-api-version", "2025-01-01", false, versions)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		value, want string
		status      int
		code        string
	}{
		{"", "2025-01-01", 0, ""},
		{"2026-06-01", "2026-06-01", 0, ""},
		{"2025-01-01", "2025-01-01", 0, ""},
		{"2023-01-01", "", 400, "unsupported_api_version"},
		{"garbage\r\n", "", 400, "unsupported_api_version"},
		{"2024-01-01", "2024-01-01", 410, "api_version_sunset"},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			v, werr := a.Negotiate(tt.value, now)
			if tt.status != 0 {
				if werr == nil || werr.Status != tt.status || werr.Code != tt.code || werr.Param != "x-api-version" {
					t.Fatalf("got %+v", werr)
				}
				return
			}
			if werr != nil || v.Date != tt.want {
				t.Fatalf("got %v %v", v, werr)
			}
		})
	}
	req, _ := NewAPIVersions("X-Api-Version", "", true, versions)
	if _, werr := req.Negotiate("", now); werr == nil || werr.Code != "api_version_required" {
		t.Errorf("required: %v", werr)
	}
	latest, _ := NewAPIVersions("X-Api-Version", "", false, versions)
	if v, _ := latest.Negotiate("", now); v.Date != "2026-06-01" {
		t.Errorf("default without configuration should be the newest, got %s", v.Date)
	}
	for name, vs := range map[string][]*APIVersion{
		"no versions": nil,
		"bad date":    {{Date: "yesterday"}},
		"dup":         {{Date: "2024-01-01"}, {Date: "2024-01-01"}},
		"bad rename":  {{Date: "2024-01-01", Renames: [][2]string{{"a", "a"}}}},
	} {
		if _, err := NewAPIVersions("X-V", "", false, vs); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
	if _, err := NewAPIVersions("X-V", "2020-01-01", false, versions); err == nil {
		t.Error("unsupported default accepted")
	}
}

func TestAPIVersionApply(t *testing.T) {
	v := &APIVersion{Date: "2025-01-01", Renames: [][2]string{{"max_tokens", "max_completion_tokens"}, {"functions", "tools"}}}
	out, err := v.Apply([]byte(`{"model":"m","max_tokens":5,"messages":[]}`))
	if err != nil || string(out) != `{"model":"m","messages":[],"max_completion_tokens":5}` {
		t.Errorf("%s %v", out, err)
	}
	in := []byte(`{"model":"m"}`)
	if out, err := v.Apply(in); err != nil || &out[0] != &in[0] {
		t.Errorf("nothing to rename must return the body itself: %s %v", out, err)
	}
	if _, err := v.Apply([]byte(`{"max_tokens":5,"max_completion_tokens":6}`)); err == nil {
		t.Error("conflicting parameters accepted")
	}
}

func TestResolveForPins(t *testing.T) {
	old := &Model{Name: "llama-3.1-8b-2025-01-01"}
	cur := &Model{Name: "llama-3.1-8b-2025-07-01", Aliases: []string{"llama"}}
	c, err := NewCatalog([]*Model{old, cur})
	if err != nil {
		t.Fatal(err)
	}
	pinned := &Key{ID: "a", Pins: map[string]string{"llama": "llama-3.1-8b-2025-01-01"}}
	if m, _ := c.ResolveFor(pinned, "llama"); m != old {
		t.Errorf("pinned key got %v", m)
	}
	if m, _ := c.ResolveFor(&Key{ID: "b"}, "llama"); m != cur {
		t.Errorf("unpinned key got %v", m)
	}
	if m, _ := c.ResolveFor(pinned, "llama-3.1-8b-2025-07-01"); m != cur {
		t.Errorf("a snapshot by its full name is not affected by pins, got %v", m)
	}
}
