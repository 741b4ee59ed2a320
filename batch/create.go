package batch

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/caddyai/gateway/internal/jsonscan"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/tidwall/gjson"
)

// The bounds of POST /v1/batches.
const (
	// CompletionWindow is the only completion_window OpenAI accepts.
	CompletionWindow = "24h"
	// Window is the time a batch has to run: expires_at is created_at + Window.
	Window = 24 * time.Hour
	// MaxMetadataPairs is the most key-value pairs of metadata.
	MaxMetadataPairs = 16
	// MaxMetadataKeyLen is the longest metadata key, in characters.
	MaxMetadataKeyLen = 64
	// MaxMetadataValueLen is the longest metadata value, in characters.
	MaxMetadataValueLen = 512
	// MinOutputExpiresAfter is the shortest output_expires_after.seconds (1 hour).
	MinOutputExpiresAfter = 3600
	// MaxOutputExpiresAfter is the longest output_expires_after.seconds (30 days).
	MaxOutputExpiresAfter = 2592000
)

// SupportedEndpoints are the endpoints the gateway can run batch lines for today, the list a
// caller passes to ParseCreateRequest unless its configuration narrows it.
var SupportedEndpoints = []string{"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"}

// More error codes of request-level refusals, as the OpenAI API names them.
const (
	// CodeObjectTooLarge: metadata has more than MaxMetadataPairs pairs.
	CodeObjectTooLarge = "object_above_max_properties"
	// CodeIntegerBelowMin: output_expires_after.seconds is below MinOutputExpiresAfter.
	CodeIntegerBelowMin = "integer_below_min_value"
	// CodeIntegerAboveMax: output_expires_after.seconds is above MaxOutputExpiresAfter.
	CodeIntegerAboveMax = "integer_above_max_value"
)

// CreateRequest is a checked POST /v1/batches body.
type CreateRequest struct {
	// InputFileID is the id of the input file (its existence, owner and purpose are for the
	// caller to check: ErrInputFileNotFound, ErrInputFilePurpose).
	InputFileID string
	// Endpoint is the endpoint every line addresses ("/v1/chat/completions").
	Endpoint string
	// CompletionWindow is always CompletionWindow.
	CompletionWindow string
	// Metadata are the client's key-value pairs; nil when absent or null.
	Metadata map[string]string
	// OutputExpiresAfter is output_expires_after.seconds (anchored at the output file's
	// created_at); 0 when absent, for the files' default expiry.
	OutputExpiresAfter time.Duration
}

func badEnum(param, got string, allowed []string) *wire.Error {
	quoted := make([]string, len(allowed))
	for i, a := range allowed {
		quoted[i] = "'" + a + "'"
	}
	return wire.InvalidCode(CodeInvalidValue, param, "Invalid value: '%s'. Supported values are: %s.", echo(got), strings.Join(quoted, ", "))
}

func tooLong(param string, max, got int) *wire.Error {
	return wire.InvalidCode(CodeStringTooLong, param, "Invalid '%s': string too long. Expected a string with maximum length %d, but got a string with length %d instead.", param, max, got)
}

