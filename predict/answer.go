package predict

import (
	"errors"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/caddyai/gateway/internal/wire"
)

// Upstream returns the path and body of the request to the model server, whose name for the
// model is upstream; id is the request's id (sent as the OIP request id).
func (m *Model) Upstream(req *Request, upstream, id string) (path string, body []byte, werr *wire.Error) {
	switch m.protocol {
	case OIPV2:
		body, werr = m.appendInferRequest(make([]byte, 0, 256), req, id)
		return "/v2/models/" + upstream + "/infer", body, werr
	case Passthrough:
		out := make(map[string]any, len(req.body)+1)
		for k, v := range req.body {
			out[k] = v
		}
		out["model"] = upstream
		body, _ = marshal(out)
		return strings.ReplaceAll(m.path, "{model}", upstream), body, nil
	}
	if req.explicit {
		body, _ = marshal(req.body)
	} else {
		body, _ = marshal(map[string]any{"instances": req.instances})
	}
	return "/v1/models/" + upstream + ":predict", body, nil
}

// Meta is what the answer says besides the predictions.
type Meta struct {
	// ID is the answer's id ("pred-...").
	ID string
	// Model is the model's canonical name.
	Model string
	// Created is the answer's time, in unix seconds.
	Created int64
	// Tokens is the number of input tokens, when Counted.
	Tokens int
	// Counted says the model has a tokenizer and Tokens is its count.
	Counted bool
}

// ErrUpstreamAnswer is returned for an upstream answer that is not a prediction of the protocol.
var ErrUpstreamAnswer = errors.New("the model server's answer is not a prediction")

// The fields of a prediction object read as its label and its score.
var (
	labelFields = [...]string{"label", "prediction", "class", "predicted_label"}
	scoreFields = [...]string{"confidence", "score", "probability"}
)

// AppendAnswer appends the gateway's answer to an upstream's successful response:
// {"id","object":"prediction","model","created","predictions":[...],"prediction","confidence",
// "usage"}. prediction (and confidence, when the upstream gives a score) are set for a
// single instance; prediction is null for several.
func (m *Model) AppendAnswer(dst, upstream []byte, req *Request, meta Meta) ([]byte, error) {
	if !gjson.ValidBytes(upstream) {
		return dst, ErrUpstreamAnswer
	}
	root := gjson.ParseBytes(upstream)
	start := len(dst)
	dst = append(dst, `{"id":`...)
	dst = wire.AppendString(dst, meta.ID)
	dst = append(dst, `,"object":"prediction","model":`...)
	dst = wire.AppendString(dst, meta.Model)
	dst = append(dst, `,"created":`...)
	dst = strconv.AppendInt(dst, meta.Created, 10)
	dst = append(dst, `,"predictions":`...)
	predStart := len(dst)
	switch m.protocol {
	case OIPV2:
		var ok bool
		if dst, ok = m.appendPredictionsFromOutputs(dst, root.Get("outputs"), req.Instances); !ok {
			return dst[:start], ErrUpstreamAnswer
		}
	case Passthrough:
		if p := root.Get("predictions"); p.IsArray() {
			dst = append(dst, p.Raw...)
		} else {
			dst = append(append(append(dst, '['), root.Raw...), ']')
		}
	default:
		p := root.Get("predictions")
		if !p.IsArray() {
			return dst[:start], ErrUpstreamAnswer
		}
		dst = append(dst, p.Raw...)
	}
	preds := gjson.ParseBytes(dst[predStart:]).Array()
	dst = append(dst, `,"prediction":`...)
	if req.Single() && len(preds) == 1 {
		label, score := labelAndScore(preds[0])
		dst = append(dst, label.Raw...)
		if score.Exists() {
			dst = append(dst, `,"confidence":`...)
			dst = append(dst, score.Raw...)
		}
	} else {
		dst = append(dst, "null"...)
	}
	dst = append(dst, `,"usage":`...)
	dst = AppendUsage(dst, req, meta)
	return append(dst, '}'), nil
}

// labelAndScore reads a prediction: an object's label and score fields, or the value itself.
func labelAndScore(p gjson.Result) (label, score gjson.Result) {
	if !p.IsObject() {
		return p, gjson.Result{}
	}
	label = p
	for _, f := range labelFields {
		if v := p.Get(f); v.Exists() {
			label = v
			break
		}
	}
	for _, f := range scoreFields {
		if v := p.Get(f); v.Type == gjson.Number {
			score = v
			break
		}
	}
	if label.IsArray() && label.Raw != "" { // an OIP row of one: [x]
		if a := label.Array(); len(a) == 1 {
			label = a[0]
		}
	}
	if score.Raw == "" {
		for _, f := range scoreFields {
			if a := p.Get(f).Array(); len(a) == 1 && a[0].Type == gjson.Number {
				score = a[0]
				break
			}
		}
	}
	return label, score
}

// AppendUsage appends a predict usage object: {"instances","input_characters"} and, when the
// model counts tokens, "prompt_tokens" and "total_tokens".
func AppendUsage(dst []byte, req *Request, meta Meta) []byte {
	dst = append(dst, `{"instances":`...)
	dst = strconv.AppendInt(dst, int64(req.Instances), 10)
	dst = append(dst, `,"input_characters":`...)
	dst = strconv.AppendInt(dst, int64(req.InputChars), 10)
	if meta.Counted {
		dst = append(dst, `,"prompt_tokens":`...)
		dst = strconv.AppendInt(dst, int64(meta.Tokens), 10)
		dst = append(dst, `,"total_tokens":`...)
		dst = strconv.AppendInt(dst, int64(meta.Tokens), 10)
	}
	return append(dst, '}')
}

// UpstreamError turns a model server's error ({"error":"text"} of KServe and OIP, or any
// shape the gateway reads) into the gateway's: 400 invalid input, 404 unknown model, 503 not
// ready (with Retry-After), 502 for an inference failure.
func UpstreamError(status int, contentType string, body []byte) *wire.Error {
	werr := wire.NormalizeUpstreamError(status, contentType, body)
	switch {
	case status == 404:
		werr.Code, werr.Param, werr.Reason = "model_not_found", "model", "upstream_not_found"
		if werr.Message == "" || !strings.Contains(strings.ToLower(werr.Message), "model") {
			werr.Message = "The model server does not know this model."
		}
	case status == 503 && werr.Status != 503:
		werr.Status, werr.Type, werr.Code, werr.Reason = 503, wire.TypeServer, "model_not_ready", "upstream_not_ready"
		werr.RetryAfter = wire.LoadingRetryAfter
		if werr.Message == "" {
			werr.Message = "The model is not ready yet. Please try again shortly."
		}
	case werr.Status == 400 && werr.Code == "context_length_exceeded":
		werr.Code, werr.Param = "", "" // a predict body has no messages
	}
	return werr
}
