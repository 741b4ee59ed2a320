package tokens

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Counter counts the tokens of a plain text. Implementations are safe for
// concurrent use.
type Counter interface {
	// Count returns the number of tokens of text.
	Count(text string) int
	// Name identifies the vocabulary: "estimate", "cl100k_base",
	// "o200k_base" or "hf:<path of the tokenizer.json>". A Memo keys counts
	// by it.
	Name() string
}

// ErrUnknownSpec is returned by New for a spec it does not recognise.
var ErrUnknownSpec = errors.New("unknown token counter")

// New returns the Counter for spec: "estimate", "cl100k_base", "o200k_base",
// or "hf <path to tokenizer.json>".
func New(spec string) (Counter, error) {
	spec = strings.TrimSpace(spec)
	switch spec {
	case "estimate":
		return Estimate(), nil
	case "cl100k_base":
		return cl100k(), nil
	case "o200k_base":
		return o200k(), nil
	}
	if path, ok := strings.CutPrefix(spec, "hf "); ok {
		path = strings.TrimSpace(path)
		if path == "" {
			return nil, fmt.Errorf("creating counter %q: missing tokenizer.json path", spec)
		}
		c, err := LoadHF(path)
		if err != nil {
			return nil, fmt.Errorf("creating counter %q: %w", spec, err)
		}
		return c, nil
	}
	return nil, fmt.Errorf("creating counter %q: %w", spec, ErrUnknownSpec)
}

// maxWhitespaceCost bounds the sum of the squared lengths of the whitespace
// runs of a text that tiktoken-go's split regexp is given (about 5 ms of
// matching; see whitespaceCost).
const maxWhitespaceCost = 1 << 22

// whitespaceCost returns the sum of the squared lengths, in bytes, of the
// runs of whitespace in s. The generated split regexp of tiktoken-go's
// patterns (also used for the same patterns in hf tokenizers) backtracks
// over a whole whitespace run for each piece it finds in it, so a run of
// alternating spaces and newlines costs time quadratic in its length (40 KB:
// 2 s). Segments over maxWhitespaceCost are counted with their Estimate
// bytes instead: never an under-count, and only for text no real prompt
// looks like.
func whitespaceCost(s string) int {
	cost, run := 0, 0
	for i := 0; i < len(s); {
		c := s[i]
		size := 1
		space := c == ' ' || c >= '\t' && c <= '\r'
		if c >= utf8.RuneSelf {
			var r rune
			r, size = utf8.DecodeRuneInString(s[i:])
			space = unicode.IsSpace(r)
		}
		if space {
			run += size
		} else if run > 0 {
			cost += run * run
			run = 0
		}
		i += size
	}
	return cost + run*run
}
