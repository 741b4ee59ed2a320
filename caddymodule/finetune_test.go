package caddymodule_test

import (
	"context"
	"fmt"
	"net/http"
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
	secretTrainer = "sk-test-trainer-a"
	secretOtherFT = "sk-test-trainer-b"
	trainerKey    = "trainer-secret-123"
)

// TestFineTuningThroughGateway: fine-tuning jobs created with openai-go through a real Caddy to a
// simulated training service: the training file forwarded, the job owned by its key (another key
// gets 404 and an empty list), both path spellings, create validation, the base model allowed
// for the key, retrieve until succeeded, events, checkpoints, cancel.
func TestFineTuningThroughGateway(t *testing.T) {
	up := newUpstream(t, simulator.Config{Models: []string{"demo-llama"}, TrainingStep: 150 * time.Millisecond})
	port := freePort(t)
	t.Setenv("TEST_TRAINER_KEY", trainerKey)
	startCaddy(t, globalOptions+fmt.Sprintf(`
:%d {
	ai_gateway {
		key %s {
			id team-a
		}
		key %s {
			id team-b
			models demo-*
		}
		model demo-llama {
			upstream %s
		}
		storage {
			dir %s
		}
		fine_tuning {
			upstream %s
			upstream_key {env.TEST_TRAINER_KEY}
			serve_on demo-llama
		}
	}
	reverse_proxy {
		dynamic ai_gateway
	}
}
`, port, policy.FormatHash(policy.HashSecret(secretTrainer)), policy.FormatHash(policy.HashSecret(secretOtherFT)), up.addr(), t.TempDir(), up.URL))
	ctx := context.Background()
	client := func(key string) openai.Client {
		return openai.NewClient(option.WithBaseURL(url(port, "/v1/")), option.WithAPIKey(key), option.WithMaxRetries(0))
	}
	a, b := client(secretTrainer), client(secretOtherFT)

	f, err := a.Files.New(ctx, openai.FileNewParams{File: openai.File(strings.NewReader(`{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}`+"\n"),
		"train.jsonl", "application/jsonl"), Purpose: openai.FilePurposeFineTune})
	if err != nil {
		t.Fatal(err)
	}
	job, err := a.FineTuning.Jobs.New(ctx, openai.FineTuningJobNewParams{Model: "demo-llama", TrainingFile: f.ID,
		Suffix: openai.String("support"), Seed: openai.Int(7)})
	if err != nil {
		t.Fatalf("creating a job: %v", err)
	}
	if !strings.HasPrefix(job.ID, "ftjob-") || job.TrainingFile != f.ID || job.Status != "validating_files" || job.Model != "demo-llama" {
		t.Errorf("job = %s", job.RawJSON())
	}
	wiretest.Validate(t, "FineTuningJob", []byte(job.RawJSON()))
	var pushed []seenRequest
	for _, r := range up.requests() {
		if r.Path == "/v1/files" || r.Path == "/v1/fine_tuning/jobs" {
			pushed = append(pushed, r)
		}
	}
	if len(pushed) != 2 || pushed[0].Header.Get("Authorization") != "Bearer "+trainerKey ||
		gjson.GetBytes(pushed[1].Body, "training_file").Str == f.ID || !strings.HasPrefix(gjson.GetBytes(pushed[1].Body, "training_file").Str, "file-") {
		t.Errorf("the training service got %+v", pushed)
	}

	t.Run("another key sees nothing", func(t *testing.T) {
		if _, err := b.FineTuning.Jobs.Get(ctx, job.ID); status(err) != 404 {
			t.Errorf("retrieve: %v", err)
		}
		if _, err := b.FineTuning.Jobs.Cancel(ctx, job.ID); status(err) != 404 {
			t.Errorf("cancel: %v", err)
		}
		if _, err := b.FineTuning.Jobs.ListEvents(ctx, job.ID, openai.FineTuningJobListEventsParams{}); status(err) != 404 {
			t.Errorf("events: %v", err)
		}
		page, err := b.FineTuning.Jobs.List(ctx, openai.FineTuningJobListParams{})
		if err != nil || len(page.Data) != 0 {
			t.Errorf("list: %v %+v", err, page)
		}
		// nor can it train on a's file
		if _, err := b.FineTuning.Jobs.New(ctx, openai.FineTuningJobNewParams{Model: "demo-llama", TrainingFile: f.ID}); status(err) != 400 {
			t.Errorf("b on a's file: %v", err)
		}
		// b may only fine-tune demo-* models
		if _, err := b.FineTuning.Jobs.New(ctx, openai.FineTuningJobNewParams{Model: "gpt-4o-mini", TrainingFile: "file-x"}); status(err) != 403 {
			t.Errorf("b on a model outside its list: %v", err)
		}
	})

	t.Run("create validation", func(t *testing.T) {
		for _, tc := range []struct{ body, param string }{
			{`{"model":"demo-llama"}`, "training_file"},
			{`{"model":"demo-llama","training_file":"` + f.ID + `","suffix":"` + strings.Repeat("s", 65) + `"}`, "suffix"},
			{`{"model":"demo-llama","training_file":"` + f.ID + `","hyperparameters":{"n_epochs":100}}`, "hyperparameters.n_epochs"},
			{`{"model":"demo-llama","training_file":"file-nope"}`, "training_file"},
		} {
			req, _ := http.NewRequest("POST", url(port, "/v1/fine-tuning/jobs"), strings.NewReader(tc.body))
			req.Header.Set("Authorization", "Bearer "+secretTrainer)
			resp, body := doRequest(t, req)
			if resp.StatusCode != 400 || gjson.GetBytes(body, "error.param").Str != tc.param {
				t.Errorf("%s: %d %s", tc.body, resp.StatusCode, body)
			}
		}
	})

	t.Run("both spellings", func(t *testing.T) {
		for _, p := range []string{"/v1/fine_tuning/jobs/" + job.ID, "/v1/fine-tuning/jobs/" + job.ID} {
			req, _ := http.NewRequest("GET", url(port, p), nil)
			req.Header.Set("Authorization", "Bearer "+secretTrainer)
			resp, body := doRequest(t, req)
			if resp.StatusCode != 200 || gjson.GetBytes(body, "id").Str != job.ID || gjson.GetBytes(body, "training_file").Str != f.ID {
				t.Errorf("%s: %d %s", p, resp.StatusCode, body)
			}
		}
	})

	t.Run("lifecycle", func(t *testing.T) {
		var got *openai.FineTuningJob
		waitFor(t, "the job to succeed", 10*time.Second, func() bool {
			got, err = a.FineTuning.Jobs.Get(ctx, job.ID)
			return err == nil && got.Status == "succeeded"
		})
		wiretest.Validate(t, "FineTuningJob", []byte(got.RawJSON()))
		if !strings.HasPrefix(got.FineTunedModel, "ft:demo-llama:") {
			t.Errorf("fine_tuned_model %q", got.FineTunedModel)
		}
		events, err := a.FineTuning.Jobs.ListEvents(ctx, job.ID, openai.FineTuningJobListEventsParams{})
		if err != nil || len(events.Data) != 4 || events.Data[0].Message != "The job has successfully completed" {
			t.Fatalf("events: %v %+v", err, events)
		}
		wiretest.Validate(t, "ListFineTuningJobEventsResponse", []byte(events.RawJSON()))
		ckpts, err := a.FineTuning.Jobs.Checkpoints.List(ctx, job.ID, openai.FineTuningJobCheckpointListParams{})
		if err != nil || len(ckpts.Data) != 1 || ckpts.Data[0].FineTuningJobID != job.ID {
			t.Fatalf("checkpoints: %v %+v", err, ckpts)
		}
		page, err := a.FineTuning.Jobs.List(ctx, openai.FineTuningJobListParams{})
		if err != nil || len(page.Data) != 1 || page.Data[0].Status != "succeeded" {
			t.Fatalf("list: %v %+v", err, page)
		}
		wiretest.Validate(t, "ListPaginatedFineTuningJobsResponse", []byte(page.RawJSON()))
		if _, err := a.FineTuning.Jobs.Cancel(ctx, job.ID); status(err) != 400 {
			t.Errorf("cancelling a succeeded job: %v", err)
		}
		// serve_on: the fine-tuned model answers its owner on demo-llama's pool, and nobody else
		chat := openai.ChatCompletionNewParams{Model: got.FineTunedModel, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}}
		resp, err := a.Chat.Completions.New(ctx, chat)
		if err != nil || resp.Model != got.FineTunedModel {
			t.Errorf("the owner's fine-tuned model: %v", err)
		}
		seen := up.requests()
		if last := seen[len(seen)-1]; last.Path != "/v1/chat/completions" || gjson.GetBytes(last.Body, "model").Str != got.FineTunedModel {
			t.Errorf("upstream got %s %s", last.Path, last.Body)
		}
		if _, err := b.Chat.Completions.New(ctx, chat); status(err) != 404 {
			t.Errorf("another key on the fine-tuned model: %v", err)
		}
	})

	t.Run("cancel and list order", func(t *testing.T) {
		second, err := a.FineTuning.Jobs.New(ctx, openai.FineTuningJobNewParams{Model: "demo-llama", TrainingFile: f.ID})
		if err != nil {
			t.Fatal(err)
		}
		c, err := a.FineTuning.Jobs.Cancel(ctx, second.ID)
		if err != nil || c.Status != "cancelled" {
			t.Fatalf("cancel: %v %+v", err, c)
		}
		page, err := a.FineTuning.Jobs.List(ctx, openai.FineTuningJobListParams{Limit: openai.Int(1)})
		if err != nil || len(page.Data) != 1 || page.Data[0].ID != second.ID || page.Data[0].Status != "cancelled" || !page.HasMore {
			t.Fatalf("first page: %v %s", err, page.RawJSON())
		}
		next, err := a.FineTuning.Jobs.List(ctx, openai.FineTuningJobListParams{Limit: openai.Int(1), After: openai.String(second.ID)})
		if err != nil || len(next.Data) != 1 || next.Data[0].ID != job.ID || next.HasMore {
			t.Fatalf("second page: %v %s", err, next.RawJSON())
		}
		// a listed job that has not ended is current, with no retrieve in between
		third, err := a.FineTuning.Jobs.New(ctx, openai.FineTuningJobNewParams{Model: "demo-llama", TrainingFile: f.ID})
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the listed job to succeed", 10*time.Second, func() bool {
			page, err := a.FineTuning.Jobs.List(ctx, openai.FineTuningJobListParams{Limit: openai.Int(1)})
			return err == nil && len(page.Data) == 1 && page.Data[0].ID == third.ID && page.Data[0].Status == "succeeded"
		})
		// the training service's one upload was reused for the other jobs
		n := 0
		for _, r := range up.requests() {
			if r.Path == "/v1/files" {
				n++
			}
		}
		if n != 1 {
			t.Errorf("the file was sent %d times", n)
		}
	})
}

