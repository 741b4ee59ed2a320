package caddymodule_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/ssestream"
	"github.com/openai/openai-go/v3/responses"

	"github.com/caddyai/gateway/internal/testredis"
	"github.com/caddyai/gateway/internal/wiretest"
	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/simulator"
)

const secretLimited = "sk-test-responses-limited"

// responsesSetup runs a gateway with three keys (all, other, limited: rpm 1) in front of a
// simulated upstream that serves /v1/responses, with a small context window.
func responsesSetup(t *testing.T) (port int, up *recordingUpstream) {
	t.Helper()
	up = newUpstream(t, simulator.Config{Models: []string{"demo-llama"}, ResponseTokens: 6})
	port = freePort(t)
	startCaddy(t, globalOptions+fmt.Sprintf(`
:%d {
	ai_gateway {
		key %s {
			id all
		}
		key %s {
			id other
		}
		key %s {
			id limited
			rpm 1
		}
		model demo-llama {
			context_window 400
			upstream %s
		}
		storage {
			dir %s
		}
	}
	reverse_proxy {
		dynamic ai_gateway
	}
}
`, port, policy.FormatHash(policy.HashSecret(secretAll)), policy.FormatHash(policy.HashSecret(secretQwen)),
		policy.FormatHash(policy.HashSecret(secretLimited)), up.addr(), t.TempDir()))
	return port, up
}

// answerCall is the request that gives the model the output of call, the get_weather call it
// made when asked question.
func answerCall(model, question string, call responses.ResponseOutputItemUnion) responses.ResponseNewParams {
	out := responses.ResponseInputItemParamOfFunctionCallOutput(`{"temperature":21}`)
	out.OfFunctionCallOutput.CallID = openai.String(call.CallID)
	return responses.ResponseNewParams{
		Model: model,
		Input: responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{
			responses.ResponseInputItemParamOfMessage(question, responses.EasyInputMessageRoleUser),
			responses.ResponseInputItemParamOfFunctionCall(call.Arguments.OfString, call.CallID, call.Name),
			out,
		}},
		Tools: []responses.ToolUnionParam{weatherTool},
	}
}

var weatherTool = responses.ToolUnionParam{OfFunction: &responses.FunctionToolParam{
	Name:        "get_weather",
	Description: openai.String("The weather in a city."),
	Parameters: map[string]any{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}},
		"required": []string{"city"}, "additionalProperties": false},
	Strict: openai.Bool(true),
}}

// usageDelta runs fn and returns what the simulator counted meanwhile.
func usageDelta(up *recordingUpstream, fn func()) (prompt, completion int64) {
	before := up.sim.Stats()
	fn()
	after := up.sim.Stats()
	return after.PromptTokens - before.PromptTokens, after.CompletionTokens - before.CompletionTokens
}

// responseEvents reads a Responses stream to its end, each event validated against the spec,
// and returns the events and the stream's error.
func responseEvents(t *testing.T, s *ssestream.Stream[responses.ResponseStreamEventUnion]) ([]responses.ResponseStreamEventUnion, error) {
	t.Helper()
	var events []responses.ResponseStreamEventUnion
	for s.Next() {
		ev := s.Current()
		wiretest.Validate(t, "ResponseStreamEvent", []byte(ev.RawJSON()))
		events = append(events, ev)
	}
	return events, s.Err()
}

