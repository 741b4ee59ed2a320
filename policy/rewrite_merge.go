package policy

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
)

// Off, given in a model's config as a clamp (Clamp.Off), as a default's value, as
// system_prompt or as max_tokens_field, lifts the gateway-wide rule of that kind (for that
// param) instead of replacing it. allow_params is the lift of deny_params and strip_params.
const Off = "off"

// ruleKey is the param a clamp or default is keyed by when scopes merge: max_tokens and
// max_completion_tokens are one output limit, so a model's rule on either replaces (or lifts)
// the gateway's rule on either.
func ruleKey(p string) string {
	if p == fieldMaxCompletionTokens || p == fieldMaxOutputTokens {
		return fieldMaxTokens
	}
	return p
}

// clampParams are the params a clamp on p bounds.
func clampParams(p string) []string {
	if ruleKey(p) == fieldMaxTokens {
		return []string{fieldMaxTokens, fieldMaxCompletionTokens, fieldMaxOutputTokens}
	}
	return []string{p}
}

// merge combines the gateway-wide rules with a model's own: deny_params and strip_params are
// unions, clamps and defaults are replaced per param, the scalar settings (modes,
// system_prompt, max_tokens_field) set on the model replace the gateway's. A gateway-wide rule
// goes only through an explicit lift in the model's config (allow_params, or Off), and a lift
// must lift something. A model rule that contradicts a gateway-wide one it did not lift is an
// error saying which lift resolves it; CompileRewrite then checks the result as one config.
func merge(global, model RewriteConfig) (RewriteConfig, error) {
	if err := checkNoLifts(global); err != nil {
		return RewriteConfig{}, err
	}
	if err := checkLifts(global, model); err != nil {
		return RewriteConfig{}, err
	}
	c := RewriteConfig{
		ClampMode:        cmp.Or(model.ClampMode, global.ClampMode),
		SystemPrompt:     cmp.Or(model.SystemPrompt, global.SystemPrompt),
		SystemPromptMode: cmp.Or(model.SystemPromptMode, global.SystemPromptMode),
		MaxTokensField:   cmp.Or(model.MaxTokensField, global.MaxTokensField),
	}
	if c.SystemPrompt == Off {
		c.SystemPrompt = ""
	}
	if c.MaxTokensField == Off {
		c.MaxTokensField = ""
	}

	var err error
	if c.DenyParams, c.StripParams, err = mergeRemovals(global, model); err != nil {
		return RewriteConfig{}, err
	}
	gRemoved := append(without(global.DenyParams, model.AllowParams), without(global.StripParams, model.AllowParams)...)
	if c.Clamps, err = mergeClamps(global, model, gRemoved); err != nil {
		return RewriteConfig{}, err
	}
	if c.Defaults, err = mergeDefaults(global, model, gRemoved); err != nil {
		return RewriteConfig{}, err
	}
	return c, nil
}

// mergeRemovals returns the merged deny_params and strip_params: the gateway's, less what the
// model allows, then the model's. The model does not turn a gateway deny into a strip, or the
// reverse, without allowing the param first.
func mergeRemovals(global, model RewriteConfig) (deny, strip []string, err error) {
	gDeny := without(global.DenyParams, model.AllowParams)
	gStrip := without(global.StripParams, model.AllowParams)
	for _, p := range model.StripParams {
		if slices.Contains(gDeny, p) {
			return nil, nil, fmt.Errorf("compiling rewrite: strip_params: %q is denied gateway-wide; list it in allow_params to strip it instead", p)
		}
	}
	for _, p := range model.DenyParams {
		if slices.Contains(gStrip, p) {
			return nil, nil, fmt.Errorf("compiling rewrite: deny_params: %q is stripped gateway-wide; list it in allow_params to deny it instead", p)
		}
	}
	return union(gDeny, model.DenyParams), union(gStrip, model.StripParams), nil
}

// mergeClamps returns the gateway's clamps on params the model does not clamp or lift, then
// the model's. gRemoved are the params the gateway still denies or strips for the model.
func mergeClamps(global, model RewriteConfig, gRemoved []string) ([]Clamp, error) {
	var out []Clamp
	modelClamped := map[string]bool{}
	for _, cl := range model.Clamps {
		modelClamped[ruleKey(cl.Param)] = true
		if cl.Off {
			continue
		}
		for _, p := range clampParams(cl.Param) {
			if slices.Contains(gRemoved, p) {
				return nil, fmt.Errorf("compiling rewrite: clamp %q: param is denied or stripped gateway-wide; list it in allow_params to clamp it", cl.Param)
			}
		}
	}
	for _, cl := range global.Clamps {
		if modelClamped[ruleKey(cl.Param)] {
			continue
		}
		for _, p := range clampParams(cl.Param) {
			if slices.Contains(model.DenyParams, p) || slices.Contains(model.StripParams, p) {
				return nil, fmt.Errorf("compiling rewrite: clamp %q: the model denies or strips a param the gateway clamps; lift the gateway-wide clamp with off", cl.Param)
			}
		}
		out = append(out, cl)
	}
	for _, cl := range model.Clamps {
		if !cl.Off {
			out = append(out, cl)
		}
	}
	return out, nil
}

