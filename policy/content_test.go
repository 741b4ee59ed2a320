package policy

import (
	"net/http"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/caddyai/gateway/internal/wire"
)

func mustPolicy(t testing.TB, rules ...ContentRule) *ContentPolicy {
	t.Helper()
	p, err := CompileContentPolicy(rules)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestContentPolicyCheck(t *testing.T) {
	p := mustPolicy(t,
		ContentRule{ID: "pii-ssn", Pattern: `\b\d{3}-\d{2}-\d{4}\b`},
		ContentRule{ID: "secret-word", Pattern: `(?i)\bopen sesame\b`},
		ContentRule{Pattern: `^exact$`}, // rule-3: anchors apply to each piece of text
	)
	const ssn = "123-45-6789"
	tests := []struct {
		name  string
		e     wire.Endpoint
		body  string
		rule  string // "" = allowed
		param string
	}{
		{"chat clean", chat, chatBody(""), "", ""},
		{"chat string", chat, `{"model":"m","messages":[{"role":"system","content":"x"},{"role":"user","content":"my ssn is ` + ssn + `"}]}`, "pii-ssn", "messages[1].content"},
		{"chat text part", chat, `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"http://x/` + ssn + `"}},{"type":"text","text":"say OPEN Sesame"}]}]}`, "secret-word", "messages[0].content[1].text"},
		{"chat image url is not prompt text", chat, `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"http://x/` + ssn + `"}}]}]}`, "", ""},
		{"chat escaped text is unescaped", chat, `{"model":"m","messages":[{"role":"user","content":"open\u0020sesame"}]}`, "secret-word", "messages[0].content"},
		{"chat tool message", chat, `{"model":"m","messages":[{"role":"tool","tool_call_id":"c","content":"` + ssn + `"}]}`, "pii-ssn", "messages[0].content"},
		{"anchored rule whole text", chat, `{"model":"m","messages":[{"role":"user","content":"exact"}]}`, "rule-3", "messages[0].content"},
		{"anchored rule partial text", chat, `{"model":"m","messages":[{"role":"user","content":"not exact"}]}`, "", ""},
		{"first matching rule wins", chat, `{"model":"m","messages":[{"role":"user","content":"open sesame ` + ssn + `"}]}`, "pii-ssn", "messages[0].content"},
		{"completions string", compl, `{"model":"m","prompt":"` + ssn + `"}`, "pii-ssn", "prompt"},
		{"completions array", compl, `{"model":"m","prompt":["ok","` + ssn + `"]}`, "pii-ssn", "prompt[1]"},
		{"completions tokens", compl, `{"model":"m","prompt":[1,2,3]}`, "", ""},
		{"embeddings", embed, `{"model":"m","input":["a","b","open sesame"]}`, "secret-word", "input[2]"},
		{"images", images, `{"model":"m","prompt":"a sign saying open sesame"}`, "secret-word", "prompt"},
		{"anthropic system string", msgs, anthBody(`"system":"` + ssn + `"`), "pii-ssn", "system"},
		{"anthropic system block", msgs, anthBody(`"system":[{"type":"text","text":"fine"},{"type":"text","text":"` + ssn + `"}]`), "pii-ssn", "system[1].text"},
		{"anthropic message string", msgs, `{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"open sesame"}]}`, "secret-word", "messages[0].content"},
		{"anthropic text block", msgs, `{"model":"c","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":"hi"},{"type":"text","text":"` + ssn + `"}]}]}`, "pii-ssn", "messages[0].content[1].text"},
		{"anthropic tool_result string", msgs, `{"model":"c","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":"` + ssn + `"}]}]}`, "pii-ssn", "messages[0].content[0].content"},
		{"anthropic tool_result blocks", msgs, `{"model":"c","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"` + ssn + `"}]}]}]}`, "pii-ssn", "messages[0].content[0].content[0].text"},
		{"anthropic text document", msgs, `{"model":"c","max_tokens":5,"messages":[{"role":"user","content":[{"type":"document","source":{"type":"text","media_type":"text/plain","data":"` + ssn + `"}}]}]}`, "pii-ssn", "messages[0].content[0].source.data"},
		{"count_tokens", count, `{"model":"c","messages":[{"role":"user","content":"open sesame"}]}`, "secret-word", "messages[0].content"},
		{"anthropic clean", msgs, anthBody(`"system":"be nice"`), "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, verr := Validate(tt.e, []byte(tt.body)); verr != nil {
				t.Fatalf("test body invalid: %v", verr)
			}
			err := p.Check(tt.e, []byte(tt.body))
			if tt.rule == "" {
				if err != nil {
					t.Fatalf("blocked: %v", err)
				}
				return
			}
			assertBlocked(t, err, tt.rule, tt.param)
			if strings.Contains(err.Message, ssn) || strings.Contains(strings.ToLower(err.Message), "sesame") {
				t.Fatalf("message echoes the matched text: %q", err.Message)
			}
		})
	}
}