// streamedText reads a Responses stream that must end cleanly with its events numbered in
// order, and returns the text of its deltas and the response.completed event's response.
func streamedText(t *testing.T, s *ssestream.Stream[responses.ResponseStreamEventUnion]) (string, *responses.Response) {
	t.Helper()
	events, err := responseEvents(t, s)
	var text strings.Builder
	var completed *responses.Response
	for n, ev := range events {
		if ev.SequenceNumber != int64(n) {
			t.Errorf("event %d: sequence_number %d", n, ev.SequenceNumber)
		}
		switch ev.Type {
		case "response.output_text.delta":
			text.WriteString(ev.Delta)
		case "response.completed":
			r := ev.Response
			completed = &r
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return text.String(), completed
}

func TestResponsesSDK(t *testing.T) {
	port, up := responsesSetup(t)
	ctx := context.Background()
	c := filesClient(port, secretAll)
	other := filesClient(port, secretQwen)

	var stored *responses.Response
	t.Run("plain", func(t *testing.T) {
		var hr *http.Response
		p, o := usageDelta(up, func() {
			var err error
			stored, err = c.Responses.New(ctx, responses.ResponseNewParams{
				Model:        "demo-llama",
				Input:        responses.ResponseNewParamsInputUnion{OfString: openai.String("Say hello.")},
				Instructions: openai.String("Be brief."),
			}, option.WithResponseInto(&hr))
			if err != nil {
				t.Fatal(err)
			}
		})
		wiretest.Validate(t, "Response", []byte(stored.RawJSON()))
		if stored.Status != "completed" || stored.OutputText() == "" || stored.Usage.InputTokens != p || stored.Usage.OutputTokens != o ||
			hr.Header.Get("X-Usage-Prompt-Tokens") != fmt.Sprint(p) || hr.Header.Get("X-Usage-Completion-Tokens") != fmt.Sprint(o) {
			t.Errorf("simulator counted %d/%d; got %s, headers %v", p, o, stored.RawJSON(), hr.Header)
		}
		if hr.Header.Get("X-Ratelimit-Remaining-Requests") != "" {
			t.Errorf("unlimited key got rate-limit headers %v", hr.Header)
		}
	})
	if stored == nil {
		t.Fatal("no stored response")
	}

	t.Run("stream", func(t *testing.T) {
		var completed *responses.Response
		var text string
		p, o := usageDelta(up, func() {
			s := c.Responses.NewStreaming(ctx, responses.ResponseNewParams{
				Model: "demo-llama",
				Input: responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{
					responses.ResponseInputItemParamOfMessage("Count to three.", responses.EasyInputMessageRoleUser),
				}},
			})
			text, completed = streamedText(t, s)
		})
		if completed == nil || completed.OutputText() != text || completed.Usage.InputTokens != p || completed.Usage.OutputTokens != o {
			t.Fatalf("simulator counted %d/%d; completed %+v, text %q", p, o, completed, text)
		}
		got, err := c.Responses.Get(ctx, completed.ID, responses.ResponseGetParams{})
		if err != nil || got.ID != completed.ID {
			t.Errorf("GET of the streamed response: %v", err)
		}
		if _, err := other.Responses.Get(ctx, completed.ID, responses.ResponseGetParams{}); err == nil {
			t.Error("another key read the streamed response")
		}
	})

	t.Run("function_call_round_trip", func(t *testing.T) {
		first, err := c.Responses.New(ctx, responses.ResponseNewParams{
			Model: "demo-llama",
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("What is the weather in Paris?")},
			Tools: []responses.ToolUnionParam{weatherTool},
		})
		if err != nil {
			t.Fatal(err)
		}
		wiretest.Validate(t, "Response", []byte(first.RawJSON()))
		if len(first.Output) != 1 || first.Output[0].Type != "function_call" || first.Output[0].Name != "get_weather" {
			t.Fatalf("no call: %s", first.RawJSON())
		}
		call := first.Output[0]
		second, err := c.Responses.New(ctx, answerCall("demo-llama", "What is the weather in Paris?", call))
		if err != nil {
			t.Fatal(err)
		}
		if second.OutputText() == "" {
			t.Errorf("no answer after the call's output: %s", second.RawJSON())
		}
	})

	t.Run("owned", func(t *testing.T) {
		if _, err := other.Responses.Get(ctx, stored.ID, responses.ResponseGetParams{}); err == nil {
			t.Fatal("another key read the response")
		} else {
			wantAPIError(t, err, http.StatusNotFound, "")
		}
		if err := other.Responses.Delete(ctx, stored.ID); err == nil {
			t.Fatal("another key deleted the response")
		}
		if _, err := other.Responses.InputItems.List(ctx, stored.ID, responses.InputItemListParams{}); err == nil {
			t.Fatal("another key listed the input items")
		}
		if _, err := other.Responses.Cancel(ctx, stored.ID); err == nil {
			t.Fatal("another key cancelled the response")
		} else {
			wantAPIError(t, err, http.StatusNotFound, "")
		}
		_, err := other.Responses.New(ctx, responses.ResponseNewParams{
			Model:              "demo-llama",
			Input:              responses.ResponseNewParamsInputUnion{OfString: openai.String("go on")},
			PreviousResponseID: openai.String(stored.ID),
		})
		wantAPIError(t, err, http.StatusNotFound, "previous_response_not_found")
		var apiErr *openai.Error
		if errors.As(err, &apiErr) && apiErr.Param != "previous_response_id" {
			t.Errorf("param %q", apiErr.Param)
		}

		got, err := c.Responses.Get(ctx, stored.ID, responses.ResponseGetParams{})
		if err != nil || got.RawJSON() != stored.RawJSON() {
			t.Fatalf("owner's GET: %v", err)
		}
		items, err := c.Responses.InputItems.List(ctx, stored.ID, responses.InputItemListParams{})
		if err != nil || len(items.Data) != 1 {
			t.Fatalf("owner's input items: %v %+v", err, items)
		}
		wiretest.Validate(t, "ResponseItemList", []byte(items.RawJSON()))
		next, err := c.Responses.New(ctx, responses.ResponseNewParams{
			Model:              "demo-llama",
			Input:              responses.ResponseNewParamsInputUnion{OfString: openai.String("go on")},
			PreviousResponseID: openai.String(stored.ID),
		})
		if err != nil || next.PreviousResponseID != stored.ID {
			t.Fatalf("owner's previous_response_id: %v", err)
		}
		if err := c.Responses.Delete(ctx, stored.ID); err != nil {
			t.Fatal(err)
		}
		_, err = c.Responses.Get(ctx, stored.ID, responses.ResponseGetParams{})
		wantAPIError(t, err, http.StatusNotFound, "")
	})

	t.Run("cut_stream_raises", func(t *testing.T) {
		for _, fault := range []string{"kind=cut;after=5", "kind=midstream_error;after=5"} {
			s := c.Responses.NewStreaming(ctx, responses.ResponseNewParams{
				Model: "demo-llama",
				Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hi")},
			}, option.WithHeader(simulator.FaultHeader, fault))
			var types []string
			events, err := responseEvents(t, s)
			for _, ev := range events {
				types = append(types, ev.Type)
			}
			if err == nil {
				t.Errorf("%s: the SDK saw a clean end after %v", fault, types)
			}
			if len(types) == 0 || types[len(types)-1] != "response.failed" {
				t.Errorf("%s: events %v, want response.failed before the error", fault, types)
			}
		}
	})

	t.Run("no_done", func(t *testing.T) {
		req := jsonRequest(t, port, "/v1/responses", secretAll, `{"model":"demo-llama","input":"hi","stream":true}`)
		resp, body := doRequest(t, req)
		if resp.StatusCode != 200 || strings.Contains(string(body), "[DONE]") || !strings.Contains(string(body), "event: response.completed\n") {
			t.Errorf("%d %s", resp.StatusCode, body)
		}
		// usage in the trailers, from response.completed
		u := gjsonGet(t, body, "usage")
		if resp.Trailer.Get("X-Usage-Prompt-Tokens") != fmt.Sprint(u["input_tokens"]) || resp.Trailer.Get("X-Usage-Completion-Tokens") != fmt.Sprint(u["output_tokens"]) {
			t.Errorf("trailers %v, usage %v", resp.Trailer, u)
		}
	})

	t.Run("no_usage_estimated", func(t *testing.T) {
		var hr *http.Response
		r, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "demo-llama", Store: openai.Bool(false),
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hi")}},
			option.WithHeader(simulator.FaultHeader, "kind=no_usage"), option.WithResponseInto(&hr))
		if err != nil {
			t.Fatal(err)
		}
		wiretest.Validate(t, "Response", []byte(r.RawJSON()))
		if r.Usage.OutputTokens != 6 || r.Usage.InputTokens == 0 || hr.Header.Get("X-Usage-Estimated") != "true" {
			t.Errorf("estimated usage %s, headers %v", r.Usage.RawJSON(), hr.Header)
		}
	})

	t.Run("upstream_bodies", func(t *testing.T) {
		n := 0
		for _, r := range up.requests() {
			if r.Path == "/v1/responses" {
				wiretest.Validate(t, "CreateResponse", r.Body)
				n++
			}
		}
		if n == 0 {
			t.Error("no Responses request reached the upstream")
		}
	})
}

