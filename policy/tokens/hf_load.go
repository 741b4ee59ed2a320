package tokens

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"
)

// ErrUnsupported is wrapped by LoadHF errors about a tokenizer.json component
// the package cannot count exactly.
var ErrUnsupported = errors.New("unsupported tokenizer component")

// hfFile is the part of a tokenizer.json the counter reads.
type hfFile struct {
	AddedTokens  []hfAddedToken `json:"added_tokens"`
	Normalizer   *hfComponent   `json:"normalizer"`
	PreTokenizer *hfComponent   `json:"pre_tokenizer"`
	Model        hfModel        `json:"model"`
}

// hfAddedToken is one entry of added_tokens.
type hfAddedToken struct {
	ID      int    `json:"id"`
	Content string `json:"content"`
}

// hfModel is the "model" object; only BPE is supported.
type hfModel struct {
	Type                    string            `json:"type"`
	Vocab                   map[string]uint32 `json:"vocab"`
	Merges                  json.RawMessage   `json:"merges"`
	UnkToken                *string           `json:"unk_token"`
	ByteFallback            bool              `json:"byte_fallback"`
	FuseUnk                 bool              `json:"fuse_unk"`
	IgnoreMerges            bool              `json:"ignore_merges"`
	Dropout                 *float64          `json:"dropout"`
	ContinuingSubwordPrefix *string           `json:"continuing_subword_prefix"`
	EndOfWordSuffix         *string           `json:"end_of_word_suffix"`
}

// hfComponent is a normalizer or pre-tokenizer of any type.
type hfComponent struct {
	Type             string        `json:"type"`
	Normalizers      []hfComponent `json:"normalizers"`
	PreTokenizers    []hfComponent `json:"pretokenizers"`
	Prepend          string        `json:"prepend"`
	Pattern          *hfPattern    `json:"pattern"`
	Content          string        `json:"content"`
	Behavior         string        `json:"behavior"`
	Invert           bool          `json:"invert"`
	AddPrefixSpace   *bool         `json:"add_prefix_space"`
	UseRegex         *bool         `json:"use_regex"`
	Replacement      string        `json:"replacement"`
	PrependScheme    string        `json:"prepend_scheme"`
	Split            *bool         `json:"split"`
	IndividualDigits bool          `json:"individual_digits"`
}

// hfPattern is a Split or Replace pattern: a literal string or a regex.
type hfPattern struct {
	String *string `json:"String"`
	Regex  *string `json:"Regex"`
}

// LoadHF loads a Hugging Face tokenizer.json with a BPE model and returns a
// Counter named "hf:<path>" (the cleaned path, so that two models' files
// named tokenizer.json never share memo entries) that counts with its
// vocabulary and merges.
func LoadHF(path string) (Counter, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("loading tokenizer: %w", err)
	}
	c, err := ParseHF("hf:"+filepath.Clean(path), data)
	if err != nil {
		return nil, fmt.Errorf("loading tokenizer %s: %w", path, err)
	}
	return c, nil
}

// ParseHF builds a Counter named name from the contents of a tokenizer.json.
func ParseHF(name string, data []byte) (Counter, error) {
	var f hfFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("parsing tokenizer.json: %w", err)
	}
	h := &hfCounter{name: name}
	if f.Normalizer != nil {
		if err := h.addNormalizer(*f.Normalizer); err != nil {
			return nil, err
		}
	}
	if f.PreTokenizer != nil {
		if err := h.addPreTokenizer(*f.PreTokenizer); err != nil {
			return nil, err
		}
	}
	if h.prefixes > 1 {
		return nil, fmt.Errorf("checking prefixes: more than one component adds a prefix: %w", ErrUnsupported)
	}
	model, err := newBPE(&f.Model, h.byteLevel)
	if err != nil {
		return nil, err
	}
	h.model = model
	for _, r := range h.mustHaveRunes {
		if _, ok := f.Model.Vocab[string(r)]; !ok && !h.byteLevel {
			return nil, fmt.Errorf("checking vocabulary: replacement %q is not a token: %w", r, ErrUnsupported)
		}
	}
	if h.prefixes > 0 {
		// Each text between added tokens gets the prefix; an added token of
		// at least 2 bytes pays for it in the Estimate bound.
		for _, t := range f.AddedTokens {
			if len(t.Content) == 1 {
				return nil, fmt.Errorf("checking added token %q: one byte long with a prefixing component: %w", t.Content, ErrUnsupported)
			}
		}
	}
	h.added = newAddedMatcher(f.AddedTokens)
	h.setCuts()
	h.setMaxBytes(f.AddedTokens)
	return h, nil
}

