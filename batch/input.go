package batch

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/caddyai/gateway/internal/jsonscan"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/tidwall/gjson"
)

// The error codes of a batch's errors.data (LineError.Code). The first six are the codes OpenAI
// itself reports for input files; the others follow the codes the OpenAI API (and the
// gateway's policy package) use for the same fault in a live request.
const (
	// CodeInvalidJSONLine: the line is not a JSON object (or not valid UTF-8).
	CodeInvalidJSONLine = "invalid_json_line"
	// CodeDuplicateCustomID: the line's custom_id appeared on an earlier line.
	CodeDuplicateCustomID = "duplicate_custom_id"
	// CodeURLMismatch: the line's url is not the batch's endpoint.
	CodeURLMismatch = "url_mismatch"
	// CodeModelMismatch: the line's body.model differs from the model of the file's first line.
	CodeModelMismatch = "model_mismatch"
	// CodeEmptyFile: the file holds no request line (its error has no line).
	CodeEmptyFile = "empty_file"
	// CodeTooManyTasks: the file holds more request lines than allowed; reported once, on the
	// first line over the limit, where reading stops.
	CodeTooManyTasks = "too_many_tasks"
	// CodeMissingParam: custom_id, method, url, body or body.model is absent.
	CodeMissingParam = "missing_required_parameter"
	// CodeInvalidType: a field has the wrong JSON type (a numeric custom_id, a string body).
	CodeInvalidType = "invalid_type"
	// CodeInvalidValue: a field has a value the API does not accept (a method other than POST).
	CodeInvalidValue = "invalid_value"
	// CodeEmptyString: custom_id or body.model is "".
	CodeEmptyString = "empty_string"
	// CodeStringTooLong: custom_id is longer than MaxCustomIDBytes.
	CodeStringTooLong = "string_above_max_length"
	// CodeDuplicateKey: a key of the line (or custom_id, model or stream) appears twice, which
	// parsers read differently.
	CodeDuplicateKey = "duplicate_key"
	// CodeStreamUnsupported: body.stream is true; batch requests cannot stream.
	CodeStreamUnsupported = "unsupported_value"
	// CodeRequestTooLarge: the line is longer than InputLimits.MaxLineBytes.
	CodeRequestTooLarge = "request_too_large"
	// CodeNestingTooDeep: the line nests arrays and objects deeper than MaxDepth.
	CodeNestingTooDeep = "nesting_too_deep"
)

// Defaults of InputLimits, those of OpenAI's documentation where it has one.
const (
	// DefaultMaxTasks is the most request lines a batch input file may hold (OpenAI: 50,000).
	DefaultMaxTasks = 50_000
	// DefaultMaxLineBytes bounds one line of an input file: 8 MiB, twice the gateway's default
	// max_body, so that a line the reader accepts is refused (if at all) by the same body limit
	// as a live request, line by line, rather than failing the whole batch.
	DefaultMaxLineBytes = 8 << 20
	// DefaultMaxErrors is how many line errors a batch keeps in errors.data; the rest are
	// counted (Input.ErrorCount) but not listed.
	DefaultMaxErrors = 1000
	// MaxCustomIDBytes bounds an OpenAI custom_id: 512 bytes. OpenAI documents no bound; the
	// id is repeated in every output line and in the access log, so it must have one, and 512
	// is the bound OpenAI uses for metadata values.
	MaxCustomIDBytes = 512
)

// InputLimits bounds what ReadInput accepts. Zero fields take the defaults.
type InputLimits struct {
	// MaxTasks is the most request lines. Default: DefaultMaxTasks.
	MaxTasks int
	// MaxLineBytes is the longest line in bytes, without its line ending. A longer line is a
	// request_too_large error for that line and is never held in memory. Default:
	// DefaultMaxLineBytes.
	MaxLineBytes int
	// MaxErrors is how many errors are kept. Default: DefaultMaxErrors.
	MaxErrors int
}

