package simulator

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The simulator plays a training service that speaks OpenAI's fine-tuning API: POST /v1/files
// (multipart, purpose fine-tune), and /v1/fine_tuning/jobs: create, list, retrieve, cancel,
// pause, resume, events, checkpoints. A job moves through validating_files, queued and running
// to succeeded, one state per Config.TrainingStep since it was created (paused time does not
// count), with an event per state and a checkpoint once it succeeds. Errors are in OpenAI's
// envelope.

// defaultTrainingStep is how long a job stays in each state by default.
const defaultTrainingStep = 2 * time.Second

type trainingState struct {
	mu    sync.Mutex
	files map[string]bool
	jobs  map[string]*simJob
}

type simJob struct {
	id, model, trainingFile, validationFile, suffix string
	created                                         time.Time
	cancelled, paused                               bool
	pausedAt                                        time.Time
	pausedFor                                       time.Duration
	seed                                            int64
}

var simJobStates = [...]string{"validating_files", "queued", "running", "succeeded"}

func (s *Server) training() *trainingState {
	s.trainOnce.Do(func() { s.train = &trainingState{files: map[string]bool{}, jobs: map[string]*simJob{}} })
	return s.train
}

func (s *Server) trainingStep() time.Duration {
	if s.cfg.TrainingStep > 0 {
		return s.cfg.TrainingStep
	}
	return defaultTrainingStep
}

// stage is how many states the job has passed (0 validating_files .. 3 succeeded).
func (s *Server) stage(j *simJob) int {
	now := s.now()
	if j.paused {
		now = j.pausedAt
	}
	n := int((now.Sub(j.created) - j.pausedFor) / s.trainingStep())
	return min(max(n, 0), len(simJobStates)-1)
}

func (s *Server) jobStatus(j *simJob) string {
	if j.cancelled {
		return "cancelled"
	}
	return simJobStates[s.stage(j)]
}

func (s *Server) fineTunedModel(j *simJob) string {
	name := "ft:" + j.model + ":sim"
	if j.suffix != "" {
		name += ":" + j.suffix
	}
	return name + ":" + strings.TrimPrefix(j.id, "ftjob-")
}

func (s *Server) appendJob(b []byte, j *simJob) []byte {
	status := s.jobStatus(j)
	b = append(b, `{"id":`...)
	b = appendJSONString(b, j.id)
	b = append(b, `,"object":"fine_tuning.job","created_at":`...)
	b = appendInt(b, int(j.created.Unix()))
	b = append(b, `,"model":`...)
	b = appendJSONString(b, j.model)
	b = append(b, `,"training_file":`...)
	b = appendJSONString(b, j.trainingFile)
	b = append(b, `,"validation_file":`...)
	b = appendNullableString(b, j.validationFile)
	b = append(b, `,"status":`...)
	b = appendJSONString(b, status)
	b = append(b, `,"fine_tuned_model":`...)
	if status == "succeeded" {
		b = appendJSONString(b, s.fineTunedModel(j))
		b = append(b, `,"finished_at":`...)
		b = appendInt(b, int(j.created.Add(3*s.trainingStep()+j.pausedFor).Unix()))
		b = append(b, `,"trained_tokens":1200,"result_files":["file-simresult"]`...)
	} else {
		b = append(b, `null,"finished_at":null,"trained_tokens":null,"result_files":[]`...)
	}
	b = append(b, `,"hyperparameters":{"batch_size":"auto","learning_rate_multiplier":"auto","n_epochs":"auto"},"error":null,"organization_id":"org-sim","seed":`...)
	b = strconv.AppendInt(b, j.seed, 10)
	b = append(b, `,"estimated_finish":null,"metadata":null}`...)
	return b
}

func (s *Server) trainingFail(x *exchange, status int, param, msg string) {
	typ, code := openAIType(status)
	x.writeBody(status, ctJSON, openAIEnvelope(msg, typ, param, code))
}

