package policy

import (
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/caddyai/gateway/internal/wire"
)

const (
	chat   = wire.EndpointChatCompletions
	compl  = wire.EndpointCompletions
	embed  = wire.EndpointEmbeddings
	images = wire.EndpointImagesGenerations
	msgs   = wire.EndpointMessages
	count  = wire.EndpointMessagesCountTokens
)

// chatBody wraps extra top-level members around a minimal valid chat request.
func chatBody(extra string) string {
	b := `{"model":"m","messages":[{"role":"user","content":"hi"}]`
	if extra != "" {
		b += "," + extra
	}
	return b + "}"
}

// anthBody wraps extra members around a minimal valid Anthropic messages request.
func anthBody(extra string) string {
	b := `{"model":"claude","max_tokens":64,"messages":[{"role":"user","content":"hi"}]`
	if extra != "" {
		b += "," + extra
	}
	return b + "}"
}

type rejectCase struct {
	name  string
	e     wire.Endpoint
	body  string
	code  string
	param string
	msg   string // substring of the message; optional
}

func TestValidateRejects(t *testing.T) {
	tests := []rejectCase{
		// Document level.
		{"empty body", chat, ``, CodeInvalidJSON, "", "could not parse"},
		{"whitespace body", chat, " \n", CodeInvalidJSON, "", "could not parse"},
		{"invalid json", chat, `{"model":"m",}`, CodeInvalidJSON, "", "not valid JSON"},
		{"truncated json", chat, `{"model":"m","messages":[`, CodeInvalidJSON, "", "not valid JSON"},
		{"array body", chat, `[1,2]`, CodeInvalidType, "", "got an array"},
		{"string body", chat, `"hi"`, CodeInvalidType, "", "got a string"},
		{"too deep", chat, chatBody(`"x":` + strings.Repeat("[", 65) + strings.Repeat("]", 65)), CodeNestingTooDeep, "", "64"},
		{"NaN is not JSON", chat, chatBody(`"temperature":NaN`), CodeInvalidJSON, "", ""},
		{"duplicate model", chat, `{"model":"a","model":"b","messages":[{"role":"user","content":"x"}]}`, CodeDuplicateKey, "model", "duplicate key 'model'"},
		{"duplicate escaped key", chat, `{"model":"a","mod\u0065l":"b","messages":[{"role":"user","content":"x"}]}`, CodeDuplicateKey, "model", ""},
		{"duplicate max_tokens", chat, chatBody(`"max_tokens":1,"max_tokens":100000`), CodeDuplicateKey, "max_tokens", ""},
		{"duplicate unknown key", chat, chatBody(`"guided_json":{},"guided_json":{}`), CodeDuplicateKey, "guided_json", ""},
		{"duplicate message content", chat, `{"model":"m","messages":[{"role":"user","content":"ok","content":"evil"}]}`, CodeDuplicateKey, "messages[0].content", ""},

		// Model.
		{"missing model", chat, `{"messages":[{"role":"user","content":"x"}]}`, CodeMissingParam, "model", "Missing required parameter: 'model'."},
		{"model not string", chat, `{"model":5,"messages":[{"role":"user","content":"x"}]}`, CodeInvalidType, "model", "expected a string, but got an integer"},
		{"empty model", chat, `{"model":"","messages":[{"role":"user","content":"x"}]}`, CodeEmptyString, "model", ""},
		{"null model", embed, `{"model":null,"input":"x"}`, CodeInvalidType, "model", "got null"},

		// Chat messages.
		{"missing messages", chat, `{"model":"m"}`, CodeMissingParam, "messages", ""},
		{"messages not array", chat, `{"model":"m","messages":{}}`, CodeInvalidType, "messages", "expected an array, but got an object instead."},
		{"messages empty", chat, `{"model":"m","messages":[]}`, CodeEmptyArray, "messages", "empty array"},
		{"message not object", chat, `{"model":"m","messages":["hi"]}`, CodeInvalidType, "messages[0]", ""},
		{"missing role", chat, `{"model":"m","messages":[{"content":"x"}]}`, CodeMissingParam, "messages[0].role", ""},
		{"bad role", chat, `{"model":"m","messages":[{"role":"user","content":"a"},{"role":"user","content":"b"},{"role":"robot","content":"x"}]}`, CodeInvalidValue, "messages[2].role",
			"Invalid value: 'robot'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'."},
		{"role not string", chat, `{"model":"m","messages":[{"role":1,"content":"x"}]}`, CodeInvalidType, "messages[0].role", ""},
		{"missing content", chat, `{"model":"m","messages":[{"role":"user"}]}`, CodeMissingParam, "messages[0].content", ""},
		{"null content for user", chat, `{"model":"m","messages":[{"role":"user","content":null}]}`, CodeInvalidType, "messages[0].content", ""},
		{"null content assistant without calls", chat, `{"model":"m","messages":[{"role":"assistant","content":null}]}`, CodeInvalidType, "messages[0].content", ""},
		{"content number", chat, `{"model":"m","messages":[{"role":"user","content":3}]}`, CodeInvalidType, "messages[0].content", ""},
		{"content empty array", chat, `{"model":"m","messages":[{"role":"user","content":[]}]}`, CodeEmptyArray, "messages[0].content", ""},
		{"part bad type", chat, `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"video","url":"x"}]}]}`, CodeInvalidValue, "messages[0].content[1].type", "'video'"},
		{"part missing type", chat, `{"model":"m","messages":[{"role":"user","content":[{"text":"a"}]}]}`, CodeMissingParam, "messages[0].content[0].type", ""},
		{"text part without text", chat, `{"model":"m","messages":[{"role":"user","content":[{"type":"text"}]}]}`, CodeMissingParam, "messages[0].content[0].text", ""},
		{"text part text number", chat, `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":1}]}]}`, CodeInvalidType, "messages[0].content[0].text", ""},
		{"image part without url", chat, `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{}}]}]}`, CodeMissingParam, "messages[0].content[0].image_url.url", ""},
		{"image part url number", chat, `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":1}}]}]}`, CodeInvalidType, "messages[0].content[0].image_url.url", ""},
		{"image part image_url string", chat, `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":"http://x"}]}]}`, CodeInvalidType, "messages[0].content[0].image_url", ""},
		{"tool message without id", chat, `{"model":"m","messages":[{"role":"tool","content":"42"}]}`, CodeMissingParam, "messages[0].tool_call_id", ""},
		{"tool message id number", chat, `{"model":"m","messages":[{"role":"tool","content":"42","tool_call_id":7}]}`, CodeInvalidType, "messages[0].tool_call_id", ""},
		{"name not string", chat, `{"model":"m","messages":[{"role":"user","content":"x","name":1}]}`, CodeInvalidType, "messages[0].name", ""},
		{"tool_calls not array", chat, `{"model":"m","messages":[{"role":"assistant","tool_calls":{}}]}`, CodeInvalidType, "messages[0].tool_calls", ""},
		{"tool_call without function", chat, `{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"c1","type":"function"}]}]}`, CodeMissingParam, "messages[0].tool_calls[0].function", ""},
		{"tool_call arguments object", chat, `{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":{}}}]}]}`, CodeInvalidType, "messages[0].tool_calls[0].function.arguments", ""},
		{"tool_call bad type", chat, `{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"c1","type":"fn","function":{"name":"f","arguments":"{}"}}]}]}`, CodeInvalidValue, "messages[0].tool_calls[0].type", ""},

		// Chat numeric params.
		{"temperature string", chat, chatBody(`"temperature":"hot"`), CodeInvalidType, "temperature", "Invalid type for 'temperature': expected a number, but got a string instead."},
		{"temperature too high", chat, chatBody(`"temperature":3`), "decimal_above_max_value", "temperature", "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got 3 instead."},
		{"temperature negative", chat, chatBody(`"temperature":-0.1`), "decimal_below_min_value", "temperature", "Expected a value >= 0"},
		{"temperature huge exponent", chat, chatBody(`"temperature":1e400`), "decimal_above_max_value", "temperature", ""},
		{"top_p above 1", chat, chatBody(`"top_p":1.5`), "decimal_above_max_value", "top_p", ""},
		{"n zero", chat, chatBody(`"n":0`), "integer_below_min_value", "n", "Invalid 'n': integer below minimum value. Expected a value >= 1, but got 0 instead."},
		{"n too many", chat, chatBody(`"n":129`), "integer_above_max_value", "n", ""},
		{"n decimal", chat, chatBody(`"n":1.5`), CodeInvalidType, "n", "expected an integer, but got a decimal number"},
		{"n written with fraction", chat, chatBody(`"n":2.0`), CodeInvalidType, "n", ""},
		{"max_tokens zero", chat, chatBody(`"max_tokens":0`), "integer_below_min_value", "max_tokens", ""},
		{"max_tokens overflow", chat, chatBody(`"max_tokens":99999999999999999999999`), "integer_above_max_value", "max_tokens", "2147483647"},
		{"max_tokens huge negative", chat, chatBody(`"max_tokens":-99999999999999999999999`), "integer_below_min_value", "max_tokens", ""},
		{"max_completion_tokens string", chat, chatBody(`"max_completion_tokens":"10"`), CodeInvalidType, "max_completion_tokens", ""},
		{"presence_penalty", chat, chatBody(`"presence_penalty":2.5`), "decimal_above_max_value", "presence_penalty", ""},
		{"frequency_penalty", chat, chatBody(`"frequency_penalty":-3`), "decimal_below_min_value", "frequency_penalty", ""},
		{"logprobs not bool", chat, chatBody(`"logprobs":1`), CodeInvalidType, "logprobs", "expected a boolean"},
		{"top_logprobs", chat, chatBody(`"top_logprobs":21`), "integer_above_max_value", "top_logprobs", ""},
		{"seed decimal", chat, chatBody(`"seed":1.5`), CodeInvalidType, "seed", ""},
		{"stop number", chat, chatBody(`"stop":5`), CodeInvalidType, "stop", ""},
		{"stop five", chat, chatBody(`"stop":["a","b","c","d","e"]`), CodeArrayTooLong, "stop", "maximum length 4, but got an array with length 5"},
		{"stop item", chat, chatBody(`"stop":["a",1]`), CodeInvalidType, "stop[1]", ""},
		{"stream not bool", chat, chatBody(`"stream":"yes"`), CodeInvalidType, "stream", ""},
		{"stream_options without stream", chat, chatBody(`"stream_options":{"include_usage":true}`), CodeInvalidValue, "stream_options", "only allowed when 'stream' is enabled"},
		{"stream_options with stream false", chat, chatBody(`"stream":false,"stream_options":{"include_usage":true}`), CodeInvalidValue, "stream_options", ""},
		{"include_usage not bool", chat, chatBody(`"stream":true,"stream_options":{"include_usage":"yes"}`), CodeInvalidType, "stream_options.include_usage", ""},
		{"stream_options not object", chat, chatBody(`"stream":true,"stream_options":true`), CodeInvalidType, "stream_options", ""},
		{"tools not array", chat, chatBody(`"tools":{}`), CodeInvalidType, "tools", ""},
		{"tool bad type", chat, chatBody(`"tools":[{"type":"retrieval"}]`), CodeInvalidValue, "tools[0].type", ""},
		{"tool missing function", chat, chatBody(`"tools":[{"type":"function"}]`), CodeMissingParam, "tools[0].function", ""},
		{"tool bad name", chat, chatBody(`"tools":[{"type":"function","function":{"name":"get weather"}}]`), CodeInvalidValue, "tools[0].function.name", "does not match pattern"},
		{"tool name too long", chat, chatBody(`"tools":[{"type":"function","function":{"name":"` + strings.Repeat("a", 65) + `"}}]`), CodeInvalidValue, "tools[0].function.name", ""},
		{"tool parameters array", chat, chatBody(`"tools":[{"type":"function","function":{"name":"f","parameters":[]}}]`), CodeInvalidType, "tools[0].function.parameters", ""},
		{"tool_choice bad word", chat, chatBody(`"tool_choice":"always"`), CodeInvalidValue, "tool_choice", "'none', 'auto', and 'required'"},
		{"tool_choice object without name", chat, chatBody(`"tool_choice":{"type":"function","function":{}}`), CodeMissingParam, "tool_choice.function.name", ""},
		{"tool_choice number", chat, chatBody(`"tool_choice":1`), CodeInvalidType, "tool_choice", ""},
		{"response_format bad type", chat, chatBody(`"response_format":{"type":"yaml"}`), CodeInvalidValue, "response_format.type", ""},
		{"response_format schema missing", chat, chatBody(`"response_format":{"type":"json_schema"}`), CodeMissingParam, "response_format.json_schema", ""},
		{"response_format schema name missing", chat, chatBody(`"response_format":{"type":"json_schema","json_schema":{"schema":{}}}`), CodeMissingParam, "response_format.json_schema.name", ""},
		{"response_format schema not object", chat, chatBody(`"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":"{}"}}`), CodeInvalidType, "response_format.json_schema.schema", ""},
		{"user number", chat, chatBody(`"user":1`), CodeInvalidType, "user", ""},
		{"logit_bias array", chat, chatBody(`"logit_bias":[1]`), CodeInvalidType, "logit_bias", ""},
		{"logit_bias range", chat, chatBody(`"logit_bias":{"50256":-101}`), "decimal_below_min_value", "logit_bias.50256", ""},

		// Completions.
		{"completions missing prompt", compl, `{"model":"m"}`, CodeMissingParam, "prompt", ""},
		{"completions prompt object", compl, `{"model":"m","prompt":{}}`, CodeInvalidType, "prompt", ""},
		{"completions prompt empty array", compl, `{"model":"m","prompt":[]}`, CodeEmptyArray, "prompt", ""},
		{"completions prompt mixed", compl, `{"model":"m","prompt":["a",1]}`, CodeInvalidType, "prompt[1]", ""},
		{"completions tokens decimal", compl, `{"model":"m","prompt":[1,2.5]}`, CodeInvalidType, "prompt[1]", ""},
		{"completions token negative", compl, `{"model":"m","prompt":[1,-2]}`, "integer_below_min_value", "prompt[1]", ""},
		{"completions token arrays inner", compl, `{"model":"m","prompt":[[1,2],["x"]]}`, CodeInvalidType, "prompt[1][0]", ""},
		{"completions token arrays empty inner", compl, `{"model":"m","prompt":[[1],[]]}`, CodeEmptyArray, "prompt[1]", ""},
		{"completions logprobs", compl, `{"model":"m","prompt":"x","logprobs":6}`, "integer_above_max_value", "logprobs", ""},
		{"completions echo", compl, `{"model":"m","prompt":"x","echo":"no"}`, CodeInvalidType, "echo", ""},
		{"completions best_of", compl, `{"model":"m","prompt":"x","best_of":21}`, "integer_above_max_value", "best_of", ""},
		{"completions suffix", compl, `{"model":"m","prompt":"x","suffix":1}`, CodeInvalidType, "suffix", ""},
		{"completions max_tokens negative", compl, `{"model":"m","prompt":"x","max_tokens":-1}`, "integer_below_min_value", "max_tokens", ""},

		// Embeddings.
		{"embeddings missing input", embed, `{"model":"e"}`, CodeMissingParam, "input", ""},
		{"embeddings empty string", embed, `{"model":"e","input":""}`, CodeEmptyString, "input", ""},
		{"embeddings empty string item", embed, `{"model":"e","input":["a",""]}`, CodeEmptyString, "input[1]", ""},
		{"embeddings too many", embed, `{"model":"e","input":[` + strings.TrimSuffix(strings.Repeat(`"a",`, 2049), ",") + `]}`, CodeArrayTooLong, "input", "2048"},
		{"embeddings bad format", embed, `{"model":"e","input":"x","encoding_format":"hex"}`, CodeInvalidValue, "encoding_format", "'float' and 'base64'"},
		{"embeddings dimensions zero", embed, `{"model":"e","input":"x","dimensions":0}`, "integer_below_min_value", "dimensions", ""},
		{"embeddings input bool", embed, `{"model":"e","input":true}`, CodeInvalidType, "input", ""},

		// Images.
		{"images missing prompt", images, `{"model":"i"}`, CodeMissingParam, "prompt", ""},
		{"images empty prompt", images, `{"model":"i","prompt":""}`, CodeEmptyString, "prompt", ""},
		{"images n", images, `{"model":"i","prompt":"cat","n":11}`, "integer_above_max_value", "n", ""},
		{"images response_format", images, `{"model":"i","prompt":"cat","response_format":"png"}`, CodeInvalidValue, "response_format", ""},
		{"images size number", images, `{"model":"i","prompt":"cat","size":1024}`, CodeInvalidType, "size", ""},

		// Anthropic messages.
		{"anthropic missing max_tokens", msgs, `{"model":"c","messages":[{"role":"user","content":"x"}]}`, CodeMissingParam, "max_tokens", "max_tokens: Field required"},
		{"anthropic max_tokens zero", msgs, `{"model":"c","max_tokens":0,"messages":[{"role":"user","content":"x"}]}`, CodeValueBelowMinimum, "max_tokens", "max_tokens: Input should be greater than or equal to 1"},
		{"anthropic max_tokens null", msgs, `{"model":"c","max_tokens":null,"messages":[{"role":"user","content":"x"}]}`, CodeInvalidType, "max_tokens", ""},
		{"anthropic empty messages", msgs, anthBody(`"x":1`)[:0] + `{"model":"c","max_tokens":5,"messages":[]}`, CodeEmptyArray, "messages", ""},
		{"anthropic system role", msgs, `{"model":"c","max_tokens":5,"messages":[{"role":"system","content":"x"}]}`, CodeInvalidValue, "messages[0].role", "messages.0.role: Input should be 'user' or 'assistant'"},
		{"anthropic content number", msgs, `{"model":"c","max_tokens":5,"messages":[{"role":"user","content":1}]}`, CodeInvalidType, "messages[0].content", ""},
		{"anthropic block without type", msgs, `{"model":"c","max_tokens":5,"messages":[{"role":"user","content":[{"text":"x"}]}]}`, CodeMissingParam, "messages[0].content[0].type", "messages.0.content.0.type: Field required"},
		{"anthropic text block without text", msgs, `{"model":"c","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text"}]}]}`, CodeMissingParam, "messages[0].content[0].text", ""},
		{"anthropic image without source", msgs, `{"model":"c","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image"}]}]}`, CodeMissingParam, "messages[0].content[0].source", ""},
		{"anthropic tool_use input string", msgs, `{"model":"c","max_tokens":5,"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f","input":"{}"}]}]}`, CodeInvalidType, "messages[0].content[0].input", ""},
		{"anthropic tool_result without id", msgs, `{"model":"c","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_result","content":"x"}]}]}`, CodeMissingParam, "messages[0].content[0].tool_use_id", ""},
		{"anthropic tool_result nested bad", msgs, `{"model":"c","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":1}]}]}]}`, CodeInvalidType, "messages[0].content[0].content[0].text", ""},
		{"anthropic temperature above 1", msgs, anthBody(`"temperature":1.5`), CodeValueAboveMaximum, "temperature", "temperature: Input should be less than or equal to 1"},
		{"anthropic top_k negative", msgs, anthBody(`"top_k":-1`), CodeValueBelowMinimum, "top_k", ""},
		{"anthropic stop_sequences string", msgs, anthBody(`"stop_sequences":"x"`), CodeInvalidType, "stop_sequences", ""},
		{"anthropic system number", msgs, anthBody(`"system":1`), CodeInvalidType, "system", ""},
		{"anthropic system block type", msgs, anthBody(`"system":[{"type":"image","text":"x"}]`), CodeInvalidValue, "system[0].type", ""},
		{"anthropic tool without schema", msgs, anthBody(`"tools":[{"name":"f"}]`), CodeMissingParam, "tools[0].input_schema", ""},
		{"anthropic tool without name", msgs, anthBody(`"tools":[{"input_schema":{}}]`), CodeMissingParam, "tools[0].name", ""},
		{"anthropic tool_choice", msgs, anthBody(`"tool_choice":{"type":"function"}`), CodeInvalidValue, "tool_choice.type", ""},
		{"anthropic tool_choice tool without name", msgs, anthBody(`"tool_choice":{"type":"tool"}`), CodeMissingParam, "tool_choice.name", ""},
		{"anthropic invalid json message", msgs, `{`, CodeInvalidJSON, "", ""},
		{"count_tokens missing messages", count, `{"model":"c"}`, CodeMissingParam, "messages", ""},
		{"count_tokens bad role", count, `{"model":"c","messages":[{"role":"bot","content":"x"}]}`, CodeInvalidValue, "messages[0].role", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Validate(tt.e, []byte(tt.body))
			assertRejected(t, err, http.StatusBadRequest, tt.code, tt.param, tt.msg)
		})
	}
}

