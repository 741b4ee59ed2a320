package policy

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
)

// Clamp bounds a numeric top-level parameter to [Min, Max].
type Clamp struct {
	// Param is the top-level parameter name. A clamp on max_tokens or max_completion_tokens
	// bounds both fields.
	Param string `json:"param"`
	// Min is the smallest value allowed.
	Min float64 `json:"min"`
	// Max is the largest value allowed.
	Max float64 `json:"max"`
	// Off, in a model's config, lifts the gateway-wide clamp of Param instead of bounding it;
	// Min and Max are then left out.
	Off bool `json:"off,omitempty"`
}

// MarshalJSON leaves the bounds out of a lifting clamp ({"param":"top_p","off":true}).
func (c Clamp) MarshalJSON() ([]byte, error) {
	if c.Off {
		return json.Marshal(struct {
			Param string `json:"param"`
			Off   bool   `json:"off"`
		}{c.Param, true})
	}
	type plain Clamp
	return json.Marshal(plain(c))
}

// Clamp modes.
const (
	// ClampReject answers an out-of-range value with a 400 naming the param and the range.
	ClampReject = "reject"
	// ClampClamp pulls an out-of-range value to the nearest bound.
	ClampClamp = "clamp"
)

// System prompt modes.
const (
	// SystemPromptPrepend adds the gateway's system message before the client's messages
	// (Anthropic: in front of `system`).
	SystemPromptPrepend = "prepend"
	// SystemPromptReplace removes the client's system and developer messages (Anthropic: its
	// `system`) and puts the gateway's in their place.
	SystemPromptReplace = "replace"
)

// RewriteConfig says how request bodies are rewritten before they go upstream. It is given
// gateway-wide and per model, and the two merge: deny_params and strip_params are unions;
// a model's clamp or default on a param replaces the gateway's on that param only (max_tokens
// and max_completion_tokens count as one); clamp_mode, system_prompt, system_prompt_mode and
// max_tokens_field set on the model replace the gateway's. A model lifts a gateway-wide rule
// only explicitly: allow_params for deny_params and strip_params, "off" for the others.
type RewriteConfig struct {
	// Defaults maps a top-level param to a JSON literal set when the param is absent or null,
	// e.g. "temperature": "0.7", "stop": `["\n"]`. A default applies to the endpoints that know
	// the param and accept the value; a param no endpoint knows (a model server extension such
	// as repetition_penalty) applies to chat and completions requests. In a model's config the
	// value "off" (not a JSON literal) lifts the gateway-wide default of the param.
	Defaults map[string]string `json:"defaults,omitempty"`
	// Clamps bound numeric params. In a model's config a clamp with off set lifts the
	// gateway-wide clamp of its param.
	Clamps []Clamp `json:"clamps,omitempty"`
	// ClampMode is "reject" (out of range is a 400) or "clamp" (pulled into range).
	// Default: reject.
	ClampMode string `json:"clamp_mode,omitempty"`
	// DenyParams are params whose presence is a 400 ("not allowed by this gateway"). A denied
	// param sent as null is removed instead.
	DenyParams []string `json:"deny_params,omitempty"`
	// StripParams are params removed silently.
	StripParams []string `json:"strip_params,omitempty"`
	// AllowParams, in a model's config only, are params the gateway-wide deny_params and
	// strip_params do not apply to for this model. Each must be denied or stripped
	// gateway-wide; the model may deny or strip it again itself (to strip what the gateway
	// denies, say).
	AllowParams []string `json:"allow_params,omitempty"`
	// SystemPrompt is a system prompt the gateway adds to chat and Anthropic messages requests.
	// In a model's config "off" lifts the gateway-wide one.
	SystemPrompt string `json:"system_prompt,omitempty"`
	// SystemPromptMode is "prepend" or "replace". Default: prepend.
	SystemPromptMode string `json:"system_prompt_mode,omitempty"`
	// MaxTokensField, when set to "max_tokens" or "max_completion_tokens", renames whichever
	// of the two a chat request sent to the one the upstream expects. In a model's config
	// "off" lifts the gateway-wide one (the field goes upstream as sent).
	MaxTokensField string `json:"max_tokens_field,omitempty"`
}

