package bridge

import (
	"strconv"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/caddyai/gateway/internal/wire"
)

// item is one output item of a Response being built.
type item struct {
	id, callID, name string
	call             bool
	text             strings.Builder // the message's text or the call's arguments
	open             bool            // added and not yet done (streams)
}

// appendItem appends the item as a Response lists it.
func (it *item) appendItem(b []byte, status string) []byte {
	if it.call {
		b = append(b, `{"id":"`...)
		b = append(b, it.id...)
		b = append(b, `","type":"function_call","status":"`...)
		b = append(b, status...)
		b = append(b, `","call_id":`...)
		b = wire.AppendString(b, it.callID)
		b = append(b, `,"name":`...)
		b = wire.AppendString(b, it.name)
		b = append(b, `,"arguments":`...)
		b = wire.AppendString(b, it.text.String())
		return append(b, '}')
	}
	b = append(b, `{"id":"`...)
	b = append(b, it.id...)
	b = append(b, `","type":"message","status":"`...)
	b = append(b, status...)
	b = append(b, `","role":"assistant","content":[`...)
	if status != "in_progress" {
		b = appendTextPart(b, it.text.String())
	}
	return append(b, "]}"...)
}

func appendTextPart(b []byte, text string) []byte {
	b = append(b, `{"type":"output_text","text":`...)
	b = wire.AppendString(b, text)
	return append(b, `,"annotations":[],"logprobs":[]}`...)
}

// answer is a Response being built from a chat answer.
type answer struct {
	req       *Request
	id        string
	model     string // raw JSON
	createdAt int64
	items     []*item
	finish    string // the chat finish_reason
	usage     []byte // the Responses usage object, nil when the chat answer had none
}

// status is the Response's final status.
func (a *answer) status() string {
	if a.finish == "length" {
		return "incomplete"
	}
	return "completed"
}

