package caddymodule_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/caddyai/gateway/internal/wiretest"
	"github.com/caddyai/gateway/policy"
)

// The README's code blocks are run by TestReadmeCodeBlocks, whoever wrote them. A block's mode
// comes from a marker on the line before its fence, else from its language:
//
//	<!-- readme: <mode> [<from>=><to>]... [env:NAME=value]... -->
//
// Modes:
//   - caddyfile: a whole Caddyfile, adapted and validated (provisioned) as `caddy validate`
//     does; a block that starts with the global options gets a site appended.
//   - caddyfile site | caddyfile ai_gateway | caddyfile model: the directives of a site, the
//     subdirectives of ai_gateway or of a model block, wrapped in a site and validated.
//   - json: parsed (a fragment of object members is wrapped in braces).
//   - demo: shell commands run against the demo (the root Caddyfile, ports moved); every curl
//     must succeed (curl --fail-with-body).
//   - sh: shell commands run in an empty directory; they must exit 0.
//   - skip <reason>: not run (templates with placeholders, commands that need a GPU).
//
// Unmarked blocks: caddyfile blocks try the caddyfile modes in the order above and must pass
// one; json blocks are parsed; sh blocks that curl localhost:8080 run against the demo;
// blocks of other languages are not run. `<from>=><to>` replaces text before the block runs
// (a placeholder such as sha256:<hex> by a value), env: sets a variable of shell blocks.

type readmeBlock struct {
	line     int
	lang     string
	text     string
	mode     string
	replaces [][2]string
	env      []string
}

var readmeMarkerRE = regexp.MustCompile(`^\s*<!--\s*readme:\s*(.*?)\s*-->\s*$`)

func readmeBlocks(t *testing.T, readme string) []readmeBlock {
	t.Helper()
	lines := strings.Split(readme, "\n")
	var blocks []readmeBlock
	for i := 0; i < len(lines); i++ {
		trimmed := strings.TrimLeft(lines[i], " \t")
		if !strings.HasPrefix(trimmed, "```") {
			continue
		}
		indent := len(lines[i]) - len(trimmed)
		b := readmeBlock{line: i + 1, lang: strings.TrimSpace(strings.TrimPrefix(trimmed, "```"))}
		for j := i - 1; j >= 0; j-- {
			if strings.TrimSpace(lines[j]) == "" {
				continue
			}
			if m := readmeMarkerRE.FindStringSubmatch(lines[j]); m != nil {
				b.parseMarker(t, m[1])
			}
			break
		}
		var body []string
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
			l := lines[i]
			for k := 0; k < indent && len(l) > 0 && (l[0] == ' ' || l[0] == '\t'); k++ {
				l = l[1:]
			}
			body = append(body, l)
		}
		if i == len(lines) {
			t.Fatalf("README line %d: code block never closed", b.line)
		}
		b.text = strings.Join(body, "\n") + "\n"
		blocks = append(blocks, b)
	}
	return blocks
}

func (b *readmeBlock) parseMarker(t *testing.T, marker string) {
	fields := strings.Fields(marker)
	if len(fields) == 0 {
		t.Fatalf("README line %d: empty readme marker", b.line)
	}
	b.mode = fields[0]
	rest := fields[1:]
	switch {
	case b.mode == "skip":
		if len(rest) == 0 {
			t.Errorf("README line %d: skip needs a reason", b.line)
		}
		return
	case b.mode == "caddyfile" && len(rest) > 0 && !strings.Contains(rest[0], "=>") && !strings.HasPrefix(rest[0], "env:"):
		b.mode += " " + rest[0]
		rest = rest[1:]
	}
	for _, f := range rest {
		if env, ok := strings.CutPrefix(f, "env:"); ok {
			b.env = append(b.env, env)
		} else if from, to, ok := strings.Cut(f, "=>"); ok {
			b.replaces = append(b.replaces, [2]string{from, to})
		} else {
			t.Errorf("README line %d: readme marker word %q is neither <from>=><to> nor env:NAME=value", b.line, f)
		}
	}
}

func (b *readmeBlock) replaced() string {
	text := b.text
	for _, r := range b.replaces {
		if !strings.Contains(text, r[0]) {
			panic(fmt.Sprintf("README line %d: %q is not in the block", b.line, r[0]))
		}
		text = strings.ReplaceAll(text, r[0], r[1])
	}
	return text
}

