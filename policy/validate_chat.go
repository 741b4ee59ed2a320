package policy

import (
	"github.com/caddyai/gateway/internal/jsonscan"
	"github.com/tidwall/gjson"
)

var (
	chatRoles = []string{"system", "assistant", "user", "function", "tool", "developer"}
	// chatPartTypes are OpenAI's content part types plus vLLM's audio_url and video_url.
	chatPartTypes       = []string{"text", "image_url", "input_audio", "file", "refusal", "audio_url", "video_url"}
	chatToolTypes       = []string{"function", "custom"}
	chatToolChoiceWords = []string{"none", "auto", "required"}
	chatToolChoiceTypes = []string{"function", "allowed_tools", "custom"}
	responseFormatTypes = []string{"text", "json_object", "json_schema"}
)

// Bits for the members of a chat message the gateway reads; a repeated one is rejected.
const (
	mRole uint8 = 1 << iota
	mContent
	mName
	mToolCalls
	mToolCallID
	mFunctionCall
	mRefusal
)

// messageList validates a non-empty messages array, each message (an object) with check.
func (v *validator) messageList(val gjson.Result, check func(i int, m gjson.Result) bool) bool {
	n, ok := v.objects("messages", "an array", val, check)
	if ok && n == 0 {
		return v.fail(v.emptyArray("messages"))
	}
	return ok
}

// role validates the role a message must give (present), which param names, against roles.
func (v *validator) role(param string, present bool, role gjson.Result, roles []string) bool {
	if !v.required(param, present, role) {
		return false
	}
	if !oneOf(role.Str, roles) {
		return v.fail(v.badEnum(param, role.Str, roles))
	}
	return true
}

// roleAt is role for messages[i].role, its path built only for an error.
func (v *validator) roleAt(i int, present bool, role gjson.Result, roles []string) bool {
	if present && role.Type == gjson.String && oneOf(role.Str, roles) {
		return true
	}
	return v.role(at("messages", i, ".role"), present, role, roles)
}

// chatMessages validates the messages array of a chat request.
func (v *validator) chatMessages(val gjson.Result) bool {
	return v.messageList(val, v.chatMessage)
}

// chatMessage validates messages[i].
func (v *validator) chatMessage(i int, m gjson.Result) bool {
	var role, content, name, toolCalls, toolCallID, functionCall, refusal gjson.Result
	var seen uint8
	// Each object (message, part, block) keeps its own switch of the members it reads, alike in
	// shape only: a shared table would hide which they are. once does the common part.
	jsonscan.ForEach(m, func(k, val gjson.Result) bool {
		var bit uint8
		switch k.Str {
		case "role":
			bit, role = mRole, val
		case "content":
			bit, content = mContent, val
		case "name":
			bit, name = mName, val
		case "tool_calls":
			bit, toolCalls = mToolCalls, val
		case "tool_call_id":
			bit, toolCallID = mToolCallID, val
		case "function_call":
			bit, functionCall = mFunctionCall, val
		case "refusal":
			bit, refusal = mRefusal, val
		default:
			return true
		}
		return v.once(&seen, bit, func() string { return at("messages", i, "."+k.Str) })
	})
	if v.err != nil || !v.roleAt(i, seen&mRole != 0, role, chatRoles) {
		return false
	}
	if name.Type != gjson.String && name.Type != gjson.Null && !v.str(at("messages", i, ".name"), name) {
		return false
	}
	calls := false
	if role.Str == "assistant" {
		if seen&mToolCalls != 0 && toolCalls.Type != gjson.Null {
			n, ok := v.toolCalls(i, toolCalls)
			if !ok {
				return false
			}
			calls = n > 0
		}
		if seen&mFunctionCall != 0 && functionCall.Type != gjson.Null {
			if !functionCall.IsObject() {
				return v.fail(v.badType(at("messages", i, ".function_call"), "an object", functionCall))
			}
			calls = true
		}
		if seen&mRefusal != 0 && refusal.Type != gjson.Null {
			if refusal.Type != gjson.String {
				return v.fail(v.badType(at("messages", i, ".refusal"), "a string", refusal))
			}
			calls = true
		}
	}
	if role.Str == "tool" {
		if (seen&mToolCallID == 0 || toolCallID.Type != gjson.String) &&
			!v.required(at("messages", i, ".tool_call_id"), seen&mToolCallID != 0, toolCallID) {
			return false
		}
	}
	if seen&mContent == 0 || content.Type == gjson.Null {
		if calls {
			return true
		}
		if seen&mContent == 0 {
			return v.fail(v.missing(at("messages", i, ".content")))
		}
		return v.fail(v.badType(at("messages", i, ".content"), "a string or an array of content parts", content))
	}
	if content.Type == gjson.String {
		return true
	}
	if !content.IsArray() {
		return v.fail(v.badType(at("messages", i, ".content"), "a string or an array of content parts", content))
	}
	n, ok := v.elements(content, func(j int, p gjson.Result) bool {
		return v.contentPart(i, j, p)
	})
	if ok && n == 0 {
		return v.fail(v.emptyArray(at("messages", i, ".content")))
	}
	return ok
}

