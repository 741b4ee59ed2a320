package tokens

import (
	"encoding/binary"
	"math/bits"
	"unicode/utf8"
	"unsafe"

	"golang.org/x/text/unicode/norm"
)

// Estimate returns a Counter whose count is a fast upper bound of the exact
// count of cl100k_base, o200k_base and any hf counter for the same text. It
// reads the text once and allocates nothing.
//
// The count is 1 (for a non-empty text) plus the sum over the text of:
//   - 1 per byte of a valid UTF-8 sequence,
//   - 3 per byte that is not part of a valid UTF-8 sequence,
//   - for the few runes that Unicode NFC normalisation can lengthen
//     (composition exclusions such as U+0958 or U+FB2C, in the blocks listed
//     in nfcMayGrow), the byte length of their canonical decomposition
//     instead of their own length.
//
// Why it bounds the exact counts:
//   - Byte-level BPE (cl100k_base, o200k_base, hf tokenizers with a ByteLevel
//     pre-tokenizer or byte_fallback) starts from one symbol per byte and
//     every merge replaces two symbols by one, so a piece never has more
//     tokens than bytes, and the pieces partition the text. An invalid byte
//     stays one byte for cl100k_base and o200k_base, but an hf counter
//     replaces it (a run of them) by U+FFFD, 3 bytes, hence the weight 3.
//   - Character-level BPE with byte_fallback (sentencepiece-style, Llama 2,
//     Mistral) starts from one symbol per character; a character missing from
//     the vocabulary becomes one <0xXX> token per byte of its UTF-8 form, or a
//     single unk token: at most its byte length either way. The Metaspace
//     replacement of a space (1 byte) is one character that the loader
//     requires to be in the vocabulary, so it stays 1 token; the one
//     prepended "▁" is the +1. The loader rejects normalizers that could
//     lengthen text otherwise (only NFC, a one-rune Prepend and Replace with a
//     replacement no longer than what it replaces are accepted).
//   - NFC only lengthens a text through runes whose NFC form differs from
//     themselves (NFC_Quick_Check=No); their NFC form is at most their full
//     canonical decomposition, and composition of the rest only shortens.
//   - Added tokens replace a literal run of bytes by one token.
//
// FuzzEstimateBound checks the bound against cl100k_base and o200k_base on
// arbitrary input, and the hf tests check it on the test tokenizers.
func Estimate() Counter { return estimateCounter{} }

// estimateCounter is the zero-size Counter returned by Estimate.
type estimateCounter struct{}

// Count returns the upper bound described on Estimate.
func (estimateCounter) Count(text string) int {
	if text == "" {
		return 0
	}
	return 1 + estimateBytes(text)
}

// Name returns "estimate".
func (estimateCounter) Name() string { return "estimate" }

// estimateBytes is Estimate's sum without the +1: 1 per valid byte, 3 per
// invalid byte, decomposition length for runes NFC may lengthen.
func estimateBytes(s string) int {
	n := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			// ASCII run: count it without decoding, 32 bytes at a time, then eight.
			j := asciiRunEnd(s, i+1)
			n += j - i
			i = j
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			n += 3
		case nfcMayGrow(r):
			d := len(norm.NFC.PropertiesString(s[i:]).Decomposition())
			n += max(size, d)
		default:
			n += size
		}
		i += size
	}
	return n
}

// asciiRunEnd returns the index of the first byte at or after i in s that is not ASCII, or len(s).
func asciiRunEnd(s string, i int) int {
	for ; i+32 <= len(s); i += 32 {
		b := unsafe.Slice(unsafe.StringData(s[i:]), 32)
		if (binary.LittleEndian.Uint64(b)|binary.LittleEndian.Uint64(b[8:])|binary.LittleEndian.Uint64(b[16:])|
			binary.LittleEndian.Uint64(b[24:]))&0x8080808080808080 != 0 {
			break
		}
	}
	for ; i+8 <= len(s); i += 8 {
		if w := binary.LittleEndian.Uint64(unsafe.Slice(unsafe.StringData(s[i:]), 8)); w&0x8080808080808080 != 0 {
			return i + bits.TrailingZeros64(w&0x8080808080808080)/8
		}
	}
	for i < len(s) && s[i] < utf8.RuneSelf {
		i++
	}
	return i
}

// nfcMayGrow reports whether r lies in a block holding runes whose NFC form
// is longer in UTF-8 than the rune (from DerivedNormalizationProps.txt,
// NFC_QC=No: U+0344, Indic and Tibetan nukta forms U+0958..U+0FB9, Greek
// U+1FEE, U+2ADC, Hebrew presentation forms U+FB1D..U+FB4E, musical symbols
// U+1D15E..U+1D1C0). The blocks are a superset; the decomposition length
// used for them is itself an over-estimate.
func nfcMayGrow(r rune) bool {
	switch {
	case r < 0x340:
		return false
	case r < 0x345:
		return true
	case r < 0x958:
		return false
	case r < 0xFB0:
		return true
	case r < 0x1F00:
		return false
	case r < 0x2000:
		return true
	case r == 0x2ADC:
		return true
	case r < 0xFB1D:
		return false
	case r < 0xFB50:
		return true
	case r < 0x1D15E:
		return false
	case r < 0x1D1C1:
		return true
	}
	return false
}

// maxTokenBytes returns the bound LowerBound uses: an Estimate count is at
// least one token per valid byte.
func (estimateCounter) maxTokenBytes() tokenBytes { return tokenBytes{all: 1} }