func TestResponsesRefusals(t *testing.T) {
	port, up := responsesSetup(t)
	long := strings.Repeat("lorem ipsum dolor sit amet ", 200)
	for _, tc := range []struct {
		name, key, body string
		status          int
		param, code     string
	}{
		{"part type", secretAll, `{"model":"demo-llama","input":[{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":[{"type":"bogus","text":"x"}]}]}`,
			400, "input[2].content[0].type", "invalid_value"},
		{"item role", secretAll, `{"model":"demo-llama","input":[{"type":"message","content":"a"}]}`, 400, "input[0].role", "missing_required_parameter"},
		{"call id", secretAll, `{"model":"demo-llama","input":[{"type":"function_call_output","output":"x"}]}`, 400, "input[0].call_id", "missing_required_parameter"},
		{"tool name", secretAll, `{"model":"demo-llama","input":"x","tools":[{"type":"function","name":"bad name!"}]}`, 400, "tools[0].name", "invalid_value"},
		{"format schema", secretAll, `{"model":"demo-llama","input":"x","text":{"format":{"type":"json_schema","name":"a"}}}`, 400, "text.format.schema", "missing_required_parameter"},
		{"max_output_tokens", secretAll, `{"model":"demo-llama","input":"x","max_output_tokens":0}`, 400, "max_output_tokens", "integer_below_min_value"},
		{"truncation", secretAll, `{"model":"demo-llama","input":"x","truncation":"middle"}`, 400, "truncation", "invalid_value"},
		{"context", secretAll, `{"model":"demo-llama","instructions":"x","input":"` + long + `"}`, 413, "input", "context_length_exceeded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(up.requests())
			resp, body := doRequest(t, jsonRequest(t, port, "/v1/responses", tc.key, tc.body))
			wiretest.Validate(t, "ErrorResponse", body)
			e := decodeJSON(t, body)["error"].(map[string]any)
			if resp.StatusCode != tc.status || e["param"] != tc.param || e["code"] != tc.code {
				t.Errorf("%d %s", resp.StatusCode, body)
			}
			if len(up.requests()) != before {
				t.Error("a refused request reached the upstream")
			}
		})
	}

	t.Run("429", func(t *testing.T) {
		c := filesClient(port, secretLimited)
		params := responses.ResponseNewParams{Model: "demo-llama", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hi")}}
		var hr *http.Response
		if _, err := c.Responses.New(context.Background(), params, option.WithResponseInto(&hr)); err != nil {
			t.Fatal(err)
		}
		if hr.Header.Get("X-Ratelimit-Limit-Requests") != "1" || hr.Header.Get("X-Ratelimit-Remaining-Requests") != "0" {
			t.Errorf("headers %v", hr.Header)
		}
		_, err := c.Responses.New(context.Background(), params, option.WithResponseInto(&hr))
		wantAPIError(t, err, http.StatusTooManyRequests, "rate_limit_exceeded")
		if hr.Header.Get("Retry-After") == "" || hr.Header.Get("X-Ratelimit-Reset-Requests") == "" {
			t.Errorf("429 headers %v", hr.Header)
		}
	})
}

