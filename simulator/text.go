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

// contentText returns the text of an OpenAI message content or an Anthropic
// content/system value: a string, or the concatenation of the `text` of every
// part whose type is "text". Absent and null content give "".
func contentText(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", err
		}
		return s, nil
	case '[':
		var parts []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		}
		if err := json.Unmarshal(raw, &parts); err != nil {
			return "", errBadContent
		}
		var sb strings.Builder
		for _, p := range parts {
			if p.Type == "text" {
				sb.WriteString(p.Text)
			}
		}
		return sb.String(), nil
	}
	return "", errBadContent
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
