// Package finetune holds the decisions of the fine-tuning jobs the gateway passes through to a
// training service: the check of a create request against OpenAI's CreateFineTuningJobRequest,
// and the paths of the jobs API. It knows nothing of HTTP servers or the store.
package finetune

import (
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/caddyai/gateway/internal/jsonscan"

	"github.com/tidwall/gjson"

	"github.com/caddyai/gateway/internal/wire"
)

// Bounds of a create request, as OpenAI's.
const (
	MaxSuffixLen        = 64
	MaxSeed             = 2147483647
	MaxMetadataPairs    = 16
	MaxMetadataKeyLen   = 64
	MaxMetadataValueLen = 512
	maxDepth            = 32
)

// CreateRequest is what the gateway needs of a checked create request.
type CreateRequest struct {
	// Model is the base model.
	Model string
	// TrainingFile and ValidationFile (empty when absent) are file ids.
	TrainingFile, ValidationFile string
}

// ParseCreate checks a POST /v1/fine_tuning/jobs body against CreateFineTuningJobRequest:
// model and training_file required strings, validation_file, suffix (1..64 characters), seed
// (0..2147483647), hyperparameters and method hyperparameters ("auto" or batch_size 1..256,
// learning_rate_multiplier > 0, n_epochs 1..50), method.type, integrations and metadata (at most
// 16 pairs, keys of at most 64 characters, values of at most 512). A refusal is a 400 naming
// the param.
func ParseCreate(body []byte) (*CreateRequest, *wire.Error) {
	if len(body) == 0 || jsonscan.NestedTooDeep(body, maxDepth) || !utf8.Valid(body) || !gjson.ValidBytes(body) {
		return nil, wire.InvalidCode("invalid_json", "", "We could not parse the JSON body of your request. The API expects a JSON object.")
	}
	doc := gjson.ParseBytes(body)
	if !doc.IsObject() {
		return nil, wire.BadType("body", "an object", doc)
	}
	req := &CreateRequest{}
	var werr *wire.Error
	if req.Model, werr = requiredString(doc, "model"); werr != nil {
		return nil, werr
	}
	if req.TrainingFile, werr = requiredString(doc, "training_file"); werr != nil {
		return nil, werr
	}
	if v := doc.Get("validation_file"); v.Exists() && v.Type != gjson.Null {
		if v.Type != gjson.String || v.Str == "" {
			return nil, wire.BadType("validation_file", "a non-empty string", v)
		}
		req.ValidationFile = v.Str
	}
	if v := doc.Get("suffix"); v.Exists() && v.Type != gjson.Null {
		if v.Type != gjson.String {
			return nil, wire.BadType("suffix", "a string", v)
		}
		if n := utf8.RuneCountInString(v.Str); n < 1 || n > MaxSuffixLen {
			return nil, wire.InvalidCode("invalid_value", "suffix", "Invalid 'suffix': expected a string of 1 to %d characters, but got %d.", MaxSuffixLen, n)
		}
	}
	if v := doc.Get("seed"); v.Exists() && v.Type != gjson.Null {
		if !isInteger(v) || v.Float() < 0 || v.Float() > MaxSeed {
			return nil, wire.InvalidCode("invalid_value", "seed", "Invalid 'seed': expected an integer from 0 to %d.", MaxSeed)
		}
	}
	if werr := checkHyperparameters(doc.Get("hyperparameters"), "hyperparameters"); werr != nil {
		return nil, werr
	}
	if werr := checkMethod(doc.Get("method")); werr != nil {
		return nil, werr
	}
	if werr := checkIntegrations(doc.Get("integrations")); werr != nil {
		return nil, werr
	}
	if werr := checkMetadata(doc.Get("metadata")); werr != nil {
		return nil, werr
	}
	return req, nil
}

func requiredString(doc gjson.Result, name string) (string, *wire.Error) {
	v := doc.Get(name)
	switch {
	case !v.Exists() || v.Type == gjson.Null:
		return "", wire.MissingParam(name)
	case v.Type != gjson.String:
		return "", wire.BadType(name, "a string", v)
	case v.Str == "":
		return "", wire.InvalidCode("empty_string", name, "Invalid '%s': expected a non-empty string.", name)
	}
	return v.Str, nil
}

func isInteger(v gjson.Result) bool {
	return v.Type == gjson.Number && !strings.ContainsAny(v.Raw, ".eE") || v.Type == gjson.Number && v.Float() == math.Trunc(v.Float())
}