// TestResponsesBatch: a batch of /v1/responses lines runs through the gateway as requests of
// the owning key, whose stored responses are then that key's only.
func TestResponsesBatch(t *testing.T) {
	port, _ := batchesSetup(t, simulator.Config{}, "")
	ctx := context.Background()
	c := filesClient(port, secretAll)
	var sb strings.Builder
	for i := 1; i <= 2; i++ {
		fmt.Fprintf(&sb, `{"custom_id":"r%d","method":"POST","url":"/v1/responses","body":{"model":"demo-llama","input":"line %d","max_output_tokens":8}}`+"\n", i, i)
	}
	f := uploadBatch(t, c, "responses.jsonl", sb.String())
	b, err := c.Batches.New(ctx, openai.BatchNewParams{CompletionWindow: openai.BatchNewParamsCompletionWindow24h,
		Endpoint: openai.BatchNewParamsEndpointV1Responses, InputFileID: f.ID})
	if err != nil {
		t.Fatal(err)
	}
	b = waitBatch(t, c, b.ID)
	if b.Status != openai.BatchStatusCompleted || b.RequestCounts.Completed != 2 || b.Usage.InputTokens == 0 || b.Usage.OutputTokens == 0 {
		t.Fatalf("batch %s", b.RawJSON())
	}
	lines := fileLines(t, c, b.OutputFileID)
	l := lines["r1"]
	wiretest.Validate(t, "Response", []byte(l.Get("response.body").Raw))
	id := l.Get("response.body.id").String()
	if l.Get("response.status_code").Int() != 200 || id == "" {
		t.Fatalf("line %s", l.Raw)
	}
	if _, err := c.Responses.Get(ctx, id, responses.ResponseGetParams{}); err != nil {
		t.Errorf("the batch's owner cannot read its line's response: %v", err)
	}
	other := filesClient(port, secretQwen)
	_, err = other.Responses.Get(ctx, id, responses.ResponseGetParams{})
	wantAPIError(t, err, http.StatusNotFound, "")
}

