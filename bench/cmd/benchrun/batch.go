package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/caddyai/gateway/bench/loadgen"
)

// Scenario h: interactive chat beside a batch on the same model. The model has an admission gate
// of batchMaxConcurrent requests (max_concurrent) and the simulator answers after 50 ms, as a GPU
// pool with a fixed number of sequences would; interactiveConns closed-loop clients keep part of
// it busy. The interactive latency is measured without the batch, then while a 5,000-line batch
// runs; the batch's lines per second are compared with the spare capacity, measured: the slots
// the interactive traffic leaves free (max_concurrent minus its mean requests in flight, by
// Little's law from its req/s and mean latency without the batch) over the time one request
// holds a slot (the interactive mean latency without the batch).
const (
	batchLines         = 5000
	batchMaxConcurrent = 16
	interactiveConns   = 8
)

var batchUpstream = upstreamSpec{Sim: true, TTFT: "50ms"}

func runBatchScenario(ctx context.Context, env *runEnv, o options, sc scenario) (*scenarioResult, error) {
	up, err := startUpstream(ctx, o, env.outDir, sc.ID, sc.Upstream, env.ports.upstream)
	if err != nil {
		return nil, err
	}
	defer up.stop()
	store := filepath.Join(env.outDir, "store-h")
	if err := os.RemoveAll(store); err != nil {
		return nil, fmt.Errorf("clearing the batch store: %w", err)
	}
	opts := gatewayOptions{MaxConcurrent: batchMaxConcurrent, Queue: 256, StorageDir: store}
	conf, err := gatewayConfig(env, sc, "gateway", env.ports.gateway, adminPort(o, env.ports, "gateway"), opts)
	if err != nil {
		return nil, err
	}
	gw, err := startServer(ctx, "gateway", o.gateway, conf, addrOf(env.ports.gateway), filepath.Join(env.outDir, "logs", "gateway-"+sc.ID+".log"))
	if err != nil {
		return nil, err
	}
	defer gw.stop()

	phase := 10 * time.Second
	if env.quick {
		phase = 3 * time.Second
	}
	body := chatBody()
	interactive := func(d time.Duration) (*loadgen.Result, error) {
		return loadgen.Run(ctx, loadgen.Config{Addr: gw.addr, Conns: interactiveConns, Duration: d, Body: body,
			Keys: []string{benchSecret}, Timeout: requestTimeout})
	}
	fmt.Print("warming up")
	if _, err := interactive(max(env.warmup, 500*time.Millisecond)); err != nil {
		return nil, err
	}
	fmt.Print(", interactive alone")
	alone, err := interactive(phase)
	if err != nil {
		return nil, err
	}
	fmt.Print(", uploading the batch")
	api := batchAPI{base: "http://" + gw.addr}
	id, err := api.start(ctx, body)
	if err != nil {
		return nil, err
	}
	defer func() { _ = api.cancel(context.WithoutCancel(ctx), id) }()
	// The batch alone for a moment: the runner's own pace on an idle pool.
	fmt.Print(", batch alone")
	soloT0, soloN0, err := api.done(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := sleep(ctx, phase/3); err != nil {
		return nil, err
	}
	soloT1, soloN1, err := api.done(ctx, id)
	if err != nil {
		return nil, err
	}
	fmt.Print(", interactive with the batch")
	t0, n0, err := api.done(ctx, id)
	if err != nil {
		return nil, err
	}
	var profiled chan error
	if o.profile && o.profileTarget == "gateway" {
		// the gateway while it serves both: where the batch's lines cost what interactive
		// requests wait for
		profiled = make(chan error, 1)
		go func() {
			profiled <- saveProfile(ctx, adminPort(o, env.ports, "gateway"), phase, filepath.Join(env.outDir, "gateway-"+sc.ID+".pprof"))
		}()
	}
	with, err := interactive(phase)
	if err != nil {
		return nil, err
	}
	if profiled != nil {
		if err := <-profiled; err != nil {
			return nil, err
		}
	}
	t1, n1, err := api.done(ctx, id)
	if err != nil {
		return nil, err
	}
	fmt.Println()
	if !gw.alive() {
		return nil, fmt.Errorf("gateway exited: %s", logTail(gw.log))
	}

	meanMs := ms(alone.Latency.Mean())
	inFlight := alone.RPS() * alone.Latency.Mean().Seconds()
	spareSlots := float64(batchMaxConcurrent) - inFlight
	spareLPS := spareSlots / alone.Latency.Mean().Seconds()
	linesPS := float64(n1-n0) / t1.Sub(t0).Seconds()
	soloLPS := float64(soloN1-soloN0) / soloT1.Sub(soloT0).Seconds()
	res := &scenarioResult{ID: sc.ID, Name: sc.Name, Upstream: sc.Upstream.String(), Conns: interactiveConns,
		Figures: map[string]float64{
			"interactive_p50_ms_alone": ms(alone.Latency.Quantile(0.5)), "interactive_p99_ms_alone": ms(alone.Latency.Quantile(0.99)),
			"interactive_p50_ms_batch": ms(with.Latency.Quantile(0.5)), "interactive_p99_ms_batch": ms(with.Latency.Quantile(0.99)),
			"interactive_rps_alone": alone.RPS(), "interactive_rps_batch": with.RPS(),
			"interactive_errors":    float64(alone.Errors + with.Errors),
			"interactive_in_flight": inFlight, "spare_slots": spareSlots, "spare_lines_per_s": spareLPS,
			"batch_lines_per_s": linesPS, "batch_lines_per_s_alone": soloLPS,
			"batch_share_of_spare":     linesPS / spareLPS,
			"interactive_p99_increase": ms(with.Latency.Quantile(0.99))/ms(alone.Latency.Quantile(0.99)) - 1,
		},
		Note: fmt.Sprintf("model max_concurrent %d (queue 256), simulator ttft 50 ms, %d interactive connections, phases of %s; "+
			"spare capacity = (max_concurrent - interactive requests in flight) / mean request time, both measured without the batch",
			batchMaxConcurrent, interactiveConns, phase)}
	f := res.Figures
	res.Lines = []string{
		fmt.Sprintf("interactive alone:      %6.0f req/s, p50 %.1f ms, p99 %.1f ms, mean %.1f ms, %.1f requests in flight",
			f["interactive_rps_alone"], f["interactive_p50_ms_alone"], f["interactive_p99_ms_alone"], meanMs, inFlight),
		fmt.Sprintf("interactive with batch: %6.0f req/s, p50 %.1f ms, p99 %.1f ms (p99 %+.1f%%), %d errors",
			f["interactive_rps_batch"], f["interactive_p50_ms_batch"], f["interactive_p99_ms_batch"], 100*f["interactive_p99_increase"], alone.Errors+with.Errors),
		fmt.Sprintf("batch: %.1f lines/s beside the interactive traffic = %.0f%% of the spare capacity (%.1f slots, %.1f lines/s); %.1f lines/s on the idle pool",
			linesPS, 100*linesPS/spareLPS, spareSlots, spareLPS, soloLPS),
	}
	return res, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// batchAPI calls the gateway's Files and Batches API with the bench key.
type batchAPI struct{ base string }

func (a batchAPI) call(ctx context.Context, method, path, ctype string, body io.Reader, into any) error {
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+benchSecret)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: status %d: %.300s", method, path, resp.StatusCode, data)
	}
	if into != nil {
		if err := json.Unmarshal(data, into); err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return nil
}

type batchObject struct {
	ID            string `json:"id"`
	Status        string `json:"status"`
	RequestCounts struct {
		Total     int `json:"total"`
		Completed int `json:"completed"`
		Failed    int `json:"failed"`
	} `json:"request_counts"`
}

// start uploads a file of batchLines chat requests made by body, creates the batch and waits
// until it is in progress.
func (a batchAPI) start(ctx context.Context, body loadgen.Body) (string, error) {
	var file bytes.Buffer
	var line []byte
	for i := range batchLines {
		line = append(line[:0], `{"custom_id":"line-`...)
		line = strconv.AppendInt(line, int64(i), 10)
		line = append(line, `","method":"POST","url":"/v1/chat/completions","body":`...)
		line = body(line, int64(1_000_000+i))
		line = append(line, "}\n"...)
		file.Write(line)
	}
	var form bytes.Buffer
	mw := multipart.NewWriter(&form)
	_ = mw.WriteField("purpose", "batch")
	fw, err := mw.CreateFormFile("file", "bench.jsonl")
	if err != nil {
		return "", err
	}
	_, _ = fw.Write(file.Bytes())
	_ = mw.Close()
	var f struct {
		ID string `json:"id"`
	}
	if err := a.call(ctx, http.MethodPost, "/v1/files", mw.FormDataContentType(), &form, &f); err != nil {
		return "", fmt.Errorf("uploading the batch file: %w", err)
	}
	req, _ := json.Marshal(map[string]string{"input_file_id": f.ID, "endpoint": "/v1/chat/completions", "completion_window": "24h"})
	var b batchObject
	if err := a.call(ctx, http.MethodPost, "/v1/batches", "application/json", bytes.NewReader(req), &b); err != nil {
		return "", fmt.Errorf("creating the batch: %w", err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for b.Status == "validating" {
		if time.Now().After(deadline) {
			return "", fmt.Errorf("batch %s still validating after 60s", b.ID)
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return "", err
		}
		if err := a.call(ctx, http.MethodGet, "/v1/batches/"+b.ID, "", nil, &b); err != nil {
			return "", err
		}
	}
	if b.Status != "in_progress" {
		return "", fmt.Errorf("batch %s is %s", b.ID, b.Status)
	}
	return b.ID, nil
}

// done returns the time and the number of lines answered (completed or failed) so far.
func (a batchAPI) done(ctx context.Context, id string) (time.Time, int, error) {
	var b batchObject
	err := a.call(ctx, http.MethodGet, "/v1/batches/"+id, "", nil, &b)
	return time.Now(), b.RequestCounts.Completed + b.RequestCounts.Failed, err
}

func (a batchAPI) cancel(ctx context.Context, id string) error {
	return a.call(ctx, http.MethodPost, "/v1/batches/"+id+"/cancel", "application/json", nil, nil)
}