// ParseCreateRequest checks the body of POST /v1/batches. endpoints are the endpoints the
// gateway runs batches for ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", ...).
// Every refusal is a 400 invalid_request_error naming the offending param exactly, in OpenAI's
// wording, for the OpenAI envelope (wire.AppendOpenAI). Unknown params are ignored, as the
// gateway does for live requests; a key sent twice is refused.
func ParseCreateRequest(body []byte, endpoints []string) (*CreateRequest, *wire.Error) {
	if len(body) == 0 || jsonscan.NestedTooDeep(body, MaxDepth) || !utf8.Valid(body) || !gjson.ValidBytes(body) {
		return nil, wire.InvalidCode(CodeInvalidJSON, "", "We could not parse the JSON body of your request. The API expects a JSON object.")
	}
	doc := gjson.ParseBytes(body)
	if !doc.IsObject() {
		return nil, wire.InvalidCode(CodeInvalidType, "", "The request body must be a JSON object, but got %s instead.", wire.Describe(doc))
	}
	var fileID, endpoint, window, metadata, expires gjson.Result
	var bad *wire.Error
	doc.ForEach(func(k, v gjson.Result) bool {
		var slot *gjson.Result
		switch k.Str {
		case "input_file_id":
			slot = &fileID
		case "endpoint":
			slot = &endpoint
		case "completion_window":
			slot = &window
		case "metadata":
			slot = &metadata
		case "output_expires_after":
			slot = &expires
		default:
			return true
		}
		if slot.Exists() {
			bad = wire.InvalidCode(CodeDuplicateKey, k.Str, "Invalid body: duplicate key '%s'. Send each field once; parsers disagree on which copy counts.", k.Str)
			return false
		}
		*slot = v
		return true
	})
	if bad != nil {
		return nil, bad
	}
	req := &CreateRequest{}
	switch {
	case !fileID.Exists():
		return nil, wire.MissingParam("input_file_id")
	case fileID.Type != gjson.String:
		return nil, wire.BadType("input_file_id", "a string", fileID)
	case fileID.Str == "":
		return nil, wire.InvalidCode(CodeEmptyString, "input_file_id", "Invalid 'input_file_id': empty string. Expected a string with minimum length 1, but got an empty string instead.")
	case len(fileID.Str) > maxFileIDLen:
		return nil, tooLong("input_file_id", maxFileIDLen, utf8.RuneCountInString(fileID.Str))
	case !endpoint.Exists():
		return nil, wire.MissingParam("endpoint")
	case endpoint.Type != gjson.String:
		return nil, wire.BadType("endpoint", "a string", endpoint)
	case !contains(endpoints, endpoint.Str) && !IsPredictEndpoint(endpoint.Str):
		return nil, badEnum("endpoint", endpoint.Str, endpoints)
	case !window.Exists():
		return nil, wire.MissingParam("completion_window")
	case window.Type != gjson.String:
		return nil, wire.BadType("completion_window", "a string", window)
	case window.Str != CompletionWindow:
		return nil, badEnum("completion_window", window.Str, []string{CompletionWindow})
	}
	req.InputFileID, req.Endpoint, req.CompletionWindow = fileID.Str, endpoint.Str, CompletionWindow
	var err *wire.Error
	if req.Metadata, err = parseMetadata(metadata); err != nil {
		return nil, err
	}
	if req.OutputExpiresAfter, err = parseExpiresAfter(expires); err != nil {
		return nil, err
	}
	return req, nil
}

// IsPredictEndpoint reports whether endpoint is a predict model's path,
// /v1/models/{model_id}/predict: the gateway's extension of the endpoints a batch may address
// (not in OpenAI's enum), for its own clients.
func IsPredictEndpoint(endpoint string) bool {
	_, ok := PredictModel(endpoint)
	return ok
}

// PredictModel returns the model id of a predict endpoint (/v1/models/{model_id}/predict; the
// id may contain '/').
func PredictModel(endpoint string) (string, bool) {
	id, ok := strings.CutPrefix(endpoint, "/v1/models/")
	if !ok {
		return "", false
	}
	id, ok = strings.CutSuffix(id, "/predict")
	return id, ok && id != "" && !strings.HasPrefix(id, "/") && !strings.HasSuffix(id, "/")
}

// maxFileIDLen bounds an input_file_id: real ids are short, and the id is echoed back.
const maxFileIDLen = 128

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// parseMetadata checks metadata: an object (or null) of at most 16 string values, keys of at
// most 64 characters and values of at most 512.
func parseMetadata(v gjson.Result) (map[string]string, *wire.Error) {
	if !v.Exists() || v.Type == gjson.Null {
		return nil, nil
	}
	if !v.IsObject() {
		return nil, wire.BadType("metadata", "an object", v)
	}
	m := map[string]string{}
	var bad *wire.Error
	n := 0
	v.ForEach(func(k, val gjson.Result) bool {
		if n++; n > MaxMetadataPairs {
			bad = wire.InvalidCode(CodeObjectTooLarge, "metadata", "Invalid 'metadata': too many properties. Expected an object with at most %d properties, but got an object with more properties instead.", MaxMetadataPairs)
			return false
		}
		if l := utf8.RuneCountInString(k.Str); l > MaxMetadataKeyLen {
			bad = wire.InvalidCode(CodeStringTooLong, "metadata", "Invalid 'metadata': key too long. Expected keys with maximum length %d, but got a key with length %d instead.", MaxMetadataKeyLen, l)
			return false
		}
		param := "metadata." + k.Str
		if _, dup := m[k.Str]; dup {
			bad = wire.InvalidCode(CodeDuplicateKey, param, "Invalid body: duplicate key '%s'. Send each field once; parsers disagree on which copy counts.", param)
			return false
		}
		if val.Type != gjson.String {
			bad = wire.BadType(param, "a string", val)
			return false
		}
		if l := utf8.RuneCountInString(val.Str); l > MaxMetadataValueLen {
			bad = tooLong(param, MaxMetadataValueLen, l)
			return false
		}
		m[k.Str] = val.Str
		return true
	})
	if bad != nil {
		return nil, bad
	}
	return m, nil
}

