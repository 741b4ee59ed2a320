// Package simulator is a simulated OpenAI-compatible model server: a plain
// net/http handler that stands in for vLLM, TGI, llama.cpp server or Ollama in
// demos, tests and benchmarks. It speaks the real wire formats (the official
// OpenAI and Anthropic SDKs parse everything it returns), generates
// deterministic text with exact token counts, and injects faults on demand.
//
// # Endpoints
//
//	POST /v1/chat/completions   chat, JSON or SSE (stream, stream_options.include_usage, n)
//	POST /v1/completions        text completion, prompt string or array
//	POST /v1/embeddings         deterministic unit vectors, float or base64
//	GET  /v1/models             OpenAI list of Config.Models
//	GET  /v1/models/{id}        one model, or 404
//	POST /v1/messages           Anthropic Messages, JSON or SSE; errors always in Anthropic's shape
//	POST /v1/responses          OpenAI Responses, JSON or typed SSE events (no [DONE]); a function
//	                            tool offered is called (unless tool_choice "none" or the input
//	                            ends with its output); stored unless store is false
//	GET|DELETE /v1/responses/{id}, POST .../cancel, GET .../input_items
//	                            the stored responses (in memory, the newest 4096)
//	POST /v1/images/generations deterministic PNG checkerboards, b64_json or url (a data: URL)
//	POST /tokenize              vLLM: {"prompt"} or {"messages"} -> {"count","max_model_len","tokens"};
//	                            TGI: {"inputs"} -> [{"id","text","start","stop"}];
//	                            llama.cpp server: {"content"} -> {"tokens"}
//	GET  /health                200 {}, or 503 while a loading fault is active
//	GET  /metrics               vllm:num_requests_running, vllm:num_requests_waiting,
//	                            vllm:kv_cache_usage_perc (running/64, capped at 1) and token counters
//
// # Generated text
//
// The completion of choice c is a cycle of common English words, each of which
// is exactly one cl100k_base token on its own and after a space (the first
// token has no leading space), so a completion of n tokens is exactly n
// tokens. Its length is min(max_completion_tokens or max_tokens when given,
// Config.ResponseTokens), further limited by the room left in
// Config.ContextWindow. finish_reason is "stop" ("end_turn") when the natural
// length fit and "length" ("max_tokens") when it was cut.
//
// # Prompt token formula
//
// Prompt tokens are counted with github.com/tiktoken-go/tokenizer's
// cl100k_base encoding; count(s) is the number of tokens of s.
//
//   - Chat: for each message, 3 + count(role) + count(text of content), plus
//     count(name) + 1 when a name is given, plus count(name) +
//     count(arguments) of the function of every tool_calls entry and of a
//     legacy function_call; then +3 for the reply primer. The text of content
//     is the string itself, or the concatenation of the `text` of every
//     {"type":"text"} part of a content-part array, counted once; each image
//     part ("image_url", "input_image") adds 85. The tool definitions
//     ("tools", and the legacy "functions") add count(raw JSON text of the
//     array, exactly as sent).
//   - Completions: count(prompt), summed over the entries of an array; a token
//     array counts its length.
//   - Embeddings: count of each input string (a token array counts its
//     length), summed.
//   - Anthropic messages: the chat formula over messages, where the text of
//     content is the concatenation of its text blocks; each image block adds
//     85, each tool_use block count(raw JSON of its input), each tool_result
//     block the count of its own content (string, or blocks handled the same
//     way); plus count(system) + 3 when system is present and not null (a
//     string, or its text blocks concatenated); plus count(raw JSON of
//     "tools").
//   - Responses: the chat formula over the messages the request stands for:
//     instructions as a system message, a string input as a user message,
//     each message item as a message (input_text, output_text and refusal
//     parts concatenated, input_image 85), a function_call item as
//     3 + count("assistant") + count(name) + count(arguments), a
//     function_call_output as a tool message of its output, reasoning
//     summaries as text; plus count(raw JSON of "tools") and, for a
//     json_schema text format, count(raw JSON of its schema). A
//     previous_response_id adds that response's input and output tokens.
//
// Chat answers with function tools offered call the first one the same way:
// its arguments set each property of the parameters schema ("sim" for a
// string, 1 for a number, true for a boolean).
//
// This is the formula of the gateway's exact token counter, so the usage the
// simulator reports is what the gateway predicts.
//
// POST /tokenize with messages returns that count.
//
// # Faults
//
// The X-Sim-Fault request header (or Config.Fault for requests without it)
// holds `;`-separated key=value pairs, parsed by ParseFault:
//
//	kind=error;status=503          generic error in the shape (status alone implies kind=error)
//	kind=overloaded                vLLM 503, TGI 429 "Model is overloaded", llama.cpp 503,
//	                               Ollama 503 "server busy...", OpenAI 503, Anthropic 529
//	kind=loading                   503 "Loading model" and friends; /health answers 503
//	kind=context                   the shape's context-overflow error
//	kind=cut;after=3               stream stops after 3 frames without [DONE] and the
//	                               connection drops; a JSON body is cut in half
//	kind=close                     connection dropped before any header
//	kind=stall;delay=2s            wait before the headers (counted as waiting in /metrics)
//	kind=midstream_error;after=3   an error frame in the shape after 3 frames (on /v1/responses
//	                               the typed `event: error`)
//	kind=no_usage                  no usage in responses and streams
//	kind=garbage                   200 with a body that is not JSON
//	shape=tgi                      the error shape for this request
//
// Error shapes are "openai", "vllm" (nested, integer code), "vllm_flat"
// ({"object":"error",...}), "tgi" ({"error","error_type"}), "llamacpp",
// "ollama" and "text" (text/plain). With the "ollama" shape an over-long
// prompt is silently truncated, as Ollama does, unless kind=context forces
// its error.
//
// # Pacing
//
// A stream waits Config.TTFT before its first token and 1/TokensPerSecond between tokens. A
// non-streamed answer of n tokens comes when its stream would have ended: after TTFT +
// (n-1)/TokensPerSecond (an image counts one token per 64x64 tile; embeddings wait TTFT).
//
// Every wait (TTFT, token pacing, stall) ends as soon as the client goes away;
// such requests are counted in Stats.Cancelled.
package simulator
