package simulator

import (
	"bytes"
	"encoding/json"
	"hash/fnv"
	"net/http"
	"strconv"
	"strings"
)

// The simulator's predict models are a deterministic sentiment classifier: an instance whose
// text holds more positive than negative words is "positive", the reverse "negative", else
// "neutral"; its confidence in [0.5, 1) is derived from a hash of the instance, so the same
// instance always gets the same answer. It is served in KServe's V1 protocol
// (POST /v1/models/{name}:predict, readiness GET /v1/models/{name}) and the Open Inference
// Protocol V2 (POST /v2/models/{name}/infer, GET /v2/models/{name}/ready, GET /v2/health/ready),
// with their error shape {"error":"text"}: 400 invalid input, 404 unknown model, 503 not ready.
// Faults apply as to the other routes; error, overloaded and loading answer in that shape.

var (
	positiveWords = []string{"good", "great", "love", "excellent", "nice", "happy", "wonderful", "best", "amazing", "like"}
	negativeWords = []string{"bad", "terrible", "hate", "awful", "poor", "sad", "worst", "horrible", "boring", "dislike"}
)

// classify returns the label and confidence of an instance's text.
func classify(text string) (label string, confidence float64) {
	score := 0
	for _, w := range strings.FieldsFunc(strings.ToLower(text), func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r == '\'')
	}) {
		for _, p := range positiveWords {
			if w == p {
				score++
			}
		}
		for _, n := range negativeWords {
			if w == n {
				score--
			}
		}
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(text))
	confidence = 0.5 + float64(h.Sum32()%500)/1000
	switch {
	case score > 0:
		return "positive", confidence
	case score < 0:
		return "negative", confidence
	}
	return "neutral", confidence
}

// instanceText is the text a KServe instance is classified by: a string itself, an object's
// "text", else the instance's JSON.
func instanceText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var obj struct {
		Text *string `json:"text"`
	}
	if json.Unmarshal(raw, &obj) == nil && obj.Text != nil {
		return *obj.Text
	}
	return string(bytes.TrimSpace(raw))
}

// predictFail answers in KServe's and OIP's error shape.
func (x *exchange) predictFail(status int, msg string) {
	x.writeBody(status, ctJSON, append(appendJSONString([]byte(`{"error":`), msg), '}'))
}

// predictFault applies the request's fault to a predict route; it reports whether to go on.
func (x *exchange) predictFault(model string) bool {
	switch x.fault.Kind {
	case FaultError:
		status := x.fault.Status
		if status == 0 {
			status = http.StatusInternalServerError
		}
		x.predictFail(status, "Inference failed: simulated error")
		return false
	case FaultOverloaded:
		x.predictFail(http.StatusServiceUnavailable, "Model "+model+" is overloaded")
		return false
	case FaultLoading:
		x.predictFail(http.StatusServiceUnavailable, "Model "+model+" is not ready")
		return false
	}
	return x.preFault()
}

func (s *Server) servePredictKServe(x *exchange, model string, body []byte) {
	if !oneOf(model, s.cfg.Models) {
		x.predictFail(http.StatusNotFound, "Model with name "+model+" does not exist.")
		return
	}
	if !x.predictFault(model) {
		return
	}
	var req struct {
		Instances []json.RawMessage `json:"instances"`
	}
	if err := json.Unmarshal(body, &req); err != nil || req.Instances == nil {
		x.predictFail(http.StatusBadRequest, "Invalid input: expected a JSON object with an instances array")
		return
	}
	out := []byte(`{"predictions":[`)
	for i, in := range req.Instances {
		if i > 0 {
			out = append(out, ',')
		}
		label, conf := classify(instanceText(in))
		out = append(out, `{"label":`...)
		out = appendJSONString(out, label)
		out = append(out, `,"confidence":`...)
		out = strconv.AppendFloat(out, conf, 'f', 3, 64)
		out = append(out, '}')
	}
	x.writeJSON(append(out, "]}"...))
}

type inferTensor struct {
	Name     string            `json:"name"`
	Shape    []int             `json:"shape"`
	Datatype string            `json:"datatype"`
	Data     []json.RawMessage `json:"data"`
}

