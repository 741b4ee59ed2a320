package caddymodule

import (
	"slices"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
	"github.com/tidwall/gjson"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/caddyai/gateway/policy"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("ai_gateway", parseGatewayCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("ai_gateway", httpcaddyfile.Before, "reverse_proxy")
}

func parseGatewayCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	g := new(Gateway)
	if err := g.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return g, nil
}

// UnmarshalCaddyfile sets up the gateway from Caddyfile tokens. Syntax:
//
//	ai_gateway {
//	    key <secret> {
//	        id <id>
//	        models <pattern>...
//	        disabled
//	        expires_at <RFC 3339 time>
//	        label <name> <value>
//	        rpm|tpm|rpd|tpd|max_concurrent <n>
//	        pin <alias> <snapshot>
//	        priority <n>
//	    }
//	    keys_file <path>
//	    keys_file_interval <duration>
//	    model <name> {
//	        alias <name>...
//	        context_window <tokens>
//	        max_output_tokens <tokens>
//	        upstream <address>...
//	        upstream_key <secret>
//	        upstream_name <name>
//	        tokenizer estimate|cl100k_base|o200k_base|hf <path>
//	        rpm|tpm|rpd|tpd|max_concurrent <n>
//	        queue <size> [<timeout>]
//	        fallback <model>...
//	        deprecated <RFC 3339 time>
//	        sunset <RFC 3339 time>
//	        deprecation_link <url>
//	        serve_after_sunset
//	    }
//	    max_body <size>
//	    anthropic_versions <version>...
//	    rate_limit {
//	        rpm|tpm|rpd|tpd|max_concurrent <n>
//	        store memory|redis <url>
//	        redis_prefix <prefix>
//	        on_store_error allow|deny
//	        fallback_fraction <0..1>
//	        default_max_tokens <n>
//	        cap_max_tokens_to_budget <min output tokens>
//	    }
//	    api_version {
//	        header <name>
//	        supported <date>...
//	        default <date>
//	        required
//	        version <date> {
//	            rename_param <from> <to>
//	            deprecated <RFC 3339 time>
//	            sunset <RFC 3339 time>
//	            deprecation_link <url>
//	            serve_after_sunset
//	        }
//	    }
//	    cache [off] {
//	        ttl <duration>
//	        max_size <size>
//	        scope key|global
//	        when deterministic|always
//	        store memory|redis <url>
//	    }
//	    auth_failures <per minute>|off
//	    content_policy {
//	        deny <regex>...
//	        rule <id> <regex>
//	        deny_file <path>
//	    }
//	    context_status 400|413
//	    fit_max_tokens <min output tokens>
//	    defaults { <param> <value> }       (also in model blocks, with the
//	    clamp <param> <min> <max>           rewriting subdirectives below;
//	    clamp_mode reject|clamp             a model's own rule replaces the
//	    deny_params <param>...              gateway-wide one)
//	    strip_params <param>...
//	    system_prompt <text>
//	    system_prompt_mode prepend|replace
//	    max_tokens_field max_tokens|max_completion_tokens
//	    metrics_key_id
//	}
//
// <secret> is sha256:<hex>, a placeholder such as {env.KEY}, or a literal (warned about).
func (g *Gateway) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	subs := newSubdirectives("ai_gateway", "key", "model", "clamp")
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		if err := subs.check(d, name); err != nil {
			return err
		}
		switch name {
		case "key":
			k, err := parseKeyBlock(d)
			if err != nil {
				return err
			}
			g.Keys = append(g.Keys, k)
		case "keys_file":
			if !d.NextArg() {
				return d.ArgErr()
			}
			g.KeysFile = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		case "keys_file_interval":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			g.KeysFileInterval = dur
		case "model":
			m, err := parseModelBlock(d)
			if err != nil {
				return err
			}
			g.Models = append(g.Models, m)
		case "max_body":
			n, err := sizeArg(d)
			if err != nil {
				return err
			}
			g.MaxBody = n
		case "rate_limit":
			g.RateLimit = new(RateLimit)
			if err := parseRateLimit(d, g.RateLimit); err != nil {
				return err
			}
		case "api_version":
			v, err := parseAPIVersion(d)
			if err != nil {
				return err
			}
			g.APIVersion = v
		case "metrics_key_id":
			if d.NextArg() {
				return d.ArgErr()
			}
			g.MetricsKeyID = true
		case "anthropic_versions":
			g.AnthropicVersions = d.RemainingArgs()
			if len(g.AnthropicVersions) == 0 {
				return d.ArgErr()
			}
		case "cache":
			c, err := parseCache(d)
			if err != nil {
				return err
			}
			g.Cache = c
		case "auth_failures":
			v, err := stringArg(d)
			if err != nil {
				return err
			}
			n, perr := strconv.ParseInt(v, 10, 64)
			if v == "off" {
				n, perr = -1, nil
			}
			if perr != nil || n == 0 || n < -1 {
				return d.Errf("auth_failures: want a positive number per minute or off, got %q", v)
			}
			g.AuthFailures = &AuthGuard{MaxFailures: n}
		case "content_policy":
			cp, err := parseContentPolicy(d)
			if err != nil {
				return err
			}
			g.ContentPolicy = cp
		case "context_status":
			n, err := intArg(d)
			if err != nil {
				return err
			}
			if n != 400 && n != 413 {
				return d.Errf("context_status: want 400 or 413, got %d", n)
			}
			g.ContextStatus = n
		case "fit_max_tokens":
			n, err := intArg(d)
			if err != nil {
				return err
			}
			g.FitMaxTokens = n
		default:
			handled, err := parseRewrite(d, name, &g.RewriteConfig)
			if err != nil {
				return err
			}
			if !handled {
				return d.Errf("unrecognized ai_gateway subdirective %q", name)
			}
		}
	}
	return nil
}

