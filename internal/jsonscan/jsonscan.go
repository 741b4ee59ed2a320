// Package jsonscan walks JSON documents already known to be valid (gjson.Valid) faster than
// gjson does: ForEach gives exactly gjson's Result.ForEach results, but finds the end of a string
// with one vectorised byte search instead of a loop over its bytes, which is most of the work of
// walking a chat request (its messages are long strings). On a document that is not valid JSON
// it never panics and always returns, but its results are unspecified.
package jsonscan

import (
	"strconv"
	"strings"

	"github.com/tidwall/gjson"
)

// ForEach calls fn for each member of the object or element of the array t, as t.ForEach does
// (an element's key is a Number whose Num is its position); for a scalar t, fn(Result{}, t)
// once. It stops when fn returns false.
func ForEach(t gjson.Result, fn func(key, value gjson.Result) bool) {
	if !t.Exists() {
		return
	}
	if t.Type != gjson.JSON {
		fn(gjson.Result{}, t)
		return
	}
	js := t.Raw
	i := 0
	var obj bool
	var key gjson.Result
	for ; i < len(js); i++ {
		if js[i] == '{' {
			i++
			key.Type, obj = gjson.String, true
			break
		}
		if js[i] == '[' {
			i++
			key.Type, key.Num = gjson.Number, -1
			break
		}
		if js[i] > ' ' {
			return
		}
	}
	idx := 0
	for ; i < len(js); i++ {
		if obj {
			if js[i] != '"' {
				continue
			}
			s := i
			end, esc, ok := stringEnd(js, i+1)
			if !ok {
				return
			}
			key.Raw = js[s:end]
			key.Str = stringValue(key.Raw, esc)
			key.Index = s + t.Index
			i = end
		} else {
			key.Num++
		}
		for ; i < len(js); i++ {
			if js[i] <= ' ' || js[i] == ',' || js[i] == ':' {
				continue
			}
			break
		}
		s := i
		var value gjson.Result
		var ok bool
		i, value, ok = parseValue(js, i)
		if !ok {
			return
		}
		if t.Indexes != nil {
			if idx < len(t.Indexes) {
				value.Index = t.Indexes[idx]
			}
		} else {
			value.Index = s + t.Index
		}
		if !fn(key, value) {
			return
		}
		idx++
	}
}

// stringEnd returns the index just past the closing quote of the string whose content starts
// at i, and whether the string holds an escape. ok is false when the string does not end.
func stringEnd(js string, i int) (end int, esc, ok bool) {
	end, ok = stringClose(js, i)
	return end, ok && strings.IndexByte(js[i:end-1], '\\') >= 0, ok
}

// stringClose returns the index just past the closing quote of the string whose content starts
// at i; ok is false when the string does not end.
func stringClose(js string, i int) (end int, ok bool) {
	from := i
	for {
		q := strings.IndexByte(js[i:], '"')
		if q < 0 {
			return len(js), false
		}
		q += i
		n := 0 // backslashes right before the quote
		for j := q - 1; j >= from && js[j] == '\\'; j-- {
			n++
		}
		if n%2 == 0 {
			return q + 1, true
		}
		i = q + 1
	}
}

// stringValue is the Str of the string raw (quotes included): its content, unescaped by gjson
// when it holds an escape so that the text is exactly gjson's.
func stringValue(raw string, esc bool) string {
	if !esc {
		return raw[1 : len(raw)-1]
	}
	return gjson.Parse(raw).Str
}

// parseValue reads the value at i (whitespace before it skipped) as gjson's parseAny does and
// returns the index past it.
func parseValue(js string, i int) (int, gjson.Result, bool) {
	var res gjson.Result
	for ; i < len(js); i++ {
		c := js[i]
		switch {
		case c <= ' ':
			continue
		case c == '{' || c == '[':
			end := skipNested(js, i)
			res.Type, res.Raw = gjson.JSON, js[i:end]
			return end, res, true
		case c == '"':
			end, esc, ok := stringEnd(js, i+1)
			if !ok {
				return end, res, false
			}
			res.Type, res.Raw = gjson.String, js[i:end]
			res.Str = stringValue(res.Raw, esc)
			return end, res, true
		case c == 't' || c == 'f' || c == 'n' && i+1 < len(js) && js[i+1] == 'u':
			end := i + 1
			for end < len(js) && js[end] >= 'a' && js[end] <= 'z' {
				end++
			}
			res.Raw = js[i:end]
			switch c {
			case 't':
				res.Type = gjson.True
			case 'f':
				res.Type = gjson.False
			}
			return end, res, true
		case c == '+' || c == '-' || c >= '0' && c <= '9' || c == 'i' || c == 'I' || c == 'N' || c == 'n':
			end := i + 1
			for end < len(js) && js[end] > ' ' && js[end] != ',' && js[end] != ']' && js[end] != '}' {
				end++
			}
			res.Type, res.Raw = gjson.Number, js[i:end]
			res.Num, _ = strconv.ParseFloat(res.Raw, 64)
			return end, res, true
		}
	}
	return i, res, false
}

// skipNested returns the index just past the object or array that opens at i (or len(js) when
// it does not close), skipping the strings inside it whole.
func skipNested(js string, i int) int {
	depth := 0
	for i < len(js) {
		switch js[i] {
		case '"':
			end, ok := stringClose(js, i+1)
			if !ok {
				return len(js)
			}
			i = end
			continue
		case '{', '[', '(':
			depth++
		case '}', ']', ')':
			depth--
			if depth == 0 {
				return i + 1
			}
		}
		i++
	}
	return len(js)
}
