package batch

import (
	"bytes"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

const chat = "/v1/chat/completions"

// req returns one valid input line for custom_id id, without its newline.
func req(id string) string {
	return `{"custom_id":"` + id + `","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"hi"}]}}`
}

// read runs ReadInput on s with the chat endpoint and default limits.
func read(t *testing.T, s string, lim InputLimits) *Input {
	t.Helper()
	in, err := ReadInput(strings.NewReader(s), chat, lim)
	if err != nil {
		t.Fatalf("ReadInput: %v", err)
	}
	return in
}

// checkTasks verifies that every task's offsets point at the body of its line in data.
func checkTasks(t *testing.T, data []byte, in *Input) {
	t.Helper()
	r := bytes.NewReader(data)
	var buf []byte
	for i, task := range in.Tasks {
		if task.Index != i {
			t.Fatalf("task %d has Index %d", i, task.Index)
		}
		body, err := task.ReadBody(r, buf)
		if err != nil {
			t.Fatal(err)
		}
		if !gjson.ValidBytes(body) || body[0] != '{' || gjson.GetBytes(body, "model").Str != in.Model {
			t.Fatalf("task %d (%s): body at %d+%d is %q", i, task.CustomID, task.Offset, task.Size, body)
		}
		buf = body
	}
}

func TestReadInputValid(t *testing.T) {
	tests := []struct {
		name string
		data string
		ids  []string
	}{
		{"lf", req("a") + "\n" + req("b") + "\n", []string{"a", "b"}},
		{"no final newline", req("a") + "\n" + req("b"), []string{"a", "b"}},
		{"crlf", req("a") + "\r\n" + req("b") + "\r\n", []string{"a", "b"}},
		{"crlf no final newline", req("a") + "\r\n" + req("b"), []string{"a", "b"}},
		{"bom", "\xEF\xBB\xBF" + req("a") + "\n" + req("b") + "\n", []string{"a", "b"}},
		{"bom crlf", "\xEF\xBB\xBF" + req("a") + "\r\n", []string{"a"}},
		{"blank lines", "\n" + req("a") + "\n\n  \t\r\n" + req("b") + "\n\n", []string{"a", "b"}},
		{"surrounding spaces", "  " + req("a") + "  \n\t" + req("b"), []string{"a", "b"}},
		{"unknown keys ignored", `{"x":1,"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}`, []string{"a"}},
		{"stream false", `{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m","stream":false}}`, []string{"a"}},
		{"escaped id", `{"custom_id":"a\"b\u00e9","method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}`, []string{`a"bé`}},
		{"id of 512 bytes", req(strings.Repeat("x", MaxCustomIDBytes)), []string{strings.Repeat("x", MaxCustomIDBytes)}},
		{"unicode", `{"custom_id":"é","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"日本"}]}}`, []string{"é"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := read(t, tt.data, InputLimits{})
			if !in.OK() {
				t.Fatalf("errors: %+v", in.Errors)
			}
			if in.Model != "m" {
				t.Fatalf("model %q", in.Model)
			}
			var ids []string
			for _, task := range in.Tasks {
				ids = append(ids, task.CustomID)
			}
			if fmt.Sprint(ids) != fmt.Sprint(tt.ids) {
				t.Fatalf("ids %q, want %q", ids, tt.ids)
			}
			checkTasks(t, []byte(tt.data), in)
		})
	}
}

func TestReadInputLineNumbers(t *testing.T) {
	data := "\xEF\xBB\xBF" + req("a") + "\r\n\r\n" + req("b") + "\n" + req("c")
	in := read(t, data, InputLimits{})
	want := []int{1, 3, 4}
	for i, task := range in.Tasks {
		if task.Line != want[i] {
			t.Fatalf("task %d on line %d, want %d", i, task.Line, want[i])
		}
	}
	if in.Lines != 4 {
		t.Fatalf("Lines = %d", in.Lines)
	}
}

func TestReadInputErrors(t *testing.T) {
	body := `"body":{"model":"m"}`
	line := func(s string) string { return "{" + s + "}" }
	env := `"method":"POST","url":"/v1/chat/completions"`
	tests := []struct {
		name  string
		data  string
		code  string
		param string
		line  int
	}{
		{"not json", "hello\n", CodeInvalidJSONLine, "", 1},
		{"truncated", `{"custom_id":"a",`, CodeInvalidJSONLine, "", 1},
		{"array", `[1,2]`, CodeInvalidJSONLine, "", 1},
		{"two objects", req("a") + req("b"), CodeInvalidJSONLine, "", 1},
		{"binary", "\x00\x01\xff\xfe{\x80\n", CodeInvalidJSONLine, "", 1},
		{"invalid utf8 in string", `{"custom_id":"a` + "\xff" + `",` + env + "," + body + "}", CodeInvalidJSONLine, "", 1},
		{"bom later", req("a") + "\n\xEF\xBB\xBF" + req("b"), CodeInvalidJSONLine, "", 2},
		{"too deep", `{"custom_id":"a",` + env + `,"body":{"model":"m","x":` + strings.Repeat("[", 70) + strings.Repeat("]", 70) + "}}", CodeNestingTooDeep, "", 1},
		{"missing custom_id", line(env + "," + body), CodeMissingParam, "custom_id", 1},
		{"numeric custom_id", line(`"custom_id":1,` + env + "," + body), CodeInvalidType, "custom_id", 1},
		{"null custom_id", line(`"custom_id":null,` + env + "," + body), CodeInvalidType, "custom_id", 1},
		{"empty custom_id", line(`"custom_id":"",` + env + "," + body), CodeEmptyString, "custom_id", 1},
		{"10 KB custom_id", req(strings.Repeat("x", 10<<10)), CodeStringTooLong, "custom_id", 1},
		{"duplicate custom_id", req("a") + "\n" + req("b") + "\n" + req("a"), CodeDuplicateCustomID, "custom_id", 3},
		{"duplicate key", line(`"custom_id":"a","custom_id":"b",` + env + "," + body), CodeDuplicateKey, "custom_id", 1},
		{"missing method", line(`"custom_id":"a","url":"/v1/chat/completions",` + body), CodeMissingParam, "method", 1},
		{"method GET", line(`"custom_id":"a","method":"GET","url":"/v1/chat/completions",` + body), CodeInvalidValue, "method", 1},
		{"method post", line(`"custom_id":"a","method":"post","url":"/v1/chat/completions",` + body), CodeInvalidValue, "method", 1},
		{"missing url", line(`"custom_id":"a","method":"POST",` + body), CodeMissingParam, "url", 1},
		{"other url", line(`"custom_id":"a","method":"POST","url":"/v1/embeddings",` + body), CodeURLMismatch, "url", 1},
		{"url with slash", line(`"custom_id":"a","method":"POST","url":"/v1/chat/completions/",` + body), CodeURLMismatch, "url", 1},
		{"missing body", line(`"custom_id":"a",` + env), CodeMissingParam, "body", 1},
		{"string body", line(`"custom_id":"a",` + env + `,"body":"{}"`), CodeInvalidType, "body", 1},
		{"missing model", line(`"custom_id":"a",` + env + `,"body":{"messages":[]}`), CodeMissingParam, "body.model", 1},
		{"numeric model", line(`"custom_id":"a",` + env + `,"body":{"model":4}`), CodeInvalidType, "body.model", 1},
		{"empty model", line(`"custom_id":"a",` + env + `,"body":{"model":""}`), CodeEmptyString, "body.model", 1},
		{"two models", req("a") + "\n" + line(`"custom_id":"b",`+env+`,"body":{"model":"other"}`), CodeModelMismatch, "body.model", 2},
		{"duplicate model", line(`"custom_id":"a",` + env + `,"body":{"model":"m","model":"n"}`), CodeDuplicateKey, "body.model", 1},
		{"stream", line(`"custom_id":"a",` + env + `,"body":{"model":"m","stream":true}`), CodeStreamUnsupported, "body.stream", 1},
		{"smuggled stream", line(`"custom_id":"a",` + env + `,"body":{"model":"m","stream":false,"stream":true}`), CodeDuplicateKey, "body.stream", 1},
		{"empty", "", CodeEmptyFile, "", 0},
		{"only blanks", "\n\r\n  \n", CodeEmptyFile, "", 0},
		{"only bom", "\xEF\xBB\xBF", CodeEmptyFile, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := read(t, tt.data, InputLimits{})
			if in.OK() || len(in.Errors) == 0 {
				t.Fatalf("accepted: %+v", in.Tasks)
			}
			if in.Tasks != nil {
				t.Fatalf("a file with errors kept %d tasks", len(in.Tasks))
			}
			e := in.Errors[len(in.Errors)-1]
			if e.Code != tt.code || e.Param != tt.param || e.Line != tt.line || e.Message == "" {
				t.Fatalf("got %+v, want code %s param %q line %d", e, tt.code, tt.param, tt.line)
			}
			if len(e.Message) > 400 {
				t.Fatalf("message of %d bytes", len(e.Message))
			}
		})
	}
}

