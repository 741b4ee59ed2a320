package policy

import (
	"fmt"
	"sort"

	"github.com/caddyai/gateway/ratelimit"
)

// Model is one model the gateway serves: a canonical name (for a dated snapshot, its full name),
// the aliases clients may use for it, its limits and where it runs.
type Model struct {
	// Name is the canonical name sent upstream and reported to clients.
	Name string
	// Aliases are other names clients may request it by.
	Aliases []string
	// ContextWindow is the model's context length in tokens; 0 means unknown (not checked).
	ContextWindow int
	// MaxOutputTokens caps the completion length; 0 means no cap beyond the context window.
	MaxOutputTokens int
	// UpstreamName, when set, is the name the upstream server knows the model by
	// (e.g. vLLM's --served-model-name); requests carry it upstream and responses report Name.
	UpstreamName string
	// Limits are the model's rate limits, summed over all keys.
	Limits ratelimit.Limits
	// Deprecation marks the model (or snapshot) as going away.
	Deprecation Deprecation
}

// Upstream returns the model name to send upstream.
func (m *Model) Upstream() string {
	if m.UpstreamName != "" {
		return m.UpstreamName
	}
	return m.Name
}

// Catalog resolves requested model names (canonical or alias) to models. Immutable once built.
type Catalog struct {
	models []*Model
	byName map[string]*Model
}

// NewCatalog builds a catalogue. A name or alias used twice is an error.
func NewCatalog(models []*Model) (*Catalog, error) {
	c := &Catalog{byName: make(map[string]*Model, len(models)*2)}
	for _, m := range models {
		if m.Name == "" {
			return nil, fmt.Errorf("building model catalogue: a model has no name")
		}
		for _, n := range append([]string{m.Name}, m.Aliases...) {
			if n == "" {
				return nil, fmt.Errorf("building model catalogue: model %q has an empty alias", m.Name)
			}
			if other, dup := c.byName[n]; dup {
				return nil, fmt.Errorf("building model catalogue: name %q is used by both %q and %q", n, other.Name, m.Name)
			}
			c.byName[n] = m
		}
		if m.ContextWindow < 0 || m.MaxOutputTokens < 0 {
			return nil, fmt.Errorf("building model catalogue: model %q: negative token count", m.Name)
		}
		c.models = append(c.models, m)
	}
	sort.SliceStable(c.models, func(i, j int) bool { return c.models[i].Name < c.models[j].Name })
	return c, nil
}

// Resolve returns the model a requested name (canonical or alias) refers to.
func (c *Catalog) Resolve(name string) (*Model, bool) {
	m, ok := c.byName[name]
	return m, ok
}

// Models returns the models sorted by name. The slice must not be modified.
func (c *Catalog) Models() []*Model { return c.models }
