package tokens

import (
	"fmt"

	"github.com/caddyai/gateway/internal/jsonscan"

	"github.com/tidwall/gjson"
)

// responsesKeys are the top-level fields of a Responses body the formula reads.
var responsesKeys = []string{"input", "instructions", "tools", "text"}

// responses walks an OpenAI Responses body with the chat formula applied to the chat messages
// it stands for: the reply primer; instructions as a system message; a string input as a user
// message; each input item as a message (a message item: its role and content; a function
// call: an assistant message with the call's name and arguments; a function call output: a
// tool message with the output; a reasoning item: its summary texts; an item reference:
// nothing); the tools' raw JSON; a json_schema text format's raw JSON.
func (w *walk) responses(root gjson.Result) error {
	f := fieldsOf(root, responsesKeys)
	if err := w.fixed(replyPrimer); err != nil {
		return err
	}
	switch ins := f[1]; {
	case !ins.Exists() || ins.Type == gjson.Null:
	case ins.Type == gjson.String:
		if err := w.roleText("system", ins.Str); err != nil {
			return err
		}
	default:
		return malformed("instructions", "a string")
	}
	switch in := f[0]; {
	case !in.Exists() || in.Type == gjson.Null:
	case in.Type == gjson.String:
		if err := w.roleText("user", in.Str); err != nil {
			return err
		}
	case in.IsArray():
		var err error
		i := 0
		jsonscan.ForEach(in, func(_, item gjson.Result) bool {
			err = w.responsesItem(item, i)
			i++
			return err == nil
		})
		if err != nil {
			return err
		}
	default:
		return malformed("input", "a string or an array")
	}
	if err := w.rawOf(f[2], "tools", '['); err != nil {
		return err
	}
	if tf := f[3].Get("format"); tf.IsObject() && tf.Get("type").Str == "json_schema" {
		return w.rawOf(tf.Get("schema"), "text.format.schema", '{')
	}
	return nil
}

// roleText adds one message of role with text as its content.
func (w *walk) roleText(role, text string) error {
	if err := w.fixed(perMessage); err != nil {
		return err
	}
	if err := w.text(role); err != nil {
		return err
	}
	return w.text(text)
}

// responsesItem walks input[i].
func (w *walk) responsesItem(item gjson.Result, i int) error {
	if !item.IsObject() {
		return malformed(fmt.Sprintf("input[%d]", i), "an object")
	}
	switch item.Get("type").Str {
	case "", "message":
		role := item.Get("role")
		if role.Type != gjson.String {
			return malformed(fmt.Sprintf("input[%d].role", i), "a string")
		}
		if err := w.fixed(perMessage); err != nil {
			return err
		}
		if err := w.text(role.Str); err != nil {
			return err
		}
		return w.responsesContent(item.Get("content"), i)
	case "function_call":
		if err := w.roleText("assistant", item.Get("name").Str); err != nil {
			return err
		}
		return w.text(item.Get("arguments").Str)
	case "function_call_output":
		out := item.Get("output")
		if out.Type == gjson.String {
			return w.roleText("tool", out.Str)
		}
		if err := w.roleText("tool", ""); err != nil {
			return err
		}
		return w.responsesContent(out, i)
	case "reasoning":
		var buf textBuf
		jsonscan.ForEach(item.Get("summary"), func(_, s gjson.Result) bool {
			if t := s.Get("text"); t.Type == gjson.String {
				buf.Add(t.Str)
			}
			return true
		})
		return w.texts(&buf)
	}
	return nil
}

// responsesContent walks an item's content: a string, or parts whose texts count as one text
// (input_text, output_text, refusal), images and files adding their allowances.
func (w *walk) responsesContent(content gjson.Result, i int) error {
	switch {
	case !content.Exists() || content.Type == gjson.Null:
		return nil
	case content.Type == gjson.String:
		return w.text(content.Str)
	case !content.IsArray():
		return malformed(fmt.Sprintf("input[%d].content", i), "a string or an array")
	}
	var buf textBuf
	var err error
	jsonscan.ForEach(content, func(_, p gjson.Result) bool {
		switch p.Get("type").Str {
		case "input_text", "output_text":
			buf.Add(p.Get("text").Str)
		case "refusal":
			buf.Add(p.Get("refusal").Str)
		case "input_image":
			err = w.fixed(ImageTokens)
		case "input_file":
			err = w.fixed(fileTokens(p.Get("file_data").Str))
		case "input_audio":
			err = w.fixed(audioTokens(p.Get("input_audio.data").Str))
		}
		return err == nil
	})
	if err != nil {
		return err
	}
	return w.texts(&buf)
}
