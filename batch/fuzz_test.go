package batch

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/tidwall/gjson"
)

// inputFile is one sample file of testdata/inputs: <name>.<expected first code or "ok">.jsonl.
type inputFile struct {
	name, code string
	data       []byte
}

func inputFiles(t testing.TB) []inputFile {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("testdata", "inputs", "*.jsonl"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no sample files: %v", err)
	}
	var files []inputFile
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		parts := strings.Split(strings.TrimSuffix(filepath.Base(p), ".jsonl"), ".")
		files = append(files, inputFile{name: parts[0], code: parts[len(parts)-1], data: data})
	}
	return files
}

// FuzzReadInput checks ReadInput's invariants on arbitrary files, with small limits so that
// the limits are reached: it never fails on an in-memory reader, lists at most MaxErrors errors
// in line order, and for a valid file returns tasks whose offsets point at the body of their
// own line, with unique custom_ids and one model.
func FuzzReadInput(f *testing.F) {
	for _, file := range inputFiles(f) {
		f.Add(file.data)
	}
	f.Add([]byte(req("a") + "\n" + req("b") + "\r\n\n" + req("c")))
	f.Add([]byte("\xEF\xBB\xBF" + req("a")))
	lim := InputLimits{MaxTasks: 6, MaxLineBytes: 512, MaxErrors: 3}
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := ReadInput(bytes.NewReader(data), chat, lim)
		if err != nil {
			t.Fatal(err)
		}
		// The same file arriving a byte at a time reads the same.
		in1, err := ReadInput(iotest.OneByteReader(bytes.NewReader(data)), chat, lim)
		if err != nil || fmt.Sprintf("%+v", in1) != fmt.Sprintf("%+v", in) {
			t.Fatalf("byte by byte: %+v %v, at once: %+v", in1, err, in)
		}
		if len(in.Errors) > lim.MaxErrors || in.ErrorCount < len(in.Errors) {
			t.Fatalf("%d errors listed, %d counted", len(in.Errors), in.ErrorCount)
		}
		last := 0
		for _, e := range in.Errors {
			if e.Code == "" || e.Message == "" || e.Line < last || e.Line > in.Lines || (e.Line == 0 && e.Code != CodeEmptyFile) {
				t.Fatalf("bad error %+v after line %d of %d", e, last, in.Lines)
			}
			last = e.Line
		}
		if !in.OK() {
			if in.Tasks != nil {
				t.Fatal("tasks kept for a file with errors")
			}
			return
		}
		if len(in.Tasks) == 0 || len(in.Tasks) > lim.MaxTasks || in.Model == "" {
			t.Fatalf("valid file with %d tasks, model %q", len(in.Tasks), in.Model)
		}
		lines := bytes.Split(data, []byte("\n"))
		seen := map[string]bool{}
		prev := 0
		for i, task := range in.Tasks {
			if task.Index != i || task.Line <= prev || task.Line > len(lines) || seen[task.CustomID] {
				t.Fatalf("task %d: %+v after line %d", i, task, prev)
			}
			prev, seen[task.CustomID] = task.Line, true
			body, err := task.ReadBody(bytes.NewReader(data), nil)
			if err != nil {
				t.Fatal(err)
			}
			line := lines[task.Line-1]
			if task.Line == 1 {
				line = bytes.TrimPrefix(line, utf8BOM)
			}
			got := gjson.ParseBytes(line)
			if got.Get("body").Raw != string(body) || got.Get("custom_id").Str != task.CustomID {
				t.Fatalf("task %+v: body %q is not line %d's %q", task, body, task.Line, line)
			}
			if gjson.GetBytes(body, "model").Str != in.Model || gjson.GetBytes(body, "stream").Type == gjson.True {
				t.Fatalf("task %+v: body %q", task, body)
			}
		}
	})
}
