package wire

import (
	"strconv"
	"unsafe"

	"github.com/tidwall/gjson"
)

// Usage is the token accounting of one response, in the gateway's own terms whatever the
// surface: PromptTokens counts every input token including the cached ones, so budgets compare
// across surfaces.
type Usage struct {
	// PromptTokens is the number of input tokens. For Anthropic it is input_tokens +
	// cache_read_input_tokens + cache_creation_input_tokens.
	PromptTokens int64
	// CompletionTokens is the number of generated tokens.
	CompletionTokens int64
	// TotalTokens is PromptTokens + CompletionTokens unless the upstream reported otherwise.
	TotalTokens int64
	// CachedTokens is the part of PromptTokens served from the upstream's prompt cache
	// (OpenAI prompt_tokens_details.cached_tokens, Anthropic cache_read_input_tokens).
	CachedTokens int64
	// ReasoningTokens is the part of CompletionTokens spent on reasoning, when the upstream
	// says (completion_tokens_details / output_tokens_details.reasoning_tokens).
	ReasoningTokens int64
	// Estimated marks counts the gateway computed itself because the upstream reported none.
	Estimated bool
}

// usageFields holds the counters found in one usage object, in either surface's names.
type usageFields struct {
	prompt, completion, total, cached     int64
	input, output, cacheRead, cacheCreate int64
	reasoning                             int64
	has                                   uint8
	details                               bool // input_tokens_details: input_tokens counts the cached ones (Responses)
}

const (
	hasPrompt uint8 = 1 << iota
	hasCompletion
	hasTotal
	hasCached
	hasInput
	hasOutput
	hasCacheRead
	hasCacheCreate
)