// Rewriter applies a compiled RewriteConfig. It is immutable and safe for concurrent use.
type Rewriter struct {
	names     []string // top-level params the rules look at; bit i of a presence mask is names[i]
	defaults  []rwDefault
	clamps    []rwClamp
	clamp     bool
	deny      []rwParam
	strip     []rwParam
	sysPrompt string
	sysChat   []byte // {"role":"system","content":...}
	sysText   []byte // the prompt as a JSON string
	sysBlock  []byte // {"type":"text","text":...}
	sysRepl   bool
	maxField  string
	maxMask   uint64 // bits of max_tokens and max_completion_tokens
	otherMask uint64 // bit of the max-tokens field that maxField renames away
	noop      bool
}

type rwParam struct {
	name string
	bit  uint64
}

type rwDefault struct {
	rwParam
	lit       []byte
	endpoints endpointSet // where the default applies
	maxTokens bool        // a default for max_tokens or max_completion_tokens
}

type rwClamp struct {
	Clamp
	params  []rwParam
	integer bool
}

// maxRewriteParams bounds how many distinct params one rewriter looks at.
const maxRewriteParams = 64

// Params that rules may not default, strip or deny, because every request of some endpoint
// carries them or the response format depends on them.
var structural = map[string]bool{"model": true, "messages": true, "prompt": true, "input": true, "stream": true}

// integerParams are the known params whose values are integers.
var integerParams = map[string]bool{
	fieldMaxTokens: true, fieldMaxCompletionTokens: true, fieldMaxOutputTokens: true, "n": true, "top_k": true, "top_logprobs": true,
	"best_of": true, "dimensions": true, "seed": true, "output_compression": true,
}

// endpointSet is a set of endpoints, bit e for wire.Endpoint e.
type endpointSet uint64

func (s endpointSet) has(e wire.Endpoint) bool { return e < 64 && s&(1<<e) != 0 }

func (s *endpointSet) add(e wire.Endpoint) {
	if e < 64 {
		*s |= 1 << e
	}
}

func init() {
	if len(wire.Specs()) > 64 {
		panic("policy: the endpoint table outgrew endpointSet")
	}
}

// extensionDialects are the dialects a default for a param no endpoint documents (a model
// server extension such as repetition_penalty) applies to.
var extensionDialects = []wire.Dialect{wire.DialectChat, wire.DialectCompletion}

// twoWayMode reads a mode of two values: "" and off (the default) are false, on is true.
func twoWayMode(name, mode, off, on string) (bool, error) {
	switch mode {
	case "", off:
		return false, nil
	case on:
		return true, nil
	}
	return false, fmt.Errorf("compiling rewrite: unknown %s %q (want %s or %s)", name, mode, off, on)
}