func parseKeyBlock(d *caddyfile.Dispenser) (KeyConfig, error) {
	var k KeyConfig
	if !d.NextArg() {
		return k, d.Err("key: expected a secret (sha256:<hex>, {env.VAR} or a literal)")
	}
	k.Secret = d.Val()
	if d.NextArg() {
		return k, d.ArgErr()
	}
	subs := newSubdirectives("key", "label", "pin")
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		if err := subs.check(d, name); err != nil {
			return k, err
		}
		switch name {
		case "id":
			if !d.NextArg() {
				return k, d.ArgErr()
			}
			k.ID = d.Val()
			if d.NextArg() {
				return k, d.ArgErr()
			}
		case "models":
			k.Models = d.RemainingArgs()
			if len(k.Models) == 0 {
				return k, d.ArgErr()
			}
		case "disabled":
			if d.NextArg() {
				return k, d.ArgErr()
			}
			k.Disabled = true
		case "expires_at":
			if !d.NextArg() {
				return k, d.ArgErr()
			}
			if _, err := time.Parse(time.RFC3339, d.Val()); err != nil {
				return k, d.Errf("key: expires_at %q is not an RFC 3339 time", d.Val())
			}
			k.ExpiresAt = d.Val()
			if d.NextArg() {
				return k, d.ArgErr()
			}
		case "rpm", "tpm", "rpd", "tpd", "max_concurrent":
			if err := parseLimit(d, name, &k.Limits); err != nil {
				return k, err
			}
		case "pin":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return k, d.Errf("key: pin <alias> <snapshot model name>")
			}
			if k.Pins == nil {
				k.Pins = map[string]string{}
			}
			if _, dup := k.Pins[args[0]]; dup {
				return k, d.Errf("key: %s pinned more than once", args[0])
			}
			k.Pins[args[0]] = args[1]
		case "priority":
			s, err := stringArg(d)
			if err != nil {
				return k, err
			}
			if k.Priority, err = strconv.Atoi(s); err != nil {
				return k, d.Errf("key: priority %q is not an integer", s)
			}
		case "label":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return k, d.ArgErr()
			}
			if k.Labels == nil {
				k.Labels = map[string]string{}
			}
			k.Labels[args[0]] = args[1]
		default:
			return k, d.Errf("unrecognized key subdirective %q", name)
		}
	}
	if k.ID == "" {
		return k, d.Err("key: id is required")
	}
	return k, nil
}

