package routing

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParsePrometheusFixtures(t *testing.T) {
	tests := []struct {
		file string
		want Metrics
	}{
		{"vllm_v1.txt", Metrics{Waiting: 5, Running: 3, KVCacheUsage: 0.4213}},
		// Two data-parallel engines: counts add up, KV usage is the fuller cache.
		{"vllm_dp.txt", Metrics{Waiting: 2, Running: 30, KVCacheUsage: 0.87}},
		// Older vLLM: gpu_cache_usage_perc; cpu_cache_usage_perc and swapped are not load signals here.
		{"vllm_v0.txt", Metrics{Waiting: 1, Running: 2, KVCacheUsage: 0.25}},
		{"tgi.txt", Metrics{QueueSize: 7, Running: 12}},
		{"llamacpp.txt", Metrics{Waiting: 3, Running: 1, KVCacheUsage: 0.125}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			f, err := os.Open(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got, err := ParsePrometheus(f)
			if err != nil {
				t.Fatalf("ParsePrometheus: %v", err)
			}
			if got != tt.want {
				t.Errorf("ParsePrometheus = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParsePrometheusGarbage(t *testing.T) {
	for _, file := range []string{"garbage_html.txt", "garbage_binary.txt"} {
		t.Run(file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", file))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ParsePrometheus(bytes.NewReader(data)); !errors.Is(err, ErrNoLoadMetrics) {
				t.Errorf("err = %v, want ErrNoLoadMetrics", err)
			}
		})
	}
}

func TestParsePrometheusLines(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Metrics
		wantErr error
	}{
		{"no labels", "vllm:num_requests_waiting 4\n", Metrics{Waiting: 4}, nil},
		{"no final newline", "tgi_queue_size 2", Metrics{QueueSize: 2}, nil},
		{"CRLF", "tgi_queue_size 2\r\ntgi_batch_current_size 3\r\n", Metrics{QueueSize: 2, Running: 3}, nil},
		{"timestamp", "vllm:num_requests_running{model_name=\"m\"} 6 1700000000000\n", Metrics{Running: 6}, nil},
		{"tabs and indentation", "  \tvllm:num_requests_running\t{a=\"b\"}\t2\n", Metrics{Running: 2}, nil},
		{"escaped quote and brace in a label", `vllm:num_requests_waiting{model_name="we\"ird}name",x="a\\"} 2` + "\n", Metrics{Waiting: 2}, nil},
		{"scientific notation", "vllm:num_requests_waiting 1.5e+01\n", Metrics{Waiting: 15}, nil},
		{"NaN and Inf ignored", "vllm:num_requests_waiting NaN\nvllm:num_requests_waiting +Inf\nvllm:num_requests_waiting 1\n", Metrics{Waiting: 1}, nil},
		{"NaN alone still a known metric", "vllm:kv_cache_usage_perc NaN\n", Metrics{}, nil},
		{"both KV names take the larger", "vllm:gpu_cache_usage_perc 0.3\nvllm:kv_cache_usage_perc 0.2\n", Metrics{KVCacheUsage: 0.3}, nil},
		{"prefix of a known name is unknown", "vllm:num_requests_waiting_total 9\nvllm:num_requests 3\ntgi_queue_size_bucket{le=\"1\"} 5\n", Metrics{}, ErrNoLoadMetrics},
		{"comments and blank lines", "# HELP tgi_queue_size x\n\n# TYPE tgi_queue_size gauge\ntgi_queue_size 1\n# EOF\n", Metrics{QueueSize: 1}, nil},
		{"empty", "", Metrics{}, ErrNoLoadMetrics},
		{"bad value", "vllm:num_requests_waiting abc\n", Metrics{}, errMalformed},
		{"missing value", "vllm:num_requests_waiting{a=\"b\"}\n", Metrics{}, errMalformed},
		{"unterminated labels", "vllm:num_requests_waiting{a=\"b} 3\n", Metrics{}, errMalformed},
		{"unknown metric with broken labels is ignored", "foo{a=\"b 1\ntgi_queue_size 1\n", Metrics{QueueSize: 1}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePrometheus(strings.NewReader(tt.in))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePrometheus: %v", err)
			}
			if got != tt.want {
				t.Errorf("ParsePrometheus = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParsePrometheusBounds(t *testing.T) {
	t.Run("too large", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("tgi_queue_size 1\n")
		line := "# " + strings.Repeat("x", 1000) + "\n"
		for b.Len() <= MaxMetricsBytes {
			b.WriteString(line)
		}
		if _, err := ParsePrometheus(strings.NewReader(b.String())); !errors.Is(err, ErrMetricsTooLarge) {
			t.Fatalf("err = %v, want ErrMetricsTooLarge", err)
		}
	})
	t.Run("exactly the limit", func(t *testing.T) {
		head := "tgi_queue_size 1\n"
		page := head + "#" + strings.Repeat("x", MaxMetricsBytes-len(head)-2) + "\n"
		if len(page) != MaxMetricsBytes {
			t.Fatalf("page is %d bytes", len(page))
		}
		got, err := ParsePrometheus(strings.NewReader(page))
		if err != nil || got.QueueSize != 1 {
			t.Fatalf("got %+v, %v", got, err)
		}
	})
	t.Run("over-long lines skipped", func(t *testing.T) {
		long := "vllm:num_requests_waiting{model_name=\"" + strings.Repeat("m", 20<<10) + "\"} 100\n"
		page := "vllm:num_requests_waiting 1\n" + long + "vllm:num_requests_running 2\n" + "# " + strings.Repeat("y", 40<<10)
		got, err := ParsePrometheus(strings.NewReader(page))
		if err != nil {
			t.Fatal(err)
		}
		if want := (Metrics{Waiting: 1, Running: 2}); got != want {
			t.Errorf("got %+v, want %+v", got, want)
		}
	})
	t.Run("reader error", func(t *testing.T) {
		boom := errors.New("boom")
		_, err := ParsePrometheus(&failingReader{data: "tgi_queue_size 1\n", err: boom})
		if !errors.Is(err, boom) {
			t.Fatalf("err = %v, want boom", err)
		}
	})
}

// failingReader returns data, then err.
type failingReader struct {
	data string
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if r.data == "" {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func FuzzParsePrometheus(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.txt"))
	if err != nil {
		f.Fatal(err)
	}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`vllm:num_requests_waiting{model_name="a\"}"} 3`))
	f.Add([]byte("tgi_queue_size{"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParsePrometheus(bytes.NewReader(data))
		if err != nil {
			if m != (Metrics{}) {
				t.Errorf("error %v with metrics %+v", err, m)
			}
			return
		}
		for _, v := range []float64{m.Waiting, m.Running, m.KVCacheUsage, m.QueueSize} {
			if math.IsNaN(v) {
				t.Errorf("NaN in %+v", m)
			}
		}
		// Parsing is a function of the bytes alone.
		again, err := ParsePrometheus(bytes.NewReader(data))
		if err != nil || again != m {
			t.Errorf("second parse = %+v, %v; first %+v", again, err, m)
		}
	})
}