// Bits for the members of a content part.
const (
	pType uint8 = 1 << iota
	pText
	pImageURL
	pInputAudio
	pFile
	pRefusal
	pMediaURL
)

// contentPart validates messages[i].content[j].
func (v *validator) contentPart(i, j int, p gjson.Result) bool {
	if !p.IsObject() {
		return v.fail(v.badType(partPath(i, j, ""), "an object", p))
	}
	var typ, text, image, audio, file, refusal, media gjson.Result
	var seen uint8
	jsonscan.ForEach(p, func(k, val gjson.Result) bool {
		var bit uint8
		switch k.Str {
		case "type":
			bit, typ = pType, val
		case "text":
			bit, text = pText, val
		case "image_url":
			bit, image = pImageURL, val
		case "input_audio":
			bit, audio = pInputAudio, val
		case "file":
			bit, file = pFile, val
		case "refusal":
			bit, refusal = pRefusal, val
		case "audio_url", "video_url":
			bit, media = pMediaURL, val
		default:
			return true
		}
		return v.once(&seen, bit, func() string { return partPath(i, j, "."+k.Str) })
	})
	if v.err != nil {
		return false
	}
	if seen&pType == 0 {
		return v.fail(v.missing(partPath(i, j, ".type")))
	}
	if typ.Type != gjson.String {
		return v.fail(v.badType(partPath(i, j, ".type"), "a string", typ))
	}
	switch typ.Str {
	case "text":
		return v.required(partPath(i, j, ".text"), seen&pText != 0, text)
	case "image_url":
		return v.urlObject(partPath, i, j, ".image_url", seen&pImageURL != 0, image)
	case "audio_url", "video_url":
		return v.urlObject(partPath, i, j, "."+typ.Str, seen&pMediaURL != 0, media)
	case "input_audio":
		return v.partObject(i, j, ".input_audio", seen&pInputAudio != 0, audio)
	case "file":
		return v.partObject(i, j, ".file", seen&pFile != 0, file)
	case "refusal":
		return v.required(partPath(i, j, ".refusal"), seen&pRefusal != 0, refusal)
	}
	return v.fail(v.badEnum(partPath(i, j, ".type"), typ.Str, chatPartTypes))
}

// urlObject validates a {"url": "..."} member of a content part.
func (v *validator) urlObject(path func(i, j int, rest string) string, i, j int, field string, present bool, obj gjson.Result) bool {
	if !present {
		return v.fail(v.missing(path(i, j, field)))
	}
	if !obj.IsObject() {
		return v.fail(v.badType(path(i, j, field), "an object", obj))
	}
	u := obj.Get("url")
	if !u.Exists() {
		return v.fail(v.missing(path(i, j, field+".url")))
	}
	if u.Type != gjson.String {
		return v.fail(v.badType(path(i, j, field+".url"), "a string", u))
	}
	return true
}

// partObject validates an object member a content part of its type requires.
func (v *validator) partObject(i, j int, field string, present bool, obj gjson.Result) bool {
	if !present {
		return v.fail(v.missing(partPath(i, j, field)))
	}
	if !obj.IsObject() {
		return v.fail(v.badType(partPath(i, j, field), "an object", obj))
	}
	return true
}

// partPath builds messages[i].content[j]rest.
func partPath(i, j int, rest string) string {
	return at(at("messages", i, ".content"), j, rest)
}

// toolCalls validates messages[i].tool_calls and returns how many calls it holds.
func (v *validator) toolCalls(i int, calls gjson.Result) (int, bool) {
	if !calls.IsArray() {
		return 0, v.fail(v.badType(at("messages", i, ".tool_calls"), "an array", calls))
	}
	return v.elements(calls, func(j int, c gjson.Result) bool {
		path := func(rest string) string { return at(at("messages", i, ".tool_calls"), j, rest) }
		if !c.IsObject() {
			return v.fail(v.badType(path(""), "an object", c))
		}
		id, typ, fn := c.Get("id"), c.Get("type"), c.Get("function")
		if !v.required(path(".id"), id.Exists(), id) {
			return false
		}
		if typ.Exists() && typ.Type != gjson.String {
			return v.fail(v.badType(path(".type"), "a string", typ))
		}
		if typ.Exists() && typ.Str != "function" {
			return v.fail(v.badEnum(path(".type"), typ.Str, chatToolTypes[:1]))
		}
		if !fn.Exists() {
			return v.fail(v.missing(path(".function")))
		}
		if !fn.IsObject() {
			return v.fail(v.badType(path(".function"), "an object", fn))
		}
		name, args := fn.Get("name"), fn.Get("arguments")
		return v.required(path(".function.name"), name.Exists(), name) &&
			v.required(path(".function.arguments"), args.Exists(), args)
	})
}

