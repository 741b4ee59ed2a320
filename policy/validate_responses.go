package policy

import (
	"github.com/tidwall/gjson"
)

// The Responses API's enumerations, as the spec (CreateResponse) gives them.
var (
	responsesRoles = []string{"user", "assistant", "system", "developer"}
	// responsesItemTypes are the input item types validated in depth; responsesOtherItems are
	// the spec's other item types, passed on unread.
	responsesItemTypes  = []string{"message", "function_call", "function_call_output", "item_reference", "reasoning"}
	responsesOtherItems = []string{"file_search_call", "computer_call", "computer_call_output", "web_search_call",
		"image_generation_call", "code_interpreter_call", "local_shell_call", "local_shell_call_output",
		"mcp_list_tools", "mcp_approval_request", "mcp_approval_response", "mcp_call", "custom_tool_call",
		"custom_tool_call_output", "shell_call", "shell_call_output", "apply_patch_call", "apply_patch_call_output",
		"compaction"}
	responsesPartTypes    = []string{"input_text", "input_image", "input_file", "input_audio", "output_text", "refusal"}
	responsesToolTypes    = []string{"function", "file_search", "web_search", "web_search_preview", "computer_use_preview", "mcp", "code_interpreter", "image_generation", "local_shell", "shell", "custom", "apply_patch"}
	responsesChoiceTypes  = []string{"function", "allowed_tools", "file_search", "web_search_preview", "computer_use_preview", "code_interpreter", "image_generation", "mcp", "custom", "apply_patch", "shell"}
	responsesTruncations  = []string{"auto", "disabled"}
	responsesImageDetails = []string{"low", "high", "auto"}
	responsesEfforts      = []string{"none", "minimal", "low", "medium", "high", "xhigh"}
	responsesVerbosities  = []string{"low", "medium", "high"}
)

// fieldMaxOutputTokens is the Responses API's output length field.
const fieldMaxOutputTokens = "max_output_tokens"

// responsesKey validates a member of a Responses request, other than those topKey handles.
func (v *validator) responsesKey(k string, val gjson.Result) bool {
	switch k {
	case "input":
		return v.responsesInput(val)
	case "instructions", "previous_response_id", "prompt_cache_key", "safety_identifier", "service_tier":
		if !v.str(k, val) {
			return false
		}
		if k == "previous_response_id" {
			if val.Str == "" {
				return v.fail(v.emptyString(k))
			}
			v.info.PreviousResponseID = val.Str
		}
		return true
	case fieldMaxOutputTokens:
		return v.maxTokens(k, val, 1)
	case "temperature":
		return v.temperature(val, 2)
	case "top_p":
		_, ok := v.number(k, val, 0, 1)
		return ok
	case "top_logprobs":
		_, ok := v.integer(k, val, 0, 20)
		return ok
	case "max_tool_calls":
		_, ok := v.integer(k, val, 1, maxInt32)
		return ok
	case "parallel_tool_calls", "background":
		_, ok := v.boolean(k, val)
		return ok
	case "store":
		b, ok := v.boolean(k, val)
		v.info.NoStore = ok && !b && val.Type == gjson.False
		return ok
	case "tools":
		return v.responsesTools(val)
	case "tool_choice":
		return v.responsesToolChoice(val)
	case "text":
		return v.responsesText(val)
	case "metadata", "stream_options", "prompt", "conversation":
		if k == "conversation" && val.Type == gjson.String {
			return true
		}
		return v.object(k, val)
	case "truncation":
		return v.enum(k, val, responsesTruncations)
	case "reasoning":
		if !v.object(k, val) {
			return false
		}
		if e := val.Get("effort"); e.Exists() && e.Type != gjson.Null {
			return v.enum("reasoning.effort", e, responsesEfforts)
		}
		return true
	case "include":
		_, ok := v.stringArray(k, "an array of strings", val)
		return ok
	}
	return true
}

// responsesInput validates input: a string, or an array of input items.
func (v *validator) responsesInput(val gjson.Result) bool {
	if val.Type == gjson.String {
		return true
	}
	if !val.IsArray() {
		return v.fail(v.badType("input", "a string or an array of input items", val))
	}
	_, ok := v.elements(val, func(i int, item gjson.Result) bool {
		if !item.IsObject() {
			return v.fail(v.badType(at("input", i, ""), "an object", item))
		}
		return v.responsesItem(i, item)
	})
	return ok
}