// TestResponsesBridge: a model whose server speaks chat completions only (a simulator that
// answers /v1/responses with 404) serves the Responses API through the bridge: plain, streamed,
// a function call round trip, usage equal to the server's count, and the stateless refusals.
func TestResponsesBridge(t *testing.T) {
	sim, err := simulator.New(simulator.Config{Models: []string{"chat-only"}, ResponseTokens: 5})
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.URL.Path)
		mu.Unlock()
		if strings.HasPrefix(r.URL.Path, "/v1/responses") {
			http.Error(w, `{"error":{"message":"Not Found","type":"invalid_request_error","param":null,"code":null}}`, http.StatusNotFound)
			return
		}
		sim.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	port := freePort(t)
	startCaddy(t, globalOptions+fmt.Sprintf(`
:%d {
	ai_gateway {
		key %s {
			id all
		}
		model chat-only {
			upstream_api chat_completions
			max_tokens_field max_completion_tokens
			upstream %s
		}
		storage {
			dir %s
		}
	}
	reverse_proxy {
		dynamic ai_gateway
	}
}
`, port, policy.FormatHash(policy.HashSecret(secretAll)), strings.TrimPrefix(srv.URL, "http://"), t.TempDir()))
	ctx := context.Background()
	c := filesClient(port, secretAll)
	delta := func(fn func()) (int64, int64) {
		before := sim.Stats()
		fn()
		after := sim.Stats()
		return after.PromptTokens - before.PromptTokens, after.CompletionTokens - before.CompletionTokens
	}

	t.Run("plain", func(t *testing.T) {
		var r *responses.Response
		p, o := delta(func() {
			var err error
			r, err = c.Responses.New(ctx, responses.ResponseNewParams{
				Model:           "chat-only",
				Instructions:    openai.String("Be brief."),
				Input:           responses.ResponseNewParamsInputUnion{OfString: openai.String("Say hello.")},
				MaxOutputTokens: openai.Int(3),
			})
			if err != nil {
				t.Fatal(err)
			}
		})
		wiretest.Validate(t, "Response", []byte(r.RawJSON()))
		if r.OutputText() == "" || r.Usage.InputTokens != p || r.Usage.OutputTokens != o || o != 3 || r.Status != "incomplete" || !strings.Contains(r.RawJSON(), `"store":false`) {
			t.Errorf("server counted %d/%d: %s", p, o, r.RawJSON())
		}
		mu.Lock()
		last := paths[len(paths)-1]
		mu.Unlock()
		if last != "/v1/chat/completions" {
			t.Errorf("upstream path %s", last)
		}
	})

	t.Run("stream", func(t *testing.T) {
		var completed *responses.Response
		var text string
		p, o := delta(func() {
			s := c.Responses.NewStreaming(ctx, responses.ResponseNewParams{
				Model: "chat-only",
				Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Count.")},
			})
			text, completed = streamedText(t, s)
		})
		if completed == nil || completed.OutputText() != text || completed.Usage.InputTokens != p || completed.Usage.OutputTokens != o ||
			completed.Model != "chat-only" {
			t.Fatalf("server counted %d/%d: %+v", p, o, completed)
		}
	})

	t.Run("function_call_round_trip", func(t *testing.T) {
		for _, streamed := range []bool{false, true} {
			params := responses.ResponseNewParams{
				Model: "chat-only",
				Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Weather in Paris?")},
				Tools: []responses.ToolUnionParam{weatherTool},
			}
			var call responses.ResponseOutputItemUnion
			if streamed {
				s := c.Responses.NewStreaming(ctx, params)
				var args strings.Builder
				events, err := responseEvents(t, s)
				for _, ev := range events {
					switch ev.Type {
					case "response.function_call_arguments.delta":
						args.WriteString(ev.Delta)
					case "response.completed":
						if len(ev.Response.Output) == 1 {
							call = ev.Response.Output[0]
						}
					}
				}
				if err != nil || call.Arguments.OfString != args.String() {
					t.Fatalf("stream: %v; arguments %q, deltas %q", err, call.Arguments.OfString, args.String())
				}
			} else {
				r, err := c.Responses.New(ctx, params)
				if err != nil {
					t.Fatal(err)
				}
				wiretest.Validate(t, "Response", []byte(r.RawJSON()))
				call = r.Output[0]
			}
			if call.Type != "function_call" || call.Name != "get_weather" || call.Arguments.OfString != `{"city":"sim"}` || call.CallID == "" {
				t.Fatalf("call %+v", call)
			}
			r, err := c.Responses.New(ctx, answerCall("chat-only", "Weather in Paris?", call))
			if err != nil || r.OutputText() == "" {
				t.Fatalf("after the output: %v %s", err, r.RawJSON())
			}
		}
	})

	t.Run("stateless", func(t *testing.T) {
		_, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "chat-only",
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("x")}, Store: openai.Bool(true)})
		wantAPIError(t, err, http.StatusBadRequest, "unsupported_parameter")
		var apiErr *openai.Error
		if errors.As(err, &apiErr) && apiErr.Param != "store" {
			t.Errorf("param %q", apiErr.Param)
		}
		_, err = c.Responses.New(ctx, responses.ResponseNewParams{Model: "chat-only",
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("x")}, PreviousResponseID: openai.String("resp_x")})
		wantAPIError(t, err, http.StatusBadRequest, "unsupported_parameter")
		resp, body := doRequest(t, jsonRequest(t, port, "/v1/responses", secretAll, `{"model":"chat-only","input":"x","tools":[{"type":"web_search"}]}`))
		if resp.StatusCode != 400 || !strings.Contains(string(body), `"param":"tools[0].type"`) {
			t.Errorf("hosted tool: %d %s", resp.StatusCode, body)
		}
	})

	t.Run("cut_stream_raises", func(t *testing.T) {
		s := c.Responses.NewStreaming(ctx, responses.ResponseNewParams{Model: "chat-only",
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("x")}}, option.WithHeader(simulator.FaultHeader, "kind=cut;after=3"))
		var last string
		events, err := responseEvents(t, s)
		if len(events) > 0 {
			last = events[len(events)-1].Type
		}
		if err == nil || last != "response.failed" {
			t.Errorf("cut bridged stream: err %v, last event %s", err, last)
		}
	})
}

