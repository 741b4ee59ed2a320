package policy

import (
	"github.com/caddyai/gateway/internal/jsonscan"
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
	jsonscan.ForEach(item, func(k, val gjson.Result) bool {
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
		if !v.role(path(".role"), seen&iRole != 0, role, responsesRoles) {
			return false
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
		return v.required(path(".call_id"), seen&iCallID != 0, callID) &&
			v.required(path(".name"), seen&iName != 0, name) &&
			v.required(path(".arguments"), seen&iArguments != 0, args)
	case "function_call_output":
		if !v.required(path(".call_id"), seen&iCallID != 0, callID) {
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
		return v.required(path(".id"), seen&iID != 0, id)
	case "reasoning":
		return true
	}
	if oneOf(kind, responsesOtherItems) {
		return true
	}
	return v.fail(v.badEnum(path(".type"), kind, responsesItemTypes))
}

// responsesPart validates input[i].content[j].
func (v *validator) responsesPart(i, j int, p gjson.Result) bool {
	path := func(rest string) string { return at(at("input", i, ".content"), j, rest) }
	if !p.IsObject() {
		return v.fail(v.badType(path(""), "an object", p))
	}
	var typ, text, imageURL, fileID, detail, refusal gjson.Result
	var seen uint8
	jsonscan.ForEach(p, func(k, val gjson.Result) bool {
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
		return v.required(path(".text"), seen&pText != 0, text)
	case "refusal":
		return v.required(path(".refusal"), seen&pRefusal != 0, refusal)
	case "input_image":
		if !v.str(path(".image_url"), imageURL) || !v.str(path(".file_id"), fileID) {
			return false
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
		if !v.toolName(at("tools", i, ".name"), t.Get("name")) {
			return false
		}
		if typ != "function" {
			return true
		}
		if !v.optObject(at("tools", i, ".parameters"), t.Get("parameters")) {
			return false
		}
		if _, ok := v.boolean(at("tools", i, ".strict"), t.Get("strict")); !ok {
			return false
		}
		return v.str(at("tools", i, ".description"), t.Get("description"))
	}))
}

// responsesToolChoice validates tool_choice: a word, or an object naming a function or a
// hosted tool type.
func (v *validator) responsesToolChoice(val gjson.Result) bool {
	typ, ok := v.toolChoiceType(val, responsesChoiceTypes)
	if !ok || typ != "function" {
		return ok
	}
	name := val.Get("name")
	return v.required("tool_choice.name", name.Exists(), name)
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
	if !v.required("text.format.name", name.Exists(), name) {
		return false
	}
	s := f.Get("schema")
	if !s.Exists() {
		return v.fail(v.missing("text.format.schema"))
	}
	if !s.IsObject() {
		return v.fail(v.badType("text.format.schema", "an object", s))
	}
	_, ok = v.boolean("text.format.strict", f.Get("strict"))
	return ok
}
