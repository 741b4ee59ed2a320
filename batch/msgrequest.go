package batch

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/tidwall/gjson"
)

// Defaults of RequestLimits, those of Anthropic's documentation.
const (
	// DefaultMaxRequests is the most requests a Message Batch may hold (Anthropic: 100,000).
	DefaultMaxRequests = 100_000
	// DefaultMaxBatchBytes bounds the whole create body (Anthropic: 256 MB).
	DefaultMaxBatchBytes = 256 << 20
	// DefaultMaxRequestBytes bounds one request of a Message Batch ({"custom_id","params"}),
	// like DefaultMaxLineBytes for an OpenAI input line.
	DefaultMaxRequestBytes = DefaultMaxLineBytes
	// MaxMessageCustomIDLen is the longest Anthropic custom_id (^[a-zA-Z0-9_-]{1,64}$).
	MaxMessageCustomIDLen = 64
)

// CustomIDPattern is the pattern an Anthropic custom_id must match, as Anthropic's API words it.
const CustomIDPattern = "^[a-zA-Z0-9_-]{1,64}$"

// RequestLimits bounds what ReadMessageBatchRequest accepts. Zero fields take the defaults.
type RequestLimits struct {
	// MaxRequests is the most requests. Default: DefaultMaxRequests.
	MaxRequests int
	// MaxBytes is the longest body in bytes. Default: DefaultMaxBatchBytes.
	MaxBytes int64
	// MaxRequestBytes is the longest single request in bytes; it is the most the reader holds
	// in memory at once. Default: DefaultMaxRequestBytes.
	MaxRequestBytes int
}

func (l RequestLimits) withDefaults() RequestLimits {
	if l.MaxRequests <= 0 {
		l.MaxRequests = DefaultMaxRequests
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBatchBytes
	}
	if l.MaxRequestBytes <= 0 {
		l.MaxRequestBytes = DefaultMaxRequestBytes
	}
	return l
}

// Codes of the errors ReadMessageBatchRequest returns, beyond those of input files. Anthropic's
// envelope does not carry a code; it is the Reason seen by logs and metrics.
const (
	// CodeInvalidJSON: the body is not valid JSON.
	CodeInvalidJSON = "invalid_json"
	// CodeUnknownParameter: a key Message Batches do not define.
	CodeUnknownParameter = "unknown_parameter"
	// CodeEmptyArray: requests is empty.
	CodeEmptyArray = "empty_array"
	// CodeArrayTooLong: requests holds more than RequestLimits.MaxRequests.
	CodeArrayTooLong = "array_above_max_length"
	// CodePatternMismatch: a custom_id does not match CustomIDPattern.
	CodePatternMismatch = "string_pattern_mismatch"
)

// ReadMessageBatchRequest reads and checks the body of POST /v1/messages/batches,
// {"requests":[{"custom_id":"...","params":{...}}, ...]}, and returns one Task per request whose
// Offset and Size locate its params object in the body.
//
// It streams: it holds one request at a time (RequestLimits.MaxRequestBytes) and remembers
// custom_ids by hash. Every request must be an object with exactly the keys custom_id (matching
// CustomIDPattern, unique in the batch) and params (an object); there must be 1 to MaxRequests
// of them, and nothing else in the body. The params themselves are not checked here: as at
// Anthropic, a request whose params are refused becomes an errored result when it runs (see
// CheckMessageParams).
//
// A fault of the body is a *wire.Error (400, or 413 for a body or request over its limit) worded
// as Anthropic's API words it ("requests.3.custom_id: ..."), for the Anthropic envelope; a
// failure to read r is returned wrapped, so that the caller can tell a client that went away
// or an http.MaxBytesError apart.
func ReadMessageBatchRequest(r io.Reader, lim RequestLimits) ([]Task, error) {
	lim = lim.withDefaults()
	s := &scanner{br: bufio.NewReaderSize(r, 64<<10), lim: lim}
	tasks, err := s.body()
	if err != nil {
		return nil, err
	}
	return tasks, nil
}

// scanner reads a Message Batches body byte by byte, keeping only the current request.
type scanner struct {
	br    *bufio.Reader
	lim   RequestLimits
	off   int64 // offset of the next byte
	buf   []byte
	ids   *idSet
	tasks []Task
}

// errUnexpectedEOF marks a body that ends in the middle of the JSON.
var errUnexpectedEOF = errors.New("unexpected end of the body")

// next returns the next byte. At the end of the body it returns io.EOF.
func (s *scanner) next() (byte, error) {
	c, err := s.br.ReadByte()
	if err != nil {
		if err == io.EOF {
			return 0, io.EOF
		}
		return 0, fmt.Errorf("reading the message batch request: %w", err)
	}
	s.off++
	if s.off > s.lim.MaxBytes {
		return 0, wire.RequestTooLarge(s.lim.MaxBytes)
	}
	return c, nil
}

// skip returns the next byte that is not JSON whitespace.
func (s *scanner) skip() (byte, error) {
	for {
		c, err := s.next()
		if err != nil {
			return 0, err
		}
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		}
		return c, nil
	}
}

