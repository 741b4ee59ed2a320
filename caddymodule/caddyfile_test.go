package caddymodule

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/tidwall/gjson"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddyai/gateway/policy"
)

var update = flag.Bool("update", false, "rewrite the adapted JSON of golden .caddyfiletest files")

// TestCaddyfileAdapt checks each testdata/caddyfile_adapt/*.caddyfiletest: a Caddyfile, a line
// of dashes, and the JSON it must adapt to.
func TestCaddyfileAdapt(t *testing.T) {
	files, err := filepath.Glob("testdata/caddyfile_adapt/*.caddyfiletest")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			input, expected, ok := strings.Cut(string(data), "----------")
			if !ok {
				t.Fatal("missing ---------- separator")
			}
			if *update {
				adapted, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(input), nil)
				if err != nil {
					t.Fatal(err)
				}
				var v any
				_ = json.Unmarshal(adapted, &v)
				pretty, _ := json.MarshalIndent(v, "", "\t")
				if err := os.WriteFile(f, []byte(input+"----------\n"+string(pretty)+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if !caddytest.CompareAdapt(t, f, input, "caddyfile", strings.TrimSpace(expected)) {
				t.Fatal("adapted JSON differs")
			}
		})
	}
}

func TestCaddyfileErrors(t *testing.T) {
	tests := map[string]string{
		"unknown subdirective":   "ai_gateway {\nbogus\n}",
		"argument on directive":  "ai_gateway extra {\n}",
		"key without id":         "ai_gateway {\nkey sha256:00 {\nmodels x\n}\n}",
		"key without secret":     "ai_gateway {\nkey\n}",
		"unknown key option":     "ai_gateway {\nkey s {\nid a\ncolour red\n}\n}",
		"repeated id":            "ai_gateway {\nkey s {\nid a\nid b\n}\n}",
		"repeated keys_file":     "ai_gateway {\nkeys_file a\nkeys_file b\n}",
		"bad context window":     "ai_gateway {\nmodel m {\ncontext_window lots\n}\n}",
		"negative max output":    "ai_gateway {\nmodel m {\nmax_output_tokens -1\n}\n}",
		"unknown model option":   "ai_gateway {\nmodel m {\nflavour x\n}\n}",
		"model without name":     "ai_gateway {\nmodel {\n}\n}",
		"bad size":               "ai_gateway {\nmax_body huge\n}",
		"bad duration":           "ai_gateway {\nkeys_file_interval soon\n}",
		"bad expiry":             "ai_gateway {\nkey s {\nid a\nexpires_at tomorrow\n}\n}",
		"empty alias":            "ai_gateway {\nmodel m {\nalias\n}\n}",
		"bad fallback_fraction":  "ai_gateway {\nrate_limit {\nfallback_fraction half\n}\n}",
		"fraction over 1":        "ai_gateway {\nrate_limit {\nfallback_fraction 1.5\n}\n}",
		"fraction with deny":     "ai_gateway {\nrate_limit {\non_store_error deny\nfallback_fraction 0.5\n}\n}",
		"unknown storage opt":    "ai_gateway {\nstorage {\nbucket x\n}\n}",
		"bad storage store":      "ai_gateway {\nstorage {\nstore memory\n}\n}",
		"redis without url":      "ai_gateway {\nstorage {\nstore redis\n}\n}",
		"prefix without redis":   "ai_gateway {\nstorage {\nredis_prefix p:\n}\n}",
		"bad files max_bytes":    "ai_gateway {\nfiles {\nmax_bytes lots\n}\n}",
		"zero files max_lines":   "ai_gateway {\nfiles {\nmax_lines 0\n}\n}",
		"unknown files opt":      "ai_gateway {\nfiles {\npurposes batch\n}\n}",
		"bad upstream_api":       "ai_gateway {\nmodel m {\nupstream_api grpc\n}\n}",
		"upstream_api twice":     "ai_gateway {\nmodel m {\nupstream_api responses\nupstream_api chat_completions\n}\n}",
		"negative batch reserve": "ai_gateway {\nmodel m {\nbatch {\nreserve -1\n}\n}\n}",
	}
	repeated := map[string]string{
		"version deprecated":       "ai_gateway {\napi_version {\nheader X-V\nsupported 2025-01-01\nversion 2025-01-01 {\ndeprecated 2026-01-01T00:00:00Z\ndeprecated 2026-02-01T00:00:00Z\n}\n}\n}",
		"version sunset":           "ai_gateway {\napi_version {\nheader X-V\nsupported 2025-01-01\nversion 2025-01-01 {\nsunset 2026-01-01T00:00:00Z\nsunset 2026-02-01T00:00:00Z\n}\n}\n}",
		"version twice":            "ai_gateway {\napi_version {\nheader X-V\nsupported 2025-01-01\nversion 2025-01-01 {\nserve_after_sunset\n}\nversion 2025-01-01 {\n}\n}\n}",
		"rename_param same from":   "ai_gateway {\napi_version {\nheader X-V\nsupported 2025-01-01\nversion 2025-01-01 {\nrename_param a b\nrename_param a c\n}\n}\n}",
		"content_policy deny_file": "ai_gateway {\ncontent_policy {\ndeny_file a\ndeny_file b\n}\n}",
		"key label":                "ai_gateway {\nkey sha256:00 {\nid a\nlabel team a\nlabel team b\n}\n}",
		"cache max_size":           "ai_gateway {\ncache {\nmax_size 1MiB\nmax_size 2MiB\n}\n}",
		"rate_limit rpm":           "ai_gateway {\nrate_limit {\nrpm 1\nrpm 2\n}\n}",
		"model upstream":           "ai_gateway {\nmodel m {\nupstream a:1\nupstream b:1\n}\n}",
		"storage dir":              "ai_gateway {\nstorage {\ndir a\ndir b\n}\n}",
		"files max_bytes":          "ai_gateway {\nfiles {\nmax_bytes 1MB\nmax_bytes 2MB\n}\n}",
	}

	for name, input := range tests {
		t.Run(name, func(t *testing.T) {
			g := new(Gateway)
			if err := g.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err == nil {
				t.Errorf("accepted: %s", input)
			}
		})
	}
	for name, input := range repeated {
		t.Run("repeated "+name, func(t *testing.T) {
			err := new(Gateway).UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))
			if err == nil || !strings.Contains(err.Error(), "more than once") {
				t.Errorf("want a repetition error, got %v for: %s", err, input)
			}
		})
	}
	sims := map[string]string{
		"unknown":   "ai_simulator {\ncolour x\n}",
		"bad tps":   "ai_simulator {\ntokens_per_second fast\n}",
		"repeated":  "ai_simulator {\nttft 1s\nttft 2s\n}",
		"no models": "ai_simulator {\nmodels\n}",
	}
	for name, input := range sims {
		t.Run("simulator "+name, func(t *testing.T) {
			s := new(Simulator)
			if err := s.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err == nil {
				t.Errorf("accepted: %s", input)
			}
		})
	}
}

