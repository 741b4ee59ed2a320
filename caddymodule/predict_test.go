package caddymodule_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/tidwall/gjson"

	"github.com/caddyai/gateway/internal/wiretest"
	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/simulator"
)

const (
	secretPredict     = "sk-test-predict"
	secretPredictOnly = "sk-test-predict-sentiment"
)

// tabularSchema is a predict model's input_schema: instances of a tabular model.
const tabularSchema = `{
  "type": "object",
  "required": ["instances"],
  "additionalProperties": false,
  "properties": {
    "instances": {
      "type": "array", "minItems": 1, "maxItems": 8,
      "items": {
        "type": "object",
        "required": ["age", "note"],
        "properties": {
          "age": {"type": "integer", "minimum": 0, "maximum": 150},
          "note": {"type": "string", "maxLength": 200},
          "segment": {"type": "string", "default": "retail"}
        }
      }
    }
  }
}`

type predictSetup struct {
	port     int
	upstream *recordingUpstream
}

func startPredict(t *testing.T) *predictSetup {
	t.Helper()
	up := newUpstream(t, simulator.Config{Models: []string{"sentiment", "tabular", "demo-llama"}})
	schema := filepath.Join(t.TempDir(), "tabular.json")
	if err := os.WriteFile(schema, []byte(tabularSchema), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	startCaddy(t, globalOptions+fmt.Sprintf(`
:%[1]d {
	ai_gateway {
		key %[2]s {
			id predict
		}
		key %[3]s {
			id sentiment-only
			models sentiment
		}
		cache
		model sentiment {
			kind predict
			protocol kserve_v1
			upstream %[4]s
		}
		model org/sentiment-v2 {
			kind predict
			protocol oip_v2
			upstream_name sentiment
			tokenizer cl100k_base
			upstream %[4]s
		}
		model tabular {
			kind predict
			protocol oip_v2
			input_schema %[5]s
			tensor_input age INT32
			tensor_input note BYTES note
			tensor_output label confidence
			upstream %[4]s
			cache off
		}
		model limited {
			kind predict
			upstream_name sentiment
			rpm 2
			upstream %[4]s
		}
		model gated {
			kind predict
			upstream_name sentiment
			max_concurrent 1
			upstream %[4]s
		}
		api_version {
			header X-Api-Version
			supported 2025-01-01 2025-06-01
		}
		model unknown-upstream {
			kind predict
			upstream %[4]s
		}
		model demo-llama {
			upstream %[4]s
		}
		storage {
			dir %[6]s
		}
	}
	reverse_proxy {
		dynamic ai_gateway
	}
}
`, port, policy.FormatHash(policy.HashSecret(secretPredict)), policy.FormatHash(policy.HashSecret(secretPredictOnly)), up.addr(), schema, t.TempDir()))
	return &predictSetup{port: port, upstream: up}
}

func (s *predictSetup) do(t *testing.T, method, path, key, body string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	var req *http.Request
	var err error
	if body == "" {
		req, err = http.NewRequest(method, url(s.port, path), nil)
	} else {
		req, err = http.NewRequest(method, url(s.port, path), strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
	}
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return doRequest(t, req)
}

// TestPredictThroughGateway runs predict requests through a real Caddy to simulated KServe V1 and
// OIP V2 servers: the answer shape, what the upstream received, schema refusals with exact
// params, upstream errors in each shape, ids with '/', key allow-lists, rpm, the cache and
// /v1/models.
func TestPredictThroughGateway(t *testing.T) {
	s := startPredict(t)

	t.Run("kserve_v1", func(t *testing.T) {
		resp, body := s.do(t, "POST", "/v1/models/sentiment/predict", secretPredict, `{"text":"I love it"}`)
		if resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		g := gjson.ParseBytes(body)
		if !strings.HasPrefix(g.Get("id").String(), "pred-") || g.Get("object").String() != "prediction" || g.Get("model").String() != "sentiment" ||
			g.Get("created").Int() == 0 || g.Get("prediction").String() != "positive" || g.Get("confidence").Type != gjson.Number ||
			g.Get("predictions.0.label").String() != "positive" || g.Get("usage.instances").Int() != 1 || g.Get("usage.input_characters").Int() != 9 {
			t.Errorf("answer = %s", body)
		}
		if resp.Header.Get("X-Usage-Instances") != "1" || resp.Header.Get("X-Usage-Input-Characters") != "9" || resp.Header.Get("X-Request-Id") == "" {
			t.Errorf("headers = %v", resp.Header)
		}
		seen := s.upstream.requests()
		last := seen[len(seen)-1]
		if last.Path != "/v1/models/sentiment:predict" || string(last.Body) != `{"instances":[{"max_tokens":256,"temperature":0.7,"text":"I love it"}]}` {
			t.Errorf("upstream got %s %s", last.Path, last.Body)
		}
		if last.Header.Get("Authorization") != "" {
			t.Error("the client's key reached the upstream")
		}
	})

	t.Run("oip_v2 with a slash in the id", func(t *testing.T) {
		for _, tc := range []struct{ path, body string }{
			{"/v1/models/org/sentiment-v2/predict", `{"text":"a terrible, awful film"}`},
			{"/v1/predict", `{"model":"org/sentiment-v2","text":"a terrible, awful film"}`},
		} {
			resp, body := s.do(t, "POST", tc.path, secretPredict, tc.body, "Cache-Control", "no-store")
			g := gjson.ParseBytes(body)
			if resp.StatusCode != 200 || g.Get("model").String() != "org/sentiment-v2" || g.Get("prediction").String() != "negative" ||
				g.Get("predictions.0.confidence").Type != gjson.Number || g.Get("usage.prompt_tokens").Int() == 0 {
				t.Errorf("%s: %d %s", tc.path, resp.StatusCode, body)
			}
			if resp.Header.Get("X-Usage-Prompt-Tokens") != g.Get("usage.prompt_tokens").String() {
				t.Errorf("usage headers %v", resp.Header)
			}
			seen := s.upstream.requests()
			last := seen[len(seen)-1]
			if last.Path != "/v2/models/sentiment/infer" ||
				gjson.GetBytes(last.Body, "inputs.0").Raw != `{"name":"text","datatype":"BYTES","shape":[1],"data":["a terrible, awful film"]}` {
				t.Errorf("upstream got %s %s", last.Path, last.Body)
			}
		}
	})

	t.Run("oip_v2 tensors from a schema", func(t *testing.T) {
		resp, body := s.do(t, "POST", "/v1/models/tabular/predict", secretPredict,
			`{"instances":[{"age":30,"note":"great customer"},{"age":61,"note":"bad debt","segment":"corporate"}]}`)
		g := gjson.ParseBytes(body)
		if resp.StatusCode != 200 || g.Get("predictions.#").Int() != 2 || g.Get("prediction").Type != gjson.Null ||
			g.Get("predictions.0.label").String() != "positive" || g.Get("predictions.1.label").String() != "negative" || g.Get("usage.instances").Int() != 2 {
			t.Errorf("%d %s", resp.StatusCode, body)
		}
		seen := s.upstream.requests()
		last := seen[len(seen)-1]
		if gjson.GetBytes(last.Body, "inputs.0").Raw != `{"name":"age","datatype":"INT32","shape":[2],"data":[30,61]}` ||
			gjson.GetBytes(last.Body, "outputs").Raw != `[{"name":"label"},{"name":"confidence"}]` {
			t.Errorf("upstream got %s", last.Body)
		}
	})

	t.Run("schema refusals", func(t *testing.T) {
		row := `{"age":1,"note":"x"}`
		for _, tc := range []struct{ path, body, param, msg string }{
			{"/v1/models/tabular/predict", `{"instances":[` + row + `,` + row + `,` + row + `,{"age":200,"note":"x"}]}`, "instances[3].age", "expected a value <= 150"},
			{"/v1/models/tabular/predict", `{"instances":[{"age":1}]}`, "instances[0].note", "Missing required parameter"},
			{"/v1/models/tabular/predict", `{"instances":[{"age":"old","note":"x"}]}`, "instances[0].age", "expected integer"},
			{"/v1/models/tabular/predict", `{"rows":[]}`, "instances", "Missing required parameter"},
			{"/v1/models/sentiment/predict", `{}`, "text", "Missing required parameter: 'text'."},
			{"/v1/models/sentiment/predict", `{"text":"` + strings.Repeat("a", 4097) + `"}`, "text", "maximum length 4096"},
			{"/v1/models/sentiment/predict", `{"text":"x","temperature":3}`, "temperature", "<= 2"},
			{"/v1/predict", `{"text":"x"}`, "model", "Missing required parameter: 'model'."},
			{"/v1/models/sentiment/predict", `{"text":`, "", "could not parse the JSON body"},
		} {
			resp, body := s.do(t, "POST", tc.path, secretPredict, tc.body)
			if resp.StatusCode != 400 || gjson.GetBytes(body, "error.param").String() != tc.param ||
				!strings.Contains(gjson.GetBytes(body, "error.message").String(), tc.msg) {
				t.Errorf("%s %.60s: %d %s", tc.path, tc.body, resp.StatusCode, body)
			}
			wiretest.Validate(t, "ErrorResponse", body)
		}
	})

	t.Run("upstream errors", func(t *testing.T) {
		for _, tc := range []struct {
			path, fault string
			status      int
			code        string
			retry       bool
		}{
			{"/v1/models/sentiment/predict", "kind=loading", 503, "model_loading", true},
			{"/v1/models/org/sentiment-v2/predict", "kind=loading", 503, "model_loading", true},
			{"/v1/models/sentiment/predict", "status=400", 400, "", false},
			{"/v1/models/sentiment/predict", "status=500", 502, "", false},
			{"/v1/models/unknown-upstream/predict", "", 404, "model_not_found", false},
			{"/v1/models/sentiment/predict", "kind=garbage", 502, "upstream_invalid_response", false},
		} {
			resp, body := s.do(t, "POST", tc.path, secretPredict, `{"text":"hello there"}`, simulator.FaultHeader, tc.fault, "Cache-Control", "no-store")
			if resp.StatusCode != tc.status || gjson.GetBytes(body, "error.code").String() != tc.code || (resp.Header.Get("Retry-After") != "") != tc.retry {
				t.Errorf("%s %s: %d %v %s", tc.path, tc.fault, resp.StatusCode, resp.Header.Get("Retry-After"), body)
			}
			if tc.retry && gjson.GetBytes(body, "error.retry_after").Int() == 0 {
				t.Errorf("no retry_after in %s", body)
			}
			wiretest.Validate(t, "ErrorResponse", body)
		}
	})

	t.Run("kinds, keys and allow-lists", func(t *testing.T) {
		for _, tc := range []struct {
			path, key, body string
			status          int
			code            string
		}{
			{"/v1/models/demo-llama/predict", secretPredict, `{"text":"x"}`, 400, "model_not_predict"},
			{"/v1/chat/completions", secretPredict, `{"model":"sentiment","messages":[{"role":"user","content":"x"}]}`, 400, "model_is_predict"},
			{"/v1/models/org/sentiment-v2/predict", secretPredictOnly, `{"text":"x"}`, 403, "model_not_allowed"},
			{"/v1/models/nope/predict", secretPredict, `{"text":"x"}`, 404, "model_not_found"},
			{"/v1/models/sentiment/predict", "sk-wrong", `{"text":"x"}`, 401, "invalid_api_key"},
		} {
			resp, body := s.do(t, "POST", tc.path, tc.key, tc.body)
			if resp.StatusCode != tc.status || gjson.GetBytes(body, "error.code").String() != tc.code {
				t.Errorf("%s: %d %s", tc.path, resp.StatusCode, body)
			}
		}
		resp, body := s.do(t, "GET", "/v1/models/sentiment/predict", secretPredict, "")
		if resp.StatusCode != 405 {
			t.Errorf("GET predict: %d %s", resp.StatusCode, body)
		}
	})

	t.Run("rpm", func(t *testing.T) {
		var codes []int
		for i := 0; i < 3; i++ {
			resp, _ := s.do(t, "POST", "/v1/models/limited/predict", secretPredict, fmt.Sprintf(`{"text":"n%d"}`, i))
			codes = append(codes, resp.StatusCode)
		}
		if fmt.Sprint(codes) != "[200 200 429]" {
			t.Errorf("codes = %v", codes)
		}
	})

	t.Run("max_concurrent and version headers", func(t *testing.T) {
		done := make(chan int)
		go func() {
			resp, _ := s.do(t, "POST", "/v1/models/gated/predict", secretPredict, `{"text":"slow"}`, simulator.FaultHeader, "kind=stall;delay=400ms")
			done <- resp.StatusCode
		}()
		waitFor(t, "the slow request to reach the upstream", 5*time.Second, func() bool {
			for _, r := range s.upstream.requests() {
				if strings.Contains(string(r.Body), "slow") {
					return true
				}
			}
			return false
		})
		resp, body := s.do(t, "POST", "/v1/models/gated/predict", secretPredict, `{"text":"fast"}`)
		if resp.StatusCode != 503 || gjson.GetBytes(body, "error.code").Str != "model_overloaded" || resp.Header.Get("Retry-After") == "" {
			t.Errorf("second request: %d %s", resp.StatusCode, body)
		}
		if code := <-done; code != 200 {
			t.Errorf("the slow request: %d", code)
		}
		resp, _ = s.do(t, "POST", "/v1/models/sentiment/predict", secretPredict, `{"text":"v"}`, "X-Api-Version", "2025-01-01")
		if resp.Header.Get("X-Api-Version") != "2025-01-01" {
			t.Errorf("version header %q", resp.Header.Get("X-Api-Version"))
		}
		resp, body = s.do(t, "POST", "/v1/models/sentiment/predict", secretPredict, `{"text":"v"}`, "X-Api-Version", "1999-01-01")
		if resp.StatusCode != 400 {
			t.Errorf("unsupported version: %d %s", resp.StatusCode, body)
		}
	})

	t.Run("cache", func(t *testing.T) {
		before := len(s.upstream.requests())
		body := `{"text":"cache me, it is good"}`
		r1, b1 := s.do(t, "POST", "/v1/models/sentiment/predict", secretPredict, body)
		r2, b2 := s.do(t, "POST", "/v1/models/sentiment/predict", secretPredict, `{"temperature":0.7, "text":"cache me, it is good"}`)
		if r1.Header.Get("X-Cache") != "MISS" || r2.Header.Get("X-Cache") != "HIT" || gjson.GetBytes(b1, "predictions").Raw != gjson.GetBytes(b2, "predictions").Raw {
			t.Errorf("x-cache %q then %q\n%s\n%s", r1.Header.Get("X-Cache"), r2.Header.Get("X-Cache"), b1, b2)
		}
		if n := len(s.upstream.requests()) - before; n != 1 {
			t.Errorf("the upstream got %d requests, want 1", n)
		}
		// another key has its own entries
		r3, _ := s.do(t, "POST", "/v1/models/sentiment/predict", secretPredictOnly, body)
		if r3.Header.Get("X-Cache") != "MISS" {
			t.Errorf("another key's x-cache = %q", r3.Header.Get("X-Cache"))
		}
	})

	t.Run("models", func(t *testing.T) {
		_, body := s.do(t, "GET", "/v1/models", secretPredict, "")
		if k := gjson.GetBytes(body, `data.#(id=="org/sentiment-v2").kind`).String(); k != "predict" {
			t.Errorf("list: %s", body)
		}
		if gjson.GetBytes(body, `data.#(id=="demo-llama").kind`).Exists() {
			t.Errorf("a chat model has a kind: %s", body)
		}
		wiretest.Validate(t, "ListModelsResponse", body)
		for _, tc := range []struct {
			id    string
			ready string
		}{{"org/sentiment-v2", "true"}, {"sentiment", "true"}, {"unknown-upstream", "false"}} {
			resp, body := s.do(t, "GET", "/v1/models/"+tc.id, secretPredict, "")
			if resp.StatusCode != 200 || gjson.GetBytes(body, "ready").Raw != tc.ready || gjson.GetBytes(body, "id").String() != tc.id {
				t.Errorf("%s: %d %s", tc.id, resp.StatusCode, body)
			}
			wiretest.Validate(t, "Model", body)
		}
		_, body = s.do(t, "GET", "/v1/models", secretPredictOnly, "")
		if n := gjson.GetBytes(body, "data.#").Int(); n != 1 {
			t.Errorf("the sentiment-only key sees %d models: %s", n, body)
		}
	})

	t.Run("batch", func(t *testing.T) {
		c := openai.NewClient(option.WithBaseURL(url(s.port, "/v1/")), option.WithAPIKey(secretPredict), option.WithMaxRetries(0))
		endpoint := "/v1/models/org/sentiment-v2/predict"
		lines := `{"custom_id":"a","method":"POST","url":"` + endpoint + `","body":{"text":"what a great day"}}` + "\n" +
			`{"custom_id":"b","method":"POST","url":"` + endpoint + `","body":{"text":"` + strings.Repeat("x", 5000) + `"}}` + "\n"
		f, err := c.Files.New(context.Background(), openai.FileNewParams{File: openai.File(strings.NewReader(lines), "predict.jsonl", "application/jsonl"),
			Purpose: openai.FilePurposeBatch})
		if err != nil {
			t.Fatal(err)
		}
		b, err := c.Batches.New(context.Background(), openai.BatchNewParams{CompletionWindow: openai.BatchNewParamsCompletionWindow24h,
			Endpoint: openai.BatchNewParamsEndpoint(endpoint), InputFileID: f.ID})
		if err != nil {
			t.Fatalf("creating a predict batch: %v", err)
		}
		b = waitBatch(t, c, b.ID)
		if b.Status != openai.BatchStatusCompleted || b.RequestCounts.Completed != 1 || b.RequestCounts.Failed != 1 {
			t.Fatalf("batch %s: %s", b.Status, b.RawJSON())
		}
		out := fileLines(t, c, b.OutputFileID)
		if got := out["a"].Get("response.body.prediction").String(); got != "positive" || out["a"].Get("response.status_code").Int() != 200 {
			t.Errorf("output line: %s", out["a"].Raw)
		}
		errs := fileLines(t, c, b.ErrorFileID)
		if errs["b"].Get("response.status_code").Int() != 400 || errs["b"].Get("response.body.error.param").String() != "text" {
			t.Errorf("error line: %s", errs["b"].Raw)
		}
	})
}

// TestDemoPredict: the README's predict curl works on the demo of `make run` (the root
// Caddyfile, its ports moved, the simulator it runs as the upstream).
func TestDemoPredict(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(wiretest.RepoRoot(t), "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	gw, sim, admin := freePort(t), freePort(t), freePort(t)
	startCaddy(t, strings.NewReplacer(":8080", fmt.Sprintf(":%d", gw), ":8081", fmt.Sprintf(":%d", sim),
		"localhost:2019", fmt.Sprintf("localhost:%d", admin)).Replace(string(data)))
	s := &predictSetup{port: gw}
	resp, body := s.do(t, "POST", "/v1/models/sentiment/predict", "sk-demo-gateway", `{"text":"I love this product"}`)
	if resp.StatusCode != 200 || gjson.GetBytes(body, "prediction").String() != "positive" || gjson.GetBytes(body, "object").String() != "prediction" {
		t.Errorf("%d %s", resp.StatusCode, body)
	}
	resp, body = s.do(t, "GET", "/v1/models/sentiment", "sk-demo-gateway", "")
	if resp.StatusCode != 200 || gjson.GetBytes(body, "ready").Raw != "true" {
		t.Errorf("%d %s", resp.StatusCode, body)
	}
}