// setMaxBytes bounds the bytes of text one token stands for (see
// tokenBytes): the longest token, added token or unknown character (4
// bytes), per class; scaled by what normalizers can shrink. NFC composes up
// to 3 bytes into 1 (Hangul jamo into a syllable, the Kelvin sign into "K"),
// counted as 4, and may change a character's class; a Replace shortens its
// pattern to its content. A model whose unknown characters fuse into one
// token has no bound, unless byte fallback leaves no character unknown.
func (h *hfCounter) setMaxBytes(added []hfAddedToken) {
	if h.model.fuseUnk && !h.byteLevel && h.model.unknownPossible() {
		return
	}
	var extra []string
	for _, t := range added {
		extra = append(extra, t.Content)
	}
	if !h.byteLevel {
		extra = append(extra, "\U0010FFFF") // an unknown character
	}
	b := classBytes(h.model.tokens, extra)
	for _, n := range h.norms {
		switch n.kind {
		case normNFC:
			b = tokenBytes{all: b.all * 4}
		case normReplace:
			if n.b == "" {
				return
			}
			if ratio := (len(n.a) + len(n.b) - 1) / len(n.b); ratio > 1 {
				b.all *= ratio
			}
			if st := statsOf(n.a); st.letters+st.digits+st.wide > 0 || st.valid < len(n.a) {
				b = tokenBytes{all: b.all}
			}
		}
	}
	h.maxBytes = b
}

// maxTokenBytes returns the most bytes of text one token covers, per class.
func (h *hfCounter) maxTokenBytes() tokenBytes { return h.maxBytes }

// addNormalizer appends the normalizer n (flattening sequences).
func (h *hfCounter) addNormalizer(n hfComponent) error {
	switch n.Type {
	case "Sequence":
		for _, s := range n.Normalizers {
			if err := h.addNormalizer(s); err != nil {
				return err
			}
		}
	case "NFC":
		h.norms = append(h.norms, normStep{kind: normNFC})
	case "Prepend":
		if utf8.RuneCountInString(n.Prepend) != 1 {
			return fmt.Errorf("loading normalizer Prepend %q: only one rune: %w", n.Prepend, ErrUnsupported)
		}
		r, _ := utf8.DecodeRuneInString(n.Prepend)
		h.mustHaveRunes = append(h.mustHaveRunes, r)
		h.prefixes++
		h.norms = append(h.norms, normStep{kind: normPrepend, a: n.Prepend})
	case "Replace":
		if n.Pattern == nil || n.Pattern.String == nil || *n.Pattern.String == "" {
			return fmt.Errorf("loading normalizer Replace: only string patterns: %w", ErrUnsupported)
		}
		from, to := *n.Pattern.String, n.Content
		switch {
		case len(to) <= len(from):
		case utf8.RuneCountInString(to) == 1 && utf8.RuneCountInString(from) == 1:
			// One rune for one rune (" " -> "▁"): the loader checks the
			// replacement is a token, so it stays one token.
			r, _ := utf8.DecodeRuneInString(to)
			h.mustHaveRunes = append(h.mustHaveRunes, r)
		default:
			return fmt.Errorf("loading normalizer Replace %q -> %q: lengthens text: %w", from, to, ErrUnsupported)
		}
		h.norms = append(h.norms, normStep{kind: normReplace, a: from, b: to})
	default:
		return fmt.Errorf("loading normalizer %q: %w", n.Type, ErrUnsupported)
	}
	return nil
}

