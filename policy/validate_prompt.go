package policy

import (
	"strconv"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/tidwall/gjson"
)

// maxEmbeddingInputs is the most inputs one embeddings request may carry (OpenAI's limit).
const maxEmbeddingInputs = 2048

// Shapes of a prompt array, fixed by its first element.
const (
	shapeStrings = iota + 1
	shapeTokens
	shapeTokenArrays
)

// prompt validates a completions prompt: a string, or a non-empty array of strings, of token
// ids, or of non-empty token-id arrays.
func (v *validator) prompt(val gjson.Result) bool {
	if val.Type == gjson.String {
		return true
	}
	n, ok := v.promptArray("prompt", val, false)
	if ok && n > 0 && val.Get("0").Type != gjson.Number { // not one prompt of token ids
		v.info.Prompts = n
	}
	return ok
}

// embeddingsInput validates an embeddings input: a non-empty string, or an array (at most 2048
// items) of non-empty strings, of token ids, or of non-empty token-id arrays.
func (v *validator) embeddingsInput(val gjson.Result) bool {
	if val.Type == gjson.String {
		if val.Str == "" {
			return v.fail(v.emptyString("input"))
		}
		return true
	}
	n, ok := v.promptArray("input", val, true)
	if ok && n > maxEmbeddingInputs {
		return v.fail(v.arrayTooLong("input", maxEmbeddingInputs, n))
	}
	return ok
}

// promptArray validates the array forms shared by prompt and input and returns the length.
func (v *validator) promptArray(param string, val gjson.Result, noEmptyStrings bool) (int, bool) {
	const want = "a string, an array of strings, an array of integers, or an array of integer arrays"
	if !val.IsArray() {
		return 0, v.fail(v.badType(param, want, val))
	}
	shape := 0
	n, ok := v.elements(val, func(i int, item gjson.Result) bool {
		if shape == 0 {
			switch {
			case item.Type == gjson.String:
				shape = shapeStrings
			case item.Type == gjson.Number:
				shape = shapeTokens
			case item.IsArray():
				shape = shapeTokenArrays
			default:
				return v.fail(v.badType(at(param, i, ""), "a string, an integer or an array of integers", item))
			}
		}
		switch shape {
		case shapeStrings:
			if item.Type != gjson.String {
				return v.fail(v.badType(at(param, i, ""), "a string", item))
			}
			if noEmptyStrings && item.Str == "" {
				return v.fail(v.emptyString(at(param, i, "")))
			}
		case shapeTokens:
			if !v.token(param, i, -1, item) {
				return false
			}
		case shapeTokenArrays:
			if !item.IsArray() {
				return v.fail(v.badType(at(param, i, ""), "an array of integers", item))
			}
			toks, ok := v.elements(item, func(j int, tok gjson.Result) bool {
				return v.token(param, i, j, tok)
			})
			if ok && toks == 0 {
				return v.fail(v.emptyArray(at(param, i, "")))
			}
			return ok
		}
		return true
	})
	if !ok {
		return 0, false
	}
	if n == 0 {
		return 0, v.fail(v.emptyArray(param))
	}
	return n, true
}

// token validates a token id: an integer in [0, 2^31-1]. j < 0 means a flat array.
func (v *validator) token(param string, i, j int, tok gjson.Result) bool {
	if tok.Type == gjson.Number && wire.IsIntegerLiteral(tok.Raw) {
		if n, err := strconv.ParseInt(tok.Raw, 10, 64); err == nil && n >= 0 && n <= maxInt32 {
			return true
		}
	}
	path := at(param, i, "")
	if j >= 0 {
		path = at(path, j, "")
	}
	if tok.Type != gjson.Number || !wire.IsIntegerLiteral(tok.Raw) {
		return v.fail(v.badType(path, "an integer", tok))
	}
	if tok.Raw[0] == '-' {
		return v.fail(v.outOfRange(path, false, true, 0, tok.Raw))
	}
	return v.fail(v.outOfRange(path, true, true, maxInt32, tok.Raw))
}