func parseModelBlock(d *caddyfile.Dispenser) (ModelConfig, error) {
	var m ModelConfig
	if !d.NextArg() {
		return m, d.Err("model: expected a model name")
	}
	m.Name = d.Val()
	if d.NextArg() {
		return m, d.ArgErr()
	}
	subs := newSubdirectives("model "+m.Name, "clamp")
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		if err := subs.check(d, name); err != nil {
			return m, err
		}
		var err error
		switch name {
		case "alias":
			m.Aliases = d.RemainingArgs()
			if len(m.Aliases) == 0 {
				return m, d.ArgErr()
			}
		case "context_window":
			m.ContextWindow, err = intArg(d)
		case "max_output_tokens":
			m.MaxOutputTokens, err = intArg(d)
		case "upstream":
			m.Upstreams = d.RemainingArgs()
			if len(m.Upstreams) == 0 {
				return m, d.ArgErr()
			}
		case "upstream_key":
			m.UpstreamKey, err = stringArg(d)
		case "upstream_name":
			m.UpstreamName, err = stringArg(d)
		case "tokenizer":
			args := d.RemainingArgs()
			switch {
			case len(args) == 1 && args[0] != "hf":
				m.Tokenizer = args[0]
			case len(args) == 2 && args[0] == "hf":
				m.Tokenizer = "hf " + args[1]
			default:
				return m, d.Errf("tokenizer: want estimate, cl100k_base, o200k_base or hf <path>")
			}
		case "rpm", "tpm", "rpd", "tpd", "max_concurrent":
			err = parseLimit(d, name, &m.Limits)
		case "queue":
			args := d.RemainingArgs()
			if len(args) < 1 || len(args) > 2 {
				return m, d.Err("queue <size> [<timeout>]")
			}
			if m.Queue, err = strconv.Atoi(args[0]); err != nil || m.Queue < 0 {
				return m, d.Errf("queue: %q is not a non-negative integer", args[0])
			}
			if len(args) == 2 {
				dur, perr := caddy.ParseDuration(args[1])
				if perr != nil || dur < 0 {
					return m, d.Errf("queue: %q is not a valid timeout", args[1])
				}
				m.QueueTimeout = caddy.Duration(dur)
			}
		case "cache":
			if m.Cache, err = parseCache(d); err != nil {
				return m, err
			}
		case "fallback":
			if m.Fallback = d.RemainingArgs(); len(m.Fallback) == 0 {
				return m, d.ArgErr()
			}
		case "deprecated":
			m.Deprecated, err = rfc3339Arg(d)
		case "sunset":
			m.Sunset, err = rfc3339Arg(d)
		case "deprecation_link":
			m.DeprecationLink, err = stringArg(d)
		case "serve_after_sunset":
			if d.NextArg() {
				return m, d.ArgErr()
			}
			m.ServeAfterSunset = true
		default:
			handled, rerr := parseRewrite(d, name, &m.RewriteConfig)
			if rerr != nil {
				return m, rerr
			}
			if !handled {
				return m, d.Errf("unrecognized model subdirective %q", name)
			}
		}
		if err != nil {
			return m, err
		}
	}
	return m, nil
}

// parseLimit parses one limit subdirective (rpm, tpm, rpd, tpd, max_concurrent) into l.
func parseLimit(d *caddyfile.Dispenser, name string, l *Limits) error {
	s, err := stringArg(d)
	if err != nil {
		return err
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return d.Errf("%s: %q is not a non-negative integer", name, s)
	}
	switch name {
	case "rpm":
		l.RPM = n
	case "tpm":
		l.TPM = n
	case "rpd":
		l.RPD = n
	case "tpd":
		l.TPD = n
	case "max_concurrent":
		l.MaxConcurrent = n
	}
	return nil
}

