package routing

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
)

// MaxMetricsBytes is the largest metrics page ParsePrometheus reads.
const MaxMetricsBytes = 4 << 20

// maxMetricsLine is the longest line ParsePrometheus looks at; longer lines are skipped.
const maxMetricsLine = 16 << 10

// Errors of ParsePrometheus.
var (
	// ErrNoLoadMetrics is returned when a page holds none of the metrics a Tracker uses.
	ErrNoLoadMetrics = errors.New("no known load metrics")
	// ErrMetricsTooLarge is returned when a page exceeds MaxMetricsBytes.
	ErrMetricsTooLarge = errors.New("metrics page too large")
)

// metricField is where a known metric goes in Metrics.
type metricField uint8

const (
	fieldNone metricField = iota
	fieldWaiting
	fieldRunning
	fieldKV
	fieldQueue
)

// fieldOf maps the metric names of vLLM, TGI and llama.cpp server to Metrics fields.
func fieldOf(name []byte) metricField {
	switch string(name) {
	case "vllm:num_requests_waiting", "llamacpp:requests_deferred":
		return fieldWaiting
	case "vllm:num_requests_running", "tgi_batch_current_size", "llamacpp:requests_processing":
		return fieldRunning
	case "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "llamacpp:kv_cache_usage_ratio":
		return fieldKV
	case "tgi_queue_size":
		return fieldQueue
	}
	return fieldNone
}

// ParsePrometheus reads a Prometheus text exposition (or OpenMetrics) page and returns the load
// signals it knows:
//
//	vLLM      vllm:num_requests_waiting, vllm:num_requests_running,
//	          vllm:kv_cache_usage_perc (older versions: vllm:gpu_cache_usage_perc)
//	TGI       tgi_queue_size, tgi_batch_current_size
//	llama.cpp llamacpp:requests_deferred, llamacpp:requests_processing,
//	          llamacpp:kv_cache_usage_ratio
//
// Request counts are summed over label sets (several models or engines behind one address);
// KV-cache usage, a fraction, takes the largest value, since the fullest cache is the one that
// preempts or queues. Unknown metrics, comments, NaN and infinite samples are ignored. It reads
// at most MaxMetricsBytes (ErrMetricsTooLarge beyond) and skips lines over 16 KiB. A page
// without any known metric is ErrNoLoadMetrics; a known metric with a malformed sample is an
// error. Metrics.At is left zero.
func ParsePrometheus(r io.Reader) (Metrics, error) {
	var m Metrics
	br := bufio.NewReaderSize(io.LimitReader(r, MaxMetricsBytes+1), maxMetricsLine)
	var total int64
	found := false
	for lineNo := 1; ; lineNo++ {
		line, err := br.ReadSlice('\n')
		total += int64(len(line))
		if errors.Is(err, bufio.ErrBufferFull) {
			n, err := skipLine(br)
			total += n
			if err != nil && !errors.Is(err, io.EOF) {
				return Metrics{}, fmt.Errorf("reading metrics: %w", err)
			}
			if err == nil {
				continue
			}
			break
		}
		if len(line) > 0 {
			ok, perr := addSample(&m, line)
			if perr != nil {
				return Metrics{}, fmt.Errorf("parsing metrics line %d: %w", lineNo, perr)
			}
			found = found || ok
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return Metrics{}, fmt.Errorf("reading metrics: %w", err)
		}
	}
	if total > MaxMetricsBytes {
		return Metrics{}, ErrMetricsTooLarge
	}
	if !found {
		return Metrics{}, ErrNoLoadMetrics
	}
	return m, nil
}

// skipLine consumes the rest of an over-long line, returning how many bytes it read.
func skipLine(br *bufio.Reader) (int64, error) {
	var n int64
	for {
		chunk, err := br.ReadSlice('\n')
		n += int64(len(chunk))
		if !errors.Is(err, bufio.ErrBufferFull) {
			return n, err
		}
	}
}

// errMalformed reports a known metric whose sample line cannot be read.
var errMalformed = errors.New("malformed sample")

// addSample adds the sample on line to m when its metric is known. It reports whether it was.
func addSample(m *Metrics, line []byte) (bool, error) {
	line = bytes.TrimLeft(line, " \t")
	if len(line) == 0 || line[0] == '#' {
		return false, nil
	}
	end := bytes.IndexAny(line, "{ \t\r\n")
	if end <= 0 {
		return false, nil
	}
	f := fieldOf(line[:end])
	if f == fieldNone {
		return false, nil
	}
	rest := bytes.TrimLeft(line[end:], " \t")
	if len(rest) > 0 && rest[0] == '{' {
		n := labelsEnd(rest)
		if n < 0 {
			return false, fmt.Errorf("%w: unterminated labels of %s", errMalformed, line[:end])
		}
		rest = rest[n:]
	}
	rest = bytes.TrimLeft(rest, " \t")
	vEnd := bytes.IndexAny(rest, " \t\r\n")
	if vEnd < 0 {
		vEnd = len(rest)
	}
	if vEnd == 0 {
		return false, fmt.Errorf("%w: no value for %s", errMalformed, line[:end])
	}
	v, err := strconv.ParseFloat(string(rest[:vEnd]), 64)
	if err != nil {
		return false, fmt.Errorf("%w: bad value for %s", errMalformed, line[:end])
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return true, nil
	}
	switch f {
	case fieldWaiting:
		m.Waiting += v
	case fieldRunning:
		m.Running += v
	case fieldQueue:
		m.QueueSize += v
	case fieldKV:
		m.KVCacheUsage = max(m.KVCacheUsage, v)
	}
	return true, nil
}

// labelsEnd returns the index just past the '}' closing the label set that s starts with, or
// -1. Label values are quoted strings where \" and \\ are escapes.
func labelsEnd(s []byte) int {
	inQuote := false
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case inQuote && c == '\\':
			i++
		case c == '"':
			inQuote = !inQuote
		case c == '\n':
			return -1
		case !inQuote && c == '}':
			return i + 1
		}
	}
	return -1
}
