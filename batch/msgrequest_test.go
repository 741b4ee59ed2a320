package batch

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/tidwall/gjson"
)

const params = `{"model":"claude","max_tokens":10,"messages":[{"role":"user","content":"hi { ] \" there"}]}`

func mreq(id string) string { return `{"custom_id":"` + id + `","params":` + params + `}` }

func readMsg(s string, lim RequestLimits) ([]Task, error) {
	return ReadMessageBatchRequest(strings.NewReader(s), lim)
}

// checkMsgTasks verifies the tasks against a plain gjson reading of the whole body.
func checkMsgTasks(t *testing.T, body string, tasks []Task) {
	t.Helper()
	reqs := gjson.Get(body, "requests").Array()
	if len(reqs) != len(tasks) {
		t.Fatalf("%d tasks for %d requests", len(tasks), len(reqs))
	}
	for i, task := range tasks {
		got, err := task.ReadBody(strings.NewReader(body), nil)
		if err != nil {
			t.Fatal(err)
		}
		if task.Index != i || task.Line != 0 || task.CustomID != reqs[i].Get("custom_id").Str || string(got) != reqs[i].Get("params").Raw {
			t.Fatalf("task %+v: params %q, want %q", task, got, reqs[i].Get("params").Raw)
		}
	}
}

func TestReadMessageBatchRequestValid(t *testing.T) {
	for _, body := range []string{
		`{"requests":[` + mreq("a") + `]}`,
		`{"requests":[` + mreq("a") + "," + mreq("b-2_C") + `]}`,
		" \r\n{ \"requests\" : [ \n" + mreq("a") + " ,\t" + mreq("b") + " ] } \n",
		`{"requests":[{"params":` + params + `,"custom_id":"z"}]}`,
		`{"requests":[` + mreq(strings.Repeat("x", 64)) + `]}`,
		`{"requests":[{"custom_id":"a","params":{"x":"\\\"{["}}]}`,
	} {
		tasks, err := readMsg(body, RequestLimits{})
		if err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		checkMsgTasks(t, body, tasks)
	}
}