// parseRateLimit parses the rate_limit block.
func parseRateLimit(d *caddyfile.Dispenser, rl *RateLimit) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	subs := newSubdirectives("rate_limit")
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		if err := subs.check(d, name); err != nil {
			return err
		}
		var err error
		switch name {
		case "rpm", "tpm", "rpd", "tpd", "max_concurrent":
			err = parseLimit(d, name, &rl.Limits)
		case "store":
			args := d.RemainingArgs()
			switch {
			case len(args) == 1 && args[0] == "memory":
				rl.Store = "memory"
			case len(args) == 2 && args[0] == "redis":
				rl.Store, rl.RedisURL = "redis", args[1]
			default:
				return d.Errf("rate_limit: store: want memory or redis <url>")
			}
		case "redis_prefix":
			rl.RedisPrefix, err = stringArg(d)
		case "on_store_error":
			rl.OnStoreError, err = stringArg(d)
			if err == nil && rl.OnStoreError != "allow" && rl.OnStoreError != "deny" {
				return d.Errf("rate_limit: on_store_error: want allow or deny, got %q", rl.OnStoreError)
			}
		case "fallback_fraction":
			var v string
			if v, err = stringArg(d); err == nil {
				f, perr := strconv.ParseFloat(v, 64)
				if perr != nil || !(f > 0 && f <= 1) {
					return d.Errf("rate_limit: fallback_fraction: want a number in (0, 1], got %q", v)
				}
				rl.FallbackFraction = f
			}
		case "default_max_tokens":
			rl.DefaultMaxTokens, err = intArg(d)
		case "cap_max_tokens_to_budget":
			rl.CapMaxTokensToBudget, err = intArg(d)
		default:
			return d.Errf("unrecognized rate_limit subdirective %q", name)
		}
		if err != nil {
			return err
		}
	}
	if rl.FallbackFraction != 0 && rl.OnStoreError == "deny" {
		return d.Err("rate_limit: fallback_fraction applies to on_store_error allow, not deny")
	}
	return nil
}

// subdirectives rejects a subdirective given twice in one block, except the repeatable ones.
type subdirectives struct {
	block      string
	seen       map[string]bool
	repeatable []string
}

func newSubdirectives(block string, repeatable ...string) *subdirectives {
	return &subdirectives{block: block, seen: map[string]bool{}, repeatable: repeatable}
}

// check records name and fails if it was already given (and is not repeatable).
func (s *subdirectives) check(d *caddyfile.Dispenser, name string) error {
	if s.seen[name] && !slices.Contains(s.repeatable, name) {
		return d.Errf("%s: %s specified more than once", s.block, name)
	}
	s.seen[name] = true
	return nil
}

func stringArg(d *caddyfile.Dispenser) (string, error) {
	if !d.NextArg() {
		return "", d.ArgErr()
	}
	v := d.Val()
	if d.NextArg() {
		return "", d.ArgErr()
	}
	return v, nil
}

func intArg(d *caddyfile.Dispenser) (int, error) {
	s, err := stringArg(d)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, d.Errf("%s: %q is not a non-negative integer", d.Val(), s)
	}
	return n, nil
}

func durationArg(d *caddyfile.Dispenser) (caddy.Duration, error) {
	s, err := stringArg(d)
	if err != nil {
		return 0, err
	}
	dur, err := caddy.ParseDuration(s)
	if err != nil || dur < 0 {
		return 0, d.Errf("%q is not a valid duration", s)
	}
	return caddy.Duration(dur), nil
}

func sizeArg(d *caddyfile.Dispenser) (int64, error) {
	s, err := stringArg(d)
	if err != nil {
		return 0, err
	}
	n, err := humanize.ParseBytes(s)
	if err != nil || n == 0 || n > 1<<40 {
		return 0, d.Errf("%q is not a valid size", s)
	}
	return int64(n), nil
}

// UnmarshalCaddyfile sets up the dynamic upstreams source: `dynamic ai_gateway` takes no options.
func (u *Upstreams) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	if d.NextArg() {
		return d.ArgErr()
	}
	if d.NextBlock(0) {
		return d.Errf("dynamic ai_gateway takes no options, got %q", d.Val())
	}
	return nil
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*Gateway)(nil)
	_ caddyfile.Unmarshaler = (*Upstreams)(nil)
)

