package simulator

import (
	"net/http"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

func TestPredictKServeV1(t *testing.T) {
	s := newServer(t, Config{Models: []string{"sentiment", "org/tabular"}})
	rec := do(t, s, http.MethodPost, "/v1/models/sentiment:predict", `{"instances":[{"text":"I love it, great"},"this is awful",{"x":1}]}`)
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	g := gjson.Parse(rec.Body.String())
	if got := g.Get("predictions.#.label").Raw; got != `["positive","negative","neutral"]` {
		t.Errorf("labels = %s", got)
	}
	again := do(t, s, http.MethodPost, "/v1/models/sentiment:predict", `{"instances":[{"text":"I love it, great"}]}`)
	if c := gjson.Get(again.Body.String(), "predictions.0.confidence").Float(); c != g.Get("predictions.0.confidence").Float() || c < 0.5 || c >= 1 {
		t.Errorf("confidence not deterministic or out of range: %v", c)
	}
	for _, tc := range []struct {
		path, body, fault string
		status            int
		msg               string
	}{
		{"/v1/models/nope:predict", `{"instances":[1]}`, "", 404, "does not exist"},
		{"/v1/models/sentiment:predict", `{"inputs":[1]}`, "", 400, "instances"},
		{"/v1/models/sentiment:predict", `{"instances":[1]}`, "kind=loading", 503, "not ready"},
		{"/v1/models/sentiment:predict", `{"instances":[1]}`, "status=500", 500, "Inference failed"},
		{"/v1/models/org/tabular:predict", `{"instances":[1]}`, "", 200, "predictions"},
	} {
		rec := do(t, s, http.MethodPost, tc.path, tc.body, FaultHeader, tc.fault)
		if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.msg) {
			t.Errorf("%s %s %s: %d %s", tc.path, tc.body, tc.fault, rec.Code, rec.Body)
		}
		if tc.status >= 400 && !gjson.Get(rec.Body.String(), "error").IsObject() && gjson.Get(rec.Body.String(), "error").Type != gjson.String {
			t.Errorf("error shape: %s", rec.Body)
		}
	}
}

func TestPredictOIPV2(t *testing.T) {
	s := newServer(t, Config{Models: []string{"sentiment"}})
	body := `{"id":"r1","inputs":[{"name":"text","shape":[2],"datatype":"BYTES","data":["good movie","bad movie"]}],"outputs":[{"name":"label"}]}`
	rec := do(t, s, http.MethodPost, "/v2/models/sentiment/infer", body)
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	want := `{"model_name":"sentiment","model_version":"1","id":"r1","outputs":[{"name":"label","shape":[2],"datatype":"BYTES","data":["positive","negative"]}]}`
	if rec.Body.String() != want {
		t.Errorf("infer\n got %s\nwant %s", rec.Body, want)
	}
	for _, tc := range []struct {
		method, path, body, fault string
		status                    int
	}{
		{"POST", "/v2/models/sentiment/infer", `{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","data":[1,2]}]}`, "", 400},
		{"POST", "/v2/models/sentiment/infer", `{"inputs":[]}`, "", 400},
		{"POST", "/v2/models/other/infer", `{}`, "", 404},
		{"GET", "/v2/models/sentiment/ready", "", "", 200},
		{"GET", "/v2/models/sentiment/ready", "", "kind=loading", 400},
		{"GET", "/v2/models/other/ready", "", "", 404},
		{"GET", "/v2/health/ready", "", "", 200},
		{"POST", "/v2/models/sentiment/infer", `{}`, "kind=overloaded", 503},
	} {
		rec := do(t, s, tc.method, tc.path, tc.body, FaultHeader, tc.fault)
		if rec.Code != tc.status {
			t.Errorf("%s %s %s: %d %s", tc.method, tc.path, tc.fault, rec.Code, rec.Body)
		}
	}
}
