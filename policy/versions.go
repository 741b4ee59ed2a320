package policy

import (
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"github.com/caddyai/gateway/internal/wire"
)

// Deprecation marks something (a model, a snapshot, an API version) as going away.
type Deprecation struct {
	// Deprecated is when it was (or will be) deprecated; zero means not deprecated.
	Deprecated time.Time
	// Sunset is when it stops being served; zero means no date.
	Sunset time.Time
	// Link is a document about the deprecation, sent as Link: <url>; rel="deprecation".
	Link string
	// ServeAfterSunset keeps serving after the sunset date (the headers still say so).
	ServeAfterSunset bool
}

// IsZero reports whether nothing is deprecated.
func (d Deprecation) IsZero() bool { return d.Deprecated.IsZero() && d.Sunset.IsZero() }

// SetHeaders adds the Deprecation (RFC 9745: "@<unix seconds>"), Sunset (RFC 8594: an HTTP
// date) and Link headers. Several deprecations (a model and an API version) add several Link
// values; Deprecation and Sunset keep the earliest date.
func (d Deprecation) SetHeaders(h http.Header) {
	if !d.Deprecated.IsZero() {
		unix := d.Deprecated.Unix()
		old, err := strconv.ParseInt(strings.TrimPrefix(h.Get("Deprecation"), "@"), 10, 64)
		if err != nil || unix < old {
			h.Set("Deprecation", "@"+strconv.FormatInt(unix, 10))
		}
	}
	if !d.Sunset.IsZero() {
		v := d.Sunset.UTC().Format(http.TimeFormat)
		if old, err := http.ParseTime(h.Get("Sunset")); err != nil || d.Sunset.Before(old) {
			h.Set("Sunset", v)
		}
	}
	if d.Link != "" && !d.Deprecated.IsZero() {
		h.Add("Link", "<"+d.Link+`>; rel="deprecation"`)
	}
}

// Gone reports whether the sunset has passed and serving has stopped.
func (d Deprecation) Gone(now time.Time) bool {
	return !d.Sunset.IsZero() && !now.Before(d.Sunset) && !d.ServeAfterSunset
}

// APIVersion is one date-based API version a client can ask for.
type APIVersion struct {
	// Date names the version (YYYY-MM-DD).
	Date string
	// Renames are request parameters renamed for this version, [from, to]: an old client's
	// parameter is moved to the name the current upstream expects.
	Renames [][2]string
	// Deprecation marks the version as going away.
	Deprecation Deprecation
}

// Apply rewrites a request body for this version (top-level parameter renames). It returns the
// body unchanged when nothing applies.
func (v *APIVersion) Apply(body []byte) ([]byte, error) {
	for _, r := range v.Renames {
		val := gjson.GetBytes(body, gjson.Escape(r[0]))
		if !val.Exists() {
			continue
		}
		if gjson.GetBytes(body, gjson.Escape(r[1])).Exists() {
			return nil, fmt.Errorf("both %q and %q are set", r[0], r[1])
		}
		var err error
		if body, err = sjson.SetRawBytes(body, escapeSJSON(r[1]), []byte(val.Raw)); err != nil {
			return nil, err
		}
		if body, err = sjson.DeleteBytes(body, escapeSJSON(r[0])); err != nil {
			return nil, err
		}
	}
	return body, nil
}

func escapeSJSON(key string) string {
	r := strings.NewReplacer(".", `\.`, "*", `\*`, "?", `\?`, ":", `\:`)
	return r.Replace(key)
}

// APIVersions negotiates the date-based API version header.
type APIVersions struct {
	// Header is the request and response header carrying the version.
	Header string
	// Default is the version of requests without the header ("" with Required).
	Default string
	// Required refuses requests without the header.
	Required bool
	versions map[string]*APIVersion
	list     []string
}

// NewAPIVersions checks a version configuration.
func NewAPIVersions(header, def string, required bool, versions []*APIVersion) (*APIVersions, error) {
	if header == "" {
		return nil, fmt.Errorf("api_version: a header name is required")
	}
	a := &APIVersions{Header: http.CanonicalHeaderKey(header), Default: def, Required: required, versions: map[string]*APIVersion{}}
	for _, v := range versions {
		if _, err := time.Parse(time.DateOnly, v.Date); err != nil {
			return nil, fmt.Errorf("api_version: %q is not a date (YYYY-MM-DD)", v.Date)
		}
		if _, dup := a.versions[v.Date]; dup {
			return nil, fmt.Errorf("api_version: %s listed twice", v.Date)
		}
		for _, r := range v.Renames {
			if r[0] == "" || r[1] == "" || r[0] == r[1] {
				return nil, fmt.Errorf("api_version %s: bad rename %q -> %q", v.Date, r[0], r[1])
			}
		}
		a.versions[v.Date] = v
		a.list = append(a.list, v.Date)
	}
	if len(a.list) == 0 {
		return nil, fmt.Errorf("api_version: no supported versions")
	}
	sort.Strings(a.list)
	if def == "" && !required {
		a.Default = a.list[len(a.list)-1]
	}
	if a.Default != "" {
		if _, ok := a.versions[a.Default]; !ok {
			return nil, fmt.Errorf("api_version: default %s is not a supported version", a.Default)
		}
	}
	return a, nil
}

// Supported returns the supported versions, oldest first.
func (a *APIVersions) Supported() []string { return a.list }

// Negotiate returns the version of a request from its header value ("" when absent).
func (a *APIVersions) Negotiate(value string, now time.Time) (*APIVersion, *wire.Error) {
	param := strings.ToLower(a.Header)
	if value == "" {
		if a.Required {
			return nil, wire.Errorf(http.StatusBadRequest, "api_version_required", param,
				"%s: header is required. Supported versions: %s.", param, strings.Join(a.list, ", "))
		}
		value = a.Default
	}
	v, ok := a.versions[value]
	if !ok {
		return nil, wire.Errorf(http.StatusBadRequest, "unsupported_api_version", param,
			"%s: %q is not a supported API version. Supported versions: %s.", param, truncate(value, 64), strings.Join(a.list, ", "))
	}
	if v.Deprecation.Gone(now) {
		return v, wire.Errorf(http.StatusGone, "api_version_sunset", param,
			"API version %s was retired on %s. Supported versions: %s.", v.Date, v.Deprecation.Sunset.UTC().Format(time.DateOnly), strings.Join(a.live(now), ", "))
	}
	return v, nil
}

func (a *APIVersions) live(now time.Time) []string {
	out := make([]string, 0, len(a.list))
	for _, d := range a.list {
		if !a.versions[d].Deprecation.Gone(now) {
			out = append(out, d)
		}
	}
	return out
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

// ModelSunset is the refusal of a model (or snapshot) past its sunset date.
func ModelSunset(name string, d Deprecation) *wire.Error {
	return wire.Errorf(http.StatusGone, "model_sunset", "model",
		"The model `%s` was retired on %s and is no longer served.", name, d.Sunset.UTC().Format(time.DateOnly))
}

// ResolveFor resolves a requested model name for a key: a key's pin of an alias (or any name)
// to a snapshot wins over the catalogue's current alias.
func (c *Catalog) ResolveFor(k *Key, name string) (*Model, bool) {
	if k != nil {
		if pinned, ok := k.Pins[name]; ok {
			return c.Resolve(pinned)
		}
	}
	return c.Resolve(name)
}
