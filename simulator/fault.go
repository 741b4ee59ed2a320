package simulator

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// FaultHeader is the request header that carries a per-request fault spec. It
// replaces Config.Fault for that request.
const FaultHeader = "X-Sim-Fault"

// Fault kinds accepted in the `kind` key of a fault spec.
const (
	// FaultError answers with a generic error of the shape, status from `status` (default 500).
	FaultError = "error"
	// FaultOverloaded answers with the shape's "server overloaded" error.
	FaultOverloaded = "overloaded"
	// FaultLoading answers with the shape's "model loading" error; /health answers 503.
	FaultLoading = "loading"
	// FaultContext answers with the shape's context-window overflow error.
	FaultContext = "context"
	// FaultCut stops a stream after `after` chunks without [DONE] and drops the
	// connection; a JSON body is cut in half.
	FaultCut = "cut"
	// FaultClose drops the connection before any response header.
	FaultClose = "close"
	// FaultStall waits `delay` before the response headers, honouring cancellation.
	FaultStall = "stall"
	// FaultMidstreamError sends an error frame of the shape after `after` chunks.
	FaultMidstreamError = "midstream_error"
	// FaultNoUsage leaves usage out of responses and streams.
	FaultNoUsage = "no_usage"
	// FaultGarbage answers 200 with a body that is not JSON.
	FaultGarbage = "garbage"
)

// Error shapes accepted in Config.ErrorShape and in the `shape` key of a fault spec.
const (
	// ShapeOpenAI is OpenAI's envelope {"error":{"message","type","param","code"}}.
	ShapeOpenAI = "openai"
	// ShapeVLLM is vLLM's nested envelope with an integer code.
	ShapeVLLM = "vllm"
	// ShapeVLLMFlat is older vLLM's flat {"object":"error","message",...,"code":400}.
	ShapeVLLMFlat = "vllm_flat"
	// ShapeTGI is Text Generation Inference's {"error":"text","error_type":"..."}.
	ShapeTGI = "tgi"
	// ShapeLlamaCpp is llama.cpp server's {"error":{"code","message","type"}}.
	ShapeLlamaCpp = "llamacpp"
	// ShapeOllama is Ollama's OpenAI-compatible envelope (and its own messages).
	ShapeOllama = "ollama"
	// ShapeText is a plain-text body, as a misbehaving proxy would send.
	ShapeText = "text"
)

var validShapes = [...]string{ShapeOpenAI, ShapeVLLM, ShapeVLLMFlat, ShapeTGI, ShapeLlamaCpp, ShapeOllama, ShapeText}

var validKinds = [...]string{FaultError, FaultOverloaded, FaultLoading, FaultContext, FaultCut, FaultClose,
	FaultStall, FaultMidstreamError, FaultNoUsage, FaultGarbage}

// Fault is a parsed fault spec: what the simulator does wrong for one request.
// The zero value injects nothing.
type Fault struct {
	// Kind is one of the Fault* constants, or "" for none.
	Kind string
	// Status is the HTTP status for FaultError (400-599). Default: 500.
	Status int
	// After is the number of chunks sent before FaultCut or FaultMidstreamError acts.
	After int
	// Delay is how long FaultStall waits before the headers.
	Delay time.Duration
	// Shape overrides Config.ErrorShape for this request when not empty.
	Shape string
}

// IsZero reports whether f injects nothing and overrides nothing.
func (f Fault) IsZero() bool { return f == Fault{} }

// String formats f in the spec syntax accepted by ParseFault.
func (f Fault) String() string {
	var parts []string
	if f.Kind != "" {
		parts = append(parts, "kind="+f.Kind)
	}
	if f.Status != 0 {
		parts = append(parts, "status="+strconv.Itoa(f.Status))
	}
	if f.After != 0 {
		parts = append(parts, "after="+strconv.Itoa(f.After))
	}
	if f.Delay != 0 {
		parts = append(parts, "delay="+f.Delay.String())
	}
	if f.Shape != "" {
		parts = append(parts, "shape="+f.Shape)
	}
	return strings.Join(parts, ";")
}

// ParseFault parses a fault spec: `;`-separated `key=value` pairs with the keys
// kind, status, after, delay (a Go duration) and shape. A status without a kind
// means kind=error. Unknown or repeated keys and bad values are errors. An empty
// spec gives the zero Fault.
func ParseFault(spec string) (Fault, error) {
	var f Fault
	seen := make(map[string]bool, 5)
	for part := range strings.SplitSeq(spec, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		key, val, ok := strings.Cut(part, "=")
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		if !ok || key == "" {
			return Fault{}, fmt.Errorf("parsing fault %q: want key=value", part)
		}
		if seen[key] {
			return Fault{}, fmt.Errorf("parsing fault: repeated key %q", key)
		}
		seen[key] = true
		switch key {
		case "kind":
			if !oneOf(val, validKinds[:]) {
				return Fault{}, fmt.Errorf("parsing fault: unknown kind %q", val)
			}
			f.Kind = val
		case "status":
			n, err := strconv.Atoi(val)
			if err != nil {
				return Fault{}, fmt.Errorf("parsing fault status %q: %w", val, err)
			}
			if n < 400 || n > 599 {
				return Fault{}, fmt.Errorf("parsing fault: status %d is not an error status (400-599)", n)
			}
			f.Status = n
		case "after":
			n, err := strconv.Atoi(val)
			if err != nil {
				return Fault{}, fmt.Errorf("parsing fault after %q: %w", val, err)
			}
			if n < 0 {
				return Fault{}, fmt.Errorf("parsing fault: negative after %d", n)
			}
			f.After = n
		case "delay":
			d, err := time.ParseDuration(val)
			if err != nil {
				return Fault{}, fmt.Errorf("parsing fault delay: %w", err)
			}
			if d < 0 {
				return Fault{}, fmt.Errorf("parsing fault: negative delay %s", d)
			}
			f.Delay = d
		case "shape":
			if !oneOf(val, validShapes[:]) {
				return Fault{}, fmt.Errorf("parsing fault: unknown shape %q", val)
			}
			f.Shape = val
		default:
			return Fault{}, fmt.Errorf("parsing fault: unknown key %q", key)
		}
	}
	if f.Status != 0 && f.Kind == "" {
		f.Kind = FaultError
	}
	if f.Status != 0 && f.Kind != FaultError {
		return Fault{}, fmt.Errorf("parsing fault: status applies only to kind=error, not %q", f.Kind)
	}
	return f, nil
}

func oneOf(s string, set []string) bool {
	for _, v := range set {
		if s == v {
			return true
		}
	}
	return false
}
