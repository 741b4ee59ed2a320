package policy

import (
	"bytes"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/tidwall/gjson"
)

// ContentRule is one pattern of the content policy.
type ContentRule struct {
	// ID names the rule in the refusal message, logs and metrics ("pii-ssn"); "rule-N" (N
	// counting from 1) when empty.
	ID string `json:"id,omitempty"`
	// Pattern is a Go (RE2) regular expression, matched against each piece of prompt text.
	Pattern string `json:"pattern"`
}

// ContentPolicy refuses requests whose prompt text matches one of its rules. RE2 matching is
// linear in the text, so no pattern can make a request slow. Each rule carries a prefilter (a
// literal that every match contains, found in the parsed pattern) so that most rules are
// skipped on most text after one substring search. Immutable and safe for concurrent use.
//
// The rules are deliberately not combined into one alternation: Go's regexp has no DFA, and an
// alternation loses each rule's literal-prefix scan, so on 4 KB of text with 10 rules it is
// slower than running the rules one by one (BenchmarkContentCheck4KBAlternation).
type ContentPolicy struct {
	rules []contentRule
}

type contentRule struct {
	id  string
	re  *regexp.Regexp
	pre prefilter
}

// CodeContentPolicy is the error code of a request the content policy blocks.
const CodeContentPolicy = "content_policy_violation"

// CompileContentPolicy compiles the rules. Patterns must be non-empty valid RE2 expressions;
// IDs must be unique and made of letters, digits and ._:- (at most 64 bytes).
func CompileContentPolicy(rules []ContentRule) (*ContentPolicy, error) {
	p := &ContentPolicy{rules: make([]contentRule, 0, len(rules))}
	seen := make(map[string]bool, len(rules))
	for i, r := range rules {
		id := r.ID
		if id == "" {
			id = "rule-" + strconv.Itoa(i+1)
		}
		if !validRuleID(id) {
			return nil, fmt.Errorf("compiling content policy: rule %d: id %q must be 1 to 64 letters, digits or ._:-", i+1, id)
		}
		if seen[id] {
			return nil, fmt.Errorf("compiling content policy: rule id %q is used twice", id)
		}
		seen[id] = true
		if r.Pattern == "" {
			return nil, fmt.Errorf("compiling content policy: rule %q: empty pattern", id)
		}
		re, err := regexp.Compile(r.Pattern)
		if err != nil {
			return nil, fmt.Errorf("compiling content policy: rule %q: %w", id, err)
		}
		p.rules = append(p.rules, contentRule{id: id, re: re, pre: buildPrefilter(r.Pattern)})
	}
	return p, nil
}

func validRuleID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}

// ParseDenyFile parses a deny file: one rule per line, `<id> <regex>` or just `<regex>`.
// Blank lines and lines starting with # are skipped; surrounding whitespace is trimmed. A line
// whose first word is a valid rule id followed by whitespace is read as `<id> <regex>`, so a
// pattern that contains a space and starts with a plain word needs an id in front of it.
func ParseDenyFile(data []byte) ([]ContentRule, error) {
	var rules []ContentRule
	for n := 1; len(data) > 0; n++ {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		s := strings.TrimSpace(string(line))
		if s == "" || s[0] == '#' {
			continue
		}
		r := ContentRule{Pattern: s}
		if i := strings.IndexAny(s, " \t"); i > 0 && validRuleID(s[:i]) {
			r.ID, r.Pattern = s[:i], strings.TrimSpace(s[i+1:])
		}
		if _, err := regexp.Compile(r.Pattern); err != nil {
			return nil, fmt.Errorf("parsing deny file: line %d: %w", n, err)
		}
		rules = append(rules, r)
	}
	return rules, nil
}

// Check runs the policy over the prompt text of a body that Validate accepted: chat message
// contents (strings and text parts), the completions prompt, embeddings input, the image
// prompt, and Anthropic's system and text blocks (tool results and text documents included).
// A match is a 422 content_policy_violation naming the rule, never the matched text.
func (p *ContentPolicy) Check(e wire.Endpoint, body []byte) *wire.Error {
	if p == nil || len(p.rules) == 0 {
		return nil
	}
	c := checker{p: p}
	root := gjson.Parse(view(body))
	switch e.Spec().Dialect {
	case wire.DialectChat:
		c.chat(root.Get("messages"))
	case wire.DialectCompletion:
		c.strings("prompt", root.Get("prompt"))
	case wire.DialectEmbedding:
		c.strings("input", root.Get("input"))
	case wire.DialectImage:
		c.text(root.Get("prompt"), func() string { return "prompt" })
	case wire.DialectMessages:
		c.anthropic(root)
	case wire.DialectResponses:
		c.responses(root)
	}
	return c.err
}