func (l InputLimits) withDefaults() InputLimits {
	if l.MaxTasks <= 0 {
		l.MaxTasks = DefaultMaxTasks
	}
	if l.MaxLineBytes <= 0 {
		l.MaxLineBytes = DefaultMaxLineBytes
	}
	if l.MaxErrors <= 0 {
		l.MaxErrors = DefaultMaxErrors
	}
	return l
}

// LineError is one problem of an input file, rendered as an OpenAI BatchError
// ({"code","message","param","line"}) in the batch's errors.data.
type LineError struct {
	// Code is one of the Code* constants.
	Code string
	// Message says what is wrong in a sentence. It quotes at most a short prefix of a
	// custom_id or model, never a body.
	Message string
	// Param names the offending field ("custom_id", "body.model"); empty renders as null.
	Param string
	// Line is the 1-based line number; 0 (empty_file) renders as null.
	Line int
}

// Task is one request of a batch: where its body lies in the input, so that the runner reads
// one body at a time (ReadBody) instead of keeping the file in memory.
type Task struct {
	// Index is the task's 0-based position among the batch's requests.
	Index int
	// Line is the 1-based line of an OpenAI input file; 0 for a Message Batch.
	Line int
	// CustomID is the request's custom_id.
	CustomID string
	// Offset is the byte offset of the request body (the line's body object, or the Message
	// Batch request's params object) from the start of the input.
	Offset int64
	// Size is the body's length in bytes.
	Size int64
}

// ReadBody reads the task's body from the input it was parsed from into buf (grown when too
// small) and returns it.
func (t Task) ReadBody(r io.ReaderAt, buf []byte) ([]byte, error) {
	if int64(cap(buf)) < t.Size {
		buf = make([]byte, t.Size)
	}
	buf = buf[:t.Size]
	if _, err := r.ReadAt(buf, t.Offset); err != nil {
		return nil, fmt.Errorf("reading the body of %q: %w", t.CustomID, err)
	}
	return buf, nil
}

// Input is what ReadInput found in an input file.
type Input struct {
	// Model is the model every line names (body.model of the first line that has one).
	Model string
	// Tasks are the request lines, in file order; nil when the file has errors.
	Tasks []Task
	// Errors are the first InputLimits.MaxErrors problems, in line order.
	Errors []LineError
	// ErrorCount is the number of problems found, listed or not.
	ErrorCount int
	// Lines is the number of lines read, blank ones included.
	Lines int
}

// OK reports whether the file is valid: the batch can run its Tasks.
func (in *Input) OK() bool { return in.ErrorCount == 0 }

var utf8BOM = []byte("\xEF\xBB\xBF")

// ReadInput reads and checks an OpenAI batch input file for a batch whose endpoint is endpoint
// ("/v1/chat/completions"). It streams: at most one line (InputLimits.MaxLineBytes) is held at a
// time, and custom_ids are remembered by hash.
//
// Every non-blank line must be a JSON object with a unique non-empty custom_id of at most
// MaxCustomIDBytes, "method":"POST", a url equal to endpoint and a body object naming a model
// (the same in every line) without "stream":true. Each bad line is reported once (its first
// problem) with its 1-based line number. A UTF-8 byte order mark at the start, CRLF line
// endings and a missing final newline are tolerated; blank lines are skipped but counted in the
// line numbers (as vLLM's batch runner does; editors often leave one at the end); bytes that are
// not UTF-8 make the line invalid_json_line. Reading stops at the first line beyond
// InputLimits.MaxTasks; r is otherwise read to its end, so it should be bounded (a stored file).
//
// The content problems are in the returned Input (they fail the batch, asynchronously); the
// error is only for a failure to read r, wrapped.
func ReadInput(r io.Reader, endpoint string, lim InputLimits) (*Input, error) {
	lim = lim.withDefaults()
	in := &Input{}
	v := inputValidator{in: in, lim: lim, endpoint: endpoint, ids: newIDSet(1024)}
	lr := newLineReader(r, lim.MaxLineBytes)
	tasks := 0
	for {
		line, start, tooLong, err := lr.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading batch input line %d: %w", lr.n+1, err)
		}
		n := lr.n
		if n == 1 && !tooLong && bytes.HasPrefix(line, utf8BOM) {
			line = line[len(utf8BOM):]
			start += int64(len(utf8BOM))
		}
		if !tooLong {
			lead := len(line) - len(bytes.TrimLeft(line, " \t\r"))
			line = bytes.TrimRight(line[lead:], " \t\r")
			start += int64(lead)
			if len(line) == 0 {
				continue // blank lines are not requests
			}
		}
		if tasks++; tasks > lim.MaxTasks {
			v.fail(LineError{Code: CodeTooManyTasks, Line: n,
				Message: fmt.Sprintf("The input file has more than %d requests; split it into several batches.", lim.MaxTasks)})
			break
		}
		if tooLong {
			v.fail(LineError{Code: CodeRequestTooLarge, Line: n,
				Message: fmt.Sprintf("Line %d is longer than the limit of %d bytes.", n, lim.MaxLineBytes)})
			continue
		}
		v.line(line, start, n, tasks-1)
	}
	in.Lines = lr.n
	if tasks == 0 {
		v.fail(LineError{Code: CodeEmptyFile, Message: "The input file has no requests."})
	}
	if !in.OK() {
		in.Tasks = nil
	}
	return in, nil
}