// TestResponsesCache: a deterministic Responses request that is not stored is answered from the
// cache the second time (usage marked cached); a stored or streamed one never is, since its
// answer names a response id that belongs to the key that made it.
func TestResponsesCache(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir()) // the ownership records go to the default store
	s := startCache(t, simulator.Config{}, "")
	for _, tc := range []struct {
		body, second string
	}{
		{`{"model":"demo-llama","input":"cache me","temperature":0,"store":false}`, "HIT"},
		{`{"model":"demo-llama","input":"cache me","temperature":0}`, "BYPASS"},
	} {
		var first []byte
		for i, want := range []string{"", tc.second} {
			resp, body := doRequest(t, jsonRequest(t, s.port, "/v1/responses", secretAll, tc.body))
			if resp.StatusCode != 200 {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
			wiretest.Validate(t, "Response", body)
			if i == 0 {
				first = body
				continue
			}
			if got := resp.Header.Get("X-Cache"); got != want {
				t.Errorf("%s: x-cache %q, want %q", tc.body, got, want)
			}
			d := decodeJSON(t, body)
			u := d["usage"].(map[string]any)
			if want == "HIT" && (d["id"] != decodeJSON(t, first)["id"] || u["input_tokens_details"].(map[string]any)["cached_tokens"] != u["input_tokens"]) {
				t.Errorf("hit %s", body)
			}
		}
	}
}