// TestReadmeCodeBlocks runs every code block of the README that can run (see above).
func TestReadmeCodeBlocks(t *testing.T) {
	root := wiretest.RepoRoot(t)
	data, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(root) // relative paths in snippets (examples/keys.json) are the repository's
	blocks := readmeBlocks(t, string(data))
	var demo []readmeBlock
	ran := 0
	for _, b := range blocks {
		name := fmt.Sprintf("line%d_%s", b.line, strings.ReplaceAll(cmpOr(b.mode, b.lang, "plain"), " ", "_"))
		switch {
		case b.mode == "skip":
			continue
		case b.mode == "demo" || b.mode == "" && b.lang == "sh" && strings.Contains(b.text, "localhost:8080"):
			demo = append(demo, b)
			continue
		case strings.HasPrefix(b.mode, "caddyfile") || b.mode == "" && b.lang == "caddyfile":
			t.Run(name, func(t *testing.T) { runReadmeCaddyfile(t, b) })
		case b.mode == "json" || b.mode == "" && b.lang == "json":
			t.Run(name, func(t *testing.T) {
				text := strings.TrimSpace(b.replaced())
				if !json.Valid([]byte(text)) && !json.Valid([]byte("{"+strings.TrimSuffix(text, ",")+"}")) {
					t.Errorf("README line %d: the JSON does not parse:\n%s", b.line, text)
				}
			})
		case b.mode == "sh":
			t.Run(name, func(t *testing.T) { runReadmeShell(t, b, t.TempDir(), nil) })
		case b.mode != "":
			t.Errorf("README line %d: unknown readme mode %q", b.line, b.mode)
			continue
		default:
			continue // python, go, plain text: not run
		}
		ran++
	}
	if len(demo) > 0 {
		ran += len(demo)
		runReadmeDemo(t, root, demo)
	}
	if ran < 15 {
		t.Errorf("only %d README blocks ran", ran)
	}
	t.Logf("%d of %d README code blocks ran", ran, len(blocks))
}

