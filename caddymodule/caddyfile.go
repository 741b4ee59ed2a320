package caddymodule

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
	"github.com/tidwall/gjson"
	"go.uber.org/zap"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/ratelimit"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("ai_gateway", parseHandler[Gateway])
	httpcaddyfile.RegisterDirectiveOrder("ai_gateway", httpcaddyfile.Before, "reverse_proxy")
}

// parseHandler parses the Caddyfile block of a handler directive into a new T.
func parseHandler[T any, PT interface {
	*T
	caddyfile.Unmarshaler
	caddyhttp.MiddlewareHandler
}](h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := PT(new(T))
	if err := m.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return m, nil
}

// UnmarshalCaddyfile sets up the gateway from Caddyfile tokens. Syntax:
//
//	ai_gateway {
//	    key <secret> {
//	        id <id>
//	        models <pattern>...
//	        disabled
//	        no_batches
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
//	        upstream_api responses|chat_completions
//	        tokenizer estimate|cl100k_base|o200k_base|hf <path>|upstream [vllm|tgi|llamacpp]
//	        rpm|tpm|rpd|tpd|max_concurrent <n>
//	        queue <size> [<timeout>]
//	        fallback <model>...
//	        health_check [<path>] {
//	            path <path>
//	            interval <duration>
//	            timeout <duration>
//	        }
//	        deprecated <RFC 3339 time>
//	        sunset <RFC 3339 time>
//	        deprecation_link <url>
//	        serve_after_sunset
//	        batch {
//	            max_concurrent <n>
//	            rate <n>/s|m|h
//	            priority <n>
//	        }
//	        price { input|cached_input|output|request <amount> }
//	        kind chat|predict
//	        protocol kserve_v1|oip_v2|passthrough <path>   (kind predict)
//	        input_schema <file.json>
//	        tensor_input <name> <datatype> [<field>]        (oip_v2, repeatable)
//	        tensor_output <name>...
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
//	    readiness_path <path>
//	    storage { dir <path>; store bolt|redis <url>; redis_prefix <prefix> }
//	    files { max_bytes <size>; max_lines <n>; batch_expiry <duration> }
//	    batches {
//	        public_url <url>
//	        workers <n>
//	        retention <duration>
//	        output_expiry <duration>
//	        results_retention <duration>
//	    }
//	    accounting { ... }                  (see parseAccounting)
//	    fine_tuning {
//	        upstream <address>
//	        upstream_key <secret>
//	        timeout <duration>
//	        serve_on <model>
//	    }
//	}
//
// <secret> is sha256:<hex>, a placeholder such as {env.KEY}, or a literal: the adapter warns and
// stores only its sha256:<hex>, so the adapted JSON never holds it. An upstream_key is sent
// upstream, so a literal one stays in the JSON (Provision warns, never printing it): give it as
// a placeholder such as {env.VLLM_API_KEY} or {file./run/secrets/vllm}.
//
// Each subdirective sets the JSON field of the same name; fields that are arrays take the plural
// (key -> keys, model -> models, alias -> aliases, upstream -> upstreams, fallback -> fallbacks,
// rename_param -> rename_params, tensor_input -> tensor_inputs, tensor_output -> tensor_outputs);
// protocol passthrough <path> sets protocol and predict_path.
func (g *Gateway) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if err := noArgs(d); err != nil {
		return err
	}
	return newSubdirectives("ai_gateway", "key", "model", "clamp").each(d, func(name string) (err error) {
		switch name {
		case "key":
			var k policy.KeyConfig
			if k, err = parseKeyBlock(d); err == nil {
				g.Keys = append(g.Keys, k)
			}
		case "keys_file":
			g.KeysFile, err = stringArg(d)
		case "keys_file_interval":
			g.KeysFileInterval, err = durationArg(d)
		case "model":
			var m ModelConfig
			if m, err = parseModelBlock(d); err == nil {
				g.Models = append(g.Models, m)
			}
		case "max_body":
			g.MaxBody, err = sizeArg(d)
		case "rate_limit":
			g.RateLimit = new(RateLimit)
			err = parseRateLimit(d, g.RateLimit)
		case "api_version":
			g.APIVersion, err = parseAPIVersion(d)
		case "metrics_key_id":
			err = noArgs(d)
			g.MetricsKeyID = true
		case "anthropic_versions":
			g.AnthropicVersions, err = listArg(d)
		case "cache":
			g.Cache, err = parseCache(d)
		case "auth_failures":
			var n int64
			n, err = valueArg(d, "a positive number per minute or off", func(s string) (int64, bool) {
				if s == "off" {
					return -1, true
				}
				n, err := strconv.ParseInt(s, 10, 64)
				return n, err == nil && n != 0 && n >= -1 // -1 is off too
			})
			if err == nil {
				g.AuthFailures = &AuthGuard{MaxFailures: n}
			}
		case "content_policy":
			g.ContentPolicy, err = parseContentPolicy(d)
		case "context_status":
			if g.ContextStatus, err = intArg(d); err == nil && g.ContextStatus != 400 && g.ContextStatus != 413 {
				err = d.Errf("context_status: expected 400 or 413, got %d", g.ContextStatus)
			}
		case "fit_max_tokens":
			g.FitMaxTokens, err = intArg(d)
		case "storage":
			g.Storage, err = parseStorage(d)
		case "files":
			g.Files, err = parseFiles(d)
		case "readiness_path":
			if g.ReadinessPath, err = stringArg(d); err == nil && !strings.HasPrefix(g.ReadinessPath, "/") {
				err = d.Errf("readiness_path: expected a path starting with /, got %q", g.ReadinessPath)
			}
		case "batches":
			g.Batches, err = parseBatches(d)
		case "accounting":
			g.Accounting, err = parseAccounting(d)
		case "fine_tuning":
			g.FineTuning, err = parseFineTuning(d)
		default:
			var handled bool
			if handled, err = parseRewrite(d, name, &g.RewriteConfig); err == nil && !handled {
				err = d.Errf("unrecognized ai_gateway subdirective %q", name)
			}
		}
		return err
	})
}