// view returns b as a string without copying. The string must not outlive b or be kept past
// the call that made it; gjson results taken from it alias b the same way.
func view(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// count reads a non-negative token count; strings, fractions and negatives become 0.
func count(v gjson.Result) int64 {
	if v.Type != gjson.Number {
		return 0
	}
	n := v.Int()
	if n < 0 {
		return 0
	}
	return n
}

// parse reads a usage object (either surface's field names) into f: the counters it gives
// replace those f holds (so Anthropic's message_delta, with cumulative counts, overrides
// message_start's), the others stay. read reports the counters it gave.
func (f *usageFields) parse(obj gjson.Result) (read uint8) {
	if !obj.IsObject() {
		return 0
	}
	obj.ForEach(func(k, v gjson.Result) bool {
		switch k.Str { // a case a counter, alike in shape: each surface's own names, written out
		case "prompt_tokens":
			f.prompt, read = count(v), read|hasPrompt
		case "completion_tokens":
			f.completion, read = count(v), read|hasCompletion
		case "total_tokens":
			f.total, read = count(v), read|hasTotal
		case "prompt_tokens_details":
			if c := v.Get("cached_tokens"); c.Exists() {
				f.cached, read = count(c), read|hasCached
			}
		case "input_tokens":
			f.input, read = count(v), read|hasInput
		case "output_tokens":
			f.output, read = count(v), read|hasOutput
		case "cache_read_input_tokens":
			f.cacheRead, read = count(v), read|hasCacheRead
		case "cache_creation_input_tokens":
			f.cacheCreate, read = count(v), read|hasCacheCreate
		case "input_tokens_details": // Responses: input_tokens includes these
			if c := v.Get("cached_tokens"); c.Exists() {
				f.cached, f.details = count(c), true
			}
		case "output_tokens_details", "completion_tokens_details":
			if c := v.Get("reasoning_tokens"); c.Exists() {
				f.reasoning = count(c)
			}
		}
		return true
	})
	f.has |= read
	return read
}

// usage converts the counters to a Usage. The OpenAI names win when both sets are present.
func (f *usageFields) usage() (Usage, bool) {
	const openAI = hasPrompt | hasCompletion | hasTotal
	const anthropic = hasInput | hasOutput | hasCacheRead | hasCacheCreate
	var u Usage
	switch {
	case f.has&(hasInput|hasOutput) != 0 && f.has&(hasPrompt|hasCompletion) == 0 && f.cacheRead == 0 && f.cacheCreate == 0 &&
		(f.details || f.has&hasTotal != 0):
		// Responses: input_tokens, output_tokens, total_tokens, cached tokens inside input_tokens
		u = Usage{PromptTokens: f.input, CompletionTokens: f.output, TotalTokens: f.total, CachedTokens: f.cached}
		if u.TotalTokens < u.PromptTokens+u.CompletionTokens {
			u.TotalTokens = u.PromptTokens + u.CompletionTokens
		}
	case f.has&openAI != 0:
		u = Usage{PromptTokens: f.prompt, CompletionTokens: f.completion, TotalTokens: f.total, CachedTokens: f.cached}
		if f.has&hasTotal == 0 || u.TotalTokens < u.PromptTokens+u.CompletionTokens {
			u.TotalTokens = u.PromptTokens + u.CompletionTokens
		}
	case f.has&anthropic != 0:
		u = Usage{
			PromptTokens:     f.input + f.cacheRead + f.cacheCreate,
			CompletionTokens: f.output,
			CachedTokens:     f.cacheRead,
		}
		u.TotalTokens = u.PromptTokens + u.CompletionTokens
	default:
		return Usage{}, false
	}
	u.ReasoningTokens = min(f.reasoning, u.CompletionTokens) // a part of the completion, never more
	return u, true
}

// ExtractUsage reads the usage object of a JSON response body: OpenAI chat completions,
// completions and embeddings (usage.prompt_tokens, completion_tokens, total_tokens,
// prompt_tokens_details.cached_tokens) or an Anthropic message (usage.input_tokens,
// output_tokens, cache_read_input_tokens, cache_creation_input_tokens). ok is false when the
// body has no usage object with a known counter. It does not allocate.
func ExtractUsage(s Surface, body []byte) (u Usage, ok bool) {
	if len(body) == 0 {
		return Usage{}, false
	}
	var f usageFields
	// Both surfaces' field names are read whatever s is: an OpenAI-compatible upstream behind
	// the Anthropic surface (or the reverse) still reports usable counts.
	_ = s
	f.parse(gjson.Get(view(body), "usage"))
	return f.usage()
}

// AppendUsageJSON appends u as the surface's usage object, for adding to a body that lacked
// one: OpenAI {"prompt_tokens":..,"completion_tokens":..,"total_tokens":..} (with
// prompt_tokens_details.cached_tokens when some were cached) and Anthropic
// {"input_tokens":..,"cache_creation_input_tokens":0,"cache_read_input_tokens":..,"output_tokens":..}
// where input_tokens excludes the cached tokens, as Anthropic counts them.
func AppendUsageJSON(dst []byte, s Surface, u Usage) []byte {
	return AppendUsageJSONFor(dst, s, DialectNone, u)
}

// AppendUsageJSONFor is AppendUsageJSON for a body of dialect d: a Responses body gets
// {"input_tokens":..,"input_tokens_details":{"cached_tokens":..},"output_tokens":..,
// "output_tokens_details":{"reasoning_tokens":..},"total_tokens":..}.
func AppendUsageJSONFor(dst []byte, s Surface, d Dialect, u Usage) []byte {
	if d == DialectResponses {
		dst = append(dst, `{"input_tokens":`...)
		dst = strconv.AppendInt(dst, max(u.PromptTokens, 0), 10)
		dst = append(dst, `,"input_tokens_details":{"cached_tokens":`...)
		dst = strconv.AppendInt(dst, max(u.CachedTokens, 0), 10)
		dst = append(dst, `,"cache_write_tokens":0},"output_tokens":`...)
		dst = strconv.AppendInt(dst, max(u.CompletionTokens, 0), 10)
		dst = append(dst, `,"output_tokens_details":{"reasoning_tokens":`...)
		dst = strconv.AppendInt(dst, max(u.ReasoningTokens, 0), 10)
		dst = append(dst, `},"total_tokens":`...)
		dst = strconv.AppendInt(dst, max(u.PromptTokens+u.CompletionTokens, 0), 10)
		return append(dst, '}')
	}
	if s == Anthropic {
		in := max(u.PromptTokens-u.CachedTokens, 0)
		dst = append(dst, `{"input_tokens":`...)
		dst = strconv.AppendInt(dst, in, 10)
		dst = append(dst, `,"cache_creation_input_tokens":0,"cache_read_input_tokens":`...)
		dst = strconv.AppendInt(dst, max(u.CachedTokens, 0), 10)
		dst = append(dst, `,"output_tokens":`...)
		dst = strconv.AppendInt(dst, max(u.CompletionTokens, 0), 10)
		return append(dst, '}')
	}
	total := u.TotalTokens
	if total == 0 {
		total = u.PromptTokens + u.CompletionTokens
	}
	dst = append(dst, `{"prompt_tokens":`...)
	dst = strconv.AppendInt(dst, max(u.PromptTokens, 0), 10)
	dst = append(dst, `,"completion_tokens":`...)
	dst = strconv.AppendInt(dst, max(u.CompletionTokens, 0), 10)
	dst = append(dst, `,"total_tokens":`...)
	dst = strconv.AppendInt(dst, max(total, 0), 10)
	if u.CachedTokens > 0 {
		dst = append(dst, `,"prompt_tokens_details":{"cached_tokens":`...)
		dst = strconv.AppendInt(dst, u.CachedTokens, 10)
		dst = append(dst, '}')
	}
	return append(dst, '}')
}