func TestReadMessageBatchRequestErrors(t *testing.T) {
	two := func(a, b string) string { return `{"requests":[` + a + "," + b + `]}` }
	one := func(r string) string { return `{"requests":[` + r + `]}` }
	tests := []struct {
		name   string
		body   string
		status int
		code   string
		msg    string // a part of the message
	}{
		{"empty body", "", 400, CodeInvalidJSON, "empty"},
		{"array body", "[]", 400, CodeInvalidType, "body:"},
		{"empty object", "{}", 400, CodeMissingParam, "requests: Field required"},
		{"no requests", `{"foo":1}`, 400, CodeUnknownParameter, "foo: Extra inputs are not permitted"},
		{"extra key", `{"requests":[` + mreq("a") + `],"x":1}`, 400, CodeUnknownParameter, "x: Extra"},
		{"duplicate requests", `{"requests":[` + mreq("a") + `],"requests":[` + mreq("b") + `]}`, 400, CodeDuplicateKey, "requests: duplicate"},
		{"requests not a list", `{"requests":{}}`, 400, CodeInvalidType, "requests: Input should be a valid list"},
		{"empty list", `{"requests":[]}`, 400, CodeEmptyArray, "at least 1 item"},
		{"request not an object", `{"requests":[` + mreq("a") + `,"x"]}`, 400, CodeInvalidType, "requests.1: Input should be a valid dictionary"},
		{"missing custom_id", one(`{"params":{}}`), 400, CodeMissingParam, "requests.0.custom_id: Field required"},
		{"numeric custom_id", one(`{"custom_id":7,"params":{}}`), 400, CodeInvalidType, "requests.0.custom_id: Input should be a valid string"},
		{"empty custom_id", one(`{"custom_id":"","params":{}}`), 400, CodePatternMismatch, "^[a-zA-Z0-9_-]{1,64}$"},
		{"long custom_id", one(mreq(strings.Repeat("x", 65))), 400, CodePatternMismatch, "requests.0.custom_id: String should match pattern"},
		{"10 KB custom_id", one(mreq(strings.Repeat("x", 10<<10))), 400, CodePatternMismatch, "pattern"},
		{"custom_id with a dot", one(mreq("a.b")), 400, CodePatternMismatch, "pattern"},
		{"custom_id with unicode", one(mreq("é")), 400, CodePatternMismatch, "pattern"},
		{"duplicate custom_id", two(mreq("a"), mreq("a")), 400, CodeDuplicateCustomID, "requests.1.custom_id: the custom_id 'a' is already used by requests.0"},
		{"missing params", one(`{"custom_id":"a"}`), 400, CodeMissingParam, "requests.0.params: Field required"},
		{"string params", one(`{"custom_id":"a","params":"{}"}`), 400, CodeInvalidType, "requests.0.params: Input should be a valid dictionary"},
		{"null params", one(`{"custom_id":"a","params":null}`), 400, CodeInvalidType, "valid dictionary"},
		{"unknown request key", one(`{"custom_id":"a","params":{},"extra":1}`), 400, CodeUnknownParameter, "requests.0.extra: Extra inputs"},
		{"duplicate request key", one(`{"custom_id":"a","custom_id":"b","params":{}}`), 400, CodeDuplicateKey, "requests.0.custom_id: duplicate key"},
		{"bad json in request", one(`{"custom_id":"a","params":{"x":tru}}`), 400, CodeInvalidJSON, "requests.0: the request is not valid JSON"},
		{"mismatched brackets", one(`{"custom_id":"a","params":{"x":[}}}`), 400, CodeInvalidJSON, "not valid JSON"},
		{"invalid utf8", one(`{"custom_id":"a","params":{"x":"` + "\xff" + `"}}`), 400, CodeInvalidJSON, "not valid JSON"},
		{"truncated", `{"requests":[` + mreq("a"), 400, CodeInvalidJSON, "unexpected end"},
		{"truncated in request", `{"requests":[{"custom_id":"a","par`, 400, CodeInvalidJSON, "unexpected end"},
		{"missing comma", `{"requests":[` + mreq("a") + mreq("b") + `]}`, 400, CodeInvalidJSON, "unexpected '{'"},
		{"trailing data", one(mreq("a")) + "x", 400, CodeInvalidJSON, "unexpected 'x'"},
		{"two bodies", one(mreq("a")) + one(mreq("b")), 400, CodeInvalidJSON, "unexpected"},
		{"trailing comma", `{"requests":[` + mreq("a") + `,]}`, 400, CodeInvalidType, "requests.1"},
		{"too deep", one(`{"custom_id":"a","params":{"x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}}`), 400, CodeNestingTooDeep, "deeper than"},
		{"control char in key", "{\"req\x01\":1}", 400, CodeInvalidJSON, "unexpected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tasks, err := readMsg(tt.body, RequestLimits{})
			var we *wire.Error
			if !errors.As(err, &we) {
				t.Fatalf("err = %v (tasks %+v), want a *wire.Error", err, tasks)
			}
			if we.Status != tt.status || we.Code != tt.code || !strings.Contains(we.Message, tt.msg) {
				t.Fatalf("got %d %s %q, want %d %s containing %q", we.Status, we.Code, we.Message, tt.status, tt.code, tt.msg)
			}
			env := wire.AppendAnthropic(nil, we, "req_1")
			if !gjson.ValidBytes(env) || gjson.GetBytes(env, "error.type").Str != "invalid_request_error" {
				t.Fatalf("envelope %s", env)
			}
		})
	}
}

func TestReadMessageBatchRequestLimits(t *testing.T) {
	body := `{"requests":[` + mreq("a") + "," + mreq("b") + "," + mreq("c") + `]}`
	if _, err := readMsg(body, RequestLimits{MaxRequests: 3}); err != nil {
		t.Fatalf("at the limit: %v", err)
	}
	_, err := readMsg(body, RequestLimits{MaxRequests: 2})
	if we := (*wire.Error)(nil); !errors.As(err, &we) || we.Code != CodeArrayTooLong || !strings.Contains(we.Message, "at most 2 items") {
		t.Fatalf("over the count: %v", err)
	}
	_, err = readMsg(body, RequestLimits{MaxBytes: int64(len(body) - 1)})
	if we := (*wire.Error)(nil); !errors.As(err, &we) || we.Status != http.StatusRequestEntityTooLarge {
		t.Fatalf("over the size: %v", err)
	}
	if _, err := readMsg(body, RequestLimits{MaxBytes: int64(len(body))}); err != nil {
		t.Fatalf("at the size: %v", err)
	}
	n := len(mreq("a"))
	if _, err := readMsg(body, RequestLimits{MaxRequestBytes: n}); err != nil {
		t.Fatalf("request at the size: %v", err)
	}
	_, err = readMsg(body, RequestLimits{MaxRequestBytes: n - 1})
	if we := (*wire.Error)(nil); !errors.As(err, &we) || we.Status != http.StatusRequestEntityTooLarge || we.Param != "requests[0]" {
		t.Fatalf("request over the size: %v", err)
	}
}

