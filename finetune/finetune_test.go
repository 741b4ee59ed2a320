package finetune

import (
	"strconv"
	"strings"
	"testing"
)

func TestParseCreate(t *testing.T) {
	ok := []string{
		`{"model":"demo-llama","training_file":"file-1"}`,
		`{"model":"m","training_file":"file-1","validation_file":"file-2","suffix":"x","seed":42,"metadata":{"a":"b"},` +
			`"hyperparameters":{"batch_size":"auto","learning_rate_multiplier":0.1,"n_epochs":3},` +
			`"method":{"type":"dpo","dpo":{"hyperparameters":{"beta":0.5,"n_epochs":"auto"}}},` +
			`"integrations":[{"type":"wandb","wandb":{"project":"p"}}]}`,
		`{"model":"m","training_file":"f","suffix":null,"seed":null,"validation_file":null}`,
	}
	for _, body := range ok {
		req, werr := ParseCreate([]byte(body))
		if werr != nil {
			t.Errorf("%s: %v", body, werr)
			continue
		}
		if req.Model == "" || req.TrainingFile == "" {
			t.Errorf("%s: %+v", body, req)
		}
	}
	for _, tc := range []struct{ body, param string }{
		{`{"training_file":"f"}`, "model"},
		{`{"model":"m"}`, "training_file"},
		{`{"model":1,"training_file":"f"}`, "model"},
		{`{"model":"m","training_file":""}`, "training_file"},
		{`{"model":"m","training_file":"f","suffix":""}`, "suffix"},
		{`{"model":"m","training_file":"f","suffix":"` + strings.Repeat("s", 65) + `"}`, "suffix"},
		{`{"model":"m","training_file":"f","seed":-1}`, "seed"},
		{`{"model":"m","training_file":"f","seed":2147483648}`, "seed"},
		{`{"model":"m","training_file":"f","seed":1.5}`, "seed"},
		{`{"model":"m","training_file":"f","hyperparameters":{"batch_size":0}}`, "hyperparameters.batch_size"},
		{`{"model":"m","training_file":"f","hyperparameters":{"batch_size":257}}`, "hyperparameters.batch_size"},
		{`{"model":"m","training_file":"f","hyperparameters":{"learning_rate_multiplier":0}}`, "hyperparameters.learning_rate_multiplier"},
		{`{"model":"m","training_file":"f","hyperparameters":{"n_epochs":51}}`, "hyperparameters.n_epochs"},
		{`{"model":"m","training_file":"f","hyperparameters":{"n_epochs":"many"}}`, "hyperparameters.n_epochs"},
		{`{"model":"m","training_file":"f","method":{"type":"magic"}}`, "method.type"},
		{`{"model":"m","training_file":"f","method":{"type":"supervised","supervised":{"hyperparameters":{"batch_size":1000}}}}`, "method.supervised.hyperparameters.batch_size"},
		{`{"model":"m","training_file":"f","integrations":[{"type":"wandb","wandb":{}}]}`, "integrations[0].wandb.project"},
		{`{"model":"m","training_file":"f","metadata":{"k":1}}`, "metadata.k"},
		{`{"model":"m","training_file":"f","metadata":{"` + strings.Repeat("k", 65) + `":"v"}}`, "metadata"},
		{`[]`, "body"},
		{`{"model":`, ""},
	} {
		_, werr := ParseCreate([]byte(tc.body))
		if werr == nil || werr.Status != 400 || werr.Param != tc.param {
			t.Errorf("%.80s: got %v, want param %q", tc.body, werr, tc.param)
		}
	}
	var many []string
	for i := 0; i < 17; i++ {
		many = append(many, `"k`+strconv.Itoa(i)+`":"v"`)
	}
	if _, werr := ParseCreate([]byte(`{"model":"m","training_file":"f","metadata":{` + strings.Join(many, ",") + `}}`)); werr == nil || werr.Param != "metadata" {
		t.Errorf("17 metadata pairs: %v", werr)
	}
}

func FuzzParseCreate(f *testing.F) {
	f.Add([]byte(`{"model":"m","training_file":"f","hyperparameters":{"n_epochs":3}}`))
	f.Add([]byte(`{"model":"m","training_file":"f","method":{"type":"dpo","dpo":{"hyperparameters":{"beta":1}}}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, werr := ParseCreate(body)
		if werr != nil && werr.Status != 400 || werr == nil && (req.Model == "" || req.TrainingFile == "") {
			t.Fatalf("%s: %v %+v", body, werr, req)
		}
	})
}
