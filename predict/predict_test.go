package predict

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

const tabular = `{
  "type": "object",
  "required": ["instances"],
  "additionalProperties": false,
  "properties": {
    "instances": {
      "type": "array", "minItems": 1, "maxItems": 100,
      "items": {
        "type": "object",
        "required": ["age", "income"],
        "properties": {
          "age": {"type": "integer", "minimum": 0, "maximum": 150},
          "income": {"type": "number"},
          "segment": {"type": "string", "enum": ["a", "b"], "default": "a"},
          "scores": {"type": "array", "items": {"type": "number"}}
        }
      }
    }
  }
}`

func compile(t *testing.T, cfg Config) *Model {
	t.Helper()
	m, err := Compile(cfg)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return m
}

func TestValidateSeedSchema(t *testing.T) {
	m := compile(t, Config{})
	req, werr := m.Validate([]byte(`{"model":"sentiment","text":"I love it"}`))
	if werr != nil {
		t.Fatalf("Validate: %v", werr)
	}
	if got := string(req.Body()); got != `{"max_tokens":256,"temperature":0.7,"text":"I love it"}` {
		t.Errorf("body with defaults = %s", got)
	}
	if req.Instances != 1 || req.InputChars != 9 || req.Text() != "I love it" {
		t.Errorf("instances %d chars %d text %q", req.Instances, req.InputChars, req.Text())
	}
	for _, tc := range []struct{ name, body, param, msg string }{
		{"missing text", `{"model":"m"}`, "text", "Missing required parameter: 'text'."},
		{"long text", `{"text":"` + strings.Repeat("x", 4097) + `"}`, "text", "maximum length 4096, but got a string with length 4097"},
		{"temperature", `{"text":"x","temperature":2.5}`, "temperature", "expected a value <= 2, but got 2.5"},
		{"max_tokens type", `{"text":"x","max_tokens":1.5}`, "max_tokens", "expected integer"},
		{"max_tokens zero", `{"text":"x","max_tokens":0}`, "max_tokens", "expected a value >= 1"},
		{"not json", `{"text":`, "", "could not parse the JSON body"},
		{"array", `[1]`, "", "must be a JSON object"},
		{"trailing", `{"text":"x"} {}`, "", "could not parse"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, werr := m.Validate([]byte(tc.body))
			if werr == nil {
				t.Fatal("accepted")
			}
			if werr.Status != http.StatusBadRequest || werr.Param != tc.param || !strings.Contains(werr.Message, tc.msg) {
				t.Errorf("got %d param %q %q", werr.Status, werr.Param, werr.Message)
			}
		})
	}
}