// parseRewrite parses one request-rewriting subdirective into rc; handled is false when name
// is not one. Syntax (in ai_gateway and in model blocks):
//
//	defaults {
//	    <param> <JSON value or bare string>
//	}
//	clamp <param> <min> <max>
//	clamp_mode reject|clamp
//	deny_params <param>...
//	strip_params <param>...
//	system_prompt <text>
//	system_prompt_mode prepend|replace
//	max_tokens_field max_tokens|max_completion_tokens
func parseRewrite(d *caddyfile.Dispenser, name string, rc *policy.RewriteConfig) (handled bool, err error) {
	switch name {
	case "defaults":
		if d.NextArg() {
			return true, d.ArgErr()
		}
		if rc.Defaults == nil {
			rc.Defaults = map[string]string{}
		}
		for nesting := d.Nesting(); d.NextBlock(nesting); {
			param := d.Val()
			v, err := stringArg(d)
			if err != nil {
				return true, err
			}
			if !gjson.Valid(v) {
				v = string(wire.AppendString(nil, v)) // a bare word is a string
			}
			if _, dup := rc.Defaults[param]; dup {
				return true, d.Errf("defaults: %s set more than once", param)
			}
			rc.Defaults[param] = v
		}
	case "clamp":
		args := d.RemainingArgs()
		if len(args) != 3 {
			return true, d.Err("clamp <param> <min> <max>")
		}
		lo, err1 := strconv.ParseFloat(args[1], 64)
		hi, err2 := strconv.ParseFloat(args[2], 64)
		if err1 != nil || err2 != nil || lo > hi {
			return true, d.Errf("clamp %s: want numbers min <= max, got %q %q", args[0], args[1], args[2])
		}
		rc.Clamps = append(rc.Clamps, policy.Clamp{Param: args[0], Min: lo, Max: hi})
	case "clamp_mode":
		if rc.ClampMode, err = stringArg(d); err == nil && rc.ClampMode != policy.ClampReject && rc.ClampMode != policy.ClampClamp {
			err = d.Errf("clamp_mode: want reject or clamp, got %q", rc.ClampMode)
		}
	case "deny_params":
		if rc.DenyParams = append(rc.DenyParams, d.RemainingArgs()...); len(rc.DenyParams) == 0 {
			err = d.ArgErr()
		}
	case "strip_params":
		if rc.StripParams = append(rc.StripParams, d.RemainingArgs()...); len(rc.StripParams) == 0 {
			err = d.ArgErr()
		}
	case "system_prompt":
		rc.SystemPrompt, err = stringArg(d)
	case "system_prompt_mode":
		if rc.SystemPromptMode, err = stringArg(d); err == nil && rc.SystemPromptMode != policy.SystemPromptPrepend && rc.SystemPromptMode != policy.SystemPromptReplace {
			err = d.Errf("system_prompt_mode: want prepend or replace, got %q", rc.SystemPromptMode)
		}
	case "max_tokens_field":
		if rc.MaxTokensField, err = stringArg(d); err == nil && rc.MaxTokensField != "max_tokens" && rc.MaxTokensField != "max_completion_tokens" {
			err = d.Errf("max_tokens_field: want max_tokens or max_completion_tokens, got %q", rc.MaxTokensField)
		}
	default:
		return false, nil
	}
	return true, err
}

// parseContentPolicy parses the content_policy block.
func parseContentPolicy(d *caddyfile.Dispenser) (*ContentPolicyConfig, error) {
	cp := new(ContentPolicyConfig)
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch name := d.Val(); name {
		case "deny":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return nil, d.ArgErr()
			}
			for _, a := range args {
				cp.Rules = append(cp.Rules, policy.ContentRule{Pattern: a})
			}
		case "rule":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return nil, d.Err("rule <id> <regex>")
			}
			cp.Rules = append(cp.Rules, policy.ContentRule{ID: args[0], Pattern: args[1]})
		case "deny_file":
			if cp.DenyFile != "" {
				return nil, d.Err("content_policy: deny_file specified more than once")
			}
			f, err := stringArg(d)
			if err != nil {
				return nil, err
			}
			cp.DenyFile = f
		default:
			return nil, d.Errf("unrecognized content_policy subdirective %q", name)
		}
	}
	if len(cp.Rules) == 0 && cp.DenyFile == "" {
		return nil, d.Err("content_policy: no rules")
	}
	return cp, nil
}