// responses checks instructions, a string input, and the text of every input item: message
// contents (strings, input_text and output_text parts), function call arguments and outputs.
func (c *checker) responses(root gjson.Result) {
	c.text(root.Get("instructions"), func() string { return "instructions" })
	in := root.Get("input")
	if in.Type == gjson.String {
		c.text(in, func() string { return "input" })
		return
	}
	i := 0
	in.ForEach(func(_, item gjson.Result) bool {
		switch item.Get("type").Str {
		case "", "message":
			content := item.Get("content")
			if content.Type == gjson.String {
				c.text(content, func() string { return at("input", i, ".content") })
				break
			}
			j := 0
			content.ForEach(func(_, part gjson.Result) bool {
				if t := part.Get("type").Str; t == "input_text" || t == "output_text" {
					c.text(part.Get("text"), func() string { return at(at("input", i, ".content"), j, ".text") })
				}
				j++
				return c.err == nil
			})
		case "function_call":
			c.text(item.Get("arguments"), func() string { return at("input", i, ".arguments") })
		case "function_call_output":
			c.text(item.Get("output"), func() string { return at("input", i, ".output") })
		}
		i++
		return c.err == nil
	})
}

// checker walks the prompt text of one body.
type checker struct {
	p   *ContentPolicy
	err *wire.Error
}

// text checks one string; param names it and is called only when a rule matches.
func (c *checker) text(s gjson.Result, param func() string) bool {
	if c.err != nil {
		return false
	}
	if s.Type != gjson.String || s.Str == "" {
		return true
	}
	id := ""
	for i := range c.p.rules {
		r := &c.p.rules[i]
		if r.pre.pass(s.Str) && r.re.MatchString(s.Str) {
			id = r.id
			break
		}
	}
	if id == "" {
		return true
	}
	c.err = &wire.Error{
		Status:  http.StatusUnprocessableEntity,
		Type:    wire.TypeInvalidRequest,
		Code:    CodeContentPolicy,
		Param:   param(),
		Message: "The request was blocked by the gateway's content policy (rule: " + id + ").",
		Reason:  "content_policy",
	}
	return false
}

// strings checks a string or the strings of an array (token arrays have no text).
func (c *checker) strings(param string, v gjson.Result) {
	if v.Type == gjson.String {
		c.text(v, func() string { return param })
		return
	}
	i := 0
	v.ForEach(func(_, s gjson.Result) bool {
		ok := c.text(s, func() string { return at(param, i, "") })
		i++
		return ok
	})
}

// chat checks every message's content.
func (c *checker) chat(msgs gjson.Result) {
	i := 0
	msgs.ForEach(func(_, m gjson.Result) bool {
		content := m.Get("content")
		if content.Type == gjson.String {
			c.text(content, func() string { return at("messages", i, ".content") })
		} else {
			j := 0
			content.ForEach(func(_, part gjson.Result) bool {
				if part.Get("type").Str == "text" {
					c.text(part.Get("text"), func() string { return partPath(i, j, ".text") })
				}
				j++
				return c.err == nil
			})
		}
		i++
		return c.err == nil
	})
}

// anthropic checks system and the text of every message.
func (c *checker) anthropic(root gjson.Result) {
	sys := root.Get("system")
	if sys.Type == gjson.String {
		c.text(sys, func() string { return "system" })
	} else {
		i := 0
		sys.ForEach(func(_, b gjson.Result) bool {
			c.text(b.Get("text"), func() string { return at("system", i, ".text") })
			i++
			return c.err == nil
		})
	}
	i := 0
	root.Get("messages").ForEach(func(_, m gjson.Result) bool {
		content := m.Get("content")
		if content.Type == gjson.String {
			c.text(content, func() string { return at("messages", i, ".content") })
		} else {
			c.blocks(content, func() string { return at("messages", i, ".content") })
		}
		i++
		return c.err == nil
	})
}

// blocks checks the text of Anthropic content blocks; base names their array.
func (c *checker) blocks(blocks gjson.Result, base func() string) {
	j := 0
	blocks.ForEach(func(_, b gjson.Result) bool {
		switch b.Get("type").Str {
		case "text":
			c.text(b.Get("text"), func() string { return at(base(), j, ".text") })
		case "tool_result":
			inner := b.Get("content")
			if inner.Type == gjson.String {
				c.text(inner, func() string { return at(base(), j, ".content") })
			} else if inner.IsArray() {
				c.blocks(inner, func() string { return at(base(), j, ".content") })
			}
		case "document":
			if src := b.Get("source"); src.Get("type").Str == "text" {
				c.text(src.Get("data"), func() string { return at(base(), j, ".source.data") })
			}
		}
		j++
		return c.err == nil
	})
}