// need is skip where the end of the body is an error.
func (s *scanner) need() (byte, error) {
	c, err := s.skip()
	if err == io.EOF {
		return 0, s.invalid(errUnexpectedEOF.Error())
	}
	return c, err
}

// invalid is the 400 for a body that is not valid JSON.
func (s *scanner) invalid(why string) *wire.Error {
	e := wire.InvalidRequest("", "The request body is not valid JSON: %s (at byte %d).", why, s.off)
	e.Code = CodeInvalidJSON
	return e
}

// unexpected is the 400 for byte c where the JSON does not allow it.
func (s *scanner) unexpected(c byte) *wire.Error {
	return s.invalid("unexpected " + strconv.QuoteRune(rune(c)))
}

// problem is a 400 about the field at path (OpenAI-style "requests[3].custom_id"), worded
// "requests.3.custom_id: msg" as Anthropic's messages are.
func problem(code, path, format string, args ...any) *wire.Error {
	e := wire.InvalidRequest(path, "%s: %s", dotted(path), fmt.Sprintf(format, args...))
	e.Code = code
	return e
}

// dotted turns requests[3].custom_id into requests.3.custom_id.
func dotted(path string) string {
	return strings.NewReplacer("[", ".", "]", "").Replace(path)
}

func at(i int, rest string) string { return "requests[" + strconv.Itoa(i) + "]" + rest }

// body reads the top-level object.
func (s *scanner) body() ([]Task, error) {
	c, err := s.skip()
	if err == io.EOF {
		return nil, s.invalid("the body is empty")
	}
	if err != nil {
		return nil, err
	}
	if c != '{' {
		return nil, problem(CodeInvalidType, "body", "Input should be an object")
	}
	seen := false
	if c, err = s.need(); err != nil {
		return nil, err
	}
	if c != '}' {
		for {
			if c != '"' {
				return nil, s.unexpected(c)
			}
			key, err := s.key()
			if err != nil {
				return nil, err
			}
			if c, err = s.need(); err != nil {
				return nil, err
			}
			if c != ':' {
				return nil, s.unexpected(c)
			}
			switch key {
			case "requests":
				if seen {
					return nil, problem(CodeDuplicateKey, "requests", "duplicate key in the JSON body; send each field once")
				}
				seen = true
				if err := s.requests(); err != nil {
					return nil, err
				}
			default:
				return nil, problem(CodeUnknownParameter, echo(key), "Extra inputs are not permitted")
			}
			if c, err = s.need(); err != nil {
				return nil, err
			}
			if c == '}' {
				break
			}
			if c != ',' {
				return nil, s.unexpected(c)
			}
			if c, err = s.need(); err != nil {
				return nil, err
			}
		}
	}
	switch c, err := s.skip(); {
	case err == nil:
		return nil, s.unexpected(c)
	case err != io.EOF:
		return nil, err
	}
	if !seen {
		return nil, problem(CodeMissingParam, "requests", "Field required")
	}
	return s.tasks, nil
}

// maxKeyLen bounds a top-level key kept for comparison; longer keys are unknown anyway.
const maxKeyLen = 256

// key reads a string whose opening quote was just read and returns it as written (escapes
// are not decoded, so "requ\u0065sts" is an unknown key).
func (s *scanner) key() (string, error) {
	var b []byte
	esc := false
	for {
		c, err := s.next()
		if err == io.EOF {
			return "", s.invalid(errUnexpectedEOF.Error())
		}
		if err != nil {
			return "", err
		}
		switch {
		case esc:
			esc = false
		case c == '\\':
			esc = true
		case c == '"':
			return string(b), nil
		case c < 0x20:
			return "", s.unexpected(c)
		}
		if len(b) < maxKeyLen {
			b = append(b, c)
		}
	}
}

// requests reads the requests array; its ':' was just read.
func (s *scanner) requests() error {
	c, err := s.need()
	if err != nil {
		return err
	}
	if c != '[' {
		return problem(CodeInvalidType, "requests", "Input should be a valid list")
	}
	if c, err = s.need(); err != nil {
		return err
	}
	if c == ']' {
		return problem(CodeEmptyArray, "requests", "List should have at least 1 item after validation, not 0")
	}
	s.ids = newIDSet(1024)
	for i := 0; ; i++ {
		if i >= s.lim.MaxRequests {
			return problem(CodeArrayTooLong, "requests", "List should have at most %d items after validation", s.lim.MaxRequests)
		}
		if c != '{' {
			return problem(CodeInvalidType, at(i, ""), "Input should be a valid dictionary")
		}
		start := s.off - 1
		obj, err := s.object(i)
		if err != nil {
			return err
		}
		if err := s.request(obj, start, i); err != nil {
			return err
		}
		if c, err = s.need(); err != nil {
			return err
		}
		if c == ']' {
			return nil
		}
		if c != ',' {
			return s.unexpected(c)
		}
		if c, err = s.need(); err != nil {
			return err
		}
	}
}