// CompileRewrite merges a model's rewrite config with the gateway-wide one (see RewriteConfig
// and merge) and checks the result: default values must be valid JSON the endpoints accept,
// clamps need min <= max, modes must be known, params plain top-level names, and no param may
// be both denied and stripped, or denied or stripped and also clamped or defaulted.
func CompileRewrite(global, model RewriteConfig) (*Rewriter, error) {
	c, err := merge(global, model)
	if err != nil {
		return nil, err
	}
	rw := &Rewriter{}
	if rw.clamp, err = twoWayMode("clamp_mode", c.ClampMode, ClampReject, ClampClamp); err != nil {
		return nil, err
	}
	if rw.sysRepl, err = twoWayMode("system_prompt_mode", c.SystemPromptMode, SystemPromptPrepend, SystemPromptReplace); err != nil {
		return nil, err
	}
	switch c.MaxTokensField {
	case "", fieldMaxTokens, fieldMaxCompletionTokens:
		rw.maxField = c.MaxTokensField
	default:
		return nil, fmt.Errorf("compiling rewrite: unknown max_tokens_field %q (want max_tokens or max_completion_tokens)", c.MaxTokensField)
	}
	denied := map[string]bool{}
	for _, p := range c.DenyParams {
		if err := checkRuleParam("deny_params", p, denied); err != nil {
			return nil, err
		}
		denied[p] = true
	}
	stripped := map[string]bool{}
	for _, p := range c.StripParams {
		if err := checkRuleParam("strip_params", p, stripped); err != nil {
			return nil, err
		}
		if denied[p] {
			return nil, fmt.Errorf("compiling rewrite: param %q is both denied and stripped", p)
		}
		stripped[p] = true
	}
	for _, p := range c.DenyParams {
		rw.deny = append(rw.deny, rwParam{name: p, bit: rw.bit(p)})
	}
	for _, p := range c.StripParams {
		rw.strip = append(rw.strip, rwParam{name: p, bit: rw.bit(p)})
	}
	clamped := map[string]Clamp{}
	for _, cl := range c.Clamps {
		if err := rw.addClamp(cl, clamped, denied, stripped); err != nil {
			return nil, err
		}
	}
	if err := rw.addDefaults(c.Defaults, clamped, denied, stripped); err != nil {
		return nil, err
	}
	if rw.maxField != "" {
		rw.bit(fieldMaxTokens)
		rw.bit(fieldMaxCompletionTokens)
	}
	if len(rw.names) > maxRewriteParams {
		return nil, fmt.Errorf("compiling rewrite: rules name %d distinct params, more than %d", len(rw.names), maxRewriteParams)
	}
	if c.SystemPrompt != "" {
		rw.sysPrompt = c.SystemPrompt
		rw.sysText = wire.AppendString(nil, c.SystemPrompt)
		rw.sysChat = append(append([]byte(`{"role":"system","content":`), rw.sysText...), '}')
		rw.sysBlock = append(append([]byte(`{"type":"text","text":`), rw.sysText...), '}')
	}
	rw.maxMask = rw.mask(fieldMaxTokens, fieldMaxCompletionTokens, fieldMaxOutputTokens)
	switch rw.maxField {
	case fieldMaxTokens:
		rw.otherMask = rw.mask(fieldMaxCompletionTokens)
	case fieldMaxCompletionTokens:
		rw.otherMask = rw.mask(fieldMaxTokens)
	}
	rw.noop = len(rw.names) == 0 && rw.sysPrompt == ""
	return rw, nil
}

// bit returns the presence bit of a param, adding it to the names looked at.
func (rw *Rewriter) bit(name string) uint64 {
	for i, n := range rw.names {
		if n == name {
			return 1 << i
		}
	}
	rw.names = append(rw.names, name)
	if len(rw.names) > maxRewriteParams {
		return 0 // reported by CompileRewrite
	}
	return 1 << (len(rw.names) - 1)
}

