package simulator

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/caddyai/gateway/internal/wiretest"
)

const respTools = `[{"type":"function","name":"get_weather","description":"Weather","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]},"strict":true}]`

func TestResponsesJSON(t *testing.T) {
	s := newServer(t, Config{ResponseTokens: 5})
	rec := do(t, s, http.MethodPost, "/v1/responses", `{"model":"m","input":"hello there","instructions":"be brief"}`)
	if rec.Code != 200 {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	wiretest.Validate(t, "Response", rec.Body.Bytes())
	var r struct {
		ID     string
		Status string
		Output []struct {
			Type    string
			Content []struct{ Text string }
		}
		Usage struct {
			InputTokens  int `json:"input_tokens"`
			OutputTokens int `json:"output_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	// 3 + (3 + system + "be brief") + (3 + user + "hello there")
	want := 3 + 3 + s.count("system") + s.count("be brief") + 3 + s.count("user") + s.count("hello there")
	if r.Status != "completed" || r.Usage.InputTokens != want || r.Usage.OutputTokens != 5 || r.Output[0].Content[0].Text != completionText(0, 5) {
		t.Errorf("got %s", rec.Body)
	}
	if st := s.Stats(); st.PromptTokens != int64(want) || st.CompletionTokens != 5 {
		t.Errorf("stats %+v", st)
	}

	get := do(t, s, http.MethodGet, "/v1/responses/"+r.ID, "")
	if get.Code != 200 || get.Body.String() != rec.Body.String() {
		t.Errorf("GET: %d %s", get.Code, get.Body)
	}
	items := do(t, s, http.MethodGet, "/v1/responses/"+r.ID+"/input_items", "")
	wiretest.Validate(t, "ResponseItemList", items.Body.Bytes())
	if del := do(t, s, http.MethodDelete, "/v1/responses/"+r.ID, ""); del.Code != 200 {
		t.Errorf("DELETE: %d %s", del.Code, del.Body)
	}
	if get := do(t, s, http.MethodGet, "/v1/responses/"+r.ID, ""); get.Code != 404 {
		t.Errorf("GET after DELETE: %d", get.Code)
	}
	prev := do(t, s, http.MethodPost, "/v1/responses", `{"model":"m","input":"x","previous_response_id":"`+r.ID+`"}`)
	if prev.Code != 400 || !strings.Contains(prev.Body.String(), "previous_response_id") {
		t.Errorf("previous_response_id of a deleted response: %d %s", prev.Code, prev.Body)
	}
	if cut := do(t, s, http.MethodPost, "/v1/responses", `{"model":"m","input":"x","max_output_tokens":2}`); !strings.Contains(cut.Body.String(), `"status":"incomplete"`) {
		t.Errorf("max_output_tokens: %s", cut.Body)
	} else {
		wiretest.Validate(t, "Response", cut.Body.Bytes())
	}
}

func TestResponsesStream(t *testing.T) {
	s := newServer(t, Config{ResponseTokens: 4})
	for _, body := range []string{
		`{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"hi"}]}],"stream":true}`,
		`{"model":"m","input":"weather?","tools":` + respTools + `,"stream":true}`,
	} {
		rec := do(t, s, http.MethodPost, "/v1/responses", body)
		if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/event-stream") {
			t.Fatalf("%d %s", rec.Code, rec.Body)
		}
		data := sseData(t, rec.Body.String())
		for i, d := range data {
			wiretest.Validate(t, "ResponseStreamEvent", []byte(d))
			var ev struct {
				Type string
				Seq  int `json:"sequence_number"`
			}
			_ = json.Unmarshal([]byte(d), &ev)
			if ev.Seq != i {
				t.Errorf("event %d has sequence_number %d", i, ev.Seq)
			}
		}
		last := data[len(data)-1]
		if !strings.Contains(last, `"type":"response.completed"`) || strings.Contains(rec.Body.String(), "[DONE]") {
			t.Errorf("last event %s", last)
		}
		if strings.Contains(body, "tools") && !strings.Contains(last, `"arguments":"{\"city\":\"sim\"}"`) {
			t.Errorf("no function call: %s", last)
		}
	}
}

func TestResponsesFunctionCallRoundTrip(t *testing.T) {
	s := newServer(t, Config{ResponseTokens: 3})
	rec := do(t, s, http.MethodPost, "/v1/responses", `{"model":"m","input":"weather?","tools":`+respTools+`}`)
	wiretest.Validate(t, "Response", rec.Body.Bytes())
	var r struct {
		Output []struct{ Type, Name, Arguments string } `json:"output"`
	}
	_ = json.Unmarshal(rec.Body.Bytes(), &r)
	if len(r.Output) != 1 || r.Output[0].Type != "function_call" || r.Output[0].Name != "get_weather" {
		t.Fatalf("got %s", rec.Body)
	}
	var out struct {
		Output []struct{ Type string } `json:"output"`
	}
	next := `{"model":"m","tools":` + respTools + `,"input":[{"role":"user","content":"weather?"},` +
		`{"type":"function_call","call_id":"c1","name":"get_weather","arguments":"{}"},{"type":"function_call_output","call_id":"c1","output":"sunny"}]}`
	rec = do(t, s, http.MethodPost, "/v1/responses", next)
	_ = json.Unmarshal(rec.Body.Bytes(), &out)
	if len(out.Output) != 1 || out.Output[0].Type != "message" {
		t.Errorf("after the output: %s", rec.Body)
	}
}

func TestResponsesStreamFaults(t *testing.T) {
	s := newServer(t, Config{ResponseTokens: 4})
	rec := do(t, s, http.MethodPost, "/v1/responses", `{"model":"m","input":"x","stream":true}`, FaultHeader, "kind=midstream_error;after=3")
	data := sseData(t, rec.Body.String())
	if len(data) != 4 || !strings.Contains(rec.Body.String(), "event: error\n") {
		t.Fatalf("midstream_error: %s", rec.Body)
	}
	wiretest.Validate(t, "ResponseStreamEvent", []byte(data[3]))
	rec = do(t, s, http.MethodPost, "/v1/responses", `{"model":"m","input":"x","stream":true}`, FaultHeader, "kind=no_usage")
	if strings.Contains(rec.Body.String(), `"usage"`) {
		t.Errorf("no_usage: %s", rec.Body)
	}
}

func TestChatToolCall(t *testing.T) {
	s := newServer(t, Config{})
	tools := `[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]`
	rec := do(t, s, http.MethodPost, "/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"weather?"}],"tools":`+tools+`}`)
	wiretest.Validate(t, "CreateChatCompletionResponse", rec.Body.Bytes())
	if !strings.Contains(rec.Body.String(), `"arguments":"{\"city\":\"sim\"}"`) || !strings.Contains(rec.Body.String(), `"finish_reason":"tool_calls"`) {
		t.Errorf("no call: %s", rec.Body)
	}
	rec = do(t, s, http.MethodPost, "/v1/chat/completions", `{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"weather?"}],"tools":`+tools+`}`)
	var args strings.Builder
	for _, d := range sseData(t, rec.Body.String()) {
		if d == "[DONE]" {
			continue
		}
		wiretest.Validate(t, "CreateChatCompletionStreamResponse", []byte(d))
		var c struct {
			Choices []struct {
				Delta struct {
					ToolCalls []struct {
						Function struct{ Arguments string }
					} `json:"tool_calls"`
				}
			}
		}
		_ = json.Unmarshal([]byte(d), &c)
		for _, ch := range c.Choices {
			for _, tc := range ch.Delta.ToolCalls {
				args.WriteString(tc.Function.Arguments)
			}
		}
	}
	if args.String() != `{"city":"sim"}` {
		t.Errorf("streamed arguments %q", args.String())
	}
	rec = do(t, s, http.MethodPost, "/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"weather?"},`+
		`{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"get_weather","arguments":"{}"}}]},`+
		`{"role":"tool","tool_call_id":"c","content":"sunny"}],"tools":`+tools+`}`)
	if strings.Contains(rec.Body.String(), "tool_calls") {
		t.Errorf("called again after the result: %s", rec.Body)
	}
}
