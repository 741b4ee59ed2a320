package predict

import (
	"encoding/json"
	"testing"
)

// FuzzValidate: any body is either refused with a 400 or accepted, and an accepted body gives a
// JSON body with its defaults and an upstream request in every protocol that is JSON or a 400.
func FuzzValidate(f *testing.F) {
	for _, s := range []string{`{"text":"hi"}`, `{"text":"x","temperature":3}`, `{"instances":[{"age":1,"income":2}]}`,
		`{"instances":[{"age":-1}]}`, `[]`, `{"text":`, `{"instances":[{"age":1,"income":1,"scores":[1,[2]]}]}`, `{"model":"m"}`} {
		f.Add([]byte(s))
	}
	seed, err := Compile(Config{Protocol: OIPV2})
	if err != nil {
		f.Fatal(err)
	}
	tab, err := Compile(Config{Protocol: OIPV2, InputSchema: tabular, TensorInputs: []TensorInput{
		{Name: "age", Datatype: "INT8"}, {Name: "income", Datatype: "FP16"}, {Name: "scores", Datatype: "FP32"}}})
	if err != nil {
		f.Fatal(err)
	}
	kserve, _ := Compile(Config{InputSchema: tabular})
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, m := range []*Model{seed, tab, kserve} {
			req, werr := m.Validate(body)
			if werr != nil {
				if werr.Status != 400 || werr.Message == "" {
					t.Fatalf("refusal %d %q", werr.Status, werr.Message)
				}
				continue
			}
			if !json.Valid(req.Body()) || req.Instances < 1 {
				t.Fatalf("accepted body %s gives %s", body, req.Body())
			}
			_, up, werr := m.Upstream(req, "m", "id")
			if werr != nil {
				if werr.Status != 400 {
					t.Fatalf("upstream refusal %d", werr.Status)
				}
				continue
			}
			if !json.Valid(up) {
				t.Fatalf("upstream body is not JSON: %s", up)
			}
		}
	})
}

// FuzzAnswer: any upstream answer is turned into a JSON answer or refused with
// ErrUpstreamAnswer, never a panic or broken JSON.
func FuzzAnswer(f *testing.F) {
	for _, s := range []string{`{"predictions":[{"label":"a","confidence":0.5}]}`,
		`{"outputs":[{"name":"label","shape":[2],"datatype":"BYTES","data":["a","b"]}]}`,
		`{"outputs":[{"name":"p","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4]]}]}`,
		`{"outputs":[{"name":"p","shape":[2,-1],"data":[1]}]}`, `{"outputs":[{"name":"p","shape":[0],"data":[]}]}`, `null`, `{`} {
		f.Add([]byte(s), 2)
	}
	oip, _ := Compile(Config{Protocol: OIPV2, InputSchema: tabular, TensorInputs: []TensorInput{{Name: "age", Datatype: "INT32"}}})
	kserve, _ := Compile(Config{InputSchema: tabular})
	pass, _ := Compile(Config{Protocol: Passthrough, PredictPath: "/p", InputSchema: tabular})
	f.Fuzz(func(t *testing.T, upstream []byte, n int) {
		n = 1 + (n&0xff)%4
		body := []byte(`{"instances":[` + repeatJoin(`{"age":1,"income":2}`, n) + `]}`)
		for _, m := range []*Model{oip, kserve, pass} {
			req, werr := m.Validate(body)
			if werr != nil {
				t.Fatal(werr)
			}
			out, err := m.AppendAnswer(nil, upstream, req, Meta{ID: "pred-1", Model: "m"})
			if err != nil {
				continue
			}
			if !json.Valid(out) {
				t.Fatalf("answer is not JSON: %s", out)
			}
		}
	})
}

func repeatJoin(s string, n int) string {
	out := s
	for i := 1; i < n; i++ {
		out += "," + s
	}
	return out
}