func (s *Server) servePredictOIP(x *exchange, model string, body []byte) {
	if !oneOf(model, s.cfg.Models) {
		x.predictFail(http.StatusNotFound, "Model "+model+" not found")
		return
	}
	if !x.predictFault(model) {
		return
	}
	var req struct {
		ID      string        `json:"id"`
		Inputs  []inferTensor `json:"inputs"`
		Outputs []struct {
			Name string `json:"name"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		x.predictFail(http.StatusBadRequest, "Invalid request: "+err.Error())
		return
	}
	if len(req.Inputs) == 0 {
		x.predictFail(http.StatusBadRequest, "Invalid request: no inputs")
		return
	}
	rows := -1
	for _, in := range req.Inputs {
		total := 1
		for _, d := range in.Shape {
			total *= d
		}
		switch {
		case in.Name == "" || len(in.Shape) == 0 || in.Datatype == "":
			x.predictFail(http.StatusBadRequest, "Invalid input: every input needs a name, shape and datatype")
			return
		case total != len(in.Data):
			x.predictFail(http.StatusBadRequest, "Invalid input "+in.Name+": shape "+strconv.Itoa(total)+" elements, data "+strconv.Itoa(len(in.Data)))
			return
		case rows >= 0 && in.Shape[0] != rows:
			x.predictFail(http.StatusBadRequest, "Invalid input "+in.Name+": inputs differ in batch size")
			return
		}
		rows = in.Shape[0]
	}
	labels, confs := []byte(`[`), []byte(`[`)
	for i := 0; i < rows; i++ {
		var text strings.Builder
		for _, in := range req.Inputs {
			per := len(in.Data) / max(rows, 1)
			for _, d := range in.Data[i*per : (i+1)*per] {
				var str string
				if json.Unmarshal(d, &str) == nil {
					text.WriteString(str)
				} else {
					text.Write(d)
				}
				text.WriteByte(' ')
			}
		}
		label, conf := classify(strings.TrimSuffix(text.String(), " "))
		if i > 0 {
			labels, confs = append(labels, ','), append(confs, ',')
		}
		labels = appendJSONString(labels, label)
		confs = strconv.AppendFloat(confs, conf, 'f', 3, 64)
	}
	labels, confs = append(labels, ']'), append(confs, ']')
	tensors := map[string][]byte{
		"label":      tensorJSON("label", rows, "BYTES", labels),
		"confidence": tensorJSON("confidence", rows, "FP32", confs),
	}
	names := []string{"label", "confidence"}
	if len(req.Outputs) > 0 {
		names = names[:0]
		for _, o := range req.Outputs {
			if _, ok := tensors[o.Name]; !ok {
				x.predictFail(http.StatusBadRequest, "Invalid request: unknown output "+o.Name)
				return
			}
			names = append(names, o.Name)
		}
	}
	out := []byte(`{"model_name":`)
	out = appendJSONString(out, model)
	out = append(out, `,"model_version":"1","id":`...)
	out = appendJSONString(out, req.ID)
	out = append(out, `,"outputs":[`...)
	for i, n := range names {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, tensors[n]...)
	}
	x.writeJSON(append(out, "]}"...))
}

func tensorJSON(name string, rows int, datatype string, data []byte) []byte {
	b := []byte(`{"name":`)
	b = appendJSONString(b, name)
	b = append(b, `,"shape":[`...)
	b = strconv.AppendInt(b, int64(rows), 10)
	b = append(b, `],"datatype":"`...)
	b = append(b, datatype...)
	b = append(b, `","data":`...)
	b = append(b, data...)
	return append(b, '}')
}

// servePredictReady answers OIP's GET /v2/models/{name}/ready: 200 when ready, 400 while
// loading (a loading fault), 404 for an unknown model.
func (s *Server) servePredictReady(x *exchange, model string) {
	if !oneOf(model, s.cfg.Models) {
		x.predictFail(http.StatusNotFound, "Model "+model+" not found")
		return
	}
	if x.fault.Kind == FaultLoading {
		x.predictFail(http.StatusBadRequest, "Model "+model+" is not ready")
		return
	}
	if !x.preFault() {
		return
	}
	out := appendJSONString([]byte(`{"name":`), model)
	x.writeJSON(append(out, `,"ready":true}`...))
}