// checkHyperparameters checks an object of batch_size, learning_rate_multiplier, n_epochs (and,
// in method.dpo, beta), each "auto" or in range.
func checkHyperparameters(h gjson.Result, param string) *wire.Error {
	if !h.Exists() || h.Type == gjson.Null {
		return nil
	}
	if !h.IsObject() {
		return wire.BadType(param, "an object", h)
	}
	type bound struct {
		name    string
		integer bool
		min     float64
		max     float64
		minOpen bool
	}
	for _, b := range []bound{{"batch_size", true, 1, 256, false}, {"learning_rate_multiplier", false, 0, math.Inf(1), true},
		{"n_epochs", true, 1, 50, false}, {"beta", false, 0, 2, true}} {
		v := h.Get(b.name)
		if !v.Exists() {
			continue
		}
		p := param + "." + b.name
		if v.Type == gjson.String {
			if v.Str != "auto" {
				return wire.InvalidCode("invalid_value", p, "Invalid '%s': expected \"auto\" or a number.", p)
			}
			continue
		}
		if v.Type != gjson.Number || b.integer && !isInteger(v) {
			want := "a number"
			if b.integer {
				want = "an integer"
			}
			return wire.BadType(p, `"auto" or `+want, v)
		}
		f := v.Float()
		if f > b.max || f < b.min || b.minOpen && f <= b.min {
			switch {
			case b.minOpen && math.IsInf(b.max, 1):
				return wire.InvalidCode("invalid_value", p, "Invalid '%s': expected a number greater than %g.", p, b.min)
			case b.minOpen:
				return wire.InvalidCode("invalid_value", p, "Invalid '%s': expected a number greater than %g and at most %g.", p, b.min, b.max)
			}
			return wire.InvalidCode("invalid_value", p, "Invalid '%s': expected a value from %g to %g.", p, b.min, b.max)
		}
	}
	return nil
}

func checkMethod(m gjson.Result) *wire.Error {
	if !m.Exists() || m.Type == gjson.Null {
		return nil
	}
	if !m.IsObject() {
		return wire.BadType("method", "an object", m)
	}
	t := m.Get("type")
	if !t.Exists() {
		return wire.MissingParam("method.type")
	}
	switch t.Str {
	case "supervised", "dpo", "reinforcement":
	default:
		return wire.InvalidCode("invalid_value", "method.type", "Invalid 'method.type': expected one of 'supervised', 'dpo', 'reinforcement'.")
	}
	for _, kind := range []string{"supervised", "dpo", "reinforcement"} {
		sub := m.Get(kind)
		if !sub.Exists() || sub.Type == gjson.Null {
			continue
		}
		if !sub.IsObject() {
			return wire.BadType("method."+kind, "an object", sub)
		}
		if werr := checkHyperparameters(sub.Get("hyperparameters"), "method."+kind+".hyperparameters"); werr != nil {
			return werr
		}
	}
	return nil
}

func checkIntegrations(in gjson.Result) *wire.Error {
	if !in.Exists() || in.Type == gjson.Null {
		return nil
	}
	if !in.IsArray() {
		return wire.BadType("integrations", "an array", in)
	}
	var werr *wire.Error
	i := 0
	in.ForEach(func(_, v gjson.Result) bool {
		p := "integrations[" + strconv.Itoa(i) + "]"
		i++
		switch {
		case !v.IsObject():
			werr = wire.BadType(p, "an object", v)
		case v.Get("type").Str != "wandb":
			werr = wire.InvalidCode("invalid_value", p+".type", "Invalid '%s.type': expected 'wandb'.", p)
		case !v.Get("wandb").IsObject():
			werr = wire.MissingParam(p + ".wandb")
		case v.Get("wandb.project").Type != gjson.String:
			werr = wire.MissingParam(p + ".wandb.project")
		}
		return werr == nil
	})
	return werr
}

func checkMetadata(v gjson.Result) *wire.Error {
	if !v.Exists() || v.Type == gjson.Null {
		return nil
	}
	if !v.IsObject() {
		return wire.BadType("metadata", "an object", v)
	}
	n := 0
	var werr *wire.Error
	v.ForEach(func(k, val gjson.Result) bool {
		n++
		switch {
		case n > MaxMetadataPairs:
			werr = wire.InvalidCode("object_above_max_properties", "metadata", "Invalid 'metadata': expected at most %d pairs.", MaxMetadataPairs)
		case utf8.RuneCountInString(k.Str) > MaxMetadataKeyLen:
			werr = wire.InvalidCode("string_above_max_length", "metadata", "Invalid 'metadata': keys are at most %d characters.", MaxMetadataKeyLen)
		case val.Type != gjson.String:
			werr = wire.BadType("metadata."+wire.Shorten(k.Str, MaxMetadataKeyLen), "a string", val)
		case utf8.RuneCountInString(val.Str) > MaxMetadataValueLen:
			werr = wire.InvalidCode("string_above_max_length", "metadata."+k.Str, "Invalid 'metadata.%s': values are at most %d characters.", k.Str, MaxMetadataValueLen)
		}
		return werr == nil
	})
	return werr
}
