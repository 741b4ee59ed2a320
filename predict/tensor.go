package predict

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/caddyai/gateway/internal/wire"
)

// datatype is an Open Inference Protocol tensor datatype.
type datatype uint8

const (
	dtBool datatype = iota
	dtUint8
	dtUint16
	dtUint32
	dtUint64
	dtInt8
	dtInt16
	dtInt32
	dtInt64
	dtFP16
	dtFP32
	dtFP64
	dtBF16
	dtBytes
)

var datatypeNames = [...]string{"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
	"FP16", "FP32", "FP64", "BF16", "BYTES"}

func parseDatatype(s string) (datatype, bool) {
	for i, n := range datatypeNames {
		if strings.EqualFold(s, n) {
			return datatype(i), true
		}
	}
	return 0, false
}

func (d datatype) String() string { return datatypeNames[d] }

// intRange is the range of an integer datatype.
func (d datatype) intRange() (lo, hi float64, ok bool) {
	switch d {
	case dtUint8:
		return 0, math.MaxUint8, true
	case dtUint16:
		return 0, math.MaxUint16, true
	case dtUint32:
		return 0, math.MaxUint32, true
	case dtUint64:
		return 0, math.MaxUint64, true
	case dtInt8:
		return math.MinInt8, math.MaxInt8, true
	case dtInt16:
		return math.MinInt16, math.MaxInt16, true
	case dtInt32:
		return math.MinInt32, math.MaxInt32, true
	case dtInt64:
		return math.MinInt64, math.MaxInt64, true
	}
	return 0, 0, false
}

// floatMax is the largest finite value of a float datatype.
func (d datatype) floatMax() float64 {
	switch d {
	case dtFP16:
		return 65504
	case dtFP64:
		return math.MaxFloat64
	}
	return math.MaxFloat32 // FP32, BF16 (the same exponent range)
}

