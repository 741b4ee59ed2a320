package caddymodule

import (
	"bytes"
	"encoding/json"
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