// plainParam reports whether p is a plain top-level name: a letter or underscore, then
// letters, digits, underscores or dashes (nothing gjson or sjson would read as a path).
func plainParam(p string) bool {
	if p == "" || len(p) > 128 {
		return false
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_':
		case (c >= '0' && c <= '9' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}

func checkRuleParam(list, p string, seen map[string]bool) error {
	if !plainParam(p) {
		return fmt.Errorf("compiling rewrite: %s: %q is not a plain top-level parameter name", list, p)
	}
	if structural[p] {
		return fmt.Errorf("compiling rewrite: %s: %q cannot be denied or stripped", list, p)
	}
	if seen[p] {
		return fmt.Errorf("compiling rewrite: %s: %q is listed twice", list, p)
	}
	return nil
}

// addClamp compiles one clamp.
func (rw *Rewriter) addClamp(cl Clamp, clamped map[string]Clamp, denied, stripped map[string]bool) error {
	if !plainParam(cl.Param) {
		return fmt.Errorf("compiling rewrite: clamps: %q is not a plain top-level parameter name", cl.Param)
	}
	if math.IsNaN(cl.Min) || math.IsNaN(cl.Max) || math.IsInf(cl.Min, 0) || math.IsInf(cl.Max, 0) {
		return fmt.Errorf("compiling rewrite: clamp %q: bounds must be finite numbers", cl.Param)
	}
	if cl.Min > cl.Max {
		return fmt.Errorf("compiling rewrite: clamp %q: min %v is greater than max %v", cl.Param, cl.Min, cl.Max)
	}
	params := clampParams(cl.Param)
	for _, p := range params {
		if _, dup := clamped[p]; dup {
			return fmt.Errorf("compiling rewrite: clamp %q: param is clamped twice", cl.Param)
		}
		if denied[p] || stripped[p] {
			return fmt.Errorf("compiling rewrite: clamp %q: param is also denied or stripped", cl.Param)
		}
		clamped[p] = cl
	}
	integer := integerParams[cl.Param]
	if integer && (cl.Min != math.Trunc(cl.Min) || cl.Max != math.Trunc(cl.Max)) {
		return fmt.Errorf("compiling rewrite: clamp %q: an integer param needs integer bounds", cl.Param)
	}
	rc := rwClamp{Clamp: cl, integer: integer}
	for _, p := range params {
		rc.params = append(rc.params, rwParam{name: p, bit: rw.bit(p)})
	}
	rw.clamps = append(rw.clamps, rc)
	return nil
}

// addDefaults compiles the defaults, in a stable order.
func (rw *Rewriter) addDefaults(defs map[string]string, clamped map[string]Clamp, denied, stripped map[string]bool) error {
	keys := make([]string, 0, len(defs))
	for k := range defs {
		keys = append(keys, k)
	}
	sortStrings(keys)
	for _, k := range keys {
		lit := defs[k]
		if !plainParam(k) {
			return fmt.Errorf("compiling rewrite: defaults: %q is not a plain top-level parameter name", k)
		}
		if structural[k] || k == "stream_options" {
			return fmt.Errorf("compiling rewrite: defaults: %q cannot have a default", k)
		}
		if denied[k] || stripped[k] {
			return fmt.Errorf("compiling rewrite: defaults: %q is also denied or stripped", k)
		}
		if !gjson.Valid(lit) {
			return fmt.Errorf("compiling rewrite: defaults: %q: value %q is not valid JSON", k, lit)
		}
		val := gjson.Parse(lit)
		if val.Type == gjson.Null {
			return fmt.Errorf("compiling rewrite: defaults: %q: a default cannot be null", k)
		}
		if cl, ok := clamped[k]; ok {
			if val.Type != gjson.Number || val.Num < cl.Min || val.Num > cl.Max {
				return fmt.Errorf("compiling rewrite: defaults: %q: value %s is outside its clamp [%v, %v]", k, lit, cl.Min, cl.Max)
			}
		}
		d := rwDefault{lit: []byte(val.Raw), maxTokens: ruleKey(k) == fieldMaxTokens}
		known := false
		var firstErr *wire.Error
		for _, e := range bodyEndpoints {
			if !knownParam(e, k) {
				continue
			}
			known = true
			v := newValidator(e)
			if v.topKey(k, val) && v.err == nil {
				d.endpoints.add(e)
			} else if firstErr == nil {
				firstErr = v.err
			}
		}
		if !known {
			for _, e := range bodyEndpoints {
				if slices.Contains(extensionDialects, e.Spec().Dialect) {
					d.endpoints.add(e)
				}
			}
		}
		if d.endpoints == 0 {
			return fmt.Errorf("compiling rewrite: defaults: %q: no endpoint accepts value %s: %s", k, lit, firstErr.Message)
		}
		d.rwParam = rwParam{name: k, bit: rw.bit(k)}
		if d.maxTokens {
			rw.bit(fieldMaxTokens)
			rw.bit(fieldMaxCompletionTokens)
			rw.bit(fieldMaxOutputTokens)
			if k != fieldMaxOutputTokens {
				// a default output limit is also the Responses API's max_output_tokens
				if r, ok := rw.outputLimitDefault(d.lit); ok {
					rw.defaults = append(rw.defaults, r)
				}
			}
		}
		rw.defaults = append(rw.defaults, d)
	}
	return nil
}

// sortStrings is an insertion sort (config-time, small inputs).
func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// mask returns the bits of the given names.
func (rw *Rewriter) mask(names ...string) uint64 {
	var m uint64
	for _, n := range names {
		for i, x := range rw.names {
			if x == n {
				m |= 1 << i
			}
		}
	}
	return m
}

// Apply rewrites a body that Validate accepted, updating info to match. It checks denied
// params first (a 400 names the param), then sets defaults, strips params, clamps values, adds
// the system prompt and renames the max-tokens field. When no rule applies the body is returned
// as it is (the same slice, nothing allocated).
func (rw *Rewriter) Apply(e wire.Endpoint, body []byte, info *RequestInfo) ([]byte, *wire.Error) {
	if rw == nil || rw.noop || !e.HasBody() {
		return body, nil
	}
	x := errs{anthropic: e.Surface() == wire.Anthropic}
	var present, nonNull uint64
	if len(rw.names) > 0 {
		gjson.Parse(view(body)).ForEach(func(k, val gjson.Result) bool {
			for i, n := range rw.names {
				if n == k.Str {
					present |= 1 << i
					if val.Type != gjson.Null {
						nonNull |= 1 << i
					}
					break
				}
			}
			return true
		})
	}
	for _, d := range rw.deny {
		if nonNull&d.bit != 0 {
			return body, wire.InvalidCode(CodeParamNotAllowed, d.name, "The parameter '%s' is not allowed by this gateway.", d.name)
		}
	}
	out := body
	var err error
	for _, d := range rw.defaults {
		if !d.endpoints.has(e) || nonNull&d.bit != 0 {
			continue
		}
		if d.maxTokens && nonNull&rw.maxMask != 0 {
			continue
		}
		if out, err = sjson.SetRawBytes(out, d.name, d.lit); err != nil {
			return body, rewriteFault(err)
		}
		present |= d.bit
		nonNull |= d.bit
		refreshInfo(e, out, info, d.name)
	}
	for _, lists := range [2][]rwParam{rw.strip, rw.deny} {
		for _, s := range lists {
			if present&s.bit == 0 {
				continue
			}
			if out, err = sjson.DeleteBytes(out, s.name); err != nil {
				return body, rewriteFault(err)
			}
			present &^= s.bit
			nonNull &^= s.bit
			refreshInfo(e, out, info, s.name)
		}
	}
	for i := range rw.clamps {
		var werr *wire.Error
		if out, werr = rw.applyClamp(x, e, out, info, &rw.clamps[i], nonNull); werr != nil {
			return body, werr
		}
	}
	if rw.sysPrompt != "" {
		if out, err = rw.applySystem(e, out); err != nil {
			return body, rewriteFault(err)
		}
	}
	if rw.maxField != "" && twoMaxTokenFields(e) {
		other := fieldMaxCompletionTokens
		if rw.maxField == fieldMaxCompletionTokens {
			other = fieldMaxTokens
		}
		if present&rw.otherMask != 0 {
			if out, err = sjson.DeleteBytes(out, other); err != nil {
				return body, rewriteFault(err)
			}
			if info.MaxTokensField != "" && info.MaxTokens > 0 {
				if out, err = sjson.SetRawBytes(out, rw.maxField, strconv.AppendInt(nil, int64(info.MaxTokens), 10)); err != nil {
					return body, rewriteFault(err)
				}
			}
		}
		info.MaxTokensField = rw.maxField
	}
	return out, nil
}

// rewriteFault is the 500 for an sjson failure on a body Validate accepted (a gateway bug).
func rewriteFault(error) *wire.Error { return wire.Internal() }

// applyClamp enforces one clamp on whichever of its params the body carries.
func (rw *Rewriter) applyClamp(x errs, e wire.Endpoint, out []byte, info *RequestInfo, c *rwClamp, nonNull uint64) ([]byte, *wire.Error) {
	for _, p := range c.params {
		if nonNull&p.bit == 0 {
			continue
		}
		val := gjson.Get(view(out), p.name)
		if val.Type != gjson.Number {
			return out, x.badType(p.name, "a number", val)
		}
		var bound float64
		switch {
		case val.Num > c.Max:
			bound = c.Max
		case val.Num < c.Min:
			bound = c.Min
		default:
			continue
		}
		if !rw.clamp {
			code := CodeValueAboveMaximum
			if bound == c.Min {
				code = CodeValueBelowMinimum
			}
			return out, x.custom(code, p.name, "Invalid '%s': this gateway allows values from %s to %s, but got %s instead.",
				p.name, formatNumber(c.Min), formatNumber(c.Max), echo(val.Raw))
		}
		var err error
		if out, err = sjson.SetRawBytes(out, p.name, []byte(formatNumber(bound))); err != nil {
			return out, rewriteFault(err)
		}
		refreshInfo(e, out, info, p.name)
	}
	return out, nil
}

// formatNumber writes a bound as a JSON number (integers without a fraction).
func formatNumber(f float64) string {
	return strconv.FormatFloat(f, 'f', -1, 64)
}

// applySystem adds or replaces the system prompt: a system message in chat, Anthropic's
// system field in the messages dialect; other dialects have no system prompt.
func (rw *Rewriter) applySystem(e wire.Endpoint, out []byte) ([]byte, error) {
	switch e.Spec().Dialect {
	case wire.DialectChat:
		msgs := gjson.Get(view(out), "messages")
		if !msgs.IsArray() {
			return out, nil
		}
		if !rw.sysRepl {
			return insertInArray(out, msgs, rw.sysChat), nil
		}
		arr := make([]byte, 0, len(msgs.Raw)+len(rw.sysChat)+1)
		arr = append(arr, '[')
		arr = append(arr, rw.sysChat...)
		msgs.ForEach(func(_, m gjson.Result) bool {
			if r := m.Get("role").Str; r != "system" && r != "developer" {
				arr = append(arr, ',')
				arr = append(arr, m.Raw...)
			}
			return true
		})
		arr = append(arr, ']')
		return splice(out, msgs.Index, len(msgs.Raw), arr), nil
	case wire.DialectMessages:
		sys := gjson.Get(view(out), "system")
		switch {
		case rw.sysRepl || !sys.Exists() || sys.Type == gjson.Null:
			return sjson.SetRawBytes(out, "system", rw.sysText)
		case sys.Type == gjson.String:
			s := wire.AppendString(nil, rw.sysPrompt+"\n\n"+sys.Str)
			return sjson.SetRawBytes(out, "system", s)
		case sys.IsArray():
			return insertInArray(out, sys, rw.sysBlock), nil
		}
	case wire.DialectResponses:
		// the Responses API's system prompt is instructions
		ins := gjson.Get(view(out), "instructions")
		if rw.sysRepl || ins.Type != gjson.String || ins.Str == "" {
			return sjson.SetRawBytes(out, "instructions", rw.sysText)
		}
		return sjson.SetRawBytes(out, "instructions", wire.AppendString(nil, rw.sysPrompt+"\n\n"+ins.Str))
	}
	return out, nil
}

// insertInArray returns a copy of body with item inserted as the first element of arr (a value
// of body).
func insertInArray(body []byte, arr gjson.Result, item []byte) []byte {
	ins := item
	if nonEmpty(arr) {
		ins = make([]byte, 0, len(item)+1)
		ins = append(append(ins, item...), ',')
	}
	return splice(body, arr.Index+1, 0, ins)
}

// splice returns a new slice: body with body[at:at+n] replaced by ins.
func splice(body []byte, at, n int, ins []byte) []byte {
	out := make([]byte, 0, len(body)-n+len(ins))
	out = append(out, body[:at]...)
	out = append(out, ins...)
	return append(out, body[at+n:]...)
}

// toolParams and maxTokensParams are the params that together make one field of RequestInfo.
var (
	toolParams      = []string{"tools", "functions"}
	maxTokensParams = []string{fieldMaxTokens, fieldMaxCompletionTokens}
)

// refreshInfo re-reads the field of info a change to param may have touched. The params
// behind that field go through the endpoint's own validator, so info reads what Validate would
// read in the new body: a param the endpoint does not record (temperature in embeddings,
// max_tokens in count_tokens) stays unrecorded.
func refreshInfo(e wire.Endpoint, body []byte, info *RequestInfo, param string) {
	group := []string{param}
	switch param {
	case "temperature", "n", "seed", "stream_options":
	case "tools", "functions":
		group = toolParams
	case fieldMaxTokens, fieldMaxCompletionTokens:
		group = maxTokensParams
	case fieldMaxOutputTokens:
	default:
		return
	}
	v := newValidator(e)
	v.info.Stream = info.Stream
	js := view(body)
	for _, p := range group {
		if val := gjson.Get(js, p); val.Exists() {
			v.topKey(p, val)
		}
	}
	switch param {
	case "temperature":
		info.Temperature = v.info.Temperature
	case "n":
		info.N = v.info.N
	case "seed":
		info.Seed = v.info.Seed
	case "stream_options":
		if v.info.Stream && v.streamO.Exists() && v.streamO.Type != gjson.Null {
			v.streamOptions(v.streamO)
		}
		info.IncludeUsage = v.info.IncludeUsage
		info.StreamOptions = v.streamO.Exists()
	case "tools", "functions":
		info.HasTools = v.info.HasTools
	default:
		info.MaxTokens, info.MaxTokensField = v.info.MaxTokens, v.info.MaxTokensField
	}
}

// SetMaxTokens writes n as the request's output limit, into the field the request used (both,
// when a chat request sent both) or, when it sent none, the field info.MaxTokensField names or
// else the endpoint's natural one (max_tokens). It is used to lower the limit to what fits the
// context window or the caller's token budget. info is updated.
func SetMaxTokens(e wire.Endpoint, body []byte, info *RequestInfo, n int) ([]byte, error) {
	if n < 1 || n > maxInt32 {
		return nil, fmt.Errorf("setting max tokens: %d is outside [1, %d]", n, maxInt32)
	}
	if !e.Spec().MaxTokens {
		return nil, fmt.Errorf("setting max tokens: endpoint %s has no output limit", e)
	}
	field := cmp.Or(e.Spec().MaxTokensParam, fieldMaxTokens)
	var also string
	if twoMaxTokenFields(e) {
		if info.MaxTokensField != "" {
			field = info.MaxTokensField
		}
		other := fieldMaxCompletionTokens
		if field == fieldMaxCompletionTokens {
			other = fieldMaxTokens
		}
		if o := gjson.Get(view(body), other); o.Exists() && o.Type != gjson.Null {
			also = other
		}
	}
	lit := strconv.AppendInt(make([]byte, 0, 12), int64(n), 10)
	out, err := sjson.SetRawBytes(body, field, lit)
	if err != nil {
		return nil, fmt.Errorf("setting max tokens: %w", err)
	}
	if also != "" {
		if out, err = sjson.SetRawBytes(out, also, lit); err != nil {
			return nil, fmt.Errorf("setting max tokens: %w", err)
		}
	}
	info.MaxTokens, info.MaxTokensField = n, field
	if also != "" {
		info.MaxTokensField = fieldMaxCompletionTokens // both now hold n; Validate names this one on a tie
	}
	return out, nil
}

// outputLimitDefault is the Responses form of a default for max_tokens or
// max_completion_tokens: the same value as max_output_tokens, on the endpoints whose output
// limit has that name. ok is false when no endpoint takes the value.
func (rw *Rewriter) outputLimitDefault(lit []byte) (rwDefault, bool) {
	d := rwDefault{lit: lit, maxTokens: true}
	val := gjson.ParseBytes(lit)
	for _, e := range bodyEndpoints {
		if e.Spec().MaxTokensParam != fieldMaxOutputTokens {
			continue
		}
		if v := newValidator(e); v.topKey(fieldMaxOutputTokens, val) && v.err == nil {
			d.endpoints.add(e)
		}
	}
	d.rwParam = rwParam{name: fieldMaxOutputTokens, bit: rw.bit(fieldMaxOutputTokens)}
	return d, d.endpoints != 0
}