// appendInferRequest appends the OIP V2 infer request of the instances: one tensor per
// configured input whose rows are that field of each instance.
func (m *Model) appendInferRequest(dst []byte, req *Request, id string) ([]byte, *wire.Error) {
	dst = append(dst, `{"id":`...)
	dst = wire.AppendString(dst, id)
	dst = append(dst, `,"inputs":[`...)
	var shape, rowScratch []int
	for ti := range m.inputs {
		in := &m.inputs[ti]
		if ti > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"name":`...)
		dst = wire.AppendString(dst, in.name)
		dst = append(dst, `,"datatype":"`...)
		dst = append(dst, in.datatype.String()...)
		// the shape is the number of instances and the first row's dimensions; every other row
		// must match them
		first, ok := lookup(req.instances[0], in.field)
		if !ok {
			p := strings.TrimPrefix(req.instanceParam(0)+in.param, ".")
			return nil, wire.InvalidRequest(p, "Missing required parameter: '%s' (input tensor %s).", p, wire.Shorten(in.name, 64))
		}
		shape = append(shape[:0], len(req.instances))
		shape = shapeOf(first, shape, 0)
		dst = append(dst, `","shape":[`...)
		for i, d := range shape {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = strconv.AppendInt(dst, int64(d), 10)
		}
		dst = append(dst, `],"data":[`...)
		var werr *wire.Error
		for i, inst := range req.instances {
			p := strings.TrimPrefix(req.instanceParam(i)+in.param, ".")
			v, ok := lookup(inst, in.field)
			if !ok {
				return nil, wire.InvalidRequest(p, "Missing required parameter: '%s' (input tensor %s).", p, wire.Shorten(in.name, 64))
			}
			if i > 0 {
				if rs := shapeOf(v, rowScratch[:0], 0); !sameDims(shape[1:], rs) {
					return nil, wire.InvalidRequest(p, "Invalid '%s': every instance must give input tensor %s the same shape %s, got %s.", p,
						wire.Shorten(in.name, 64), dimsString(shape[1:]), dimsString(rs))
				}
				dst = append(dst, ',')
			}
			if dst, werr = appendFlat(dst, v, in.datatype, p, 0); werr != nil {
				return nil, werr
			}
		}
		dst = append(dst, "]}"...)
	}
	dst = append(dst, ']')
	if len(m.outputs) > 0 {
		dst = append(dst, `,"outputs":[`...)
		for i, o := range m.outputs {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"name":`...)
			dst = wire.AppendString(dst, o)
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}
	return append(dst, '}'), nil
}

// instanceParam is the param prefix of instance i: instances[i], or nothing for a body that is
// its own instance.
func (r *Request) instanceParam(i int) string {
	if !r.explicit {
		return ""
	}
	return "instances[" + strconv.Itoa(i) + "]"
}

// lookup finds the dotted field in an instance; an instance that is not an object is its own
// value for a one-part field.
func lookup(inst any, field []string) (any, bool) {
	cur := inst
	for _, f := range field {
		obj, ok := cur.(map[string]any)
		if !ok {
			if len(field) == 1 {
				return inst, true
			}
			return nil, false
		}
		if cur, ok = obj[f]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// shapeOf appends the dimensions of a value: none for a scalar, [k, ...] for nested arrays
// (as their first elements give them).
func shapeOf(v any, dims []int, depth int) []int {
	for depth < maxDepth {
		a, ok := v.([]any)
		if !ok {
			return dims
		}
		dims = append(dims, len(a))
		if len(a) == 0 {
			return dims
		}
		v = a[0]
		depth++
	}
	return dims
}

func sameDims(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func dimsString(d []int) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, n := range d {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(n))
	}
	b.WriteByte(']')
	return b.String()
}

// appendFlat appends the scalars of v row-major, each converted to the datatype. Ragged arrays
// are refused (their length differs from the first element's).
func appendFlat(dst []byte, v any, dt datatype, param string, depth int) ([]byte, *wire.Error) {
	if a, ok := v.([]any); ok {
		var first []int
		for i, e := range a {
			if depth > maxDepth {
				return nil, wire.InvalidRequest(param, "Invalid '%s': nested too deeply.", param)
			}
			if i == 0 {
				first = shapeOf(e, nil, depth+1)
			} else if !sameDims(first, shapeOf(e, nil, depth+1)) {
				p := param + "[" + strconv.Itoa(i) + "]"
				return nil, wire.InvalidRequest(p, "Invalid '%s': a tensor's rows must all have the same length.", p)
			}
			if i > 0 {
				dst = append(dst, ',')
			}
			var werr *wire.Error
			if dst, werr = appendFlat(dst, e, dt, param+"["+strconv.Itoa(i)+"]", depth+1); werr != nil {
				return nil, werr
			}
		}
		return dst, nil
	}
	return appendScalar(dst, v, dt, param)
}

func appendScalar(dst []byte, v any, dt datatype, param string) ([]byte, *wire.Error) {
	bad := func(want string) ([]byte, *wire.Error) {
		return nil, wire.InvalidRequest(param, "Invalid type for '%s': expected %s for a %s tensor, but got %s instead.", param, want, dt, typeName(v))
	}
	switch dt {
	case dtBool:
		b, ok := v.(bool)
		if !ok {
			return bad("a boolean")
		}
		return strconv.AppendBool(dst, b), nil
	case dtBytes:
		s, ok := v.(string)
		if !ok {
			return bad("a string")
		}
		return wire.AppendString(dst, s), nil
	}
	n, ok := v.(json.Number)
	if !ok {
		return bad("a number")
	}
	if lo, hi, isInt := dt.intRange(); isInt {
		s := n.String()
		if strings.ContainsAny(s, ".eE") {
			f, err := n.Float64()
			if err != nil || f != math.Trunc(f) {
				return nil, wire.InvalidRequest(param, "Invalid '%s': expected an integer for a %s tensor.", param, dt)
			}
			s = strconv.FormatFloat(f, 'f', -1, 64)
		}
		if dt == dtUint64 || dt == dtInt64 {
			var err error
			if dt == dtUint64 {
				_, err = strconv.ParseUint(s, 10, 64)
			} else {
				_, err = strconv.ParseInt(s, 10, 64)
			}
			if err != nil {
				return nil, wire.InvalidRequest(param, "Invalid '%s': the value is out of range for a %s tensor.", param, dt)
			}
			return append(dst, s...), nil
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || f < lo || f > hi {
			return nil, wire.InvalidRequest(param, "Invalid '%s': the value is out of range for a %s tensor (%s..%s).", param, dt,
				strconv.FormatFloat(lo, 'f', -1, 64), strconv.FormatFloat(hi, 'f', -1, 64))
		}
		return append(dst, s...), nil
	}
	f, err := n.Float64()
	if err != nil || math.IsInf(f, 0) || math.Abs(f) > dt.floatMax() {
		return nil, wire.InvalidRequest(param, "Invalid '%s': the value is out of range for a %s tensor.", param, dt)
	}
	return append(dst, n.String()...), nil
}

// appendPredictionsFromOutputs turns an infer response's output tensors back into one
// prediction per instance: an object of each output's row (a scalar for a one-dimensional
// tensor, else nested arrays of the row's shape). A single instance whose tensors do not start
// with a dimension of 1 gets each whole tensor.
func (m *Model) appendPredictionsFromOutputs(dst []byte, outputs gjson.Result, n int) ([]byte, bool) {
	type tensor struct {
		name  string
		shape []int
		data  []gjson.Result
	}
	var ts []tensor
	ok := true
	outputs.ForEach(func(_, o gjson.Result) bool {
		t := tensor{name: o.Get("name").String()}
		for _, d := range o.Get("shape").Array() {
			if d.Type != gjson.Number || d.Int() < 0 || float64(d.Int()) != d.Float() {
				ok = false
				return false
			}
			t.shape = append(t.shape, int(d.Int()))
		}
		t.data = flatten(o.Get("data"), t.data, 0)
		if t.name == "" || !o.Get("data").IsArray() {
			ok = false
			return false
		}
		ts = append(ts, t)
		return true
	})
	if !ok || !outputs.IsArray() {
		return dst, false
	}
	if len(m.outputs) > 0 {
		ordered := make([]tensor, 0, len(m.outputs))
		for _, name := range m.outputs {
			for _, t := range ts {
				if t.name == name {
					ordered = append(ordered, t)
					break
				}
			}
		}
		ts = ordered
	}
	for i := range ts {
		t := &ts[i]
		total := 1
		for _, d := range t.shape {
			if d != 0 && total > len(t.data)/d {
				total = -1 // more elements than the data holds (or an overflow)
				break
			}
			total *= d
		}
		if len(t.shape) == 0 || total != len(t.data) {
			return dst, false
		}
		if t.shape[0] != n {
			if n != 1 {
				return dst, false
			}
			t.shape = append([]int{1}, t.shape...) // the whole tensor is the one instance's
		}
	}
	dst = append(dst, '[')
	for i := 0; i < n; i++ {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, '{')
		for j, t := range ts {
			if j > 0 {
				dst = append(dst, ',')
			}
			dst = wire.AppendString(dst, t.name)
			dst = append(dst, ':')
			row := 1
			for _, d := range t.shape[1:] {
				row *= d
			}
			dst = appendShaped(dst, t.data[i*row:(i+1)*row], t.shape[1:])
		}
		dst = append(dst, '}')
	}
	return append(dst, ']'), true
}

// flatten appends the scalars of a (possibly nested) data array.
func flatten(v gjson.Result, dst []gjson.Result, depth int) []gjson.Result {
	if !v.IsArray() || depth > maxDepth {
		return append(dst, v)
	}
	v.ForEach(func(_, e gjson.Result) bool {
		if e.IsArray() {
			dst = flatten(e, dst, depth+1)
		} else {
			dst = append(dst, e)
		}
		return true
	})
	return dst
}

// appendShaped appends flat data nested by dims (a scalar when dims is empty).
func appendShaped(dst []byte, data []gjson.Result, dims []int) []byte {
	if len(dims) == 0 {
		if len(data) == 0 {
			return append(dst, "null"...)
		}
		return append(dst, data[0].Raw...)
	}
	dst = append(dst, '[')
	step := 1
	for _, d := range dims[1:] {
		step *= d
	}
	for i := 0; i < dims[0]; i++ {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendShaped(dst, data[i*step:(i+1)*step], dims[1:])
	}
	return append(dst, ']')
}