// chatTools validates the tools array of a chat request.
func (v *validator) chatTools(val gjson.Result) bool {
	return v.noteTools(v.objects("tools", "an array", val, func(i int, t gjson.Result) bool {
		typ := t.Get("type")
		if !typ.Exists() {
			return v.fail(v.missing(at("tools", i, ".type")))
		}
		if typ.Type != gjson.String {
			return v.fail(v.badType(at("tools", i, ".type"), "a string", typ))
		}
		if !oneOf(typ.Str, chatToolTypes) {
			return v.fail(v.badEnum(at("tools", i, ".type"), typ.Str, chatToolTypes))
		}
		member := typ.Str // "function" or "custom"
		def := t.Get(member)
		if !def.Exists() {
			return v.fail(v.missing(at("tools", i, "."+member)))
		}
		if !def.IsObject() {
			return v.fail(v.badType(at("tools", i, "."+member), "an object", def))
		}
		if !v.toolName(at("tools", i, "."+member+".name"), def.Get("name")) {
			return false
		}
		if member == "function" {
			return v.optObject(at("tools", i, ".function.parameters"), def.Get("parameters")) &&
				v.str(at("tools", i, ".function.description"), def.Get("description"))
		}
		return true
	}))
}

// toolName validates a tool's name, which param names: given, and a string matching
// ^[a-zA-Z0-9_-]{1,64}$.
func (v *validator) toolName(param string, name gjson.Result) bool {
	if !v.required(param, name.Exists(), name) {
		return false
	}
	if !validToolName(name.Str) {
		return v.fail(v.custom(CodeInvalidValue, param,
			"Invalid '%s': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]{1,64}$'.", param))
	}
	return true
}

// validToolName reports whether s matches ^[a-zA-Z0-9_-]{1,64}$.
func validToolName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// chatToolChoice validates tool_choice: a word or an object naming a function.
func (v *validator) chatToolChoice(val gjson.Result) bool {
	typ, ok := v.toolChoiceType(val, chatToolChoiceTypes)
	if !ok || typ != "function" {
		return ok
	}
	return v.namedObject("tool_choice.function", val.Get("function"))
}

// toolChoiceType validates what every tool_choice shares: a word, or an object whose type is
// one of types. It returns that type ("" for a word).
func (v *validator) toolChoiceType(val gjson.Result, types []string) (string, bool) {
	if val.Type == gjson.String {
		return "", v.enum("tool_choice", val, chatToolChoiceWords)
	}
	if !val.IsObject() {
		return "", v.fail(v.badType("tool_choice", "a string or an object", val))
	}
	return v.objectType("tool_choice", val, types)
}

// responseFormat validates response_format.
func (v *validator) responseFormat(val gjson.Result) bool {
	if !val.IsObject() {
		return v.fail(v.badType("response_format", "an object", val))
	}
	typ, ok := v.objectType("response_format", val, responseFormatTypes)
	if !ok || typ != "json_schema" {
		return ok
	}
	js := val.Get("json_schema")
	if !v.namedObject("response_format.json_schema", js) {
		return false
	}
	if !v.optObject("response_format.json_schema.schema", js.Get("schema")) {
		return false
	}
	_, ok = v.boolean("response_format.json_schema.strict", js.Get("strict"))
	return ok
}

// objectType checks the type member of the object val, which param names: given, and one of
// types. It returns the type.
func (v *validator) objectType(param string, val gjson.Result, types []string) (string, bool) {
	typ := val.Get("type")
	if !typ.Exists() {
		return "", v.fail(v.missing(param + ".type"))
	}
	if typ.Type != gjson.String {
		return "", v.fail(v.badType(param+".type", "a string", typ))
	}
	if !oneOf(typ.Str, types) {
		return "", v.fail(v.badEnum(param+".type", typ.Str, types))
	}
	return typ.Str, true
}

// namedObject checks the member a type asks for (tool_choice.function,
// response_format.json_schema), which param names: given, and an object with a string name.
func (v *validator) namedObject(param string, obj gjson.Result) bool {
	if !obj.Exists() {
		return v.fail(v.missing(param))
	}
	if !obj.IsObject() {
		return v.fail(v.badType(param, "an object", obj))
	}
	name := obj.Get("name")
	return v.required(param+".name", name.Exists(), name)
}

// oneOf reports whether s is in set.
func oneOf(s string, set []string) bool {
	for _, x := range set {
		if s == x {
			return true
		}
	}
	return false
}