func assertBlocked(t *testing.T, err *wire.Error, rule, param string) {
	t.Helper()
	if err == nil {
		t.Fatal("not blocked")
	}
	want := "The request was blocked by the gateway's content policy (rule: " + rule + ")."
	if err.Status != http.StatusUnprocessableEntity || err.Type != wire.TypeInvalidRequest || err.Code != CodeContentPolicy || err.Message != want || err.Param != param {
		t.Fatalf("got %d %q %q %q %q; want 422 %q %q %q", err.Status, err.Type, err.Code, err.Param, err.Message, CodeContentPolicy, param, want)
	}
}

func TestContentPolicyEmpty(t *testing.T) {
	p := mustPolicy(t)
	if err := p.Check(chat, []byte(chatBody(""))); err != nil {
		t.Fatal(err)
	}
	var nilPolicy *ContentPolicy
	if err := nilPolicy.Check(chat, []byte(chatBody(""))); err != nil {
		t.Fatal(err)
	}
}

func TestContentPolicyPatternsStaySelfContained(t *testing.T) {
	// Flags, \Q without \E and alternations must not leak into the neighbouring rules once the
	// patterns are combined.
	p := mustPolicy(t,
		ContentRule{ID: "a", Pattern: `(?i)alpha`},
		ContentRule{ID: "b", Pattern: `\Qx+y`},
		ContentRule{ID: "c", Pattern: `beta|gamma`},
		ContentRule{ID: "d", Pattern: `DELTA`},
	)
	for text, rule := range map[string]string{
		"ALPHA":   "a",
		"x+y":     "b",
		"xxy":     "",
		"gamma":   "c",
		"delta":   "", // case-sensitive: (?i) of rule a must not reach rule d
		"DELTA":   "d",
		"betaway": "c",
	} {
		body := `{"model":"m","prompt":"` + text + `"}`
		err := p.Check(compl, []byte(body))
		if rule == "" {
			if err != nil {
				t.Errorf("%q blocked by %s", text, err.Message)
			}
			continue
		}
		assertBlocked(t, err, rule, "prompt")
	}
}

