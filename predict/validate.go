package predict

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"

	"github.com/caddyai/gateway/internal/wire"
)

// Request is a validated predict request: its body with the schema's defaults applied (without
// "model") and its instances.
type Request struct {
	body      map[string]any
	instances []any
	explicit  bool // the body has an instances array; otherwise the body is the one instance
	// Instances is the number of instances to predict.
	Instances int
	// InputChars is the number of characters in the instances' strings.
	InputChars int
	text       strings.Builder
}

// Single reports whether the request predicts one instance, whose answer fills prediction and
// confidence.
func (r *Request) Single() bool { return r.Instances == 1 }

// Text returns the instances' strings, joined by newlines, for a tokenizer to count.
func (r *Request) Text() string { return r.text.String() }

// Body returns the validated body (defaults applied, without model) as compact JSON with sorted
// keys: the same request always gives the same bytes.
func (r *Request) Body() []byte {
	b, _ := marshal(r.body)
	return b
}

// maxDepth bounds the nesting the gateway walks in a body or a schema's defaults.
const maxDepth = 64

// ModelOf returns the body's model field, for POST /v1/predict. ok is false when it is missing or
// not a non-empty string.
func ModelOf(body []byte) (string, bool) {
	var probe struct {
		Model json.RawMessage `json:"model"`
	}
	if json.Unmarshal(body, &probe) != nil || len(probe.Model) == 0 {
		return "", false
	}
	var s string
	if json.Unmarshal(probe.Model, &s) != nil || s == "" {
		return "", false
	}
	return s, true
}

// Validate parses body once, applies the schema's defaults, checks the body against the schema
// and returns the request. A refusal is a 400 naming the first failing field as param
// (instances[3].age).
func (m *Model) Validate(body []byte) (*Request, *wire.Error) {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return nil, wire.InvalidRequest("", "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)")
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, wire.InvalidRequest("", "The request body must be a JSON object, got %s.", typeName(v))
	}
	if err := checkDepth(obj, 0); err != nil {
		return nil, wire.InvalidRequest("", "The request body is nested too deeply (more than %d levels).", maxDepth)
	}
	delete(obj, "model")
	applyDefaults(m.schema, obj, 0)
	if err := m.schema.Validate(obj); err != nil {
		var ve *jsonschema.ValidationError
		if errors.As(err, &ve) {
			return nil, schemaError(ve, obj)
		}
		return nil, wire.InvalidRequest("", "The request body does not match the model's input schema.")
	}
	req := &Request{body: obj}
	if inst, ok := obj["instances"].([]any); ok {
		req.instances, req.explicit = inst, true
	} else {
		req.instances = []any{obj}
	}
	req.Instances = len(req.instances)
	if req.Instances == 0 {
		return nil, wire.InvalidRequest("instances", "Invalid 'instances': expected at least one instance.")
	}
	for _, in := range req.instances {
		req.countStrings(in)
	}
	return req, nil
}

func (r *Request) countStrings(v any) {
	switch v := v.(type) {
	case string:
		r.InputChars += utf8.RuneCountInString(v)
		if r.text.Len() > 0 {
			r.text.WriteByte('\n')
		}
		r.text.WriteString(v)
	case []any:
		for _, e := range v {
			r.countStrings(e)
		}
	case map[string]any:
		for _, e := range v {
			r.countStrings(e)
		}
	}
}

var errTooDeep = errors.New("too deep")

