package predict

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// The upstream protocols.
const (
	// KServeV1 is KServe's V1 protocol: POST /v1/models/{name}:predict {"instances":[...]} ->
	// {"predictions":[...]}; readiness GET /v1/models/{name}.
	KServeV1 = "kserve_v1"
	// OIPV2 is the Open Inference Protocol (KServe V2, Triton, MLServer): POST
	// /v2/models/{name}/infer with tensors; readiness GET /v2/models/{name}/ready.
	OIPV2 = "oip_v2"
	// Passthrough sends the validated body as is to a configured path.
	Passthrough = "passthrough"
)

// Config is how a predict model is validated and spoken to. Its fields are the predict
// subdirectives of a model block.
type Config struct {
	// Protocol is the upstream protocol: kserve_v1, oip_v2 or passthrough. Default: kserve_v1.
	Protocol string `json:"protocol,omitempty"`
	// PredictPath is the upstream path of protocol passthrough (required there); {model} in it is
	// replaced by the model's upstream name.
	PredictPath string `json:"predict_path,omitempty"`
	// InputSchema is the JSON Schema (draft 2020-12) of request bodies: a file name, or the
	// schema itself when it starts with '{'. It describes the body without "model", which the
	// gateway reads itself. Default: the built-in schema (text, temperature, max_tokens).
	InputSchema string `json:"input_schema,omitempty"`
	// TensorInputs map each instance to the input tensors of an oip_v2 request. Default (with the
	// built-in schema only): one BYTES tensor "text" from the field text.
	TensorInputs []TensorInput `json:"tensor_inputs,omitempty"`
	// TensorOutputs are the output tensors asked for and reported, in order. Default: all the
	// upstream returns.
	TensorOutputs []string `json:"tensor_outputs,omitempty"`
}

// TensorInput is one input tensor of an oip_v2 request: its rows are a field of each instance.
type TensorInput struct {
	// Name is the tensor's name.
	Name string `json:"name"`
	// Datatype is the tensor's datatype: BOOL, UINT8..UINT64, INT8..INT64, FP16, FP32, FP64,
	// BF16 or BYTES.
	Datatype string `json:"datatype"`
	// Field is the dotted path of the value in each instance (a scalar, or an array of the same
	// length in every instance). Default: the tensor's name.
	Field string `json:"field,omitempty"`
}

// Model is a compiled predict configuration. Immutable; safe for concurrent use.
type Model struct {
	protocol string
	path     string
	schema   *jsonschema.Schema
	inputs   []tensorInput
	outputs  []string
}

type tensorInput struct {
	name     string
	datatype datatype
	field    []string
	param    string // the field as a param suffix: ".a.b"
}

// Compile checks cfg and compiles its schema once.
func Compile(cfg Config) (*Model, error) {
	m := &Model{protocol: cfg.Protocol, path: cfg.PredictPath, outputs: cfg.TensorOutputs}
	switch m.protocol {
	case "":
		m.protocol = KServeV1
	case KServeV1, OIPV2:
	case Passthrough:
		if !strings.HasPrefix(m.path, "/") {
			return nil, fmt.Errorf("protocol passthrough needs a path starting with /, got %q", m.path)
		}
	default:
		return nil, fmt.Errorf("protocol must be kserve_v1, oip_v2 or passthrough, got %q", m.protocol)
	}
	if m.protocol != Passthrough && m.path != "" {
		return nil, fmt.Errorf("predict_path is only for protocol passthrough")
	}
	doc, url := []byte(seedSchema), "gateway:predict-default.json"
	if s := strings.TrimSpace(cfg.InputSchema); s != "" {
		if strings.HasPrefix(s, "{") {
			doc, url = []byte(s), "gateway:input_schema.json"
		} else {
			b, err := os.ReadFile(s)
			if err != nil {
				return nil, fmt.Errorf("reading input_schema: %w", err)
			}
			doc, url = b, "file:///"+strings.TrimPrefix(s, "/")
		}
	}
	schema, err := compileSchema(doc, url)
	if err != nil {
		return nil, fmt.Errorf("compiling input_schema: %w", err)
	}
	m.schema = schema
	if len(cfg.TensorInputs) > 0 && m.protocol != OIPV2 {
		return nil, errors.New("tensor_input is only for protocol oip_v2")
	}
	if len(cfg.TensorOutputs) > 0 && m.protocol != OIPV2 {
		return nil, errors.New("tensor_output is only for protocol oip_v2")
	}
	inputs := cfg.TensorInputs
	if m.protocol == OIPV2 && len(inputs) == 0 {
		if cfg.InputSchema != "" {
			return nil, errors.New("protocol oip_v2 with an input_schema needs at least one tensor_input")
		}
		inputs = []TensorInput{{Name: "text", Datatype: "BYTES", Field: "text"}}
	}
	seen := map[string]bool{}
	for _, in := range inputs {
		if in.Name == "" {
			return nil, errors.New("tensor_input: a tensor has no name")
		}
		if seen[in.Name] {
			return nil, fmt.Errorf("tensor_input: %q given twice", in.Name)
		}
		seen[in.Name] = true
		dt, ok := parseDatatype(in.Datatype)
		if !ok {
			return nil, fmt.Errorf("tensor_input %q: unknown datatype %q (BOOL, UINT8..UINT64, INT8..INT64, FP16, FP32, FP64, BF16, BYTES)", in.Name, in.Datatype)
		}
		field := in.Field
		if field == "" {
			field = in.Name
		}
		parts := strings.Split(field, ".")
		for _, p := range parts {
			if p == "" {
				return nil, fmt.Errorf("tensor_input %q: malformed field %q", in.Name, field)
			}
		}
		m.inputs = append(m.inputs, tensorInput{name: in.Name, datatype: dt, field: parts, param: "." + field})
	}
	return m, nil
}

func compileSchema(doc []byte, url string) (*jsonschema.Schema, error) {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.UseLoader(noLoader{}) // a schema never makes the gateway fetch anything
	if err := c.AddResource(url, v); err != nil {
		return nil, err
	}
	return c.Compile(url)
}

// noLoader refuses every external $ref: schemas must be self-contained.
type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("external $ref %q is not loaded: input_schema must be self-contained", url)
}

// Protocol returns the model's upstream protocol.
func (m *Model) Protocol() string { return m.protocol }

// ReadyPath returns the upstream path that tells whether the model named upstream is ready,
// or "" when the protocol has none (passthrough).
func (m *Model) ReadyPath(upstream string) string {
	switch m.protocol {
	case KServeV1:
		return "/v1/models/" + upstream
	case OIPV2:
		return "/v2/models/" + upstream + "/ready"
	}
	return ""
}

// seedSchema is the schema of models without input_schema: the seed's own shape.
const seedSchema = `{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["text"],
  "properties": {
    "text": {"type": "string", "maxLength": 4096},
    "model": {"type": "string"},
    "temperature": {"type": "number", "minimum": 0, "maximum": 2, "default": 0.7},
    "max_tokens": {"type": "integer", "minimum": 1, "maximum": 4096, "default": 256}
  }
}`