func assertRejected(t *testing.T, err *wire.Error, status int, code, param, msg string) {
	t.Helper()
	if err == nil {
		t.Fatal("accepted, want rejection")
	}
	if err.Status != status || err.Type != wire.TypeInvalidRequest || err.Code != code || err.Param != param {
		t.Fatalf("got status %d type %q code %q param %q (%s); want %d %q %q %q",
			err.Status, err.Type, err.Code, err.Param, err.Message, status, wire.TypeInvalidRequest, code, param)
	}
	if msg != "" && !strings.Contains(err.Message, msg) {
		t.Fatalf("message %q does not contain %q", err.Message, msg)
	}
	if err.Message == "" {
		t.Fatal("empty message")
	}
}

func TestValidateAccepts(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	tests := []struct {
		name string
		e    wire.Endpoint
		body string
		want RequestInfo
	}{
		{"minimal chat", chat, chatBody(""), RequestInfo{Model: "m", N: 1}},
		{"chat with everything", chat, chatBody(`"temperature":0.5,"top_p":1,"n":3,"max_tokens":100,"presence_penalty":-2,"frequency_penalty":2,
			"logprobs":true,"top_logprobs":20,"seed":-9223372036854775808,"stop":["a","b","c","d"],"stream":true,
			"stream_options":{"include_usage":true},"tools":[{"type":"function","function":{"name":"get_weather-v2","parameters":{"type":"object"}}}],
			"tool_choice":{"type":"function","function":{"name":"get_weather-v2"}},"response_format":{"type":"json_schema","json_schema":{"name":"r","schema":{},"strict":true}},
			"user":"u","logit_bias":{"50256":-100},"parallel_tool_calls":false,"metadata":{"a":"b"}`),
			RequestInfo{Model: "m", Stream: true, IncludeUsage: true, StreamOptions: true, MaxTokens: 100, MaxTokensField: "max_tokens", N: 3, HasTools: true, Temperature: f(0.5), Seed: true}},
		{"chat nulls mean absent", chat, chatBody(`"temperature":null,"n":null,"max_tokens":null,"stop":null,"stream_options":null,"tools":null,"seed":null`),
			RequestInfo{Model: "m", N: 1, StreamOptions: true}}, // present, so the gateway does not add a second one
		{"chat unknown params allowed", chat, chatBody(`"top_k":40,"repetition_penalty":1.1,"guided_json":{"type":"object"},"chat_template_kwargs":{"enable_thinking":false}`),
			RequestInfo{Model: "m", N: 1}},
		{"chat max_completion_tokens", chat, chatBody(`"max_completion_tokens":77`), RequestInfo{Model: "m", N: 1, MaxTokens: 77, MaxTokensField: "max_completion_tokens"}},
		{"chat both max fields take larger", chat, chatBody(`"max_tokens":50,"max_completion_tokens":80`), RequestInfo{Model: "m", N: 1, MaxTokens: 80, MaxTokensField: "max_completion_tokens"}},
		{"chat stream false", chat, chatBody(`"stream":false`), RequestInfo{Model: "m", N: 1}},
		{"chat stop string", chat, chatBody(`"stop":"\n"`), RequestInfo{Model: "m", N: 1}},
		{"chat temperature bounds", chat, chatBody(`"temperature":2`), RequestInfo{Model: "m", N: 1, Temperature: f(2)}},
		{"chat multimodal and roles", chat, `{"model":"m","messages":[
			{"role":"developer","content":"d"},{"role":"system","content":[{"type":"text","text":"s"}]},
			{"role":"user","name":"bob","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AA=="}},
				{"type":"input_audio","input_audio":{"data":"AA==","format":"wav"}},{"type":"file","file":{"file_id":"f"}},{"type":"video_url","video_url":{"url":"http://v"}}]},
			{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},
			{"role":"tool","tool_call_id":"c1","content":"42"},
			{"role":"assistant","content":[{"type":"refusal","refusal":"no"}]},
			{"role":"assistant","function_call":{"name":"f","arguments":"{}"}},
			{"role":"function","name":"f","content":"1"},
			{"role":"assistant","content":"","refusal":"no"}]}`, RequestInfo{Model: "m", N: 1}},
		{"chat legacy functions", chat, chatBody(`"functions":[{"name":"f"}]`), RequestInfo{Model: "m", N: 1, HasTools: true}},
		{"chat empty tools", chat, chatBody(`"tools":[]`), RequestInfo{Model: "m", N: 1}},
		{"chat whitespace around", chat, " \n" + chatBody("") + "\n ", RequestInfo{Model: "m", N: 1}},
		{"chat depth 64 ok", chat, chatBody(`"x":` + strings.Repeat("[", 62) + strings.Repeat("]", 62)), RequestInfo{Model: "m", N: 1}},
		{"chat brackets inside strings do not count", chat, `{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("[{", 100) + `\"\\"}]}`, RequestInfo{Model: "m", N: 1}},
		{"completions string", compl, `{"model":"m","prompt":"x","max_tokens":0,"echo":true,"logprobs":5,"best_of":2,"suffix":"s"}`, RequestInfo{Model: "m", N: 1, BestOf: 2, MaxTokensField: "max_tokens"}},
		{"completions arrays", compl, `{"model":"m","prompt":["a","b"],"n":2,"stream":true,"stream_options":{"include_usage":false}}`, RequestInfo{Model: "m", N: 2, Prompts: 2, Stream: true, StreamOptions: true}},
		{"completions one prompt of token ids", compl, `{"model":"m","prompt":[1,2,3]}`, RequestInfo{Model: "m", N: 1}},
		{"completions token-id prompts", compl, `{"model":"m","prompt":[[1,2],[3],[4]],"best_of":3,"n":2}`, RequestInfo{Model: "m", N: 2, BestOf: 3, Prompts: 3}},
		{"completions tokens", compl, `{"model":"m","prompt":[1,2,3],"seed":1}`, RequestInfo{Model: "m", N: 1, Seed: true}},
		{"completions token arrays", compl, `{"model":"m","prompt":[[1,2],[3]],"max_tokens":16}`, RequestInfo{Model: "m", N: 1, Prompts: 2, MaxTokens: 16, MaxTokensField: "max_tokens"}},
		{"completions empty string", compl, `{"model":"m","prompt":""}`, RequestInfo{Model: "m", N: 1}},
		{"embeddings string", embed, `{"model":"e","input":"x","encoding_format":"base64","dimensions":256}`, RequestInfo{Model: "e", N: 1}},
		{"embeddings strings", embed, `{"model":"e","input":["a","b"]}`, RequestInfo{Model: "e", N: 1}},
		{"embeddings tokens", embed, `{"model":"e","input":[[1,2],[3]]}`, RequestInfo{Model: "e", N: 1}},
		{"embeddings 2048", embed, `{"model":"e","input":[` + strings.TrimSuffix(strings.Repeat(`"a",`, 2048), ",") + `]}`, RequestInfo{Model: "e", N: 1}},
		{"images", images, `{"model":"i","prompt":"a cat","n":2,"size":"1024x1024","quality":"hd","response_format":"b64_json"}`, RequestInfo{Model: "i", N: 2}},
		{"anthropic minimal", msgs, anthBody(""), RequestInfo{Model: "claude", N: 1, MaxTokens: 64, MaxTokensField: "max_tokens"}},
		{"anthropic full", msgs, `{"model":"claude","max_tokens":1024,"stream":true,"temperature":1,"top_p":0.9,"top_k":5,
			"stop_sequences":["x"],"system":[{"type":"text","text":"be brief","cache_control":{"type":"ephemeral"}}],
			"tools":[{"name":"f","input_schema":{"type":"object"}},{"type":"web_search_20250305","name":"web_search"}],
			"tool_choice":{"type":"tool","name":"f"},"thinking":{"type":"enabled","budget_tokens":512},"metadata":{"user_id":"u"},
			"messages":[{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AA=="}},
				{"type":"document","source":{"type":"text","media_type":"text/plain","data":"doc"}}]},
			{"role":"assistant","content":[{"type":"thinking","thinking":"hm","signature":"s"},{"type":"tool_use","id":"t1","name":"f","input":{}}]},
			{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":[{"type":"text","text":"42"}]}]},
			{"role":"user","content":[{"type":"some_future_block","x":1}]},
			{"role":"assistant","content":"ok"}]}`,
			RequestInfo{Model: "claude", N: 1, Stream: true, MaxTokens: 1024, MaxTokensField: "max_tokens", HasTools: true, Temperature: f(1)}},
		{"embeddings stream is not a param", embed, `{"model":"e","input":"x","stream":true}`, RequestInfo{Model: "e", N: 1}},
		{"count_tokens never streams", count, `{"model":"c","messages":[{"role":"user","content":"x"}],"stream":true}`, RequestInfo{Model: "c", N: 1}},
		{"count_tokens without max_tokens", count, `{"model":"c","messages":[{"role":"user","content":"x"}],"system":"s"}`, RequestInfo{Model: "c", N: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Validate(tt.e, []byte(tt.body))
			if err != nil {
				t.Fatalf("rejected: %v (param %q)", err, err.Param)
			}
			assertInfo(t, got, tt.want)
		})
	}
}

func assertInfo(t *testing.T, got, want RequestInfo) {
	t.Helper()
	gt, wt := got.Temperature, want.Temperature
	got.Temperature, want.Temperature = nil, nil
	if got != want {
		t.Errorf("info %+v, want %+v", got, want)
	}
	if (gt == nil) != (wt == nil) || (gt != nil && *gt != *wt) {
		t.Errorf("temperature %v, want %v", ptrStr(gt), ptrStr(wt))
	}
}

func ptrStr(f *float64) any {
	if f == nil {
		return "nil"
	}
	return *f
}

func TestValidateModelDoesNotAliasBody(t *testing.T) {
	body := []byte(chatBody(""))
	info, err := Validate(chat, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := range body {
		body[i] = 'x'
	}
	if info.Model != "m" {
		t.Fatalf("model changed with the body: %q", info.Model)
	}
}

// A model name that is not valid UTF-8 is refused: encoding/json (and every SDK) would read
// another name than the route lookup, the logs and the metric labels.
func TestValidateModelNotUTF8(t *testing.T) {
	for _, c := range []struct {
		e    wire.Endpoint
		body string
	}{
		{chat, "{\"model\":\"\xe4\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}"},
		{msgs, "{\"model\":\"c\xff\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}"},
	} {
		_, err := Validate(c.e, []byte(c.body))
		if err == nil || err.Status != http.StatusBadRequest || err.Param != "model" || !strings.Contains(err.Message, "UTF-8") {
			t.Errorf("%s %q: got %+v", c.e, c.body, err)
		}
	}
	// an escaped non-ASCII name is valid UTF-8 and kept
	info, err := Validate(chat, []byte(`{"model":"m\u00e9","messages":[{"role":"user","content":"x"}]}`))
	if err != nil || info.Model != "m\u00e9" {
		t.Fatalf("escaped name: %q %v", info.Model, err)
	}
}

func TestValidateEndpointWithoutBody(t *testing.T) {
	_, err := Validate(wire.EndpointModels, []byte(`{}`))
	if err == nil || err.Status != http.StatusBadRequest {
		t.Fatalf("got %v", err)
	}
}

func TestValidateMessagesNeverEchoPrompt(t *testing.T) {
	const secret = "my-secret-prompt-text"
	bodies := []struct {
		e    wire.Endpoint
		body string
	}{
		{chat, `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"` + secret + `"},{"type":"bogus"}]}]}`},
		{embed, `{"model":"m","input":["` + secret + `",""]}`},
		{msgs, `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"text","text":"` + secret + `"},{"type":"text"}]}]}`},
	}
	for _, b := range bodies {
		_, err := Validate(b.e, []byte(b.body))
		if err == nil {
			t.Fatalf("accepted %s", b.body)
		}
		if strings.Contains(err.Message, "prompt-text") {
			t.Errorf("message echoes client text: %q", err.Message)
		}
	}
}

func TestAnthropicWordingAndDottedPaths(t *testing.T) {
	_, err := Validate(msgs, []byte(`{"model":"c","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":5}]}]}`))
	if err == nil {
		t.Fatal("accepted")
	}
	if want := "messages.0.content.1.text: Input should be a string, but got an integer"; err.Message != want {
		t.Fatalf("message %q, want %q", err.Message, want)
	}
	if err.Param != "messages[0].content[1].text" {
		t.Fatalf("param %q", err.Param)
	}
}

func TestValidateLargeNumbersOfKeys(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"model":"m","messages":[{"role":"user","content":"x"}]`)
	for i := 0; i < 100; i++ {
		b.WriteString(`,"k` + strings.Repeat("x", i) + `":1`)
	}
	body := b.String() + "}"
	if _, err := Validate(chat, []byte(body)); err != nil {
		t.Fatalf("rejected: %v", err)
	}
	dup := body[:len(body)-1] + `,"k` + strings.Repeat("x", 90) + `":2}`
	_, err := Validate(chat, []byte(dup))
	assertRejected(t, err, http.StatusBadRequest, CodeDuplicateKey, "k"+strings.Repeat("x", 90), "")
}

func TestValidateSampleFile(t *testing.T) {
	body, err := os.ReadFile("testdata/chat_1k.json")
	if err != nil {
		t.Fatal(err)
	}
	info, werr := Validate(chat, body)
	if werr != nil {
		t.Fatal(werr)
	}
	f := 0.7
	assertInfo(t, info, RequestInfo{Model: "llama-3.1-8b-instruct", Stream: true, IncludeUsage: true, StreamOptions: true, MaxTokens: 512, MaxTokensField: "max_tokens", N: 1, Temperature: &f, Seed: true})
}

func BenchmarkValidateChat1KB(b *testing.B) {
	body, err := os.ReadFile("testdata/chat_1k.json")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := Validate(chat, body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkValidateReject(b *testing.B) {
	body := []byte(chatBody(`"temperature":3`))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Validate(chat, body); err == nil {
			b.Fatal("accepted")
		}
	}
}