func parseKeyBlock(d *caddyfile.Dispenser) (policy.KeyConfig, error) {
	var k policy.KeyConfig
	if !d.NextArg() {
		return k, d.Err("key: expected a secret (sha256:<hex>, {env.VAR} or a literal)")
	}
	secret, literal, err := adaptSecret(d.Val())
	if err != nil {
		return k, d.Errf("key: %v", err)
	}
	k.Secret = secret
	line := d.Line()
	if rest := d.RemainingArgs(); len(rest) > 0 {
		return k, d.Errf("key: expected one secret, got %d values", 1+len(rest)) // quoting none: they are secrets
	}
	err = newSubdirectives("key", "label", "pin").each(d, func(name string) (err error) {
		switch name {
		case "id":
			k.ID, err = stringArg(d)
		case "models":
			k.Models, err = listArg(d)
		case "disabled":
			err = noArgs(d)
			k.Disabled = true
		case "no_batches":
			err = noArgs(d)
			k.NoBatches = true
		case "expires_at":
			k.ExpiresAt, _, err = timeArg(d)
		case "rpm", "tpm", "rpd", "tpd", "max_concurrent":
			err = parseLimit(d, name, &k.Limits)
		case "pin":
			err = pairArg(d, &k.Pins, "<alias> <snapshot model name>", "pinned more than once")
		case "priority":
			k.Priority, err = valueArg(d, "an integer", func(s string) (int, bool) {
				n, err := strconv.Atoi(s)
				return n, err == nil
			})
		case "label":
			err = pairArg(d, &k.Labels, "<name> <value>", "set more than once")
		default:
			return d.Errf("unrecognized key subdirective %q", name)
		}
		return err
	})
	if err != nil {
		return k, err
	}
	if k.ID == "" {
		return k, d.Err("key: id is required")
	}
	if literal {
		caddyfileLogger().Warn("API key given as a literal secret in the Caddyfile; the adapted config holds only its sha256 hash, "+
			"but prefer key sha256:<hex> or a placeholder such as {env.GATEWAY_KEY} so the Caddyfile holds no secret either",
			zap.String("key_id", k.ID), zap.String("file", d.File()), zap.Int("line", line))
	}
	return k, nil
}

// caddyfileLogger logs the adapter's warnings (a handler directive cannot return adapter
// warnings); tests replace it.
var caddyfileLogger = caddy.Log

// adaptSecret returns a key secret as the adapted config keeps it. sha256:<hex> and values
// holding a placeholder (resolved by Provision) stay as they are; a literal becomes the
// sha256:<hex> of its trimmed value, as Provision would hash it, so the secret never reaches the
// JSON config, `caddy adapt` output or a log of the config.
func adaptSecret(s string) (secret string, literal bool, err error) {
	if strings.HasPrefix(s, "sha256:") || hasPlaceholder(s) {
		return s, false, nil
	}
	if s = strings.TrimSpace(s); s == "" {
		return "", false, errors.New("the secret is empty")
	}
	return policy.FormatHash(policy.HashSecret(s)), true, nil
}