// TestCaddyfileRepeatableSubdirectives: the subdirectives that add one more item may repeat.
func TestCaddyfileRepeatableSubdirectives(t *testing.T) {
	input := `ai_gateway {
		key sha256:00 {
			id a
			label team a
			label site b
			pin x y
			pin z w
		}
		key sha256:01 {
			id b
		}
		model m {
			clamp temperature 0 1
			clamp top_p 0 1
		}
		model n
		api_version {
			header X-V
			supported 2025-01-01 2026-01-01
			version 2025-01-01 {
				rename_param a b
				rename_param c d
			}
			version 2026-01-01
		}
		content_policy {
			deny x y
			deny z
			rule r1 a
			rule r2 b
		}
	}`
	g := new(Gateway)
	if err := g.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err != nil {
		t.Fatal(err)
	}
	if len(g.Keys) != 2 || len(g.Keys[0].Labels) != 2 || len(g.Models) != 2 || len(g.Models[0].Clamps) != 2 ||
		len(g.APIVersion.Versions) != 2 || len(g.APIVersion.Versions[0].RenameParams) != 2 || len(g.ContentPolicy.Rules) != 5 {
		t.Errorf("repeated items lost: %+v", g)
	}
}

// TestCaddyfileErrorsNameTheDirective: a bad argument is reported with the subdirective it was
// given to, not only the bad value.
func TestCaddyfileErrorsNameTheDirective(t *testing.T) {
	tests := []struct{ input, want string }{
		{"ai_gateway {\nmodel m {\ncontext_window lots\n}\n}", `context_window: expected a non-negative integer, got "lots"`},
		{"ai_gateway {\nmodel m {\nrpm abc\n}\n}", `rpm: expected a non-negative integer, got "abc"`},
		{"ai_gateway {\nrate_limit {\ndefault_max_tokens -3\n}\n}", `default_max_tokens: expected a non-negative integer, got "-3"`},
		{"ai_gateway {\nmax_body huge\n}", `max_body: expected a size`},
		{"ai_gateway {\nkeys_file_interval soon\n}", `keys_file_interval: expected a duration`},
		{"ai_gateway {\nkey sha256:00 {\nid a\nexpires_at tomorrow\n}\n}", `expires_at: expected an RFC 3339 time`},
		{"ai_gateway {\nmodel m {\nsunset later\n}\n}", `sunset: expected an RFC 3339 time`},
		{"ai_gateway {\nkey sha256:00 {\nid a\npriority high\n}\n}", `priority: expected an integer, got "high"`},
		{"ai_gateway {\nkey sha256:00 {\nid a\ndisabled yes\n}\n}", `disabled: takes no arguments, got "yes"`},
		{"ai_gateway {\nkey sha256:00 {\nid a b\n}\n}", `id: expected one value, got 2`},
		{"ai_gateway {\nkeys_file\n}", `keys_file: expected a value`},
		{"ai_gateway {\nmodel m {\nalias\n}\n}", `alias: expected at least one value`},
		{"ai_gateway {\nmodel m {\nupstream_key sk-one sk-two\n}\n}", `upstream_key: expected one value, got 2`},
		{"ai_gateway {\nkey sk-one sk-two {\nid a\n}\n}", `key: expected one secret, got 2 values`},
		{"ai_gateway {\nmodel m {\nqueue many\n}\n}", `queue: expected a non-negative integer size, got "many"`},
		{"ai_gateway {\ncache {\nttl forever\n}\n}", `ttl: expected a duration`},
		{"ai_gateway {\ncache {\nmax_size lots\n}\n}", `max_size: expected a size`},
		{"ai_gateway {\ncache {\nmax_size 2TiB\n}\n}", `max_size: expected a size such as 512KiB or 64MiB, at most 1TiB, got "2TiB"`},
		{"ai_gateway {\nmax_body 0\n}", `max_body: expected a size`},
		{"ai_gateway {\napi_version {\nheader X-V\nsupported 2025-01-01\nversion 2025-01-01 {\ndeprecated soon\n}\n}\n}", `deprecated: expected an RFC 3339 time`},
		{"ai_gateway {\ncontent_policy {\ndeny\n}\n}", `deny: expected at least one value`},
		{"ai_gateway {\nauth_failures many\n}", `auth_failures: expected a positive number per minute or off, got "many"`},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			err := new(Gateway).UnmarshalCaddyfile(caddyfile.NewTestDispenser(tt.input))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want it to hold %q", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), "sk-") {
				t.Errorf("the error quotes a secret: %v", err)
			}
		})
	}
}