func TestReadInputOneErrorPerLine(t *testing.T) {
	data := "nope\n" + req("a") + "\n{}\n" + req("a") + "\n"
	in := read(t, data, InputLimits{})
	var got []string
	for _, e := range in.Errors {
		got = append(got, fmt.Sprintf("%d:%s", e.Line, e.Code))
	}
	want := "[1:invalid_json_line 3:missing_required_parameter 4:duplicate_custom_id]"
	if fmt.Sprint(got) != want {
		t.Fatalf("errors %v, want %s", got, want)
	}
}

func TestReadInputErrorCap(t *testing.T) {
	var b strings.Builder
	for i := 0; i < 30; i++ {
		b.WriteString("x\n")
	}
	in := read(t, b.String(), InputLimits{MaxErrors: 10})
	if len(in.Errors) != 10 || in.ErrorCount != 30 {
		t.Fatalf("%d errors listed, %d counted", len(in.Errors), in.ErrorCount)
	}
	if in.Errors[9].Line != 10 {
		t.Fatalf("last listed error on line %d", in.Errors[9].Line)
	}
}

func TestReadInputTooManyTasks(t *testing.T) {
	var b strings.Builder
	for i := 0; i < DefaultMaxTasks+1; i++ {
		b.WriteString(req(fmt.Sprintf("r%d", i)))
		b.WriteString("\n")
	}
	b.WriteString("garbage after the limit is not read\n")
	in := read(t, b.String(), InputLimits{})
	if in.ErrorCount != 1 || in.Errors[0].Code != CodeTooManyTasks || in.Errors[0].Line != DefaultMaxTasks+1 {
		t.Fatalf("errors %d: %+v", in.ErrorCount, in.Errors)
	}

	// Exactly the limit is fine.
	in = read(t, strings.Repeat(req("x")+"\n", 1)+strings.Repeat("\n", 3), InputLimits{MaxTasks: 1})
	if !in.OK() {
		t.Fatalf("errors %+v", in.Errors)
	}
}

