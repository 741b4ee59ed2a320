// Package tokens counts the prompt tokens of OpenAI and Anthropic request
// bodies, so the gateway can enforce a model's context window (prompt plus
// requested output must fit) and reserve rate-limit tokens before a request
// goes upstream.
//
// # Counters
//
// A [Counter] counts the tokens of one plain text. [New] builds one from a
// spec: "estimate" (a fast upper bound, see [Estimate]), "cl100k_base" and
// "o200k_base" (OpenAI's byte-level BPE vocabularies, exact, via
// github.com/tiktoken-go/tokenizer), or "hf <path>" (a Hugging Face
// tokenizer.json with a BPE model, see the hf section below).
//
// # The chat formula
//
// Chat bodies are not plain text: the model sees them through a chat template
// that adds a few tokens per message. The package uses one fixed formula,
// shared with the gateway's load simulator, and it must stay exactly as
// written here:
//
//   - OpenAI chat ([ChatCounter.CountChat]): for each message,
//     3 + count(role) + count(content text) + (count(name) + 1 if "name" is
//     set) + count(refusal) when an assistant message has a "refusal", then
//     +3 for the reply primer. The content text is the content string, or
//     the concatenation of the "text" of every {"type":"text"} part and the
//     "refusal" of every {"type":"refusal"} part of a content-part array,
//     counted as one text. Each image part ({"type":"image_url"} or
//     {"type":"input_image"}) adds a fixed [ImageTokens] (85, OpenAI's cost
//     of a low-detail image tile). A {"type":"file"} part adds one token per
//     byte of its inline file.file_data (nothing for a file sent by id,
//     which the gateway cannot see), an {"type":"input_audio"} part one
//     token per [AudioBytesPerToken] (16) bytes of its decoded
//     input_audio.data. For each entry of an assistant message's
//     "tool_calls", count(function.name) + count(function.arguments) is
//     added; the legacy "function_call" object counts the same way. The tool
//     definitions ("tools", and the legacy "functions") count as count(raw
//     JSON text of the array, exactly as it appears in the body), and so do
//     the other fields servers render into the prompt: vLLM's "documents"
//     (raw JSON of the array), "chat_template" (count of the string) and
//     "chat_template_kwargs" (raw JSON of the object), the
//     response_format.json_schema object (raw JSON), and the text of
//     prediction.content (a string or text parts, concatenated).
//   - Anthropic messages ([ChatCounter.CountAnthropic]): the same per-message
//     formula and reply primer over "messages", with content either a string
//     or an array of blocks: the "text" of all text blocks, concatenated, is
//     the content text; each tool_use block adds count(raw JSON of "input");
//     each tool_result block adds count(its content text) where the content
//     is a string or an array of blocks handled like the message content
//     (text concatenated, images [ImageTokens]); each image block adds
//     [ImageTokens]; each document block adds count(title) + count(context)
//     and, by its source: count(data) for "text", one token per byte of
//     data for "base64" (a PDF, as an OpenAI file part), its content handled
//     like a tool_result's for "content", nothing for "url" or "file". When
//     "system" is given (a string, or an array of text blocks concatenated)
//     count(system) + 3 is added. "tools" counts as the raw JSON text of the
//     array, as for OpenAI. Thinking blocks add nothing (Anthropic drops
//     those of earlier turns).
//   - Completions ([ChatCounter.CountCompletion]): count(prompt), summed over
//     the entries of an array of strings; a token array (array of integers)
//     counts its length, an array of token arrays the sum of their lengths;
//     plus count(suffix) when "suffix" is given.
//   - Embeddings ([ChatCounter.CountEmbedding]): the same shapes, over "input".
//
// An image is recognised by the raw JSON of its "type" value ("image_url",
// "input_image" or "image" written without escapes), which is what lets
// [UpperBound] bound the image allowance with a byte search.
//
// Tolerance: for OpenAI's gpt-3.5/gpt-4/gpt-4o family, the formula is the one
// OpenAI's cookbook gives for its ChatML template (3 tokens of framing per
// message, 1 for a name, 3 for the reply primer) and matches the API's
// usage.prompt_tokens exactly for plain text messages. Tool definitions are
// rendered by OpenAI into a TypeScript-like namespace, not raw JSON; the raw
// JSON count is within about ±20% of that rendering (usually above, since
// JSON repeats quotes and keys). Images are priced by OpenAI per 512px tile
// (85 base + 170 per tile at high detail), so a high-detail image is
// under-counted. For open models behind a Jinja chat template (Llama 3:
// 4 framing tokens per message plus a 1-token begin-of-text; Qwen/ChatML: 5
// per message) the formula is within 2 tokens per message of the template
// render, and Anthropic's own count (not public) differs by its hidden system
// framing. Rendered fields are counted as raw JSON (documents, schemas,
// template arguments), which is of the size of what a template makes of
// them; a chat_template is counted as its text once, though a template can
// repeat text (the upstream's own context check still applies). File and
// audio allowances are bounds of the order of the real cost, not exact. The
// formula is for admission and rate limiting; the upstream's usage report
// is the bill.
//
// # Upper bounds
//
// [Estimate] never returns less than the exact count of cl100k_base,
// o200k_base or an hf counter for the same text, and [UpperBound] never
// returns less than any ChatCounter's count of a body, so a request whose
// UpperBound plus max output fits the window can skip exact counting. The
// arguments are in estimate.go and bound.go, and fuzz targets check them.
//
// # Lower bounds and limits
//
// [ChatCounter.LowerBound] never returns more than [ChatCounter.Count]: it
// applies the formula with each text counted as the fewest tokens its bytes
// can make, from the longest token of the vocabulary overall and per class
// of bytes (cl100k_base: 128 bytes, 42 ASCII letters, 3 digits, 48 bytes of
// non-ASCII characters; o200k_base: 128, 26, 3, 61; an hf vocabulary's own,
// its added tokens included, scaled by what its normalizers can shrink). It
// runs no BPE (about 6 ns a byte, mostly JSON), so a body that cannot fit is
// refused before any counting.
//
// [ChatCounter.CountLimit] counts like Count but stops once the count passes
// a limit: first when the lower bound passes it, then message by message,
// text by text and piece by piece; it then reports the tokens counted so far
// (more than the limit, at most the total). FuzzCountLimit checks that it
// agrees with Count.
//
// # Bounded work
//
// No input makes counting quadratic or its memory grow with the text:
//   - texts are split into segments of about 16 KiB where the split pattern
//     is known to cut (a space after a non-space, the end of a run of
//     letters, digits or punctuation, a multiple of three digits: see
//     splitCuts), so the regexp never sees more than a segment, unless the
//     text has no such place (one long word, one character repeated);
//   - a pre-token piece longer than 256 bytes is cut at positions no token
//     of the vocabulary can span (two bytes, or two characters, that no
//     token holds in a row), and its parts are merged one by one: the count
//     is exact, since BPE never merges across such a position;
//   - a part with no such position in 64 KiB (a 4 MiB one-word prompt, a
//     run of one character) counts its BPE start symbols, one per byte or
//     character: never fewer than its exact count, about four times more
//     for ASCII letters; no real prompt has one;
//   - a segment whose whitespace runs, squared and summed, pass 4 Mi bytes²
//     (the generated split regexps of these patterns backtrack over a whole
//     run of mixed spaces and newlines: 40 KB takes 2 s) counts its
//     Estimate bytes instead.
//
// [Inflight] bounds the text counted exactly at once across ChatCounters;
// a text that finds no room within its wait is counted with Estimate.
//
// # Hugging Face tokenizers
//
// "hf <path>" loads a tokenizer.json whose model is BPE (Llama 3, Qwen 2,
// Mistral, Llama 2 ...) and counts with its own vocabulary and merges, in
// pure Go. Supported: normalizers NFC, Prepend, Replace (string patterns)
// and Sequence; pre-tokenizers Split (regex or string, all behaviours),
// ByteLevel (with or without its GPT-2 regex, add_prefix_space), Metaspace
// (prepend_scheme always/first/never, split), Digits, Whitespace,
// WhitespaceSplit and Sequence; BPE options byte_fallback, unk_token,
// fuse_unk and ignore_merges; added tokens (matched literally, each counting
// one token). Split regexes are compiled with github.com/dlclark/regexp2,
// the backtracking engine tiktoken-go already uses, because Go's RE2 regexp
// has no look-ahead and every Llama/Qwen/GPT pattern ends in \s+(?!\S).
// Other component types, and combinations that could break the [Estimate]
// bound (normalizers that lengthen text, a prefix added per piece, one-byte
// added tokens next to a prefixing component), are rejected when the file is
// loaded rather than counted wrongly. Counts exclude the special tokens a
// post-processor would add (BOS/EOS): the chat formula's framing accounts
// for those. Added tokens are matched literally (their lstrip, rstrip and
// single_word flags are not applied).
//
// Exactness: on the real Llama 3 (byte-level, Split + ByteLevel, 280k
// merges) and Llama 2 (sentencepiece-style, Prepend + Replace, byte
// fallback) tokenizer.json files, and on the three tiny tokenizers in
// testdata, the hf counter gives exactly the count of Hugging Face
// tokenizers 0.23.2 (encode without special tokens) on every test text:
// 313 texts per real file (prose, code, CJK, emoji, Cyrillic, Arabic,
// Devanagari, random mixtures) and 198 per tiny file.
//
// # Cost
//
// Typical costs (2 shared cores): a 4 KB prompt cold ~150 µs (cl100k_base);
// a 20-turn conversation with 19 turns memoised ~40 µs; a realistic 4 MiB
// prompt ~180 ms, with a few MiB of scratch besides the unescaped text (the
// split regexp's match indexes, ~26 bytes a byte of text, are garbage at
// once); a 4 MiB prompt refused by CountLimit for an 8k window 16 to 25 ms;
// [Estimate] of 4 KB ~2 µs; [UpperBound] of a 1 KB body ~0.6 µs. The
// cl100k_base and o200k_base vocabularies, read back from tiktoken-go on
// first use, take about 5 and 11 MiB. The benchmarks in
// attack_bench_test.go measure these.
package tokens
