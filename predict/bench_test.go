package predict

import (
	"fmt"
	"strings"
	"testing"
)

// twentyFields returns a schema of instances with 20 typed, bounded fields (half with
// defaults) and a body of n instances that sets the other half.
func twentyFields(n int) (schema string, body []byte) {
	var props, inst []string
	for i := 0; i < 20; i++ {
		switch i % 4 {
		case 0:
			props = append(props, fmt.Sprintf(`"f%d":{"type":"integer","minimum":0,"maximum":1000}`, i))
		case 1:
			props = append(props, fmt.Sprintf(`"f%d":{"type":"number","minimum":-1e6,"maximum":1e6,"default":1.5}`, i))
		case 2:
			props = append(props, fmt.Sprintf(`"f%d":{"type":"string","maxLength":64}`, i))
		case 3:
			props = append(props, fmt.Sprintf(`"f%d":{"type":"string","enum":["a","b","c"],"default":"a"}`, i))
		}
		if i%2 == 0 {
			if i%4 == 0 {
				inst = append(inst, fmt.Sprintf(`"f%d":%d`, i, i*7))
			} else {
				inst = append(inst, fmt.Sprintf(`"f%d":"value %d"`, i, i))
			}
		}
	}
	schema = `{"type":"object","required":["instances"],"properties":{"instances":{"type":"array","maxItems":1000,"items":{"type":"object","additionalProperties":false,"properties":{` +
		strings.Join(props, ",") + `}}}}}`
	one := "{" + strings.Join(inst, ",") + "}"
	body = []byte(`{"model":"m","instances":[` + strings.TrimSuffix(strings.Repeat(one+",", n), ",") + `]}`)
	return schema, body
}

// BenchmarkValidate20Fields: one pass of validation and defaults over a 20-field schema.
func BenchmarkValidate20Fields(b *testing.B) {
	for _, n := range []int{1, 32} {
		schema, body := twentyFields(n)
		m, err := Compile(Config{InputSchema: schema})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("instances=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for i := 0; i < b.N; i++ {
				if _, werr := m.Validate(body); werr != nil {
					b.Fatal(werr)
				}
			}
		})
	}
}

// BenchmarkTensorConversion: the OIP V2 infer request built from validated instances (20
// tensors), and an infer response of two outputs turned back into predictions.
func BenchmarkTensorConversion(b *testing.B) {
	schema, body := twentyFields(32)
	var inputs []TensorInput
	for i := 0; i < 20; i++ {
		dt := [...]string{"INT32", "FP32", "BYTES", "BYTES"}[i%4]
		inputs = append(inputs, TensorInput{Name: fmt.Sprintf("f%d", i), Datatype: dt})
	}
	m, err := Compile(Config{Protocol: OIPV2, InputSchema: schema, TensorInputs: inputs})
	if err != nil {
		b.Fatal(err)
	}
	// every field present: the odd ones have defaults, the even ones are set
	req, werr := m.Validate(body)
	if werr != nil {
		b.Fatal(werr)
	}
	b.Run("request", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, _, werr := m.Upstream(req, "m", "req_1"); werr != nil {
				b.Fatal(werr)
			}
		}
	})
	labels := strings.TrimSuffix(strings.Repeat(`"positive",`, 32), ",")
	scores := strings.TrimSuffix(strings.Repeat(`0.913,`, 32), ",")
	resp := []byte(`{"model_name":"m","outputs":[{"name":"label","shape":[32],"datatype":"BYTES","data":[` + labels +
		`]},{"name":"confidence","shape":[32,1],"datatype":"FP32","data":[` + scores + `]}]}`)
	b.Run("response", func(b *testing.B) {
		b.ReportAllocs()
		dst := make([]byte, 0, 4096)
		for i := 0; i < b.N; i++ {
			var err error
			if dst, err = m.AppendAnswer(dst[:0], resp, req, Meta{ID: "pred-1", Model: "m"}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
