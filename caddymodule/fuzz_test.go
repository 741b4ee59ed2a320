package caddymodule

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// FuzzGatewayCaddyfile feeds arbitrary Caddyfile text to Gateway.UnmarshalCaddyfile. It must
// never panic, and whatever it accepts must survive a JSON round trip: the config marshalled,
// unmarshalled into a fresh Gateway and marshalled again gives the same JSON.
func FuzzGatewayCaddyfile(f *testing.F) {
	// seeds: the ai_gateway blocks of the golden files and examples, and small edge cases
	files, _ := filepath.Glob("testdata/caddyfile_adapt/*.caddyfiletest")
	examples, _ := filepath.Glob("../examples/*.Caddyfile")
	for _, name := range append(files, examples...) {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		in, _, _ := strings.Cut(string(data), "----------")
		for _, block := range gatewayBlocks(in) {
			f.Add(block)
		}
	}
	for _, s := range []string{
		"ai_gateway",
		"ai_gateway {\n}",
		"ai_gateway {\nkey sha256:00 {\nid a\n}\n}",
		"ai_gateway {\nkey s {\nid a\nrpm 5\ntpm 1\nlabel team x\npin a b\npriority 3\n}\nmodel m {\nalias a b\nqueue 3 1s\nfallback n\n}\n}",
		"ai_gateway {\nrate_limit {\nstore redis redis://x:6379/0\non_store_error deny\n}\n}",
		"ai_gateway {\napi_version {\nheader X-V\nsupported 2024-01-01\nversion 2024-01-01 {\nrename_param a b\n}\n}\n}",
		"ai_gateway {\nmodel m {\ntokenizer hf\n}\n}",
		"ai_gateway {\nmodel m {\nqueue\n}\n}",
		"ai_gateway {\nkey {\n}\n}",
		"ai_gateway {\nmax_body 1EiB\n}",
		"ai_gateway {\ncache {\nttl 1m\n}\ncontent_policy {\nrule r ^x\n}\n}",
		"ai_gateway {\nclamp temperature 0 1\ndefaults {\ntemperature 0.5\n}\n}",
		"ai_gateway {\nkey \"\" {\nid \"\"\n}\n}",
	} {
		f.Add(s)
	}
	// every subdirective with one argument and with none: the shortest forms a parser may
	// index past
	blocks := map[string][]string{
		"key s {\nid a\n%s\n}": {"id", "models", "disabled", "no_batches", "expires_at", "label", "rpm", "tpm", "rpd", "tpd", "max_concurrent", "pin", "priority"},
		"model m {\n%s\n}": {"alias", "context_window", "max_output_tokens", "upstream", "upstream_key", "upstream_name", "tokenizer",
			"rpm", "tpm", "rpd", "tpd", "max_concurrent", "queue", "fallback", "deprecated", "sunset", "deprecation_link", "serve_after_sunset", "cache"},
		"rate_limit {\n%s\n}": {"rpm", "tpm", "rpd", "tpd", "max_concurrent", "store", "redis_prefix", "on_store_error", "default_max_tokens"},
		"%s": {"keys_file", "keys_file_interval", "max_body", "anthropic_versions", "metrics_key_id", "auth_failures", "context_status",
			"fit_max_tokens", "clamp", "clamp_mode", "deny_params", "strip_params", "system_prompt", "max_tokens_field"},
	}
	for block, subs := range blocks {
		for _, sub := range subs {
			for _, line := range []string{sub, sub + " 3"} {
				f.Add("ai_gateway {\n" + fmt.Sprintf(block, line) + "\n}")
			}
		}
	}
	f.Fuzz(func(t *testing.T, input string) {
		// NewTestDispenser exits the process on input the lexer rejects: filter that first
		if _, err := caddyfile.Tokenize([]byte(input), "Fuzzfile"); err != nil {
			return
		}
		g := new(Gateway)
		if err := g.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err != nil {
			return
		}
		first, err := json.Marshal(g)
		if err != nil {
			t.Fatalf("marshalling an accepted config: %v", err)
		}
		var back Gateway
		if err := json.Unmarshal(first, &back); err != nil {
			t.Fatalf("the JSON of an accepted config does not load: %v\n%s", err, first)
		}
		second, err := json.Marshal(&back)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(first, second) {
			t.Fatalf("JSON round trip changed the config:\n%s\n%s", first, second)
		}
	})
}

// gatewayBlocks returns the ai_gateway directives (with their blocks) found in a Caddyfile.
func gatewayBlocks(caddyfileText string) []string {
	var out []string
	lines := strings.Split(caddyfileText, "\n")
	for i := 0; i < len(lines); i++ {
		if !strings.HasPrefix(strings.TrimSpace(lines[i]), "ai_gateway") {
			continue
		}
		depth, j := 0, i
		for ; j < len(lines); j++ {
			depth += strings.Count(lines[j], "{") - strings.Count(lines[j], "}")
			if depth <= 0 && j > i || depth == 0 && !strings.Contains(lines[i], "{") {
				break
			}
		}
		if j == len(lines) {
			j--
		}
		out = append(out, strings.Join(lines[i:j+1], "\n"))
		i = j
	}
	return out
}