// object reads request i, an object whose '{' was just read, into s.buf and returns it. It
// tracks strings and nesting only; validity is checked on the whole object afterwards. It
// works on the bufio buffer a chunk at a time rather than byte by byte.
func (s *scanner) object(i int) ([]byte, error) {
	buf := append(s.buf[:0], '{')
	depth := 1
	inStr, esc := false, false
	for depth > 0 {
		if s.br.Buffered() == 0 {
			if _, err := s.br.Peek(1); err == io.EOF {
				return nil, s.invalid(errUnexpectedEOF.Error())
			} else if err != nil {
				return nil, fmt.Errorf("reading the message batch request: %w", err)
			}
		}
		chunk, _ := s.br.Peek(s.br.Buffered())
		n := 0
		for n < len(chunk) && depth > 0 {
			c := chunk[n]
			n++
			if inStr {
				switch {
				case esc:
					esc = false
				case c == '\\':
					esc = true
				case c == '"':
					inStr = false
				}
				continue
			}
			switch c {
			case '"':
				inStr = true
			case '{', '[':
				if depth++; depth > MaxDepth {
					return nil, problem(CodeNestingTooDeep, at(i, ""), "the request nests objects and arrays deeper than %d levels", MaxDepth)
				}
			case '}', ']':
				depth--
			}
		}
		if s.off += int64(n); s.off > s.lim.MaxBytes {
			return nil, wire.RequestTooLarge(s.lim.MaxBytes)
		}
		if len(buf)+n > s.lim.MaxRequestBytes {
			return nil, &wire.Error{Status: http.StatusRequestEntityTooLarge, Type: wire.TypeInvalidRequest, Code: CodeRequestTooLarge,
				Param: at(i, ""), Message: fmt.Sprintf("%s: the request is larger than the limit of %d bytes", dotted(at(i, "")), s.lim.MaxRequestBytes)}
		}
		buf = append(buf, chunk[:n]...)
		_, _ = s.br.Discard(n)
	}
	s.buf = buf
	return buf, nil
}

// request checks request i (obj, whose first byte is at offset start) and records its task.
func (s *scanner) request(obj []byte, start int64, i int) error {
	if !utf8.Valid(obj) || !gjson.ValidBytes(obj) {
		e := problem(CodeInvalidJSON, at(i, ""), "the request is not valid JSON")
		return e
	}
	var customID, params gjson.Result
	var bad *wire.Error
	gjson.Parse(view(obj)).ForEach(func(k, v gjson.Result) bool {
		var slot *gjson.Result
		switch k.Str {
		case "custom_id":
			slot = &customID
		case "params":
			slot = &params
		default:
			bad = problem(CodeUnknownParameter, at(i, "."+echo(k.Str)), "Extra inputs are not permitted")
			return false
		}
		if slot.Exists() {
			bad = problem(CodeDuplicateKey, at(i, "."+k.Str), "duplicate key in the JSON body; send each field once")
			return false
		}
		*slot = v
		return true
	})
	if bad != nil {
		return bad
	}
	switch {
	case !customID.Exists():
		return problem(CodeMissingParam, at(i, ".custom_id"), "Field required")
	case customID.Type != gjson.String:
		return problem(CodeInvalidType, at(i, ".custom_id"), "Input should be a valid string")
	case !validMessageCustomID(customID.Str):
		return problem(CodePatternMismatch, at(i, ".custom_id"), "String should match pattern '%s'", CustomIDPattern)
	case !params.Exists():
		return problem(CodeMissingParam, at(i, ".params"), "Field required")
	case !params.IsObject():
		return problem(CodeInvalidType, at(i, ".params"), "Input should be a valid dictionary")
	}
	if prev := s.ids.add(customID.Str, i); prev >= 0 {
		return problem(CodeDuplicateCustomID, at(i, ".custom_id"), "the custom_id '%s' is already used by requests.%d; custom_ids must be unique within a batch", customID.Str, prev)
	}
	s.tasks = append(s.tasks, Task{Index: i, CustomID: strings.Clone(customID.Str),
		Offset: start + int64(params.Index), Size: int64(len(params.Raw))})
	return nil
}

// validMessageCustomID reports whether id matches CustomIDPattern.
func validMessageCustomID(id string) bool {
	if id == "" || len(id) > MaxMessageCustomIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// CheckMessageParams returns the error that ends a Message Batch request as an errored result
// before it is sent, or nil: a batch request cannot stream (params.stream true, or sent twice so
// that parsers could disagree). Everything else about the params is checked by the gateway's
// pipeline, exactly as for a live request.
func CheckMessageParams(params []byte) *wire.Error {
	var stream gjson.Result
	var bad *wire.Error
	gjson.Parse(view(params)).ForEach(func(k, v gjson.Result) bool {
		if k.Str != "stream" {
			return true
		}
		if stream.Exists() {
			bad = problem(CodeDuplicateKey, "params.stream", "duplicate key in the JSON body; send each field once")
			return false
		}
		stream = v
		return true
	})
	if bad != nil {
		return bad
	}
	if stream.Type == gjson.True {
		return problem(CodeStreamUnsupported, "params.stream", "streaming is not supported in message batches")
	}
	return nil
}