// TestCaddyfileAdaptKeepsSecretsOut adapts a Caddyfile with a literal key secret, as `caddy
// adapt` and `caddy run` do: the adapted JSON (which Caddy prints, serves on its admin API and
// logs with debug on) holds only the secret's hash, placeholders stay placeholders, the warning
// names the key but not the secret, and the provisioned gateway still accepts the secret.
func TestCaddyfileAdaptKeepsSecretsOut(t *testing.T) {
	const literal = "sk-literal-secret"
	core, logs := observer.New(zap.WarnLevel)
	orig := caddyfileLogger
	caddyfileLogger = func() *zap.Logger { return zap.New(core) }
	t.Cleanup(func() { caddyfileLogger = orig })
	t.Setenv("ADAPT_TEAM_KEY", "sk-from-env")
	t.Setenv("ADAPT_UPSTREAM_KEY", "upstream-from-env")

	input := `:8080 {
	ai_gateway {
		key ` + literal + ` {
			id literal
		}
		key {env.ADAPT_TEAM_KEY} {
			id env
		}
		model m {
			upstream localhost:8081
			upstream_key {env.ADAPT_UPSTREAM_KEY}
		}
	}
	reverse_proxy {
		dynamic ai_gateway
	}
}`
	adapted, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(input), nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(adapted), literal) {
		t.Fatalf("the adapted JSON holds the literal secret:\n%s", adapted)
	}
	handler := gjson.GetBytes(adapted, "apps.http.servers.srv0.routes.0.handle.0")
	if got, want := handler.Get("keys.0.secret").String(), policy.FormatHash(policy.HashSecret(literal)); got != want {
		t.Errorf("literal secret adapted to %q, want %q", got, want)
	}
	if got := handler.Get("keys.1.secret").String(); got != "{env.ADAPT_TEAM_KEY}" {
		t.Errorf("placeholder secret adapted to %q", got)
	}
	if got := handler.Get("models.0.upstream_key").String(); got != "{env.ADAPT_UPSTREAM_KEY}" {
		t.Errorf("placeholder upstream_key adapted to %q", got)
	}

	warnings := logs.All()
	if len(warnings) != 1 || warnings[0].ContextMap()["key_id"] != "literal" {
		t.Fatalf("want one warning about key literal, got %+v", warnings)
	}
	for _, e := range warnings {
		if strings.Contains(e.Message, literal) || strings.Contains(fmt.Sprint(e.ContextMap()), literal) {
			t.Errorf("the warning holds the secret: %s %v", e.Message, e.ContextMap())
		}
	}

	g := new(Gateway)
	if err := json.Unmarshal([]byte(handler.Raw), g); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := g.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Cleanup() })
	for _, secret := range []string{literal, "sk-from-env"} {
		if _, status := g.keys.Load().Lookup(secret, time.Now()); status != policy.KeyOK {
			t.Errorf("the provisioned gateway refuses %.8s...: status %d", secret, status)
		}
	}
}