// Bits for the members of an input item.
const (
	iType uint8 = 1 << iota
	iRole
	iContent
	iCallID
	iName
	iArguments
	iOutput
	iID
)

// responsesItem validates input[i].
func (v *validator) responsesItem(i int, item gjson.Result) bool {
	var typ, role, content, callID, name, args, output, id gjson.Result
	var seen uint8
	item.ForEach(func(k, val gjson.Result) bool {
		var bit uint8
		switch k.Str {
		case "type":
			bit, typ = iType, val
		case "role":
			bit, role = iRole, val
		case "content":
			bit, content = iContent, val
		case "call_id":
			bit, callID = iCallID, val
		case "name":
			bit, name = iName, val
		case "arguments":
			bit, args = iArguments, val
		case "output":
			bit, output = iOutput, val
		case "id":
			bit, id = iID, val
		default:
			return true
		}
		return v.once(&seen, bit, func() string { return at("input", i, "."+k.Str) })
	})
	if v.err != nil {
		return false
	}
	path := func(rest string) string { return at("input", i, rest) }
	kind := "message" // an item without a type is a message (EasyInputMessage)
	if seen&iType != 0 {
		if typ.Type != gjson.String {
			return v.fail(v.badType(path(".type"), "a string", typ))
		}
		kind = typ.Str
	}
	switch kind {
	case "message":
		if seen&iRole == 0 {
			return v.fail(v.missing(path(".role")))
		}
		if role.Type != gjson.String {
			return v.fail(v.badType(path(".role"), "a string", role))
		}
		if !oneOf(role.Str, responsesRoles) {
			return v.fail(v.badEnum(path(".role"), role.Str, responsesRoles))
		}
		if seen&iContent == 0 {
			return v.fail(v.missing(path(".content")))
		}
		if content.Type == gjson.String {
			return true
		}
		if !content.IsArray() {
			return v.fail(v.badType(path(".content"), "a string or an array of content parts", content))
		}
		_, ok := v.elements(content, func(j int, p gjson.Result) bool { return v.responsesPart(i, j, p) })
		return ok
	case "function_call":
		return v.itemString(path(".call_id"), seen&iCallID != 0, callID) &&
			v.itemString(path(".name"), seen&iName != 0, name) &&
			v.itemString(path(".arguments"), seen&iArguments != 0, args)
	case "function_call_output":
		if !v.itemString(path(".call_id"), seen&iCallID != 0, callID) {
			return false
		}
		if seen&iOutput == 0 {
			return v.fail(v.missing(path(".output")))
		}
		if output.Type != gjson.String && !output.IsArray() {
			return v.fail(v.badType(path(".output"), "a string or an array of content parts", output))
		}
		return true
	case "item_reference":
		return v.itemString(path(".id"), seen&iID != 0, id)
	case "reasoning":
		return true
	}
	if oneOf(kind, responsesOtherItems) {
		return true
	}
	return v.fail(v.badEnum(path(".type"), kind, responsesItemTypes))
}

// itemString checks a required string member of an input item.
func (v *validator) itemString(param string, present bool, val gjson.Result) bool {
	if !present {
		return v.fail(v.missing(param))
	}
	if val.Type != gjson.String {
		return v.fail(v.badType(param, "a string", val))
	}
	return true
}