func TestReadMessageBatchRequestHuge(t *testing.T) {
	// A 64 MiB request is refused once the limit is reached, without reading the rest.
	head := `{"requests":[{"custom_id":"a","params":{"x":"`
	r := &countingReader{r: io.MultiReader(strings.NewReader(head), &repeatReader{c: 'x', n: 64 << 20}, strings.NewReader(`"}}]}`))}
	_, err := ReadMessageBatchRequest(r, RequestLimits{})
	if we := (*wire.Error)(nil); !errors.As(err, &we) || we.Status != http.StatusRequestEntityTooLarge {
		t.Fatalf("err = %v", err)
	}
	if r.n > DefaultMaxRequestBytes+1<<20 {
		t.Fatalf("read %d bytes", r.n)
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestReadMessageBatchRequestReadError(t *testing.T) {
	mbe := &http.MaxBytesError{Limit: 10}
	_, err := ReadMessageBatchRequest(io.MultiReader(strings.NewReader(`{"requests":[`), failingReader{mbe}), RequestLimits{})
	var got *http.MaxBytesError
	var we *wire.Error
	if !errors.As(err, &got) || errors.As(err, &we) {
		t.Fatalf("err = %v", err)
	}
}

func TestReadMessageBatchRequestMany(t *testing.T) {
	var b bytes.Buffer
	b.WriteString(`{"requests":[`)
	for i := 0; i < DefaultMaxRequests; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"custom_id":"r%d","params":{"model":"m","max_tokens":1,"messages":[]}}`, i)
	}
	b.WriteString(`]}`)
	tasks, err := ReadMessageBatchRequest(bytes.NewReader(b.Bytes()), RequestLimits{})
	if err != nil || len(tasks) != DefaultMaxRequests {
		t.Fatalf("%d tasks, err %v", len(tasks), err)
	}
	body := b.Bytes()
	body = append(body[:len(body)-2], `,{"custom_id":"x","params":{}}]}`...)
	_, err = ReadMessageBatchRequest(bytes.NewReader(body), RequestLimits{})
	if we := (*wire.Error)(nil); !errors.As(err, &we) || we.Code != CodeArrayTooLong {
		t.Fatalf("100,001 requests: %v", err)
	}
}

func TestCheckMessageParams(t *testing.T) {
	for _, tt := range []struct {
		params string
		code   string
	}{
		{`{"model":"m"}`, ""},
		{`{"model":"m","stream":false}`, ""},
		{`{"model":"m","stream":true}`, CodeStreamUnsupported},
		{`{"stream":false,"stream":true}`, CodeDuplicateKey},
	} {
		e := CheckMessageParams([]byte(tt.params))
		if (e == nil) != (tt.code == "") || (e != nil && e.Code != tt.code) {
			t.Fatalf("%s: %v, want %q", tt.params, e, tt.code)
		}
	}
}

// FuzzReadMessageBatchRequest checks the streaming reader against a plain gjson reading of the
// whole body: whatever it accepts is valid JSON whose requests are the tasks, in order, with
// unique custom_ids; whatever it refuses is a *wire.Error.
func FuzzReadMessageBatchRequest(f *testing.F) {
	f.Add([]byte(`{"requests":[` + mreq("a") + "," + mreq("b") + `]}`))
	f.Add([]byte(` {"requests" :[{"params":{},"custom_id":"x"}] } `))
	f.Add([]byte(`{"requests":[{"custom_id":"a","params":{"s":"\"]}"}}]}`))
	f.Add([]byte(`{"requests":[` + mreq("a") + "," + mreq("a") + `]}`))
	f.Add([]byte(`{"requests":[]}`))
	lim := RequestLimits{MaxRequests: 5, MaxBytes: 4096, MaxRequestBytes: 512}
	f.Fuzz(func(t *testing.T, body []byte) {
		tasks, err := ReadMessageBatchRequest(bytes.NewReader(body), lim)
		// The same body arriving a byte at a time reads the same.
		tasks1, err1 := ReadMessageBatchRequest(iotest.OneByteReader(bytes.NewReader(body)), lim)
		if fmt.Sprint(tasks1, err1) != fmt.Sprint(tasks, err) {
			t.Fatalf("byte by byte: %v %v, at once: %v %v", tasks1, err1, tasks, err)
		}
		if err != nil {
			var we *wire.Error
			if !errors.As(err, &we) || (we.Status != 400 && we.Status != 413) || we.Message == "" {
				t.Fatalf("err = %v", err)
			}
			return
		}
		if !gjson.ValidBytes(body) || len(tasks) == 0 || len(tasks) > lim.MaxRequests {
			t.Fatalf("accepted %q with %d tasks", body, len(tasks))
		}
		seen := map[string]bool{}
		for _, task := range tasks {
			if seen[task.CustomID] || !validMessageCustomID(task.CustomID) {
				t.Fatalf("custom_id %q", task.CustomID)
			}
			seen[task.CustomID] = true
		}
		checkMsgTasks(t, string(body), tasks)
	})
}
