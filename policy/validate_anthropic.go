package policy

import (
	"github.com/caddyai/gateway/internal/jsonscan"
	"github.com/tidwall/gjson"
)

var (
	anthropicRoles       = []string{"user", "assistant"}
	anthropicChoiceTypes = []string{"auto", "any", "tool", "none"}
	textOnly             = []string{"text"}
)

// anthropicKey validates a member of an Anthropic messages (or count_tokens) request.
func (v *validator) anthropicKey(k string, val gjson.Result) bool {
	switch k {
	case "model":
		_, ok := v.common(k, val)
		return ok
	case "stream":
		_, ok := v.common(k, val) // count_tokens has no stream param: topKey skips it
		return ok
	case "messages":
		return v.anthropicMessages(val)
	case fieldMaxTokens:
		if !v.spec.MaxTokens {
			// count_tokens generates nothing: max_tokens is checked but is no output limit.
			if val.Type == gjson.Null {
				return true
			}
			_, ok := v.integer(k, val, 1, maxInt32)
			return ok
		}
		return v.maxTokens(k, val, 1)
	}
	if val.Type == gjson.Null {
		return true
	}
	switch k {
	case "system":
		return v.anthropicSystem(val)
	case "temperature":
		return v.temperature(val, 1)
	case "top_p":
		_, ok := v.number(k, val, 0, 1)
		return ok
	case "top_k":
		_, ok := v.integer(k, val, 0, maxInt32)
		return ok
	case "stop_sequences":
		_, ok := v.stringArray(k, "an array of strings", val)
		return ok
	case "tools":
		return v.anthropicTools(val)
	case "tool_choice":
		return v.anthropicToolChoice(val)
	case "metadata", "thinking":
		return v.object(k, val)
	}
	return true
}

// stringArray validates an array of strings and returns its length; want words the error when
// val is not an array.
func (v *validator) stringArray(param, want string, val gjson.Result) (int, bool) {
	if !val.IsArray() {
		return 0, v.fail(v.badType(param, want, val))
	}
	return v.elements(val, func(i int, s gjson.Result) bool {
		if s.Type != gjson.String {
			return v.fail(v.badType(at(param, i, ""), "a string", s))
		}
		return true
	})
}

// anthropicSystem validates system: a string or an array of text blocks.
func (v *validator) anthropicSystem(val gjson.Result) bool {
	if val.Type == gjson.String {
		return true
	}
	_, ok := v.objects("system", "a string or an array of text blocks", val, func(i int, b gjson.Result) bool {
		path := func(rest string) string { return at("system", i, rest) }
		typ, text := b.Get("type"), b.Get("text")
		if !typ.Exists() {
			return v.fail(v.missing(path(".type")))
		}
		if typ.Type != gjson.String || typ.Str != "text" {
			if typ.Type != gjson.String {
				return v.fail(v.badType(path(".type"), "a string", typ))
			}
			return v.fail(v.badEnum(path(".type"), typ.Str, textOnly))
		}
		if !text.Exists() {
			return v.fail(v.missing(path(".text")))
		}
		if text.Type != gjson.String {
			return v.fail(v.badType(path(".text"), "a string", text))
		}
		return true
	})
	return ok
}

// anthropicMessages validates the messages array. Consecutive turns of the same role are
// allowed, as the API now merges them.
func (v *validator) anthropicMessages(val gjson.Result) bool {
	return v.messageList(val, v.anthropicMessage)
}

// anthropicMessage validates messages[i].
func (v *validator) anthropicMessage(i int, m gjson.Result) bool {
	var role, content gjson.Result
	var seen uint8
	// Its own switch of the members it reads, like every object's (see chatMessage).
	jsonscan.ForEach(m, func(k, val gjson.Result) bool {
		var bit uint8
		switch k.Str {
		case "role":
			bit, role = mRole, val
		case "content":
			bit, content = mContent, val
		default:
			return true
		}
		return v.once(&seen, bit, func() string { return at("messages", i, "."+k.Str) })
	})
	if v.err != nil || !v.roleAt(i, seen&mRole != 0, role, anthropicRoles) {
		return false
	}
	if seen&mContent == 0 {
		return v.fail(v.missing(at("messages", i, ".content")))
	}
	if content.Type == gjson.String {
		return true
	}
	if !content.IsArray() {
		return v.fail(v.badType(at("messages", i, ".content"), "a string or an array of content blocks", content))
	}
	_, ok := v.elements(content, func(j int, b gjson.Result) bool {
		return v.anthropicBlock(i, j, -1, b)
	})
	return ok
}

// Bits for the members of a content block.
const (
	bType uint8 = 1 << iota
	bText
	bContent
	bSource
)

// blockPath builds messages[i].content[j] (and .content[k] inside a tool_result when k >= 0).
func blockPath(i, j, k int, rest string) string {
	p := at(at("messages", i, ".content"), j, "")
	if k >= 0 {
		p = at(p+".content", k, "")
	}
	return p + rest
}