// inputValidator holds the state of one ReadInput.
type inputValidator struct {
	in       *Input
	lim      InputLimits
	endpoint string
	ids      *idSet
	model    string
	modelAt  int
}

// fail records a problem.
func (v *inputValidator) fail(e LineError) {
	v.in.ErrorCount++
	if len(v.in.Errors) < v.lim.MaxErrors {
		v.in.Errors = append(v.in.Errors, e)
	}
	v.in.Tasks = nil // a file with errors does not run; stop keeping its tasks
}

// lineErr builds the problem of line n.
func lineErr(n int, code, param, format string, args ...any) LineError {
	return LineError{Code: code, Param: param, Line: n, Message: fmt.Sprintf(format, args...)}
}

// line checks one non-blank line (trimmed) whose first byte is at offset start.
func (v *inputValidator) line(line []byte, start int64, n, index int) {
	if e, ok := v.check(line, start, n, index); !ok {
		v.fail(e)
	}
}

// check returns the line's first problem, or records its task and returns ok.
func (v *inputValidator) check(line []byte, start int64, n, index int) (LineError, bool) {
	if line[0] != '{' || !utf8.Valid(line) {
		return lineErr(n, CodeInvalidJSONLine, "", "Line %d is not a valid JSON object.", n), false
	}
	if jsonscan.NestedTooDeep(line, MaxDepth) {
		return lineErr(n, CodeNestingTooDeep, "", "Line %d nests objects and arrays deeper than %d levels.", n, MaxDepth), false
	}
	if !gjson.ValidBytes(line) {
		return lineErr(n, CodeInvalidJSONLine, "", "Line %d is not a valid JSON object.", n), false
	}
	var customID, method, url, body gjson.Result
	var dup string
	gjson.Parse(view(line)).ForEach(func(k, val gjson.Result) bool {
		var slot *gjson.Result
		switch k.Str {
		case "custom_id":
			slot = &customID
		case "method":
			slot = &method
		case "url":
			slot = &url
		case "body":
			slot = &body
		default:
			return true // other keys are ignored, as OpenAI does
		}
		if slot.Exists() {
			dup = k.Str
			return false
		}
		*slot = val
		return true
	})
	if dup != "" {
		return lineErr(n, CodeDuplicateKey, dup, "Line %d has the key '%s' twice.", n, dup), false
	}

	// custom_id
	switch {
	case !customID.Exists():
		return lineErr(n, CodeMissingParam, "custom_id", "Line %d is missing the required parameter 'custom_id'.", n), false
	case customID.Type != gjson.String:
		return lineErr(n, CodeInvalidType, "custom_id", "Line %d: 'custom_id' must be a string, but got %s.", n, wire.Describe(customID)), false
	case customID.Str == "":
		return lineErr(n, CodeEmptyString, "custom_id", "Line %d: 'custom_id' must not be empty.", n), false
	case len(customID.Str) > MaxCustomIDBytes:
		return lineErr(n, CodeStringTooLong, "custom_id", "Line %d: 'custom_id' is %d bytes long; the limit is %d.", n, len(customID.Str), MaxCustomIDBytes), false
	}
	id := customID.Str
	if prev := v.ids.add(id, n); prev >= 0 {
		return lineErr(n, CodeDuplicateCustomID, "custom_id", "Line %d: the custom_id '%s' is already used on line %d; custom_ids must be unique.", n, echo(id), prev), false
	}

	// method and url
	switch {
	case !method.Exists():
		return lineErr(n, CodeMissingParam, "method", "Line %d is missing the required parameter 'method'.", n), false
	case method.Type != gjson.String || method.Str != "POST":
		return lineErr(n, CodeInvalidValue, "method", "Line %d: 'method' must be \"POST\".", n), false
	case !url.Exists():
		return lineErr(n, CodeMissingParam, "url", "Line %d is missing the required parameter 'url'.", n), false
	case url.Type != gjson.String || url.Str != v.endpoint:
		return lineErr(n, CodeURLMismatch, "url", "Line %d: 'url' must be the batch's endpoint '%s'.", n, v.endpoint), false
	}

	// body
	switch {
	case !body.Exists():
		return lineErr(n, CodeMissingParam, "body", "Line %d is missing the required parameter 'body'.", n), false
	case !body.IsObject():
		return lineErr(n, CodeInvalidType, "body", "Line %d: 'body' must be an object, but got %s.", n, wire.Describe(body)), false
	}
	var model, stream gjson.Result
	body.ForEach(func(k, val gjson.Result) bool {
		var slot *gjson.Result
		switch k.Str {
		case "model":
			slot = &model
		case "stream":
			slot = &stream
		default:
			return true
		}
		if slot.Exists() {
			dup = "body." + k.Str
			return false
		}
		*slot = val
		return true
	})
	if id, ok := PredictModel(v.endpoint); ok && dup == "" {
		// a predict line: its model is the endpoint's, whatever the body says
		model = gjson.Result{Type: gjson.String, Str: id}
	}
	switch {
	case dup != "":
		return lineErr(n, CodeDuplicateKey, dup, "Line %d has the key '%s' twice.", n, dup), false
	case !model.Exists():
		return lineErr(n, CodeMissingParam, "body.model", "Line %d is missing the required parameter 'body.model'.", n), false
	case model.Type != gjson.String:
		return lineErr(n, CodeInvalidType, "body.model", "Line %d: 'body.model' must be a string, but got %s.", n, wire.Describe(model)), false
	case model.Str == "":
		return lineErr(n, CodeEmptyString, "body.model", "Line %d: 'body.model' must not be empty.", n), false
	case stream.Type == gjson.True:
		return lineErr(n, CodeStreamUnsupported, "body.stream", "Line %d: batch requests cannot stream; remove 'stream' or set it to false.", n), false
	}
	if v.model == "" {
		v.model, v.modelAt = strings.Clone(model.Str), n
		v.in.Model = v.model
	} else if model.Str != v.model {
		return lineErr(n, CodeModelMismatch, "body.model", "Line %d uses the model '%s', but line %d uses '%s'; a batch uses one model.", n, echo(model.Str), v.modelAt, echo(v.model)), false
	}

	if v.in.ErrorCount == 0 {
		v.in.Tasks = append(v.in.Tasks, Task{Index: index, Line: n, CustomID: strings.Clone(id),
			Offset: start + int64(body.Index), Size: int64(len(body.Raw))})
	}
	return LineError{}, true
}

// maxEcho bounds how much of a client-sent id or model an error message repeats.
const maxEcho = 64

// echo shortens a client-sent string for an error message, without splitting a UTF-8 sequence.
func echo(s string) string { return wire.Shorten(s, maxEcho) }
