package batch

import (
	"strings"
	"testing"
)

func TestPredictEndpoints(t *testing.T) {
	for ep, want := range map[string]string{
		"/v1/models/sentiment/predict":     "sentiment",
		"/v1/models/org/sentiment/predict": "org/sentiment",
		"/v1/models//predict":              "",
		"/v1/models/predict":               "",
		"/v1/models/x/predict/":            "",
		"/v1/chat/completions":             "",
	} {
		if got, ok := PredictModel(ep); got != want && ok || ok != (want != "") {
			t.Errorf("PredictModel(%q) = %q, %v", ep, got, ok)
		}
	}
	body := `{"input_file_id":"file-1","endpoint":"/v1/models/org/sentiment/predict","completion_window":"24h"}`
	if _, werr := ParseCreateRequest([]byte(body), SupportedEndpoints); werr != nil {
		t.Errorf("a predict endpoint refused: %v", werr)
	}
	// predict lines need no body.model: the endpoint names it
	lines := `{"custom_id":"a","method":"POST","url":"/v1/models/org/sentiment/predict","body":{"text":"x"}}` + "\n" +
		`{"custom_id":"b","method":"POST","url":"/v1/models/org/sentiment/predict","body":{"text":"y","model":"other"}}` + "\n"
	in, err := ReadInput(strings.NewReader(lines), "/v1/models/org/sentiment/predict", InputLimits{})
	if err != nil || !in.OK() || in.Model != "org/sentiment" || len(in.Tasks) != 2 {
		t.Fatalf("input %+v, %v", in, err)
	}
}