// anthropicBlock validates a content block; k >= 0 marks a block nested in a tool_result.
// Block types the gateway does not know are accepted (the API adds new ones often); the known
// ones are checked for the members they require.
func (v *validator) anthropicBlock(i, j, k int, b gjson.Result) bool {
	if !b.IsObject() {
		return v.fail(v.badType(blockPath(i, j, k, ""), "an object", b))
	}
	var typ, text, content, source gjson.Result
	var seen uint8
	jsonscan.ForEach(b, func(key, val gjson.Result) bool {
		var bit uint8
		switch key.Str {
		case "type":
			bit, typ = bType, val
		case "text":
			bit, text = bText, val
		case "content":
			bit, content = bContent, val
		case "source":
			bit, source = bSource, val
		default:
			return true
		}
		return v.once(&seen, bit, func() string { return blockPath(i, j, k, "."+key.Str) })
	})
	if v.err != nil {
		return false
	}
	if seen&bType == 0 {
		return v.fail(v.missing(blockPath(i, j, k, ".type")))
	}
	if typ.Type != gjson.String {
		return v.fail(v.badType(blockPath(i, j, k, ".type"), "a string", typ))
	}
	if typ.Str == "" {
		return v.fail(v.emptyString(blockPath(i, j, k, ".type")))
	}
	switch typ.Str {
	case "text":
		if seen&bText == 0 {
			return v.fail(v.missing(blockPath(i, j, k, ".text")))
		}
		if text.Type != gjson.String {
			return v.fail(v.badType(blockPath(i, j, k, ".text"), "a string", text))
		}
	case "image", "document":
		if seen&bSource == 0 {
			return v.fail(v.missing(blockPath(i, j, k, ".source")))
		}
		if !source.IsObject() {
			return v.fail(v.badType(blockPath(i, j, k, ".source"), "an object", source))
		}
		if st := source.Get("type"); st.Str == "text" {
			if d := source.Get("data"); d.Type != gjson.String {
				return v.fail(v.badType(blockPath(i, j, k, ".source.data"), "a string", d))
			}
		}
	case "tool_use", "server_tool_use":
		return v.blockMembers(i, j, k, b, "id", "name")
	case "tool_result":
		if k >= 0 {
			return v.fail(v.custom(CodeInvalidValue, blockPath(i, j, k, ".type"), "A tool_result block cannot be nested in another tool_result."))
		}
		if !v.blockMembers(i, j, k, b, "tool_use_id", "") {
			return false
		}
		if seen&bContent == 0 || content.Type == gjson.String || content.Type == gjson.Null {
			return true
		}
		if !content.IsArray() {
			return v.fail(v.badType(blockPath(i, j, k, ".content"), "a string or an array of content blocks", content))
		}
		_, ok := v.elements(content, func(n int, nb gjson.Result) bool {
			return v.anthropicBlock(i, j, n, nb)
		})
		return ok
	case "thinking":
		return v.blockMembers(i, j, k, b, "thinking", "")
	case "redacted_thinking":
		return v.blockMembers(i, j, k, b, "data", "")
	}
	return true
}

// blockMembers checks that a block carries the named string members (b2 may be empty); tool_use
// blocks also need an object input.
func (v *validator) blockMembers(i, j, k int, b gjson.Result, s1, s2 string) bool {
	for _, name := range [2]string{s1, s2} {
		if name == "" {
			continue
		}
		m := b.Get(name)
		if !m.Exists() {
			return v.fail(v.missing(blockPath(i, j, k, "."+name)))
		}
		if m.Type != gjson.String {
			return v.fail(v.badType(blockPath(i, j, k, "."+name), "a string", m))
		}
	}
	if s1 == "id" {
		in := b.Get("input")
		if !in.Exists() {
			return v.fail(v.missing(blockPath(i, j, k, ".input")))
		}
		if !in.IsObject() {
			return v.fail(v.badType(blockPath(i, j, k, ".input"), "an object", in))
		}
	}
	return true
}

// anthropicTools validates tools: custom tools need a name and an input_schema object; typed
// server tools (web_search_..., bash_...) need a name.
func (v *validator) anthropicTools(val gjson.Result) bool {
	return v.noteTools(v.objects("tools", "an array", val, func(i int, t gjson.Result) bool {
		name := t.Get("name")
		if !name.Exists() {
			return v.fail(v.missing(at("tools", i, ".name")))
		}
		if name.Type != gjson.String {
			return v.fail(v.badType(at("tools", i, ".name"), "a string", name))
		}
		if name.Str == "" {
			return v.fail(v.emptyString(at("tools", i, ".name")))
		}
		typ := t.Get("type")
		if typ.Exists() && typ.Type != gjson.Null && typ.Type != gjson.String {
			return v.fail(v.badType(at("tools", i, ".type"), "a string", typ))
		}
		if typ.Str == "" || typ.Str == "custom" {
			schema := t.Get("input_schema")
			if !schema.Exists() {
				return v.fail(v.missing(at("tools", i, ".input_schema")))
			}
			if !schema.IsObject() {
				return v.fail(v.badType(at("tools", i, ".input_schema"), "an object", schema))
			}
		}
		return true
	}))
}

// anthropicToolChoice validates tool_choice: {type: auto|any|tool|none}, with a name for tool.
func (v *validator) anthropicToolChoice(val gjson.Result) bool {
	if !val.IsObject() {
		return v.fail(v.badType("tool_choice", "an object", val))
	}
	typ, ok := v.objectType("tool_choice", val, anthropicChoiceTypes)
	if !ok || typ != "tool" {
		return ok
	}
	name := val.Get("name")
	if !name.Exists() {
		return v.fail(v.missing("tool_choice.name"))
	}
	if name.Type != gjson.String {
		return v.fail(v.badType("tool_choice.name", "a string", name))
	}
	return true
}