// responsesPart validates input[i].content[j].
func (v *validator) responsesPart(i, j int, p gjson.Result) bool {
	path := func(rest string) string { return at(at("input", i, ".content"), j, rest) }
	if !p.IsObject() {
		return v.fail(v.badType(path(""), "an object", p))
	}
	var typ, text, imageURL, fileID, detail, refusal gjson.Result
	var seen uint8
	p.ForEach(func(k, val gjson.Result) bool {
		var bit uint8
		switch k.Str {
		case "type":
			bit, typ = pType, val
		case "text":
			bit, text = pText, val
		case "image_url":
			bit, imageURL = pImageURL, val
		case "file_id":
			bit, fileID = pFile, val
		case "detail":
			bit, detail = pMediaURL, val
		case "refusal":
			bit, refusal = pRefusal, val
		default:
			return true
		}
		return v.once(&seen, bit, func() string { return path("." + k.Str) })
	})
	if v.err != nil {
		return false
	}
	if seen&pType == 0 {
		return v.fail(v.missing(path(".type")))
	}
	if typ.Type != gjson.String {
		return v.fail(v.badType(path(".type"), "a string", typ))
	}
	switch typ.Str {
	case "input_text", "output_text":
		return v.itemString(path(".text"), seen&pText != 0, text)
	case "refusal":
		return v.itemString(path(".refusal"), seen&pRefusal != 0, refusal)
	case "input_image":
		if seen&pImageURL != 0 && imageURL.Type != gjson.String && imageURL.Type != gjson.Null {
			return v.fail(v.badType(path(".image_url"), "a string", imageURL))
		}
		if seen&pFile != 0 && fileID.Type != gjson.String && fileID.Type != gjson.Null {
			return v.fail(v.badType(path(".file_id"), "a string", fileID))
		}
		if imageURL.Type != gjson.String && fileID.Type != gjson.String {
			return v.fail(v.custom(CodeMissingParam, path(".image_url"),
				"Invalid '%s': an input_image part needs an image_url or a file_id.", path("")))
		}
		if seen&pMediaURL != 0 && detail.Type != gjson.Null {
			return v.enum(path(".detail"), detail, responsesImageDetails)
		}
		return true
	case "input_file", "input_audio":
		return true
	}
	return v.fail(v.badEnum(path(".type"), typ.Str, responsesPartTypes))
}

// responsesTools validates tools: function tools in full (name, parameters, strict), the
// spec's hosted tools by type.
func (v *validator) responsesTools(val gjson.Result) bool {
	return v.noteTools(v.objects("tools", "an array", val, func(i int, t gjson.Result) bool {
		typ, ok := v.objectType(at("tools", i, ""), t, responsesToolTypes)
		if !ok || typ != "function" && typ != "custom" {
			return ok
		}
		name := t.Get("name")
		param := at("tools", i, ".name")
		if !v.itemString(param, name.Exists(), name) {
			return false
		}
		if !validToolName(name.Str) {
			return v.fail(v.custom(CodeInvalidValue, param,
				"Invalid '%s': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]{1,64}$'.", param))
		}
		if typ != "function" {
			return true
		}
		if p := t.Get("parameters"); p.Exists() && p.Type != gjson.Null && !p.IsObject() {
			return v.fail(v.badType(at("tools", i, ".parameters"), "an object", p))
		}
		if s := t.Get("strict"); s.Exists() && s.Type != gjson.Null && !s.IsBool() {
			return v.fail(v.badType(at("tools", i, ".strict"), "a boolean", s))
		}
		if d := t.Get("description"); d.Exists() && d.Type != gjson.String && d.Type != gjson.Null {
			return v.fail(v.badType(at("tools", i, ".description"), "a string", d))
		}
		return true
	}))
}

// responsesToolChoice validates tool_choice: a word, or an object naming a function or a
// hosted tool type.
func (v *validator) responsesToolChoice(val gjson.Result) bool {
	if val.Type == gjson.String {
		return v.enum("tool_choice", val, chatToolChoiceWords)
	}
	if !val.IsObject() {
		return v.fail(v.badType("tool_choice", "a string or an object", val))
	}
	typ, ok := v.objectType("tool_choice", val, responsesChoiceTypes)
	if !ok || typ != "function" {
		return ok
	}
	name := val.Get("name")
	return v.itemString("tool_choice.name", name.Exists(), name)
}

// responsesText validates text: its format (text, json_object, or json_schema with a name and
// a schema) and verbosity.
func (v *validator) responsesText(val gjson.Result) bool {
	if !v.object("text", val) {
		return false
	}
	if vb := val.Get("verbosity"); vb.Exists() && vb.Type != gjson.Null && !v.enum("text.verbosity", vb, responsesVerbosities) {
		return false
	}
	f := val.Get("format")
	if !f.Exists() || f.Type == gjson.Null {
		return true
	}
	if !v.object("text.format", f) {
		return false
	}
	typ, ok := v.objectType("text.format", f, responseFormatTypes)
	if !ok || typ != "json_schema" {
		return ok
	}
	name := f.Get("name")
	if !v.itemString("text.format.name", name.Exists(), name) {
		return false
	}
	s := f.Get("schema")
	if !s.Exists() {
		return v.fail(v.missing("text.format.schema"))
	}
	if !s.IsObject() {
		return v.fail(v.badType("text.format.schema", "an object", s))
	}
	if st := f.Get("strict"); st.Exists() && st.Type != gjson.Null && !st.IsBool() {
		return v.fail(v.badType("text.format.strict", "a boolean", st))
	}
	return true
}
