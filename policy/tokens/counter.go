package tokens

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/tiktoken-go/tokenizer"
	"github.com/tiktoken-go/tokenizer/codec"
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

// tiktokenCounter counts with one of tiktoken's byte-level BPE codecs.
type tiktokenCounter struct {
	name  string
	codec tokenizer.Codec
}

// The codecs are immutable once built (their vocabularies are package-level
// tables in tiktoken-go), so each is created once, on first use.
var (
	cl100k = sync.OnceValue(func() *tiktokenCounter {
		return &tiktokenCounter{name: "cl100k_base", codec: codec.NewCl100kBase()}
	})
	o200k = sync.OnceValue(func() *tiktokenCounter {
		return &tiktokenCounter{name: "o200k_base", codec: codec.NewO200kBase()}
	})
)

// maxWhitespaceCost bounds the sum of the squared lengths of the whitespace
// runs of a text that tiktoken-go's split regexp is given (about 5 ms of
// matching; see whitespaceCost).
const maxWhitespaceCost = 1 << 22

// whitespaceCost returns the sum of the squared lengths, in bytes, of the
// runs of whitespace in s. tiktoken-go's generated split regexp backtracks
// over a whole whitespace run for each piece it finds in it, so a run of
// alternating spaces and newlines costs time quadratic in its length (40 KB:
// 2 s). Texts over maxWhitespaceCost are counted with Estimate instead: never
// an under-count, and only for texts no real prompt looks like.
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

// Count returns the number of tokens of text. Special-token strings such as
// "<|endoftext|>" count as ordinary text, as tiktoken's encode_ordinary does.
func (t *tiktokenCounter) Count(text string) int {
	if text == "" {
		return 0
	}
	if whitespaceCost(text) > maxWhitespaceCost {
		return Estimate().Count(text)
	}
	n, err := t.codec.Count(text)
	if err != nil {
		// The codec only fails inside its regexp engine (a match timeout,
		// which is not set); fall back to the byte bound rather than
		// under-count.
		return Estimate().Count(text)
	}
	return n
}

// Name returns the encoding name, "cl100k_base" or "o200k_base".
func (t *tiktokenCounter) Name() string { return t.name }