func checkDepth(v any, depth int) error {
	if depth > maxDepth {
		return errTooDeep
	}
	switch v := v.(type) {
	case []any:
		for _, e := range v {
			if err := checkDepth(e, depth+1); err != nil {
				return err
			}
		}
	case map[string]any:
		for _, e := range v {
			if err := checkDepth(e, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// applyDefaults sets the schema's default of every absent property, at every depth the schema
// describes (properties, items, prefixItems, $ref and allOf), in place.
func applyDefaults(s *jsonschema.Schema, v any, depth int) {
	if s == nil || depth > maxDepth {
		return
	}
	if s.Ref != nil {
		applyDefaults(s.Ref, v, depth+1)
	}
	for _, sub := range s.AllOf {
		applyDefaults(sub, v, depth+1)
	}
	switch v := v.(type) {
	case map[string]any:
		for name, ps := range s.Properties {
			if cur, ok := v[name]; ok {
				applyDefaults(ps, cur, depth+1)
			} else if d := defaultOf(ps, 0); d != nil {
				v[name] = deepCopy(*d)
			}
		}
	case []any:
		for i, e := range v {
			if i < len(s.PrefixItems) {
				applyDefaults(s.PrefixItems[i], e, depth+1)
			} else if s.Items2020 != nil {
				applyDefaults(s.Items2020, e, depth+1)
			}
		}
	}
}

// defaultOf is a property schema's default, looking through a $ref.
func defaultOf(s *jsonschema.Schema, depth int) *any {
	for ; s != nil && depth < 8; depth++ {
		if s.Default != nil {
			return s.Default
		}
		s = s.Ref
	}
	return nil
}

func deepCopy(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = deepCopy(e)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = deepCopy(e)
		}
		return out
	}
	return v
}

// schemaError turns the first leaf of a validation error into the 400 the client gets.
func schemaError(ve *jsonschema.ValidationError, root any) *wire.Error {
	leaf := firstLeaf(ve, 0)
	param := paramOf(leaf.InstanceLocation, root)
	join := func(name string) string {
		if param == "" {
			return name
		}
		return param + "." + name
	}
	switch k := leaf.ErrorKind.(type) {
	case *kind.Required:
		p := join(k.Missing[0])
		return wire.InvalidRequest(p, "Missing required parameter: '%s'.", p)
	case *kind.DependentRequired:
		p := join(k.Missing[0])
		return wire.InvalidRequest(p, "Missing required parameter: '%s' (required with '%s').", p, join(k.Prop))
	case *kind.Dependency:
		if len(k.Missing) > 0 {
			p := join(k.Missing[0])
			return wire.InvalidRequest(p, "Missing required parameter: '%s' (required with '%s').", p, join(k.Prop))
		}
	case *kind.AdditionalProperties:
		p := join(wire.Shorten(k.Properties[0], 64))
		return wire.InvalidRequest(p, "Unrecognized request argument supplied: '%s'.", p)
	}
	return wire.InvalidRequest(param, "Invalid '%s': %s.", displayParam(param), describe(leaf.ErrorKind))
}

func displayParam(p string) string {
	if p == "" {
		return "body"
	}
	return p
}

func firstLeaf(ve *jsonschema.ValidationError, depth int) *jsonschema.ValidationError {
	for len(ve.Causes) > 0 && depth < maxDepth {
		ve = ve.Causes[0]
		depth++
	}
	return ve
}

// paramOf formats an instance location as a param: instances[3].age. A token is an index when
// the value it addresses is an array.
func paramOf(loc []string, root any) string {
	var b strings.Builder
	cur := root
	for _, tok := range loc {
		switch c := cur.(type) {
		case []any:
			b.WriteByte('[')
			b.WriteString(tok)
			b.WriteByte(']')
			if i, err := strconv.Atoi(tok); err == nil && i >= 0 && i < len(c) {
				cur = c[i]
			} else {
				cur = nil
			}
		case map[string]any:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(wire.Shorten(tok, 64))
			cur = c[tok]
		default:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(wire.Shorten(tok, 64))
		}
	}
	return b.String()
}

// describe words a schema failure without repeating the client's text (a value may be
// confidential); numbers and lengths are repeated, the schema's own words are.
func describe(k jsonschema.ErrorKind) string {
	switch k := k.(type) {
	case *kind.Type:
		return fmt.Sprintf("expected %s, but got %s instead", strings.Join(k.Want, " or "), k.Got)
	case *kind.MaxLength:
		return fmt.Sprintf("string too long. Expected a string with maximum length %d, but got a string with length %d instead", k.Want, k.Got)
	case *kind.MinLength:
		return fmt.Sprintf("string too short. Expected a string with minimum length %d, but got a string with length %d instead", k.Want, k.Got)
	case *kind.Minimum:
		return fmt.Sprintf("expected a value >= %s, but got %s instead", ratString(k.Want), ratString(k.Got))
	case *kind.Maximum:
		return fmt.Sprintf("expected a value <= %s, but got %s instead", ratString(k.Want), ratString(k.Got))
	case *kind.ExclusiveMinimum:
		return fmt.Sprintf("expected a value > %s, but got %s instead", ratString(k.Want), ratString(k.Got))
	case *kind.ExclusiveMaximum:
		return fmt.Sprintf("expected a value < %s, but got %s instead", ratString(k.Want), ratString(k.Got))
	case *kind.MultipleOf:
		return fmt.Sprintf("expected a multiple of %s", ratString(k.Want))
	case *kind.MinItems:
		return fmt.Sprintf("expected at least %d items, but got %d", k.Want, k.Got)
	case *kind.MaxItems:
		return fmt.Sprintf("expected at most %d items, but got %d", k.Want, k.Got)
	case *kind.MinProperties:
		return fmt.Sprintf("expected at least %d properties, but got %d", k.Want, k.Got)
	case *kind.MaxProperties:
		return fmt.Sprintf("expected at most %d properties, but got %d", k.Want, k.Got)
	case *kind.UniqueItems:
		return fmt.Sprintf("items %d and %d are equal, but items must be unique", k.Duplicates[0], k.Duplicates[1])
	case *kind.Enum:
		want := make([]string, 0, len(k.Want))
		for _, w := range k.Want {
			b, _ := marshal(w)
			want = append(want, string(b))
		}
		return "expected one of " + wire.Shorten(strings.Join(want, ", "), 256)
	case *kind.Const:
		b, _ := marshal(k.Want)
		return "expected " + wire.Shorten(string(b), 256)
	case *kind.Pattern:
		return "the value does not match the pattern " + wire.Shorten(k.Want, 256)
	case *kind.Format:
		return "expected a value of format " + k.Want
	case *kind.FalseSchema:
		return "this parameter is not allowed"
	case *kind.PropertyNames:
		return "a property name is not allowed"
	case *kind.OneOf:
		return "the value matches more than one of the allowed forms"
	case *kind.Not, *kind.AnyOf, *kind.Contains:
		return "the value does not match the allowed forms"
	}
	if p := k.KeywordPath(); len(p) > 0 {
		return "the value does not satisfy the schema's " + strings.Join(p, "/")
	}
	return "the value does not match the model's input schema"
}

func ratString(r *big.Rat) string {
	if r == nil {
		return "?"
	}
	if r.IsInt() {
		return r.Num().String()
	}
	f, _ := r.Float64()
	return strconv.FormatFloat(f, 'g', -1, 64)
}

func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "an array"
	}
	return "an object"
}

// marshal encodes v compactly, map keys sorted, without HTML escaping.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