// addPreTokenizer appends the pre-tokenizer p (flattening sequences).
func (h *hfCounter) addPreTokenizer(p hfComponent) error {
	switch p.Type {
	case "Sequence":
		for _, s := range p.PreTokenizers {
			if err := h.addPreTokenizer(s); err != nil {
				return err
			}
		}
		return nil
	case "Split":
		if p.Pattern == nil {
			return fmt.Errorf("loading pre_tokenizer Split: missing pattern: %w", ErrUnsupported)
		}
		b, err := parseBehavior(p.Behavior)
		if err != nil {
			return err
		}
		step := preStep{kind: preSplit, behavior: b, invert: p.Invert}
		switch {
		case p.Pattern.Regex != nil:
			re, err := compileRegex(*p.Pattern.Regex)
			if err != nil {
				return err
			}
			step.re, step.pattern, step.next = re, *p.Pattern.Regex, pieceFuncs[*p.Pattern.Regex]
		case p.Pattern.String != nil && *p.Pattern.String != "":
			step.lit = *p.Pattern.String
		default:
			return fmt.Errorf("loading pre_tokenizer Split: empty pattern: %w", ErrUnsupported)
		}
		h.pre = append(h.pre, step)
	case "ByteLevel":
		h.byteLevel = true
		step := preStep{kind: preByteLevel}
		if p.AddPrefixSpace != nil && *p.AddPrefixSpace {
			if len(h.pre) > 0 {
				// Every piece of the earlier steps would get its own space.
				return fmt.Errorf("loading pre_tokenizer ByteLevel: add_prefix_space after another pre-tokenizer: %w", ErrUnsupported)
			}
			step.prefix = true
			h.prefixes++
		}
		if p.UseRegex == nil || *p.UseRegex {
			re, err := compileRegex(gpt2Pattern)
			if err != nil {
				return err
			}
			step.re, step.pattern = re, gpt2Pattern
		}
		h.pre = append(h.pre, step)
	case "Metaspace":
		repl := p.Replacement
		if repl == "" {
			repl = "▁"
		}
		if utf8.RuneCountInString(repl) != 1 {
			return fmt.Errorf("loading pre_tokenizer Metaspace %q: only one rune: %w", repl, ErrUnsupported)
		}
		r, _ := utf8.DecodeRuneInString(repl)
		h.mustHaveRunes = append(h.mustHaveRunes, r)
		step := preStep{kind: preMetaspace, lit: repl, prepend: prependAlways, split: p.Split == nil || *p.Split}
		switch p.PrependScheme {
		case "", "always":
			if p.PrependScheme == "" && p.AddPrefixSpace != nil && !*p.AddPrefixSpace {
				step.prepend = prependNever
			}
		case "first":
			step.prepend = prependFirst
		case "never":
			step.prepend = prependNever
		default:
			return fmt.Errorf("loading pre_tokenizer Metaspace prepend_scheme %q: %w", p.PrependScheme, ErrUnsupported)
		}
		if step.prepend != prependNever {
			if len(h.pre) > 0 {
				return fmt.Errorf("loading pre_tokenizer Metaspace: prepending after another pre-tokenizer: %w", ErrUnsupported)
			}
			h.prefixes++
		}
		h.pre = append(h.pre, step)
	case "Digits":
		step := preStep{kind: preSplit, behavior: behaviorContiguous}
		if p.IndividualDigits {
			step.behavior = behaviorIsolated
		}
		re, err := compileRegex(`\p{Nd}`)
		if err != nil {
			return err
		}
		step.re = re
		h.pre = append(h.pre, step)
	case "Whitespace":
		re, err := compileRegex(`\w+|[^\w\s]+`)
		if err != nil {
			return err
		}
		h.pre = append(h.pre, preStep{kind: preSplit, behavior: behaviorRemoved, invert: true, re: re})
	case "WhitespaceSplit":
		re, err := compileRegex(`\s+`)
		if err != nil {
			return err
		}
		h.pre = append(h.pre, preStep{kind: preSplit, behavior: behaviorRemoved, re: re})
	default:
		return fmt.Errorf("loading pre_tokenizer %q: %w", p.Type, ErrUnsupported)
	}
	return nil
}

// parseBehavior maps a Split behaviour name to its constant.
func parseBehavior(s string) (behavior, error) {
	switch strings.ToLower(s) {
	case "isolated", "":
		return behaviorIsolated, nil
	case "removed":
		return behaviorRemoved, nil
	case "mergedwithprevious":
		return behaviorMergedWithPrevious, nil
	case "mergedwithnext":
		return behaviorMergedWithNext, nil
	case "contiguous":
		return behaviorContiguous, nil
	}
	return 0, fmt.Errorf("loading Split behavior %q: %w", s, ErrUnsupported)
}
