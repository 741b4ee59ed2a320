package caddymodule

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddytest"
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
		"unknown subdirective":  "ai_gateway {\nbogus\n}",
		"argument on directive": "ai_gateway extra {\n}",
		"key without id":        "ai_gateway {\nkey sha256:00 {\nmodels x\n}\n}",
		"key without secret":    "ai_gateway {\nkey\n}",
		"unknown key option":    "ai_gateway {\nkey s {\nid a\ncolour red\n}\n}",
		"repeated id":           "ai_gateway {\nkey s {\nid a\nid b\n}\n}",
		"repeated keys_file":    "ai_gateway {\nkeys_file a\nkeys_file b\n}",
		"bad context window":    "ai_gateway {\nmodel m {\ncontext_window lots\n}\n}",
		"negative max output":   "ai_gateway {\nmodel m {\nmax_output_tokens -1\n}\n}",
		"unknown model option":  "ai_gateway {\nmodel m {\nflavour x\n}\n}",
		"model without name":    "ai_gateway {\nmodel {\n}\n}",
		"bad size":              "ai_gateway {\nmax_body huge\n}",
		"bad duration":          "ai_gateway {\nkeys_file_interval soon\n}",
		"bad expiry":            "ai_gateway {\nkey s {\nid a\nexpires_at tomorrow\n}\n}",
		"empty alias":           "ai_gateway {\nmodel m {\nalias\n}\n}",
		"bad fallback_fraction": "ai_gateway {\nrate_limit {\nfallback_fraction half\n}\n}",
		"fraction over 1":       "ai_gateway {\nrate_limit {\nfallback_fraction 1.5\n}\n}",
		"fraction with deny":    "ai_gateway {\nrate_limit {\non_store_error deny\nfallback_fraction 0.5\n}\n}",
	}
	for name, input := range tests {
		t.Run(name, func(t *testing.T) {
			g := new(Gateway)
			if err := g.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err == nil {
				t.Errorf("accepted: %s", input)
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