func TestValidateInputSchema(t *testing.T) {
	m := compile(t, Config{InputSchema: tabular})
	ok := `{"instances":[{"age":30,"income":1.5},{"age":40,"income":2,"segment":"b"}]}`
	req, werr := m.Validate([]byte(ok))
	if werr != nil {
		t.Fatalf("Validate: %v", werr)
	}
	if got := gjson.GetBytes(req.Body(), "instances.0.segment").String(); got != "a" {
		t.Errorf("default not applied: %s", req.Body())
	}
	if req.Instances != 2 || req.Single() {
		t.Errorf("instances = %d", req.Instances)
	}
	for _, tc := range []struct{ name, body, param string }{
		{"index", `{"instances":[{"age":1,"income":1},{"age":1,"income":1},{"age":1,"income":1},{"age":-1,"income":1}]}`, "instances[3].age"},
		{"required nested", `{"instances":[{"age":1}]}`, "instances[0].income"},
		{"enum", `{"instances":[{"age":1,"income":1,"segment":"z"}]}`, "instances[0].segment"},
		{"array item", `{"instances":[{"age":1,"income":1,"scores":[1,"x"]}]}`, "instances[0].scores[1]"},
		{"additional", `{"instances":[{"age":1,"income":1}],"extra":1}`, "extra"},
		{"empty", `{"instances":[]}`, "instances"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, werr := m.Validate([]byte(tc.body))
			if werr == nil || werr.Param != tc.param {
				t.Fatalf("got %v, want param %q", werr, tc.param)
			}
			if strings.Contains(werr.Message, `"z"`) || strings.Contains(werr.Message, `"x"`) {
				t.Errorf("message repeats the client's value: %s", werr.Message)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"protocol", Config{Protocol: "grpc"}, "protocol must be"},
		{"passthrough path", Config{Protocol: Passthrough}, "needs a path"},
		{"path elsewhere", Config{PredictPath: "/x"}, "only for protocol passthrough"},
		{"schema", Config{InputSchema: `{"type":12}`}, "compiling input_schema"},
		{"external ref", Config{InputSchema: `{"$ref":"https://example.com/s.json"}`}, "compiling input_schema"},
		{"missing file", Config{InputSchema: "/nonexistent/schema.json"}, "reading input_schema"},
		{"oip needs inputs", Config{Protocol: OIPV2, InputSchema: tabular}, "needs at least one tensor_input"},
		{"datatype", Config{Protocol: OIPV2, TensorInputs: []TensorInput{{Name: "x", Datatype: "FLOAT"}}}, "unknown datatype"},
		{"inputs for kserve", Config{TensorInputs: []TensorInput{{Name: "x", Datatype: "FP32"}}}, "only for protocol oip_v2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestKServeV1(t *testing.T) {
	m := compile(t, Config{})
	req, _ := m.Validate([]byte(`{"text":"great"}`))
	path, body, werr := m.Upstream(req, "org/sentiment", "req_1")
	if werr != nil || path != "/v1/models/org/sentiment:predict" {
		t.Fatalf("path %q err %v", path, werr)
	}
	if got := string(body); got != `{"instances":[{"max_tokens":256,"temperature":0.7,"text":"great"}]}` {
		t.Errorf("body = %s", got)
	}
	out, err := m.AppendAnswer(nil, []byte(`{"predictions":[{"label":"positive","confidence":0.93}]}`), req,
		Meta{ID: "pred-1", Model: "sentiment", Created: 100})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"pred-1","object":"prediction","model":"sentiment","created":100,"predictions":[{"label":"positive","confidence":0.93}],"prediction":"positive","confidence":0.93,"usage":{"instances":1,"input_characters":5}}`
	if string(out) != want {
		t.Errorf("answer\n got %s\nwant %s", out, want)
	}
	if _, err := m.AppendAnswer(nil, []byte(`{"outputs":[]}`), req, Meta{}); err != ErrUpstreamAnswer {
		t.Errorf("a non-KServe answer: %v", err)
	}
	// several instances: prediction is null, usage counted with tokens
	m2 := compile(t, Config{InputSchema: tabular})
	req2, _ := m2.Validate([]byte(`{"instances":[{"age":1,"income":2},{"age":3,"income":4}]}`))
	_, body, _ = m2.Upstream(req2, "t", "")
	if got := gjson.GetBytes(body, "instances.#").Int(); got != 2 {
		t.Errorf("instances sent: %s", body)
	}
	out, _ = m2.AppendAnswer(nil, []byte(`{"predictions":[1,0]}`), req2, Meta{Counted: true, Tokens: 7})
	if g := gjson.ParseBytes(out); g.Get("prediction").Type != gjson.Null || g.Get("confidence").Exists() ||
		g.Get("usage.prompt_tokens").Int() != 7 || g.Get("usage.instances").Int() != 2 {
		t.Errorf("answer = %s", out)
	}
}

func TestOIPV2(t *testing.T) {
	m := compile(t, Config{Protocol: OIPV2, InputSchema: tabular, TensorOutputs: []string{"label", "confidence"},
		TensorInputs: []TensorInput{{Name: "age", Datatype: "INT32"}, {Name: "income", Datatype: "FP32"},
			{Name: "segment", Datatype: "BYTES"}}})
	req, werr := m.Validate([]byte(`{"instances":[{"age":30,"income":1.5},{"age":40,"income":2e3,"segment":"b"}]}`))
	if werr != nil {
		t.Fatal(werr)
	}
	path, body, werr := m.Upstream(req, "income", "req_9")
	if werr != nil || path != "/v2/models/income/infer" {
		t.Fatalf("path %q err %v", path, werr)
	}
	want := `{"id":"req_9","inputs":[{"name":"age","datatype":"INT32","shape":[2],"data":[30,40]},` +
		`{"name":"income","datatype":"FP32","shape":[2],"data":[1.5,2e3]},` +
		`{"name":"segment","datatype":"BYTES","shape":[2],"data":["a","b"]}],"outputs":[{"name":"label"},{"name":"confidence"}]}`
	if string(body) != want {
		t.Errorf("infer request\n got %s\nwant %s", body, want)
	}
	if !json.Valid(body) {
		t.Fatal("infer request is not JSON")
	}
	resp := `{"model_name":"income","outputs":[{"name":"confidence","shape":[2,1],"datatype":"FP32","data":[0.9,0.6]},` +
		`{"name":"label","shape":[2],"datatype":"BYTES","data":["high","low"]}]}`
	out, err := m.AppendAnswer(nil, []byte(resp), req, Meta{ID: "pred-2", Model: "income"})
	if err != nil {
		t.Fatal(err)
	}
	if got := gjson.GetBytes(out, "predictions").Raw; got != `[{"label":"high","confidence":[0.9]},{"label":"low","confidence":[0.6]}]` {
		t.Errorf("predictions = %s", got)
	}
	for _, bad := range []string{`{}`, `{"outputs":[{"name":"label","shape":[3],"data":["a","b"]}]}`,
		`{"outputs":[{"name":"label","shape":[3],"data":["a","b","c"]}]}`, `{"outputs":[{"shape":[2],"data":[1,2]}]}`} {
		if _, err := m.AppendAnswer(nil, []byte(bad), req, Meta{}); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
	// a single instance: the whole tensor is its row; prediction and confidence filled
	seed := compile(t, Config{Protocol: OIPV2})
	one, _ := seed.Validate([]byte(`{"text":"nice"}`))
	_, body, _ = seed.Upstream(one, "s", "r")
	if got := gjson.GetBytes(body, "inputs.0").Raw; got != `{"name":"text","datatype":"BYTES","shape":[1],"data":["nice"]}` {
		t.Errorf("seed tensor = %s", got)
	}
	out, _ = seed.AppendAnswer(nil, []byte(`{"outputs":[{"name":"label","shape":[1],"datatype":"BYTES","data":["positive"]},`+
		`{"name":"confidence","shape":[1],"datatype":"FP32","data":[0.8]}]}`), one, Meta{})
	if g := gjson.ParseBytes(out); g.Get("prediction").String() != "positive" || g.Get("confidence").Float() != 0.8 {
		t.Errorf("single answer = %s", out)
	}
}

func TestTensorRefusals(t *testing.T) {
	schema := `{"type":"object","properties":{"instances":{"type":"array"}}}`
	m := compile(t, Config{Protocol: OIPV2, InputSchema: schema, TensorInputs: []TensorInput{{Name: "x", Datatype: "UINT8", Field: "f.v"}}})
	for _, tc := range []struct{ body, param, msg string }{
		{`{"instances":[{"f":{"v":1}},{"f":{}}]}`, "instances[1].f.v", "Missing required parameter"},
		{`{"instances":[{"f":{"v":256}}]}`, "instances[0].f.v", "out of range"},
		{`{"instances":[{"f":{"v":1.5}}]}`, "instances[0].f.v", "expected an integer"},
		{`{"instances":[{"f":{"v":"1"}}]}`, "instances[0].f.v", "expected a number"},
		{`{"instances":[{"f":{"v":[1,2]}},{"f":{"v":[1]}}]}`, "instances[1].f.v", "same shape [2], got [1]"},
		{`{"instances":[{"f":{"v":[[1,2],[3]]}}]}`, "instances[0].f.v[1]", "same length"},
	} {
		req, werr := m.Validate([]byte(tc.body))
		if werr != nil {
			t.Fatalf("%s: %v", tc.body, werr)
		}
		_, _, werr = m.Upstream(req, "m", "")
		if werr == nil || werr.Param != tc.param || !strings.Contains(werr.Message, tc.msg) {
			t.Errorf("%s: got %v, want param %q (%s)", tc.body, werr, tc.param, tc.msg)
		}
	}
	req, _ := m.Validate([]byte(`{"instances":[{"f":{"v":[[1,2],[3,4]]}}]}`))
	_, body, werr := m.Upstream(req, "m", "")
	if werr != nil || gjson.GetBytes(body, "inputs.0.shape").Raw != "[1,2,2]" || gjson.GetBytes(body, "inputs.0.data").Raw != "[1,2,3,4]" {
		t.Errorf("nested rows: %s %v", body, werr)
	}
}

func TestPassthrough(t *testing.T) {
	m := compile(t, Config{Protocol: Passthrough, PredictPath: "/predict/{model}"})
	req, _ := m.Validate([]byte(`{"text":"hi","model":"client-name"}`))
	path, body, _ := m.Upstream(req, "up", "")
	if path != "/predict/up" || gjson.GetBytes(body, "model").String() != "up" || gjson.GetBytes(body, "temperature").Float() != 0.7 {
		t.Errorf("path %q body %s", path, body)
	}
	out, _ := m.AppendAnswer(nil, []byte(`{"label":"x","score":0.5}`), req, Meta{})
	if g := gjson.ParseBytes(out); g.Get("predictions.0.label").String() != "x" || g.Get("confidence").Float() != 0.5 {
		t.Errorf("answer = %s", out)
	}
}

func TestUpstreamError(t *testing.T) {
	for _, tc := range []struct {
		status     int
		body       string
		wantStatus int
		code       string
		retry      bool
	}{
		{400, `{"error":"Invalid input: expected 4 features"}`, 400, "", false},
		{404, `{"error":"Model with name sentiment does not exist."}`, 404, "model_not_found", false},
		{503, `{"error":"Model sentiment is not ready."}`, 503, "model_loading", true},
		{500, `{"error":"inference failed"}`, 502, "", false},
	} {
		werr := UpstreamError(tc.status, "application/json", []byte(tc.body))
		if werr.Status != tc.wantStatus || werr.Code != tc.code || (werr.RetryAfter > 0) != tc.retry {
			t.Errorf("%d %s: got %d %q retry %v (%s)", tc.status, tc.body, werr.Status, werr.Code, werr.RetryAfter, werr.Message)
		}
	}
}