// serveTraining answers the training service's routes.
func (s *Server) serveTraining(x *exchange, path string, body []byte) {
	r := x.r
	if !x.preFault() {
		return
	}
	t := s.training()
	if path == "/v1/files" {
		if r.Method != http.MethodPost {
			s.trainingFail(x, http.StatusMethodNotAllowed, "", "Method Not Allowed")
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		f, hdr, err := r.FormFile("file")
		if err != nil || r.FormValue("purpose") != "fine-tune" {
			s.trainingFail(x, http.StatusBadRequest, "file", "expected a multipart upload with a file and purpose fine-tune")
			return
		}
		n, _ := io.Copy(io.Discard, f)
		id := s.nextID("file-")
		t.mu.Lock()
		t.files[id] = true
		t.mu.Unlock()
		out := []byte(`{"id":`)
		out = appendJSONString(out, id)
		out = append(out, `,"object":"file","bytes":`...)
		out = appendInt(out, int(n))
		out = append(out, `,"created_at":`...)
		out = appendInt(out, int(s.now().Unix()))
		out = append(out, `,"filename":`...)
		out = appendJSONString(out, hdr.Filename)
		out = append(out, `,"purpose":"fine-tune","status":"processed"}`...)
		x.writeJSON(out)
		return
	}
	rest := strings.TrimPrefix(strings.TrimPrefix(path, "/v1/fine_tuning/jobs"), "/")
	if rest == "" {
		switch r.Method {
		case http.MethodPost:
			s.createJob(x, t, body)
		case http.MethodGet:
			s.listJobs(x, t)
		default:
			s.trainingFail(x, http.StatusMethodNotAllowed, "", "Method Not Allowed")
		}
		return
	}
	id, action, _ := strings.Cut(rest, "/")
	t.mu.Lock()
	defer t.mu.Unlock()
	j, ok := t.jobs[id]
	if !ok {
		s.trainingFail(x, http.StatusNotFound, "fine_tune_id", "No fine-tuning job found with id '"+id+"'.")
		return
	}
	want := http.MethodPost
	if action == "" || action == "events" || action == "checkpoints" {
		want = http.MethodGet
	}
	if r.Method != want {
		s.trainingFail(x, http.StatusMethodNotAllowed, "", "Method Not Allowed")
		return
	}
	status := s.jobStatus(j)
	terminal := status == "succeeded" || status == "cancelled"
	switch action {
	case "":
	case "cancel":
		if terminal {
			s.trainingFail(x, http.StatusBadRequest, "", "Job has already completed: "+status)
			return
		}
		j.cancelled = true
	case "pause":
		if terminal || j.paused {
			s.trainingFail(x, http.StatusBadRequest, "", "Job cannot be paused while "+status)
			return
		}
		j.paused, j.pausedAt = true, s.now()
	case "resume":
		if !j.paused || j.cancelled {
			s.trainingFail(x, http.StatusBadRequest, "", "Job is not paused")
			return
		}
		j.paused, j.pausedFor = false, j.pausedFor+s.now().Sub(j.pausedAt)
	case "events":
		x.writeJSON(s.appendEvents(j))
		return
	case "checkpoints":
		x.writeJSON(s.appendCheckpoints(j))
		return
	default:
		s.trainingFail(x, http.StatusNotFound, "", "Invalid URL ("+r.Method+" "+path+")")
		return
	}
	x.writeJSON(s.appendJob(nil, j))
}

func (s *Server) createJob(x *exchange, t *trainingState, body []byte) {
	var req struct {
		Model          string  `json:"model"`
		TrainingFile   string  `json:"training_file"`
		ValidationFile *string `json:"validation_file"`
		Suffix         *string `json:"suffix"`
		Seed           *int64  `json:"seed"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			s.trainingFail(x, http.StatusBadRequest, "", "We could not parse the JSON body of your request.")
			return
		}
		s.trainingFail(x, http.StatusBadRequest, "", err.Error())
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case req.Model == "":
		s.trainingFail(x, http.StatusBadRequest, "model", "Missing required parameter: 'model'.")
		return
	case !t.files[req.TrainingFile]:
		s.trainingFail(x, http.StatusBadRequest, "training_file", "invalid training_file: "+req.TrainingFile)
		return
	case req.ValidationFile != nil && *req.ValidationFile != "" && !t.files[*req.ValidationFile]:
		s.trainingFail(x, http.StatusBadRequest, "validation_file", "invalid validation_file: "+*req.ValidationFile)
		return
	}
	j := &simJob{id: s.nextID("ftjob-"), model: req.Model, trainingFile: req.TrainingFile, created: s.now(), seed: 42}
	if req.ValidationFile != nil {
		j.validationFile = *req.ValidationFile
	}
	if req.Suffix != nil {
		j.suffix = *req.Suffix
	}
	if req.Seed != nil {
		j.seed = *req.Seed
	}
	t.jobs[j.id] = j
	x.writeJSON(s.appendJob(nil, j))
}

func (s *Server) listJobs(x *exchange, t *trainingState) {
	t.mu.Lock()
	defer t.mu.Unlock()
	jobs := make([]*simJob, 0, len(t.jobs))
	for _, j := range t.jobs {
		jobs = append(jobs, j)
	}
	sort.Slice(jobs, func(a, b int) bool { return jobs[a].id > jobs[b].id })
	out := []byte(`{"object":"list","data":[`)
	for i, j := range jobs {
		if i > 0 {
			out = append(out, ',')
		}
		out = s.appendJob(out, j)
	}
	x.writeJSON(append(out, `],"has_more":false}`...))
}

// appendEvents lists the job's events newest first: one per state it reached.
func (s *Server) appendEvents(j *simJob) []byte {
	msgs := [...]string{"Validating training file", "Files validated, job queued", "Fine-tuning job started", "The job has successfully completed"}
	var events []string
	for i := 0; i <= s.stage(j); i++ {
		events = append(events, msgs[i])
	}
	if j.cancelled {
		events = append(events, "Fine-tuning job cancelled")
	}
	out := []byte(`{"object":"list","data":[`)
	for i := len(events) - 1; i >= 0; i-- {
		if i < len(events)-1 {
			out = append(out, ',')
		}
		out = append(out, `{"object":"fine_tuning.job.event","id":`...)
		out = appendJSONString(out, "ftevent-"+strings.TrimPrefix(j.id, "ftjob-")+"-"+strconv.Itoa(i))
		out = append(out, `,"created_at":`...)
		out = appendInt(out, int(j.created.Add(time.Duration(min(i, 3))*s.trainingStep()).Unix()))
		out = append(out, `,"level":"info","message":`...)
		out = appendJSONString(out, events[i])
		out = append(out, `,"type":"message"}`...)
	}
	return append(out, `],"has_more":false}`...)
}

// appendCheckpoints lists the job's checkpoint: one once it succeeded.
func (s *Server) appendCheckpoints(j *simJob) []byte {
	out := []byte(`{"object":"list","data":[`)
	if !j.cancelled && s.stage(j) == 3 {
		suffix := strings.TrimPrefix(j.id, "ftjob-")
		out = append(out, `{"object":"fine_tuning.job.checkpoint","id":`...)
		out = appendJSONString(out, "ftckpt-"+suffix)
		out = append(out, `,"created_at":`...)
		out = appendInt(out, int(j.created.Add(3*s.trainingStep()).Unix()))
		out = append(out, `,"fine_tuned_model_checkpoint":`...)
		out = appendJSONString(out, s.fineTunedModel(j)+":ckpt-step-100")
		out = append(out, `,"fine_tuning_job_id":`...)
		out = appendJSONString(out, j.id)
		out = append(out, `,"step_number":100,"metrics":{"step":100,"train_loss":0.42,"train_mean_token_accuracy":0.87}}`...)
	}
	return append(out, `],"has_more":false,"first_id":null,"last_id":null}`...)
}