// mergeDefaults returns the gateway's defaults on params the model does not default or lift,
// and the model's (a new map; neither input is modified).
func mergeDefaults(global, model RewriteConfig, gRemoved []string) (map[string]string, error) {
	var out map[string]string
	set := func(k, v string) {
		if out == nil {
			out = map[string]string{}
		}
		out[k] = v
	}
	modelDefaulted := map[string]bool{}
	for _, k := range sortedKeys(model.Defaults) {
		modelDefaulted[ruleKey(k)] = true
		if v := model.Defaults[k]; v != Off {
			if slices.Contains(gRemoved, k) {
				return nil, fmt.Errorf("compiling rewrite: defaults: %q is denied or stripped gateway-wide; list it in allow_params to give it a default", k)
			}
			set(k, v)
		}
	}
	for _, k := range sortedKeys(global.Defaults) {
		if modelDefaulted[ruleKey(k)] {
			continue
		}
		if slices.Contains(model.DenyParams, k) || slices.Contains(model.StripParams, k) {
			return nil, fmt.Errorf("compiling rewrite: defaults: the model denies or strips %q, which has a gateway-wide default; lift the default with off", k)
		}
		set(k, global.Defaults[k])
	}
	return out, nil
}

// checkNoLifts rejects lifts in the gateway-wide config: there is nothing above it to lift.
func checkNoLifts(global RewriteConfig) error {
	const where = "lifts a gateway-wide rule, so it belongs in a model's config"
	if len(global.AllowParams) > 0 {
		return fmt.Errorf("compiling rewrite: allow_params %s", where)
	}
	for _, cl := range global.Clamps {
		if cl.Off {
			return fmt.Errorf("compiling rewrite: clamp %q off %s", cl.Param, where)
		}
	}
	for _, k := range sortedKeys(global.Defaults) {
		if global.Defaults[k] == Off {
			return fmt.Errorf("compiling rewrite: defaults: %q off %s", k, where)
		}
	}
	if global.SystemPrompt == Off {
		return fmt.Errorf("compiling rewrite: system_prompt off %s", where)
	}
	if global.MaxTokensField == Off {
		return fmt.Errorf("compiling rewrite: max_tokens_field off %s", where)
	}
	return nil
}

// checkLifts checks a model's lifts: each names a gateway-wide rule that exists, once, and a
// lifted clamp is not also clamped by the model.
func checkLifts(global, model RewriteConfig) error {
	allowed := map[string]bool{}
	for _, p := range model.AllowParams {
		if !plainParam(p) {
			return fmt.Errorf("compiling rewrite: allow_params: %q is not a plain top-level parameter name", p)
		}
		if allowed[p] {
			return fmt.Errorf("compiling rewrite: allow_params: %q is listed twice", p)
		}
		allowed[p] = true
		if !slices.Contains(global.DenyParams, p) && !slices.Contains(global.StripParams, p) {
			return fmt.Errorf("compiling rewrite: allow_params: %q lifts nothing: the gateway neither denies nor strips it", p)
		}
	}
	clamped, lifted := map[string]bool{}, map[string]bool{}
	for _, cl := range model.Clamps {
		k := ruleKey(cl.Param)
		if !cl.Off {
			if lifted[k] {
				return fmt.Errorf("compiling rewrite: clamp %q: param is both clamped and lifted (off)", cl.Param)
			}
			clamped[k] = true
			continue
		}
		switch {
		case cl.Min != 0 || cl.Max != 0:
			return fmt.Errorf("compiling rewrite: clamp %q: off takes no bounds", cl.Param)
		case clamped[k]:
			return fmt.Errorf("compiling rewrite: clamp %q: param is both clamped and lifted (off)", cl.Param)
		case lifted[k]:
			return fmt.Errorf("compiling rewrite: clamp %q: off is given twice", cl.Param)
		case !slices.ContainsFunc(global.Clamps, func(g Clamp) bool { return ruleKey(g.Param) == k }):
			return fmt.Errorf("compiling rewrite: clamp %q off lifts nothing: the gateway does not clamp it", cl.Param)
		}
		lifted[k] = true
	}
	for _, k := range sortedKeys(model.Defaults) {
		if model.Defaults[k] != Off {
			continue
		}
		found := false
		for g := range global.Defaults {
			found = found || ruleKey(g) == ruleKey(k)
		}
		if !found {
			return fmt.Errorf("compiling rewrite: defaults: %q off lifts nothing: the gateway sets no default for it", k)
		}
	}
	if model.SystemPrompt == Off && global.SystemPrompt == "" {
		return fmt.Errorf("compiling rewrite: system_prompt off lifts nothing: the gateway sets no system prompt")
	}
	if model.MaxTokensField == Off && global.MaxTokensField == "" {
		return fmt.Errorf("compiling rewrite: max_tokens_field off lifts nothing: the gateway renames no max-tokens field")
	}
	return nil
}

// sortedKeys returns the keys of m in order, so that the first error reported is stable.
func sortedKeys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }

// without returns the params of list not in drop (a new slice; list is not modified).
func without(list, drop []string) []string {
	var out []string
	for _, p := range list {
		if !slices.Contains(drop, p) {
			out = append(out, p)
		}
	}
	return out
}

// union returns base followed by the params of more not in base. A param repeated within more
// stays repeated, so that CompileRewrite reports it.
func union(base, more []string) []string {
	out := slices.Clip(base)
	for _, p := range more {
		if !slices.Contains(base, p) {
			out = append(out, p)
		}
	}
	return out
}