func cmpOr(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

// runReadmeCaddyfile adapts and validates a Caddyfile block in its mode, or in the first of the
// caddyfile modes it passes when it is unmarked.
func runReadmeCaddyfile(t *testing.T, b readmeBlock) {
	text := b.replaced()
	wrap := map[string]func(string) string{
		"caddyfile": func(s string) string {
			if strings.HasPrefix(strings.TrimSpace(stripComments(s)), "{") {
				s += "\n:65001 {\n\trespond ok\n}\n"
			}
			return s
		},
		"caddyfile site": func(s string) string {
			// a fragment shows one feature: the key and model every gateway needs are added
			return ":65002 {\n" + regexp.MustCompile(`(?m)^(\s*ai_gateway \{)$`).ReplaceAllString(s, "$1\n"+readmeFiller) + "\n}\n"
		},
		"caddyfile ai_gateway": func(s string) string {
			return ":65003 {\n\tai_gateway {\n" + readmeFiller + s + "\n\t}\n\treverse_proxy {\n\t\tdynamic ai_gateway\n\t}\n}\n"
		},
		"caddyfile model": func(s string) string {
			return ":65004 {\n\tai_gateway {\n" + readmeFiller + "\t\tmodel readme-model-2 {\n" + s + "\n\t\t}\n\t}\n\treverse_proxy {\n\t\tdynamic ai_gateway\n\t}\n}\n"
		},
	}
	for _, m := range regexp.MustCompile(`\{env\.([A-Za-z0-9_]+)\}`).FindAllStringSubmatch(text, -1) {
		if os.Getenv(m[1]) == "" {
			value := "readme-placeholder"
			if strings.Contains(m[1], "REDIS") {
				value = "redis://127.0.0.1:1/0" // connected lazily: validation does no I/O
			}
			t.Setenv(m[1], value)
		}
	}
	modes := []string{b.mode}
	if b.mode == "" {
		modes = []string{"caddyfile", "caddyfile site", "caddyfile ai_gateway", "caddyfile model"}
	}
	var errs []string
	for _, mode := range modes {
		w, ok := wrap[mode]
		if !ok {
			t.Fatalf("README line %d: unknown caddyfile mode %q", b.line, mode)
		}
		if err := validateCaddyfile(w(text)); err != nil {
			errs = append(errs, fmt.Sprintf("as %s: %v", mode, err))
			continue
		}
		return
	}
	t.Errorf("README line %d: the Caddyfile block does not validate (mark it <!-- readme: skip <reason> --> if it cannot):\n%s\n%s",
		b.line, strings.Join(errs, "\n"), text)
}

// readmeFiller is the key and model a Caddyfile fragment's ai_gateway gets to be complete.
const readmeFiller = "\t\tkey sha256:1ba08749f48f2a008356d6a1a8374dddcfd99f987687f3f2eee8bb5716b90133 {\n\t\t\tid readme-filler\n\t\t}\n" +
	"\t\tmodel readme-filler-model {\n\t\t\tupstream 127.0.0.1:1\n\t\t}\n"

func stripComments(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func validateCaddyfile(text string) error {
	adapted, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(text), map[string]any{"filename": "README.md"})
	if err != nil {
		return fmt.Errorf("adapting: %w", err)
	}
	var cfg caddy.Config
	if err := json.Unmarshal(adapted, &cfg); err != nil {
		return err
	}
	if err := caddy.Validate(&cfg); err != nil {
		return fmt.Errorf("validating: %w", err)
	}
	return nil
}

// runReadmeShell runs a shell block with bash -e in dir; every curl fails on an HTTP error.
func runReadmeShell(t *testing.T, b readmeBlock, dir string, replacer *strings.Replacer) {
	t.Helper()
	script := b.replaced()
	if replacer != nil {
		script = replacer.Replace(script)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-e", "-o", "pipefail", "-c", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), b.env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Errorf("README line %d: %v\n%s\noutput:\n%s", b.line, err, script, out.String())
		return
	}
	t.Logf("README line %d:\n%s", b.line, out.String())
}

// runReadmeDemo runs the demo (the root Caddyfile with its ports moved and its access log in a
// file) and the demo blocks against it, then checks the access log: an entry with the ai_*
// fields for every request, and no key.
func runReadmeDemo(t *testing.T, root string, blocks []readmeBlock) {
	if _, err := exec.LookPath("curl"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("curl is needed to run the README's demo commands")
		}
		t.Skip("curl not found: the README's demo commands are not run")
	}
	data, err := os.ReadFile(filepath.Join(root, "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	gw, sim, admin := freePort(t), freePort(t), freePort(t)
	accessLog := filepath.Join(t.TempDir(), "access.log")
	cf := strings.NewReplacer(":8080", fmt.Sprintf(":%d", gw), ":8081", fmt.Sprintf(":%d", sim),
		"localhost:2019", fmt.Sprintf("localhost:%d", admin), "output stdout", "output file "+accessLog).Replace(string(data))
	if !strings.Contains(cf, accessLog) {
		t.Fatal("the demo Caddyfile writes no access log (log { output stdout })")
	}
	t.Setenv("XDG_DATA_HOME", t.TempDir()) // the demo's file store
	startCaddy(t, cf)
	waitFor(t, "the demo", 10*time.Second, func() bool {
		return exec.Command("curl", "-sf", "-o", "/dev/null", fmt.Sprintf("http://localhost:%d/v1/models", gw), "-H", "Authorization: Bearer sk-demo-gateway").Run() == nil
	})
	replacer := strings.NewReplacer("localhost:8080", fmt.Sprintf("localhost:%d", gw), "localhost:2019", fmt.Sprintf("localhost:%d", admin),
		"curl ", "curl -sS --fail-with-body --max-time 30 ")
	for _, b := range blocks {
		t.Run(fmt.Sprintf("line%d_demo", b.line), func(t *testing.T) { runReadmeShell(t, b, t.TempDir(), replacer) })
	}
	log, err := os.ReadFile(accessLog)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(log, []byte(`"ai_request_id"`)) || !bytes.Contains(log, []byte(`"ai_prompt_tokens"`)) {
		t.Errorf("the demo's access log has no ai_* fields:\n%s", log)
	}
	if bytes.Contains(log, []byte("sk-demo-gateway")) {
		t.Error("the demo's access log holds the demo key")
	}
}

// TestExampleKeysFileSecret: examples/keys.json holds the hash of the secret the README names.
func TestExampleKeysFileSecret(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(wiretest.RepoRoot(t), "examples", "keys.json"))
	if err != nil {
		t.Fatal(err)
	}
	if want := policy.FormatHash(policy.HashSecret("sk-example-search-team")); !bytes.Contains(data, []byte(want)) {
		t.Errorf("examples/keys.json does not hold %s, the hash of the README's sk-example-search-team", want)
	}
}
