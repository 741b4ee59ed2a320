package simulator

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
)

// words is the fixed cycle the simulator "generates". Every word is exactly one
// cl100k_base token both on its own and after a space, so a completion of n
// words is exactly n tokens.
var words = [...]string{
	"the", "model", "server", "is", "running", "and", "this", "text", "was", "made",
	"for", "testing", "only", "so", "it", "has", "no", "real", "meaning", "but",
	"every", "word", "counts", "as", "one", "token", "in", "a", "simple", "way",
}

// spacedWords holds words with a leading space, built once at package load.
var spacedWords = func() (out [len(words)]string) {
	for i, w := range words {
		out[i] = " " + w
	}
	return out
}()

// choiceOffset spreads the choices of one request over the cycle so that they differ.
const choiceOffset = 7

// tokenAt returns token i of choice c: the first token of a completion has no
// leading space, the others do.
func tokenAt(c, i int) string {
	w := (c*choiceOffset + i) % len(words)
	if i == 0 {
		return words[w]
	}
	return spacedWords[w]
}

// completionText returns the n-token text of choice c.
func completionText(c, n int) string {
	var sb strings.Builder
	sb.Grow(n * 8)
	for i := range n {
		sb.WriteString(tokenAt(c, i))
	}
	return sb.String()
}

var errBadContent = errors.New("content must be a string or an array of content parts")

// imageTokens is the fixed count of an image part or block (OpenAI's price of
// a low-detail image tile).
const imageTokens = 85

// block is an OpenAI content part or an Anthropic content block.
type block struct {
	Type    string          `json:"type"`
	Text    string          `json:"text"`
	Input   json.RawMessage `json:"input"`
	Content json.RawMessage `json:"content"`
}

// contentTokens counts an OpenAI message content or an Anthropic content or
// system value: a string, or an array whose text parts are concatenated and
// counted once; image parts add imageTokens; in Anthropic bodies tool_use
// blocks add the count of the raw JSON of their input and tool_result blocks
// the count of their own content. Absent and null content count 0.
func (s *Server) contentTokens(raw json.RawMessage, anthropic bool) (int, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	switch raw[0] {
	case '"':
		var str string
		if err := json.Unmarshal(raw, &str); err != nil {
			return 0, err
		}
		return s.count(str), nil
	case '[':
	default:
		return 0, errBadContent
	}
	var blocks []block
	if err := json.Unmarshal(raw, &blocks); err != nil {
		return 0, errBadContent
	}
	var sb strings.Builder
	extra := 0
	for _, b := range blocks {
		switch b.Type {
		case "text":
			sb.WriteString(b.Text)
		case "image_url", "input_image", "image":
			extra += imageTokens
		case "tool_use":
			if anthropic && len(b.Input) > 0 {
				extra += s.count(string(b.Input))
			}
		case "tool_result":
			if anthropic {
				n, err := s.contentTokens(b.Content, true)
				if err != nil {
					return 0, err
				}
				extra += n
			}
		}
	}
	return s.count(sb.String()) + extra, nil
}

// contentText returns the text of a content value: the string, or the
// concatenated text parts of an array.
func contentText(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	switch raw[0] {
	case '"':
		var str string
		if err := json.Unmarshal(raw, &str); err != nil {
			return "", err
		}
		return str, nil
	case '[':
		var blocks []block
		if err := json.Unmarshal(raw, &blocks); err != nil {
			return "", errBadContent
		}
		var sb strings.Builder
		for _, b := range blocks {
			if b.Type == "text" {
				sb.WriteString(b.Text)
			}
		}
		return sb.String(), nil
	}
	return "", errBadContent
}

// rawArrayTokens counts the raw JSON text of a tools or functions array.
func (s *Server) rawArrayTokens(raw json.RawMessage) int {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '[' {
		return 0
	}
	return s.count(string(raw))
}

// promptItem is one entry of a completions prompt or an embeddings input:
// either text, or a list of token ids (then tokens is its length).
type promptItem struct {
	text     string
	isTokens bool
	tokens   int
}

var errBadPrompt = errors.New("must be a string, an array of strings, an array of tokens or an array of token arrays")

// parsePromptList decodes a string, []string, []int or [][]int value.
func parsePromptList(raw json.RawMessage) ([]promptItem, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, errBadPrompt
		}
		return []promptItem{{text: s}}, nil
	case '[':
	default:
		return nil, errBadPrompt
	}
	var strs []string
	if err := json.Unmarshal(raw, &strs); err == nil {
		out := make([]promptItem, len(strs))
		for i, s := range strs {
			out[i] = promptItem{text: s}
		}
		return out, nil
	}
	var toks []int
	if err := json.Unmarshal(raw, &toks); err == nil {
		return []promptItem{{isTokens: true, tokens: len(toks), text: string(raw)}}, nil
	}
	var lists []json.RawMessage
	if err := json.Unmarshal(raw, &lists); err != nil {
		return nil, errBadPrompt
	}
	out := make([]promptItem, len(lists))
	for i, l := range lists {
		var t []int
		if err := json.Unmarshal(l, &t); err != nil {
			return nil, errBadPrompt
		}
		out[i] = promptItem{isTokens: true, tokens: len(t), text: string(l)}
	}
	return out, nil
}