func TestCompileContentPolicyErrors(t *testing.T) {
	tests := []struct {
		name  string
		rules []ContentRule
		want  string
	}{
		{"empty pattern", []ContentRule{{ID: "x"}}, "empty pattern"},
		{"bad regex", []ContentRule{{ID: "x", Pattern: "a("}}, "missing closing )"},
		{"duplicate id", []ContentRule{{ID: "x", Pattern: "a"}, {ID: "x", Pattern: "b"}}, "used twice"},
		{"auto id collides", []ContentRule{{ID: "rule-2", Pattern: "a"}, {Pattern: "b"}}, "used twice"},
		{"bad id", []ContentRule{{ID: "has space", Pattern: "a"}}, "id"},
		{"backreference is not RE2", []ContentRule{{Pattern: `(a)\1`}}, "invalid escape"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := CompileContentPolicy(tt.rules)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "compiling content policy: ") {
				t.Fatalf("error %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

func TestParseDenyFile(t *testing.T) {
	data := []byte("# PII\r\n\npii-ssn \\b\\d{3}-\\d{2}-\\d{4}\\b\n  (?i)credit card  \n\tcard-number\t\\b(?:\\d[ -]?){13,16}\\b\n[a-z]+ x\n# end")
	rules, err := ParseDenyFile(data)
	if err != nil {
		t.Fatal(err)
	}
	want := []ContentRule{
		{ID: "pii-ssn", Pattern: `\b\d{3}-\d{2}-\d{4}\b`},
		{Pattern: `(?i)credit card`},
		{ID: "card-number", Pattern: `\b(?:\d[ -]?){13,16}\b`},
		{Pattern: `[a-z]+ x`},
	}
	if !reflect.DeepEqual(rules, want) {
		t.Fatalf("got %#v\nwant %#v", rules, want)
	}
	if _, err := CompileContentPolicy(rules); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseDenyFile([]byte("ok a\nbad a(\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("error %v, want line 2", err)
	}
	if rules, err := ParseDenyFile(nil); err != nil || len(rules) != 0 {
		t.Fatalf("empty file: %v %v", rules, err)
	}
}

// prompt4K is a 4 KB prompt that no rule of benchRules matches.
func prompt4K() string {
	const para = "The quick brown fox jumps over the lazy dog while the gateway checks every prompt for forbidden content. "
	return strings.Repeat(para, 4096/len(para)+1)[:4096]
}

var benchRules = []ContentRule{
	{ID: "pii-ssn", Pattern: `\b\d{3}-\d{2}-\d{4}\b`},
	{ID: "pii-card", Pattern: `\b(?:\d[ -]?){13,16}\b`},
	{ID: "pii-email", Pattern: `[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\.[a-zA-Z]{2,}`},
	{ID: "aws-key", Pattern: `AKIA[0-9A-Z]{16}`},
	{ID: "private-key", Pattern: `-----BEGIN [A-Z ]*PRIVATE KEY-----`},
	{ID: "jailbreak-dan", Pattern: `(?i)\bdo anything now\b`},
	{ID: "jailbreak-ignore", Pattern: `(?i)ignore (?:all )?previous instructions`},
	{ID: "slack-token", Pattern: `xox[baprs]-[0-9A-Za-z-]{10,}`},
	{ID: "github-token", Pattern: `gh[pousr]_[0-9A-Za-z]{36}`},
	{ID: "internal-host", Pattern: `\b[a-z0-9-]+\.corp\.example\.com\b`},
}

func BenchmarkContentCheck4KB(b *testing.B) {
	benchCheck(b, prompt4K())
}

// BenchmarkContentCheck4KBDigits uses prose with digits, hyphens and an e-mail-like '@', so
// that several prefilters pass and their rules run.
func BenchmarkContentCheck4KBDigits(b *testing.B) {
	const para = "On 2026-11-26 at 10:30 the team (ops@team) moved 42 GPUs to rack 7-B; see runbook page 12 for the follow-up steps. "
	benchCheck(b, strings.Repeat(para, 4096/len(para)+1)[:4096])
}

// benchCheck measures the bench rules' Check of a chat request whose one message is text (4 KiB),
// which no rule matches.
func benchCheck(b *testing.B, text string) {
	p := mustPolicy(b, benchRules...)
	body := []byte(`{"model":"m","messages":[{"role":"user","content":"` + text + `"}]}`)
	if err := p.Check(chat, body); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(4096)
	for b.Loop() {
		if err := p.Check(chat, body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkContentCheck4KBNoPrefilter runs every rule on its own without prefilters.
func BenchmarkContentCheck4KBNoPrefilter(b *testing.B) {
	p := mustPolicy(b, benchRules...)
	text := prompt4K()
	b.ReportAllocs()
	b.SetBytes(4096)
	for b.Loop() {
		for _, r := range p.rules {
			if r.re.MatchString(text) {
				b.Fatal("matched")
			}
		}
	}
}

// BenchmarkContentCheck4KBAlternation measures the rules combined into one alternation, the
// design ContentPolicy does not use because this is slower.
func BenchmarkContentCheck4KBAlternation(b *testing.B) {
	parts := make([]string, len(benchRules))
	for i, r := range benchRules {
		parts[i] = "(?:" + r.Pattern + ")"
	}
	all := regexp.MustCompile(strings.Join(parts, "|"))
	text := prompt4K()
	b.ReportAllocs()
	b.SetBytes(4096)
	for b.Loop() {
		if all.MatchString(text) {
			b.Fatal("matched")
		}
	}
}

func TestPrefilterNeedles(t *testing.T) {
	tests := []struct {
		pattern string
		want    prefilter
	}{
		{`hello`, prefilter{{lit: "hello"}}},
		{`\b[a-z0-9-]+\.corp\.example\.com\b`, prefilter{{lit: ".corp.example.com"}}},
		{`[a-z]+@[a-z]+\.[a-z]{2,}`, prefilter{{lit: "@"}}},
		{`(?i)do anything now`, prefilter{{lit: "do anything now", fold: true}}},
		{`(?i)ignore previous instructions`, prefilter{{lit: "ignore previou", fold: true}}}, // 's' also folds to U+017F
		{`(?i)kk`, nil}, // 'k' also folds to the Kelvin sign
		{`secret|(?i)password`, prefilter{{lit: "secret"}, {lit: "word", fold: true}}},
		{`(?:abc)+x?`, prefilter{{lit: "abc"}}},
		{`(?:abc)*`, nil},
		{`a{0,3}`, nil},
		{`(foo){2,}`, prefilter{{lit: "foo"}}},
		{`\d{3}-\d{2}`, prefilter{{lit: "-"}}},
		{`\b(?:\d[ -]?){13,16}\b`, prefilter{{set: digits()}}},
		{`[\x{100}-\x{200}]`, nil},
		{`(?i)[k]`, nil}, // folds to the Kelvin sign
		{`foo|.*`, nil},
		{`\x{FFFD}abc`, prefilter{{lit: "abc"}}},
		{`[ab]`, prefilter{{set: bytesOf("ab")}}},
		{`caf\x{E9}`, prefilter{{lit: "caf\u00e9"}}},
		{`(?i)caf\x{E9}`, prefilter{{lit: "caf", fold: true}}},
	}
	for _, tt := range tests {
		t.Run(tt.pattern, func(t *testing.T) {
			if got := buildPrefilter(tt.pattern); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

func digits() *byteSet { return bytesOf("0123456789") }

func bytesOf(s string) *byteSet {
	var b byteSet
	for i := 0; i < len(s); i++ {
		b[s[i]>>6] |= 1 << (s[i] & 63)
	}
	return &b
}

// TestPrefilterNeverHidesAMatch checks, over patterns and texts chosen to hit case folding,
// non-ASCII text and invalid UTF-8, that a prefilter lets through every text its pattern matches.
func TestPrefilterNeverHidesAMatch(t *testing.T) {
	patterns := []string{`(?i)secret`, `(?i)ask`, `(?i)straße`, `secret|(?i)password`, `\x{FFFD}`, `(?i)Ω`,
		`\bdo anything now\b`, `(?i)ignore (?:all )?previous instructions`, `x+y`, `(?s).`, `(?i)k{2}`, `\d+`, `[a-c]x`, `(?i)[a-c]x`}
	texts := []string{"", "SECRET", "sEcReT", "ask", "AS\u017fK", "\u212Aask", "ASK", "STRASSE", "strasse", "Straße", "ſecret",
		"PassWord", "\xff", "\xffsecret", "ω", "Ω", "\u2126", "DO ANYTHING NOW", "do anything now", "IGNORE ALL PREVIOUS INSTRUCTIONS",
		"ignore previouſ instructions", "xxy", "x+y", "\u212A\u212A", "kK", "Bx", "12", "\xffx", "cx"}
	for _, pat := range patterns {
		re := regexp.MustCompile(pat)
		pre := buildPrefilter(pat)
		for _, text := range texts {
			if re.MatchString(text) && !pre.pass(text) {
				t.Errorf("pattern %q matches %q but its prefilter %#v holds it back", pat, text, pre)
			}
		}
	}
}

func FuzzContentPrefilter(f *testing.F) {
	f.Add(`(?i)secret`, "SeCrEt")
	f.Add(`(?i)ask`, "a\u017fk")
	f.Add(`a|b+c`, "bbc")
	f.Add(`\x{FFFD}x`, "\xffx")
	f.Fuzz(func(t *testing.T, pattern, text string) {
		re, err := regexp.Compile(pattern)
		if err != nil {
			return
		}
		if re.MatchString(text) && !buildPrefilter(pattern).pass(text) {
			t.Fatalf("pattern %q matches %q but the prefilter holds it back", pattern, text)
		}
	})
}