// gjsonGet returns the object at path in the data of a Responses stream's response.completed.
func gjsonGet(t *testing.T, stream []byte, path string) map[string]any {
	t.Helper()
	for _, ev := range strings.Split(string(stream), "\n\n") {
		if d, ok := strings.CutPrefix(ev, "event: response.completed\ndata: "); ok {
			v, _ := decodeJSON(t, []byte(d))["response"].(map[string]any)[path].(map[string]any)
			return v
		}
	}
	t.Fatalf("no response.completed in %s", stream)
	return nil
}

// TestResponsesFallbackAcrossAPIs: a bridged model whose servers are unreachable falls back to
// a model that serves /v1/responses natively, which gets the Responses body, not the chat one;
// and the reverse.
func TestResponsesFallbackAcrossAPIs(t *testing.T) {
	up := newUpstream(t, simulator.Config{Models: []string{"native", "bridged"}})
	dead := freePort(t) // nothing listens there
	port := freePort(t)
	startCaddy(t, globalOptions+fmt.Sprintf(`
:%d {
	ai_gateway {
		key %s {
			id all
		}
		model bridged-dead {
			upstream_api chat_completions
			upstream 127.0.0.1:%d
			fallback native
		}
		model native-dead {
			upstream 127.0.0.1:%d
			fallback bridged
		}
		model native {
			upstream %s
		}
		model bridged {
			upstream_api chat_completions
			upstream %s
		}
		storage {
			dir %s
		}
	}
	reverse_proxy {
		dynamic ai_gateway
	}
}
`, port, policy.FormatHash(policy.HashSecret(secretAll)), dead, dead, up.addr(), up.addr(), t.TempDir()))
	c := filesClient(port, secretAll)
	for model, path := range map[string]string{"bridged-dead": "/v1/responses", "native-dead": "/v1/chat/completions"} {
		r, err := c.Responses.New(context.Background(), responses.ResponseNewParams{Model: model, Instructions: openai.String("Be brief."),
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hi")}})
		if err != nil {
			t.Fatalf("%s: %v", model, err)
		}
		wiretest.Validate(t, "Response", []byte(r.RawJSON()))
		reqs := up.requests()
		last := reqs[len(reqs)-1]
		if last.Path != path || r.OutputText() == "" {
			t.Errorf("%s: upstream got %s %s", model, last.Path, last.Body)
		}
		if path == "/v1/responses" {
			wiretest.Validate(t, "CreateResponse", last.Body)
		} else {
			wiretest.Validate(t, "CreateChatCompletionRequest", last.Body)
		}
	}
}

// TestResponsesOwnedOnRedis: with the store in Redis, a response created through one gateway
// site is its key's through another (several instances share the ownership records), and still
// another key's 404.
func TestResponsesOwnedOnRedis(t *testing.T) {
	srv := testredis.StartServer(t)
	up := newUpstream(t, simulator.Config{Models: []string{"demo-llama"}})
	ports := [2]int{freePort(t), freePort(t)}
	site := func(port int) string {
		return fmt.Sprintf(`
:%d {
	ai_gateway {
		key %s {
			id all
		}
		key %s {
			id other
		}
		model demo-llama {
			upstream %s
		}
		storage {
			dir %s
			store redis redis://%s/0
			redis_prefix resp%d:
		}
	}
	reverse_proxy {
		dynamic ai_gateway
	}
}
`, port, policy.FormatHash(policy.HashSecret(secretAll)), policy.FormatHash(policy.HashSecret(secretQwen)), up.addr(),
			t.TempDir(), srv.Addr(), ports[0])
	}
	startCaddy(t, globalOptions+site(ports[0])+site(ports[1]))
	ctx := context.Background()
	a, b, other := filesClient(ports[0], secretAll), filesClient(ports[1], secretAll), filesClient(ports[1], secretQwen)
	r, err := a.Responses.New(ctx, responses.ResponseNewParams{Model: "demo-llama",
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hi")}})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := b.Responses.Get(ctx, r.ID, responses.ResponseGetParams{}); err != nil || got.ID != r.ID {
		t.Fatalf("the owner through the other instance: %v", err)
	}
	_, err = other.Responses.Get(ctx, r.ID, responses.ResponseGetParams{})
	wantAPIError(t, err, http.StatusNotFound, "")
	if _, err := b.Responses.New(ctx, responses.ResponseNewParams{Model: "demo-llama", PreviousResponseID: openai.String(r.ID),
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("go on")}}); err != nil {
		t.Errorf("previous_response_id through the other instance: %v", err)
	}
}
