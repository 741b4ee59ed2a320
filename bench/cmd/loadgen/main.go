// Command loadgen drives one OpenAI-compatible endpoint with closed-loop load and prints
// throughput, latency percentiles, time to first byte (streams), 429s and errors.
//
//	loadgen -addr 127.0.0.1:8080 -c 50 -d 10s -key sk-demo-gateway -model llama [-stream] [-body file.json]
//
// Without -body it sends a chat request of about -size bytes; each request's last message
// carries its sequence number, so no two are identical.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/caddyai/gateway/bench/loadgen"
)

func main() {
	var (
		addr     = flag.String("addr", "127.0.0.1:8080", "server host:port")
		path     = flag.String("path", "/v1/chat/completions", "request path")
		conns    = flag.Int("c", 10, "connections")
		duration = flag.Duration("d", 5*time.Second, "duration (0 with -n)")
		requests = flag.Int64("n", 0, "stop after this many requests")
		keys     = flag.String("key", "", "bearer key(s), comma-separated, rotated per request")
		model    = flag.String("model", "llama", "model of the generated body")
		size     = flag.Int("size", 1024, "approximate size of the generated body in bytes")
		stream   = flag.Bool("stream", false, "stream (SSE) and expect data: [DONE]")
		bodyFile = flag.String("body", "", "send this JSON body as is instead of a generated one")
		timeout  = flag.Duration("timeout", 30*time.Second, "per-request timeout")
		asJSON   = flag.Bool("json", false, "print the result as JSON")
	)
	flag.Parse()
	if err := run(*addr, *path, *conns, *duration, *requests, *keys, *model, *size, *stream, *bodyFile, *timeout, *asJSON); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func run(addr, path string, conns int, duration time.Duration, requests int64, keyList, model string, size int,
	stream bool, bodyFile string, timeout time.Duration, asJSON bool) error {
	var body loadgen.Body
	if bodyFile != "" {
		data, err := os.ReadFile(bodyFile)
		if err != nil {
			return fmt.Errorf("reading body: %w", err)
		}
		body = func(dst []byte, _ int64) []byte { return append(dst, data...) }
	} else {
		head := `{"model":` + strconv.Quote(model) + `,"max_tokens":20,`
		if stream {
			head += `"stream":true,`
		}
		head += `"messages":[{"role":"user","content":"`
		tail := `)"}]}`
		text := strings.Repeat("lorem ipsum dolor sit amet ", max(1, (size-len(head)-len(tail)-20)/27))
		head += text + "(request "
		body = func(dst []byte, seq int64) []byte {
			dst = append(dst, head...)
			dst = strconv.AppendInt(dst, seq, 10)
			return append(dst, tail...)
		}
	}
	var keys []string
	if keyList != "" {
		keys = strings.Split(keyList, ",")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := loadgen.Run(ctx, loadgen.Config{Addr: addr, Path: path, Conns: conns, Duration: duration, Requests: requests,
		Body: body, Keys: keys, Stream: stream, Timeout: timeout})
	if err != nil {
		return err
	}
	q := func(h *loadgen.Histogram, p float64) float64 {
		return float64(h.Quantile(p)) / float64(time.Millisecond)
	}
	if asJSON {
		out := map[string]any{
			"ok": res.OK, "limited": res.Limited, "errors": res.Errors, "elapsed_s": res.Elapsed.Seconds(), "rps": res.RPS(),
			"p50_ms": q(&res.Latency, 0.5), "p90_ms": q(&res.Latency, 0.9), "p99_ms": q(&res.Latency, 0.99), "max_ms": q(&res.Latency, 1),
			"error_samples": res.ErrorSamples,
		}
		if stream {
			out["ttfb_p50_ms"], out["ttfb_p99_ms"] = q(&res.TTFB, 0.5), q(&res.TTFB, 0.99)
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	fmt.Printf("%d ok, %d 429, %d errors in %.2fs: %.0f req/s\n", res.OK, res.Limited, res.Errors, res.Elapsed.Seconds(), res.RPS())
	fmt.Printf("latency ms: p50 %.3f  p90 %.3f  p99 %.3f  max %.3f\n", q(&res.Latency, 0.5), q(&res.Latency, 0.9), q(&res.Latency, 0.99), q(&res.Latency, 1))
	if stream {
		fmt.Printf("ttfb ms:    p50 %.3f  p99 %.3f\n", q(&res.TTFB, 0.5), q(&res.TTFB, 0.99))
	}
	for _, e := range res.ErrorSamples {
		fmt.Println("error:", e)
	}
	return nil
}