// parseExpiresAfter checks output_expires_after: {"anchor":"created_at","seconds":3600..2592000}.
func parseExpiresAfter(v gjson.Result) (time.Duration, *wire.Error) {
	if !v.Exists() || v.Type == gjson.Null {
		return 0, nil
	}
	if !v.IsObject() {
		return 0, wire.BadType("output_expires_after", "an object", v)
	}
	anchor, seconds := v.Get("anchor"), v.Get("seconds")
	switch {
	case !anchor.Exists():
		return 0, wire.MissingParam("output_expires_after.anchor")
	case anchor.Type != gjson.String:
		return 0, wire.BadType("output_expires_after.anchor", "a string", anchor)
	case anchor.Str != "created_at":
		return 0, badEnum("output_expires_after.anchor", anchor.Str, []string{"created_at"})
	case !seconds.Exists():
		return 0, wire.MissingParam("output_expires_after.seconds")
	case seconds.Type != gjson.Number || strings.ContainsAny(seconds.Raw, ".eE"):
		return 0, wire.BadType("output_expires_after.seconds", "an integer", seconds)
	}
	n, err := strconv.ParseInt(seconds.Raw, 10, 64)
	if err != nil { // out of int64's range
		n = math.MaxInt64
		if strings.HasPrefix(seconds.Raw, "-") {
			n = math.MinInt64
		}
	}
	switch {
	case n < MinOutputExpiresAfter:
		return 0, wire.InvalidCode(CodeIntegerBelowMin, "output_expires_after.seconds", "Invalid 'output_expires_after.seconds': integer below minimum value. Expected a value >= %d, but got %s instead.", MinOutputExpiresAfter, echo(seconds.Raw))
	case n > MaxOutputExpiresAfter:
		return 0, wire.InvalidCode(CodeIntegerAboveMax, "output_expires_after.seconds", "Invalid 'output_expires_after.seconds': integer above maximum value. Expected a value <= %d, but got %s instead.", MaxOutputExpiresAfter, echo(seconds.Raw))
	}
	return time.Duration(n) * time.Second, nil
}

// ErrInputFileNotFound is the 400 for an input_file_id that names no file of the caller
// (another owner's file does not exist).
func ErrInputFileNotFound(id string) *wire.Error {
	return wire.InvalidCode(CodeInvalidValue, "input_file_id", "Invalid 'input_file_id': no file with id '%s' was found.", echo(id))
}

// ErrInputFilePurpose is the 400 for an input file uploaded with a purpose other than "batch".
func ErrInputFilePurpose(id, purpose string) *wire.Error {
	return wire.InvalidCode(CodeInvalidValue, "input_file_id", "Invalid 'input_file_id': the file '%s' has purpose '%s'; a batch's input file must have purpose 'batch'.", echo(id), echo(purpose))
}

// ErrBatchNotFound is the 404 for a batch id that names no batch of the caller.
func ErrBatchNotFound(id string) *wire.Error {
	return &wire.Error{Status: http.StatusNotFound, Type: wire.TypeInvalidRequest, Reason: "not_found",
		Message: "No batch found with id '" + echo(id) + "'."}
}

// ErrFileNotFound is the 404 for a file id that names no file of the caller.
func ErrFileNotFound(id string) *wire.Error {
	return &wire.Error{Status: http.StatusNotFound, Type: wire.TypeInvalidRequest, Reason: "not_found",
		Message: "No such File object: " + echo(id)}
}