// hasPlaceholder reports whether s holds a {placeholder}, which Provision resolves.
func hasPlaceholder(s string) bool {
	open := strings.IndexByte(s, '{')
	return open >= 0 && strings.IndexByte(s[open+1:], '}') > 0
}

func parseModelBlock(d *caddyfile.Dispenser) (ModelConfig, error) {
	var m ModelConfig
	if !d.NextArg() {
		return m, d.Err("model: expected a model name")
	}
	m.Name = d.Val()
	if rest := d.RemainingArgs(); len(rest) > 0 {
		return m, d.Errf("model: expected one model name, got %d values", 1+len(rest))
	}
	err := newSubdirectives("model "+m.Name, "clamp", "tensor_input").each(d, func(name string) (err error) {
		switch name {
		case "alias":
			m.Aliases, err = listArg(d)
		case "context_window":
			m.ContextWindow, err = intArg(d)
		case "max_output_tokens":
			m.MaxOutputTokens, err = intArg(d)
		case "upstream":
			m.Upstreams, err = listArg(d)
		case "upstream_key":
			m.UpstreamKey, err = stringArg(d)
		case "upstream_name":
			m.UpstreamName, err = stringArg(d)
		case "upstream_api":
			if m.UpstreamAPI, err = stringArg(d); err == nil && m.UpstreamAPI != upstreamAPIResponses && m.UpstreamAPI != upstreamAPIChat {
				err = d.Errf("upstream_api: want responses or chat_completions, got %q", m.UpstreamAPI)
			}
		case "tokenizer":
			args := d.RemainingArgs()
			switch {
			case len(args) == 1 && args[0] != "hf":
				m.Tokenizer = args[0]
			case len(args) == 2 && (args[0] == "hf" || args[0] == "upstream"):
				m.Tokenizer = args[0] + " " + args[1]
			default:
				return d.Errf("tokenizer: expected estimate, cl100k_base, o200k_base, hf <path> or upstream [vllm|tgi|llamacpp], got %q", strings.Join(args, " "))
			}
		case "rpm", "tpm", "rpd", "tpd", "max_concurrent":
			err = parseLimit(d, name, &m.Limits)
		case "queue":
			args := d.RemainingArgs()
			if len(args) < 1 || len(args) > 2 {
				return d.Errf("queue: expected <size> [<timeout>], got %d values", len(args))
			}
			if m.Queue, err = strconv.Atoi(args[0]); err != nil || m.Queue < 0 {
				return d.Errf("queue: expected a non-negative integer size, got %q", args[0])
			}
			if len(args) == 2 {
				dur, perr := caddy.ParseDuration(args[1])
				if perr != nil || dur < 0 {
					return d.Errf("queue: expected a timeout such as 5s, got %q", args[1])
				}
				m.QueueTimeout = caddy.Duration(dur)
			}
		case "cache":
			m.Cache, err = parseCache(d)
		case "fallback":
			m.Fallbacks, err = listArg(d)
		case "health_check":
			m.HealthCheck, err = parseHealthCheck(d)
		case "deprecated":
			m.Deprecated, err = rfc3339Arg(d)
		case "sunset":
			m.Sunset, err = rfc3339Arg(d)
		case "deprecation_link":
			m.DeprecationLink, err = stringArg(d)
		case "serve_after_sunset":
			err = noArgs(d)
			m.ServeAfterSunset = true
		case "batch":
			m.Batch, err = parseBatchModel(d)
		case "price":
			m.Price, err = parsePrice(d)
		case "kind", "protocol", "input_schema", "tensor_input", "tensor_output":
			err = parsePredictSubdirective(d, name, &m)
		default:
			var handled bool
			if handled, err = parseRewrite(d, name, &m.RewriteConfig); err == nil && !handled {
				err = d.Errf("unrecognized model subdirective %q", name)
			}
		}
		return err
	})
	return m, err
}