func TestAdaptSecret(t *testing.T) {
	tests := []struct {
		in, want string
		literal  bool
	}{
		{"sha256:abc", "sha256:abc", false},
		{"{env.KEY}", "{env.KEY}", false},
		{"{file./run/secrets/key}", "{file./run/secrets/key}", false},
		{"sk-{env.SUFFIX}", "sk-{env.SUFFIX}", false},
		{"sk-plain", policy.FormatHash(policy.HashSecret("sk-plain")), true},
		{" sk-padded ", policy.FormatHash(policy.HashSecret("sk-padded")), true},
		{"sk-{unclosed", policy.FormatHash(policy.HashSecret("sk-{unclosed")), true},
		{"sk-{}", policy.FormatHash(policy.HashSecret("sk-{}")), true},
	}
	for _, tt := range tests {
		got, literal, err := adaptSecret(tt.in)
		if err != nil || got != tt.want || literal != tt.literal {
			t.Errorf("adaptSecret(%q) = %q, %v, %v; want %q, %v", tt.in, got, literal, err, tt.want, tt.literal)
		}
	}
	if _, _, err := adaptSecret("  "); err == nil {
		t.Error("an empty secret is accepted")
	}
}

// TestCaddyfileRewriteLifts parses a model's explicit lifts of gateway-wide rewriting rules
// and shows their JSON form.
func TestCaddyfileRewriteLifts(t *testing.T) {
	input := `ai_gateway {
		deny_params logit_bias logprobs
		strip_params user
		clamp max_tokens 1 4096
		clamp temperature 0 2
		defaults {
			temperature 0.7
			service_tier auto
		}
		system_prompt "Be brief."
		max_tokens_field max_completion_tokens
		model raw {
			allow_params logprobs user
			clamp max_tokens off
			clamp temperature 0 1
			defaults {
				temperature off
				service_tier "off"
			}
			system_prompt off
			max_tokens_field off
		}
	}`
	g := new(Gateway)
	if err := g.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err != nil {
		t.Fatal(err)
	}
	got, err := json.Marshal(g.Models[0].RewriteConfig)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"defaults":{"service_tier":"\"off\"","temperature":"off"},` +
		`"clamps":[{"param":"max_tokens","off":true},{"param":"temperature","min":0,"max":1}],` +
		`"allow_params":["logprobs","user"],"system_prompt":"off","max_tokens_field":"off"}`
	if string(got) != want {
		t.Errorf("model rules\n got %s\nwant %s", got, want)
	}
	if _, err := policy.CompileRewrite(g.RewriteConfig, g.Models[0].RewriteConfig); err != nil {
		t.Errorf("compiling: %v", err)
	}
	for name, bad := range map[string]string{
		"clamp off with a bound":  "clamp temperature off 1",
		"clamp with one bound":    "clamp temperature 1",
		"allow_params empty":      "allow_params",
		"allow_params repeated":   "allow_params a\nallow_params b",
		"max_tokens_field other":  "max_tokens_field max_new_tokens",
		"defaults off with extra": "defaults {\ntemperature off 1\n}",
	} {
		t.Run(name, func(t *testing.T) {
			input := "ai_gateway {\nmodel m {\n" + bad + "\n}\n}"
			if err := new(Gateway).UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err == nil {
				t.Errorf("accepted: %s", bad)
			}
		})
	}
}