// repeatReader yields n copies of byte c without holding them.
type repeatReader struct {
	c byte
	n int64
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.n {
		p = p[:r.n]
	}
	for i := range p {
		p[i] = r.c
	}
	r.n -= int64(len(p))
	return len(p), nil
}

func TestReadInputHugeLine(t *testing.T) {
	const huge = 64 << 20
	head := `{"custom_id":"big","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"`
	data := io.MultiReader(
		strings.NewReader(req("a")+"\n"+head),
		&repeatReader{c: 'x', n: huge},
		strings.NewReader(`"}]}}`+"\n"+req("b")+"\n"),
	)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	in, err := ReadInput(data, chat, InputLimits{})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 24<<20 {
		t.Fatalf("reading a 64 MiB line allocated %d MiB", alloc>>20)
	}
	if in.ErrorCount != 1 || in.Errors[0].Code != CodeRequestTooLarge || in.Errors[0].Line != 2 {
		t.Fatalf("errors %+v", in.Errors)
	}
	if in.Lines != 3 {
		t.Fatalf("Lines = %d", in.Lines)
	}
}

func TestReadInputLineLimit(t *testing.T) {
	l := req("a")
	for _, tt := range []struct {
		name string
		data string
		max  int
		ok   bool
	}{
		{"exact", l + "\n", len(l), true},
		{"exact crlf", l + "\r\n", len(l), true},
		{"exact eof", l, len(l), true},
		{"one over", l + "\n", len(l) - 1, false},
		{"one over eof", l, len(l) - 1, false},
		{"one over crlf", l + "\r\n", len(l) - 1, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			in := read(t, tt.data, InputLimits{MaxLineBytes: tt.max})
			if in.OK() != tt.ok {
				t.Fatalf("OK = %v: %+v", in.OK(), in.Errors)
			}
		})
	}
}

type failingReader struct{ err error }

func (r failingReader) Read([]byte) (int, error) { return 0, r.err }

func TestReadInputReadError(t *testing.T) {
	boom := fmt.Errorf("disk on fire")
	_, err := ReadInput(io.MultiReader(strings.NewReader(req("a")+"\n"), failingReader{boom}), chat, InputLimits{})
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("err = %v", err)
	}
}

func TestReadInputHostileFiles(t *testing.T) {
	// The files in testdata/inputs: name.<code>.jsonl must fail with that code first; name.ok.jsonl
	// must pass.
	for _, f := range inputFiles(t) {
		t.Run(f.name, func(t *testing.T) {
			in := read(t, string(f.data), InputLimits{})
			if f.code == "ok" {
				if !in.OK() {
					t.Fatalf("errors %+v", in.Errors)
				}
				checkTasks(t, f.data, in)
				return
			}
			if in.OK() || in.Errors[0].Code != f.code {
				t.Fatalf("errors %+v, want %s", in.Errors, f.code)
			}
		})
	}
}