// parseLimit parses one limit subdirective (rpm, tpm, rpd, tpd, max_concurrent) into l.
func parseLimit(d *caddyfile.Dispenser, name string, l *ratelimit.Limits) error {
	n, err := valueArg(d, "a non-negative integer", func(s string) (int64, bool) {
		n, err := strconv.ParseInt(s, 10, 64)
		return n, err == nil && n >= 0
	})
	if err != nil {
		return err
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
	if err := noArgs(d); err != nil {
		return err
	}
	err := newSubdirectives("rate_limit").each(d, func(name string) (err error) {
		switch name {
		case "rpm", "tpm", "rpd", "tpd", "max_concurrent":
			err = parseLimit(d, name, &rl.Limits)
		case "store":
			rl.Store, rl.RedisURL, err = storeArg(d)
		case "redis_prefix":
			rl.RedisPrefix, err = stringArg(d)
		case "on_store_error":
			rl.OnStoreError, err = enumArg(d, "allow", "deny")
		case "fallback_fraction":
			var v string
			if v, err = stringArg(d); err == nil {
				f, perr := strconv.ParseFloat(v, 64)
				if perr != nil || !(f > 0 && f <= 1) {
					return d.Errf("fallback_fraction: expected a number in (0, 1], got %q", v)
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
		return err
	})
	if err != nil {
		return err
	}
	if rl.FallbackFraction != 0 && rl.OnStoreError == "deny" {
		return d.Err("rate_limit: fallback_fraction applies to on_store_error allow, not deny")
	}
	return nil
}

// parseStorage parses the storage block.
func parseStorage(d *caddyfile.Dispenser) (*StorageConfig, error) {
	if err := noArgs(d); err != nil {
		return nil, err
	}
	st := new(StorageConfig)
	err := newSubdirectives("storage").each(d, func(name string) (err error) {
		switch name {
		case "dir":
			st.Dir, err = stringArg(d)
		case "store":
			args := d.RemainingArgs()
			switch {
			case len(args) == 1 && args[0] == "bolt":
				st.Store = "bolt"
			case len(args) == 2 && args[0] == "redis":
				st.Store, st.RedisURL = "redis", args[1]
			default:
				return d.Err("store: expected bolt or redis <url>")
			}
		case "redis_prefix":
			st.RedisPrefix, err = stringArg(d)
		case "batch_lease":
			st.BatchLease, err = durationArg(d)
		default:
			return d.Errf("unrecognized storage subdirective %q", name)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if st.RedisPrefix != "" && st.Store != "redis" {
		return nil, d.Err("storage: redis_prefix applies to store redis only")
	}
	return st, nil
}

// parseFiles parses the files block.
func parseFiles(d *caddyfile.Dispenser) (*FilesConfig, error) {
	if err := noArgs(d); err != nil {
		return nil, err
	}
	fc := new(FilesConfig)
	err := newSubdirectives("files").each(d, func(name string) (err error) {
		switch name {
		case "max_bytes":
			fc.MaxBytes, err = sizeArg(d)
		case "max_lines":
			var n int
			if n, err = intArg(d); err == nil && n == 0 {
				err = d.Err("max_lines: expected a positive integer")
			}
			fc.MaxLines = int64(n)
		case "batch_expiry":
			fc.BatchExpiry, err = durationArg(d)
		default:
			return d.Errf("unrecognized files subdirective %q", name)
		}
		return err
	})
	return fc, err
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

// each calls parse with the name of each subdirective of the block the dispenser is at, after
// check; the first error ends the block. Each block still writes out its own switch, as Caddy's
// own modules do: its cases, alike in shape (x.Field, err = stringArg(d)), set different fields,
// which a table of setters would hide.
func (s *subdirectives) each(d *caddyfile.Dispenser, parse func(name string) error) error {
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		if err := s.check(d, name); err != nil {
			return err
		}
		if err := parse(name); err != nil {
			return err
		}
	}
	return nil
}

// The argument helpers read the arguments of the subdirective the dispenser is on. Their errors
// name it and quote the bad value (rpm: expected a non-negative integer, got "abc"); an error
// about the number of arguments quotes none, since a value may be a secret.

// noArgs checks that a flag subdirective (disabled, required, ...) has no arguments.
func noArgs(d *caddyfile.Dispenser) error {
	name := d.Val()
	if d.NextArg() {
		return d.Errf("%s: takes no arguments, got %q", name, d.Val())
	}
	return nil
}

// listArg reads the one or more arguments of a subdirective.
func listArg(d *caddyfile.Dispenser) ([]string, error) {
	name := d.Val()
	args := d.RemainingArgs()
	if len(args) == 0 {
		return nil, d.Errf("%s: expected at least one value", name)
	}
	return args, nil
}

// stringArg reads the one argument of a subdirective.
func stringArg(d *caddyfile.Dispenser) (string, error) {
	name := d.Val()
	if !d.NextArg() {
		return "", d.Errf("%s: expected a value", name)
	}
	v := d.Val()
	if rest := d.RemainingArgs(); len(rest) > 0 {
		return "", d.Errf("%s: expected one value, got %d", name, 1+len(rest))
	}
	return v, nil
}

// valueArg reads the one argument of a subdirective and converts it with parse; when parse
// reports false, the error says what was expected (want) and quotes the value.
func valueArg[T any](d *caddyfile.Dispenser, want string, parse func(s string) (T, bool)) (T, error) {
	name := d.Val()
	var zero T
	s, err := stringArg(d)
	if err != nil {
		return zero, err
	}
	v, ok := parse(s)
	if !ok {
		return zero, d.Errf("%s: expected %s, got %q", name, want, s)
	}
	return v, nil
}

func intArg(d *caddyfile.Dispenser) (int, error) {
	return valueArg(d, "a non-negative integer", func(s string) (int, bool) {
		n, err := strconv.Atoi(s)
		return n, err == nil && n >= 0
	})
}

// enumArg reads the one argument of a subdirective, which must be one of values (two of them).
func enumArg(d *caddyfile.Dispenser, values ...string) (string, error) {
	return valueArg(d, strings.Join(values, " or "), func(s string) (string, bool) {
		return s, slices.Contains(values, s)
	})
}

// pairArg reads the <name> <value> arguments of a subdirective (usage, as the error words them)
// into *m, made on first use; repeated words the error of a name given twice.
func pairArg(d *caddyfile.Dispenser, m *map[string]string, usage, repeated string) error {
	name := d.Val()
	args := d.RemainingArgs()
	if len(args) != 2 {
		return d.Errf("%s: expected %s, got %d values", name, usage, len(args))
	}
	if *m == nil {
		*m = map[string]string{}
	}
	if _, dup := (*m)[args[0]]; dup {
		return d.Errf("%s: %s %s", name, args[0], repeated)
	}
	(*m)[args[0]] = args[1]
	return nil
}

// storeArg reads the arguments of a store subdirective: memory, or redis <url>.
func storeArg(d *caddyfile.Dispenser) (store, redisURL string, err error) {
	args := d.RemainingArgs()
	switch {
	case len(args) == 1 && args[0] == "memory":
		return "memory", "", nil
	case len(args) == 2 && args[0] == "redis":
		return "redis", args[1], nil
	}
	return "", "", d.Err("store: expected memory or redis <url>")
}

func durationArg(d *caddyfile.Dispenser) (caddy.Duration, error) {
	return valueArg(d, "a duration such as 500ms, 5s or 1m", func(s string) (caddy.Duration, bool) {
		dur, err := caddy.ParseDuration(s)
		return caddy.Duration(dur), err == nil && dur >= 0
	})
}

// maxSize caps every size argument (max_body, the cache's max_size).
const maxSize = 1 << 40

func sizeArg(d *caddyfile.Dispenser) (int64, error) {
	return valueArg(d, "a size such as 512KiB or 64MiB, at most 1TiB", func(s string) (int64, bool) {
		n, err := humanize.ParseBytes(s)
		return int64(n), err == nil && n != 0 && n <= maxSize
	})
}

// timeArg reads one RFC 3339 time argument; s is the argument as written.
func timeArg(d *caddyfile.Dispenser) (t time.Time, s string, err error) {
	t, err = valueArg(d, "an RFC 3339 time such as 2027-01-31T00:00:00Z", func(v string) (time.Time, bool) {
		t, err := time.Parse(time.RFC3339, v)
		s = v
		return t, err == nil
	})
	if err != nil {
		return t, "", err
	}
	return t, s, nil
}

// rfc3339Arg reads one RFC 3339 time argument and keeps it as written.
func rfc3339Arg(d *caddyfile.Dispenser) (string, error) {
	_, s, err := timeArg(d)
	return s, err
}

// UnmarshalCaddyfile sets up the dynamic upstreams source: `dynamic ai_gateway` takes no options.
func (u *Upstreams) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	if err := noArgs(d); err != nil {
		return err
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
//	    <param> <JSON value or bare string>|off
//	}
//	clamp <param> <min> <max>|off
//	clamp_mode reject|clamp
//	deny_params <param>...
//	strip_params <param>...
//	allow_params <param>...
//	system_prompt <text>|off
//	system_prompt_mode prepend|replace
//	max_tokens_field max_tokens|max_completion_tokens|off
//
// A model's rules merge with the gateway-wide ones (see policy.RewriteConfig). In a model
// block, allow_params and the word off lift a gateway-wide rule: allow_params lifts
// deny_params and strip_params for its params, `clamp <param> off` the clamp of the param,
// `<param> off` in defaults its default (a quoted "off" is the string), `system_prompt off`
// and `max_tokens_field off` those settings.
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
			switch {
			case v == policy.Off && !d.Token().Quoted():
				// lifts the gateway-wide default
			case !gjson.Valid(v):
				v = string(wire.AppendString(nil, v)) // a bare word is a string
			}
			if _, dup := rc.Defaults[param]; dup {
				return true, d.Errf("defaults: %s set more than once", param)
			}
			rc.Defaults[param] = v
		}
	case "clamp":
		args := d.RemainingArgs()
		if len(args) == 2 && args[1] == policy.Off {
			rc.Clamps = append(rc.Clamps, policy.Clamp{Param: args[0], Off: true})
			break
		}
		if len(args) != 3 {
			return true, d.Err("clamp <param> <min> <max>, or clamp <param> off")
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
	case "allow_params":
		if rc.AllowParams = append(rc.AllowParams, d.RemainingArgs()...); len(rc.AllowParams) == 0 {
			err = d.ArgErr()
		}
	case "system_prompt":
		rc.SystemPrompt, err = stringArg(d)
	case "system_prompt_mode":
		if rc.SystemPromptMode, err = stringArg(d); err == nil && rc.SystemPromptMode != policy.SystemPromptPrepend && rc.SystemPromptMode != policy.SystemPromptReplace {
			err = d.Errf("system_prompt_mode: want prepend or replace, got %q", rc.SystemPromptMode)
		}
	case "max_tokens_field":
		if rc.MaxTokensField, err = stringArg(d); err == nil && rc.MaxTokensField != "max_tokens" && rc.MaxTokensField != "max_completion_tokens" && rc.MaxTokensField != policy.Off {
			err = d.Errf("max_tokens_field: want max_tokens, max_completion_tokens or off, got %q", rc.MaxTokensField)
		}
	default:
		return false, nil
	}
	return true, err
}

// parseContentPolicy parses the content_policy block.
func parseContentPolicy(d *caddyfile.Dispenser) (*ContentPolicyConfig, error) {
	cp := new(ContentPolicyConfig)
	if err := noArgs(d); err != nil {
		return nil, err
	}
	err := newSubdirectives("content_policy", "deny", "rule").each(d, func(name string) (err error) {
		switch name {
		case "deny":
			var args []string
			if args, err = listArg(d); err != nil {
				return err
			}
			for _, a := range args {
				cp.Rules = append(cp.Rules, policy.ContentRule{Pattern: a})
			}
		case "rule":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.Errf("rule: expected <id> <regex>, got %d values", len(args))
			}
			cp.Rules = append(cp.Rules, policy.ContentRule{ID: args[0], Pattern: args[1]})
		case "deny_file":
			cp.DenyFile, err = stringArg(d)
		default:
			return d.Errf("unrecognized content_policy subdirective %q", name)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(cp.Rules) == 0 && cp.DenyFile == "" {
		return nil, d.Err("content_policy: no rules")
	}
	return cp, nil
}

// parseHealthCheck parses a model's health_check: an optional path argument, then an optional
// block of path, interval and timeout.
func parseHealthCheck(d *caddyfile.Dispenser) (*HealthCheckConfig, error) {
	hc := new(HealthCheckConfig)
	args := d.RemainingArgs()
	switch {
	case len(args) > 1:
		return nil, d.Errf("health_check: expected at most a path, got %d values", len(args))
	case len(args) == 1:
		hc.Path = args[0]
	}
	err := newSubdirectives("health_check").each(d, func(name string) (err error) {
		switch name {
		case "path":
			if hc.Path != "" {
				return d.Err("health_check: path given twice")
			}
			hc.Path, err = stringArg(d)
		case "interval":
			hc.Interval, err = durationArg(d)
		case "timeout":
			hc.Timeout, err = durationArg(d)
		default:
			return d.Errf("unrecognized health_check subdirective %q", name)
		}
		return err
	})
	if err == nil && hc.Path != "" && !strings.HasPrefix(hc.Path, "/") {
		err = d.Errf("health_check: expected a path starting with /, got %q", hc.Path)
	}
	return hc, err
}