// appendResponse appends the Response object; final says the answer is complete.
func (a *answer) appendResponse(b []byte, final bool) []byte {
	req := a.req
	status := "in_progress"
	if final {
		status = a.status()
	}
	b = append(b, `{"id":"`...)
	b = append(b, a.id...)
	b = append(b, `","object":"response","created_at":`...)
	b = strconv.AppendInt(b, a.createdAt, 10)
	b = append(b, `,"status":"`...)
	b = append(b, status...)
	b = append(b, `","error":null,"incomplete_details":`...)
	if final && status == "incomplete" {
		b = append(b, `{"reason":"max_output_tokens"}`...)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"instructions":`...)
	b = append(b, or(req.Instructions, "null")...)
	b = append(b, `,"max_output_tokens":`...)
	b = append(b, or(req.MaxOutputTokens, "null")...)
	b = append(b, `,"model":`...)
	b = append(b, or(a.model, or(req.Model, `""`))...)
	b = append(b, `,"output":[`...)
	if final {
		st := "completed"
		if status == "incomplete" {
			st = "incomplete"
		}
		for i, it := range a.items {
			if i > 0 {
				b = append(b, ',')
			}
			b = it.appendItem(b, st)
		}
	}
	b = append(b, `],"parallel_tool_calls":`...)
	b = append(b, or(req.ParallelToolCalls, "true")...)
	b = append(b, `,"previous_response_id":null,"store":false,"temperature":`...)
	b = append(b, or(req.Temperature, "1")...)
	b = append(b, `,"text":`...)
	b = append(b, orObject(req.Text, `{"format":{"type":"text"}}`)...)
	b = append(b, `,"tool_choice":`...)
	b = append(b, or(req.ToolChoice, `"auto"`)...)
	b = append(b, `,"tools":`...)
	b = appendTools(b, req.Tools)
	b = append(b, `,"top_p":`...)
	b = append(b, or(req.TopP, "1")...)
	b = append(b, `,"truncation":"disabled"`...)
	if final && a.usage != nil {
		b = append(b, `,"usage":`...)
		b = append(b, a.usage...)
	}
	b = append(b, `,"metadata":`...)
	b = append(b, orObject(req.Metadata, "{}")...)
	return append(b, '}')
}

// or returns raw unless it is empty or null.
func or(raw, def string) string {
	if raw == "" || raw == "null" {
		return def
	}
	return raw
}

// orObject returns raw when it is an object.
func orObject(raw, def string) string {
	if strings.HasPrefix(raw, "{") {
		return raw
	}
	return def
}

// appendTools appends the request's function tools as a Response lists them.
func appendTools(b []byte, raw string) []byte {
	b = append(b, '[')
	i := 0
	gjson.Parse(raw).ForEach(func(_, t gjson.Result) bool {
		if t.Get("type").Str != "function" {
			return true
		}
		if i > 0 {
			b = append(b, ',')
		}
		i++
		b = append(b, `{"type":"function","name":`...)
		b = append(b, t.Get("name").Raw...)
		if d := t.Get("description"); d.Type == gjson.String {
			b = append(b, `,"description":`...)
			b = append(b, d.Raw...)
		}
		b = append(b, `,"parameters":`...)
		b = append(b, or(t.Get("parameters").Raw, "null")...)
		b = append(b, `,"strict":`...)
		b = append(b, or(t.Get("strict").Raw, "true")...)
		b = append(b, '}')
		return true
	})
	return append(b, ']')
}

// usageOf translates a chat usage object into the Responses usage object (nil when absent).
func usageOf(u gjson.Result) []byte {
	if !u.IsObject() {
		return nil
	}
	p, c := u.Get("prompt_tokens").Int(), u.Get("completion_tokens").Int()
	b := []byte(`{"input_tokens":`)
	b = strconv.AppendInt(b, p, 10)
	b = append(b, `,"input_tokens_details":{"cached_tokens":`...)
	b = strconv.AppendInt(b, u.Get("prompt_tokens_details.cached_tokens").Int(), 10)
	b = append(b, `,"cache_write_tokens":0},"output_tokens":`...)
	b = strconv.AppendInt(b, c, 10)
	b = append(b, `,"output_tokens_details":{"reasoning_tokens":`...)
	b = strconv.AppendInt(b, u.Get("completion_tokens_details.reasoning_tokens").Int(), 10)
	b = append(b, `},"total_tokens":`...)
	b = strconv.AppendInt(b, max(u.Get("total_tokens").Int(), p+c), 10)
	return append(b, '}')
}

// Response translates a chat completion (JSON) into the Response object of req. ok is false
// when the body is not a chat completion.
func Response(chat []byte, req *Request) (out []byte, ok bool) {
	root := gjson.Parse(view(chat))
	choice := root.Get("choices.0")
	if !root.IsObject() || !choice.IsObject() {
		return nil, false
	}
	a := &answer{req: req, id: NewID("resp_"), model: root.Get("model").Raw, createdAt: root.Get("created").Int(),
		finish: choice.Get("finish_reason").Str, usage: usageOf(root.Get("usage"))}
	msg := choice.Get("message")
	if c := msg.Get("content"); c.Type == gjson.String && c.Str != "" {
		it := &item{id: NewID("msg_")}
		it.text.WriteString(c.Str)
		a.items = append(a.items, it)
	}
	msg.Get("tool_calls").ForEach(func(_, tc gjson.Result) bool {
		it := &item{id: NewID("fc_"), call: true, callID: tc.Get("id").Str, name: tc.Get("function.name").Str}
		it.text.WriteString(tc.Get("function.arguments").Str)
		a.items = append(a.items, it)
		return true
	})
	if len(a.items) == 0 {
		a.items = append(a.items, &item{id: NewID("msg_")}) // an empty answer is an empty message
	}
	return a.appendResponse(make([]byte, 0, len(chat)+512), true), true
}
