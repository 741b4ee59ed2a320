package policy

import "github.com/caddyai/gateway/internal/wire"

// knownParams holds, indexed by endpoint, the set of its documented top-level params (the
// row's Params). Validation allows any param; the sets decide which endpoints a configured
// default applies to and whether a param such as stream belongs to the endpoint.
var knownParams = func() []map[string]bool {
	specs := wire.Specs()
	sets := make([]map[string]bool, len(specs))
	for i := range specs {
		s := &specs[i]
		if len(s.Required) > 32 {
			panic("policy: endpoint " + s.Name + " has more required fields than a validator tracks")
		}
		sets[i] = setOf(s.Params...)
	}
	return sets
}()

// bodyEndpoints are the endpoints whose requests carry a JSON body, in table order.
var bodyEndpoints = func() []wire.Endpoint {
	var out []wire.Endpoint
	for _, s := range wire.Specs() {
		if s.Dialect != wire.DialectNone {
			out = append(out, s.Endpoint)
		}
	}
	return out
}()

func setOf(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// knownParam reports whether param is a documented top-level param of endpoint e.
func knownParam(e wire.Endpoint, param string) bool {
	return int(e) < len(knownParams) && knownParams[e][param]
}

// twoMaxTokenFields reports whether the endpoint takes both max_tokens and
// max_completion_tokens (chat completions), so that max_tokens_field can rename one to the other.
func twoMaxTokenFields(e wire.Endpoint) bool { return knownParam(e, fieldMaxCompletionTokens) }
