package simulator

import (
	"bytes"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tidwall/gjson"
)

func TestTrainingService(t *testing.T) {
	now := fixedNow
	s := newServer(t, Config{TrainingStep: time.Second, Now: func() time.Time { return now }})
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	_ = mw.WriteField("purpose", "fine-tune")
	fw, _ := mw.CreateFormFile("file", "train.jsonl")
	_, _ = fw.Write([]byte(`{"messages":[]}` + "\n"))
	_ = mw.Close()
	req := httptest.NewRequest(http.MethodPost, "/v1/files", &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	file := gjson.Get(rec.Body.String(), "id").Str
	if rec.Code != 200 || file == "" || gjson.Get(rec.Body.String(), "purpose").Str != "fine-tune" {
		t.Fatalf("upload: %d %s", rec.Code, rec.Body)
	}
	if rec := do(t, s, "POST", "/v1/fine_tuning/jobs", `{"model":"m","training_file":"file-none"}`); rec.Code != 400 {
		t.Errorf("unknown training file: %d %s", rec.Code, rec.Body)
	}
	rec = do(t, s, "POST", "/v1/fine_tuning/jobs", `{"model":"m","training_file":"`+file+`","suffix":"s"}`)
	id := gjson.Get(rec.Body.String(), "id").Str
	if rec.Code != 200 || gjson.Get(rec.Body.String(), "status").Str != "validating_files" {
		t.Fatalf("create: %d %s", rec.Code, rec.Body)
	}
	for i, want := range []string{"validating_files", "queued", "running", "succeeded", "succeeded"} {
		now = fixedNow.Add(time.Duration(i) * time.Second)
		rec := do(t, s, "GET", "/v1/fine_tuning/jobs/"+id, "")
		if got := gjson.Get(rec.Body.String(), "status").Str; got != want {
			t.Errorf("after %ds: %s, want %s", i, got, want)
		}
	}
	rec = do(t, s, "GET", "/v1/fine_tuning/jobs/"+id, "")
	if m := gjson.Get(rec.Body.String(), "fine_tuned_model").Str; m != "ft:m:sim:s:"+id[len("ftjob-"):] {
		t.Errorf("fine_tuned_model %q", m)
	}
	if rec := do(t, s, "GET", "/v1/fine_tuning/jobs/"+id+"/events", ""); gjson.Get(rec.Body.String(), "data.#").Int() != 4 {
		t.Errorf("events: %s", rec.Body)
	}
	if rec := do(t, s, "GET", "/v1/fine_tuning/jobs/"+id+"/checkpoints", ""); gjson.Get(rec.Body.String(), "data.0.fine_tuning_job_id").Str != id {
		t.Errorf("checkpoints: %s", rec.Body)
	}
	if rec := do(t, s, "POST", "/v1/fine_tuning/jobs/"+id+"/cancel", ""); rec.Code != 400 {
		t.Errorf("cancel after success: %d", rec.Code)
	}
	// pause stops the clock of a job; resume starts it again; cancel ends it
	now = fixedNow
	rec = do(t, s, "POST", "/v1/fine_tuning/jobs", `{"model":"m","training_file":"`+file+`"}`)
	id2 := gjson.Get(rec.Body.String(), "id").Str
	do(t, s, "POST", "/v1/fine_tuning/jobs/"+id2+"/pause", "")
	now = fixedNow.Add(10 * time.Second)
	if got := gjson.Get(do(t, s, "GET", "/v1/fine_tuning/jobs/"+id2, "").Body.String(), "status").Str; got != "validating_files" {
		t.Errorf("paused job: %s", got)
	}
	do(t, s, "POST", "/v1/fine_tuning/jobs/"+id2+"/resume", "")
	now = now.Add(2 * time.Second)
	if got := gjson.Get(do(t, s, "GET", "/v1/fine_tuning/jobs/"+id2, "").Body.String(), "status").Str; got != "running" {
		t.Errorf("resumed job: %s", got)
	}
	if rec := do(t, s, "POST", "/v1/fine_tuning/jobs/"+id2+"/cancel", ""); gjson.Get(rec.Body.String(), "status").Str != "cancelled" {
		t.Errorf("cancel: %s", rec.Body)
	}
	if rec := do(t, s, "GET", "/v1/fine_tuning/jobs", ""); gjson.Get(rec.Body.String(), "data.#").Int() != 2 {
		t.Errorf("list: %s", rec.Body)
	}
	if rec := do(t, s, "GET", "/v1/fine_tuning/jobs/ftjob-none", ""); rec.Code != 404 {
		t.Errorf("unknown job: %d", rec.Code)
	}
}