// TestFineTuningTrainerDown: an unreachable training service is a 503 with Retry-After, and
// without fine_tuning the paths are 404.
func TestFineTuningTrainerDown(t *testing.T) {
	port, down := freePort(t), freePort(t)
	startCaddy(t, globalOptions+fmt.Sprintf(`
:%d {
	route /off/* {
		uri strip_prefix /off
		ai_gateway {
			key %s {
				id team-a
			}
			model demo-llama {
				upstream 127.0.0.1:1
			}
			storage {
				dir %s
			}
		}
	}
	ai_gateway {
		key %s {
			id team-a
		}
		model demo-llama {
			upstream 127.0.0.1:1
		}
		storage {
			dir %s
		}
		fine_tuning {
			upstream 127.0.0.1:%d
		}
	}
	reverse_proxy {
		dynamic ai_gateway
	}
}
`, port, policy.FormatHash(policy.HashSecret(secretTrainer)), t.TempDir(), policy.FormatHash(policy.HashSecret(secretTrainer)), t.TempDir(), down))
	ctx := context.Background()
	c := openai.NewClient(option.WithBaseURL(url(port, "/v1/")), option.WithAPIKey(secretTrainer), option.WithMaxRetries(0))
	f, err := c.Files.New(ctx, openai.FileNewParams{File: openai.File(strings.NewReader("{}\n"), "t.jsonl", "application/jsonl"), Purpose: openai.FilePurposeFineTune})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", url(port, "/v1/fine_tuning/jobs"), strings.NewReader(`{"model":"demo-llama","training_file":"`+f.ID+`"}`))
	req.Header.Set("Authorization", "Bearer "+secretTrainer)
	resp, body := doRequest(t, req)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || gjson.GetBytes(body, "error.code").Str != "training_service_unavailable" {
		t.Errorf("trainer down: %d %s", resp.StatusCode, body)
	}
	wiretest.Validate(t, "ErrorResponse", body)
	req, _ = http.NewRequest("GET", url(port, "/off/v1/fine-tuning/jobs"), nil)
	req.Header.Set("Authorization", "Bearer "+secretTrainer)
	if resp, body := doRequest(t, req); resp.StatusCode != 404 {
		t.Errorf("without fine_tuning: %d %s", resp.StatusCode, body)
	}
}
