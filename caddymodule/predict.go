package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/predict"
)

// The kinds of model.
const (
	kindChat    = "chat"
	kindPredict = "predict"
)

// provisionPredict compiles a predict model's schema and protocol once (kind predict), or checks
// that a chat model sets none of the predict subdirectives.
func (g *Gateway) provisionPredict(route *modelRoute, mc ModelConfig) error {
	switch mc.Kind {
	case "", kindChat:
		if mc.Protocol != "" || mc.PredictPath != "" || mc.InputSchema != "" || len(mc.TensorInputs) > 0 || len(mc.TensorOutputs) > 0 {
			return errors.New("protocol, input_schema, tensor_input and tensor_output need kind predict")
		}
		return nil
	case kindPredict:
	default:
		return fmt.Errorf("kind must be chat or predict, got %q", mc.Kind)
	}
	pm, err := predict.Compile(mc.Config)
	if err != nil {
		return err
	}
	route.predict = pm
	route.rewriter = nil // chat rewriting rules mean nothing to a predict body
	route.countPredict = mc.Tokenizer != ""
	if g.predictMetrics == nil {
		g.predictMetrics = newPredictMetrics()
		if err := g.predictMetrics.register(g.ctx.GetMetricsRegistry()); err != nil {
			return fmt.Errorf("registering metrics: %w", err)
		}
	}
	return nil
}

// resolvePredict is resolveModel for the predict endpoints: the model comes from the path
// (/v1/models/{model_id}/predict) or the body (/v1/predict), must be a predict model the key
// may use, and the body is validated against its schema (defaults applied). The validated body
// is what the cache keys on.
func (g *Gateway) resolvePredict(ex *exchange) *wire.Error {
	name := ex.pathParam
	if ex.endpoint == wire.EndpointPredict {
		var ok bool
		if name, ok = predict.ModelOf(ex.body.bytes()); !ok {
			return wire.InvalidRequest("model", "Missing required parameter: 'model'.")
		}
	}
	ex.requestedModel, ex.bodyModel, ex.info.Model = name, name, name
	m, ok := g.catalog.ResolveFor(ex.key, name)
	if !ok {
		return wire.ModelNotFound(name)
	}
	if !ex.key.AllowsModel(m) {
		return wire.ModelNotAllowed(name)
	}
	ex.route = g.routes[m]
	if ex.route.predict == nil {
		return wire.Errorf(http.StatusBadRequest, "model_not_predict", "model",
			"The model `%s` is not a predict model: send it chat completions, completions or messages.", wire.Shorten(name, 256))
	}
	if m.Deprecation.Gone(g.now()) {
		return policy.ModelSunset(m.Name, m.Deprecation)
	}
	req, werr := ex.route.predict.Validate(ex.body.bytes())
	if werr != nil {
		return werr
	}
	ex.predictReq = req
	ex.body.replace(req.Body())
	return nil
}

// notPredictEndpoint refuses a predict model on the LLM endpoints.
func notPredictEndpoint(ex *exchange, name string) *wire.Error {
	return wire.Errorf(http.StatusBadRequest, "model_is_predict", "model",
		"The model `%s` is a predict model: send it POST /v1/models/%s/predict.", wire.Shorten(name, 256), wire.Shorten(ex.route.model.Name, 256))
}

// handOffPredict builds the upstream request of the model's protocol from the validated body:
// its path (KServe's /v1/models/{name}:predict, OIP's /v2/models/{name}/infer, or the
// passthrough path) and body.
func (g *Gateway) handOffPredict(ex *exchange, r *http.Request) *wire.Error {
	if ex.route.predict == nil { // a fallback that is not a predict model
		return notPredictEndpoint(ex, ex.route.model.Name)
	}
	path, body, werr := ex.route.predict.Upstream(ex.predictReq, ex.route.model.Upstream(), ex.requestID)
	if werr != nil {
		return werr
	}
	ex.bodyModel = ex.route.model.Upstream()
	r.URL.Path, r.URL.RawPath = path, ""
	r.Header["Content-Type"] = []string{"application/json"}
	ex.body.replace(body)
	ex.body.install(r)
	return nil
}

// finishPredict writes the answer to a successful upstream response in the one prediction
// shape, with its usage in the body and the headers.
func (t *responseTap) finishPredict() (wire.Usage, error) {
	ex := t.ex
	req := ex.predictReq
	meta := predict.Meta{ID: "pred-" + strings.TrimPrefix(ex.requestID, "req_"), Model: ex.route.model.Name, Created: t.g.now().Unix()}
	if ex.route.countPredict {
		meta.Tokens, meta.Counted = ex.counter().Count(req.Text()), true
	}
	body, err := ex.route.predict.AppendAnswer(make([]byte, 0, len(t.buf)+256), t.buf, req, meta)
	if err != nil {
		werr := invalidUpstreamResponse()
		ex.reject = werr.ReasonOrCode()
		return wire.Usage{}, t.writeError(werr)
	}
	u := wire.Usage{PromptTokens: int64(meta.Tokens), TotalTokens: int64(meta.Tokens)}
	h := t.Header()
	h["Content-Type"] = []string{"application/json"}
	setUsageHeaders(h, u)
	setPredictHeaders(h, req)
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	t.sendHeader(ex.status)
	t.finalBody = body
	_, err = t.ResponseWriterWrapper.Write(body)
	return u, err
}

// predictUpstreamError normalises a predict upstream's error ({"error":"text"}).
func (t *responseTap) predictUpstreamError() *wire.Error {
	return predict.UpstreamError(t.ex.status, t.Header().Get("Content-Type"), t.buf)
}

func setPredictHeaders(h http.Header, req *predict.Request) {
	h["X-Usage-Instances"] = []string{strconv.Itoa(req.Instances)}
	h["X-Usage-Input-Characters"] = []string{strconv.Itoa(req.InputChars)}
}

// predictMetrics count what predict models were asked.
type predictMetrics struct {
	instances *prometheus.CounterVec // model
	chars     *prometheus.CounterVec // model
}

func newPredictMetrics() *predictMetrics {
	return &predictMetrics{
		instances: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metricsNamespace, Subsystem: metricsSubsystem,
			Name: "predict_instances_total", Help: "Instances sent to predict models, by model (answered ones, cache hits included)."},
			[]string{"model"}),
		chars: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metricsNamespace, Subsystem: metricsSubsystem,
			Name: "predict_input_characters_total", Help: "Characters in the strings of the instances sent to predict models, by model."},
			[]string{"model"}),
	}
}

func (m *predictMetrics) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	var err error
	if m.instances, err = registerOrReuse(reg, m.instances); err != nil {
		return err
	}
	m.chars, err = registerOrReuse(reg, m.chars)
	return err
}

// recordPredict counts an answered predict request and adds its usage to the access log.
func (g *Gateway) recordPredict(ex *exchange, model string) {
	req := ex.predictReq
	if ex.status >= 200 && ex.status < 300 && g.predictMetrics != nil {
		g.predictMetrics.instances.WithLabelValues(model).Add(float64(req.Instances))
		g.predictMetrics.chars.WithLabelValues(model).Add(float64(req.InputChars))
	}
	if extra := accessLogFields(ex.r); extra != nil {
		extra.Set(zap.Int("ai_instances", req.Instances))
		extra.Set(zap.Int("ai_input_characters", req.InputChars))
	}
}

// readiness is how long a readiness probe of GET /v1/models/{id} may take.
const readinessTimeout = 2 * time.Second

// predictReady asks the model's first upstream whether the model is ready (KServe's
// /v1/models/{name}, OIP's /v2/models/{name}/ready). ok is false when the protocol has no
// readiness endpoint or the model has no upstream.
func (g *Gateway) predictReady(ctx context.Context, route *modelRoute) (ready, ok bool) {
	path := route.predict.ReadyPath(route.model.Upstream())
	if path == "" || len(route.dials) == 0 {
		return false, false
	}
	ctx, cancel := context.WithTimeout(ctx, readinessTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+route.dials[0]+path, nil)
	if err != nil {
		return false, true
	}
	if route.authorization != "" {
		req.Header.Set("Authorization", route.authorization)
	}
	resp, err := readinessClient.Do(req)
	if err != nil {
		if c := g.logger.Check(zapcore.DebugLevel, "predict readiness probe failed"); c != nil {
			c.Write(zap.String("model", route.model.Name), zap.Error(err))
		}
		return false, true
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusOK {
		return false, true
	}
	// KServe V1 answers {"name","ready":true}; OIP answers 200 (with {"ready":true} or nothing)
	return !strings.Contains(strings.ReplaceAll(string(b), " ", ""), `"ready":false`), true
}

// readinessClient probes predict upstreams; it follows no redirects.
var readinessClient = &http.Client{
	Timeout:       readinessTimeout,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// appendPredictReadiness adds "ready" to the object of a predict model (the object ends in '}'):
// whether its upstream says the model is ready. A protocol without readiness adds nothing.
func (g *Gateway) appendPredictReadiness(ctx context.Context, obj []byte, m *policy.Model) []byte {
	route := g.routes[m]
	if route == nil || route.predict == nil || len(obj) == 0 {
		return obj
	}
	ready, ok := g.predictReady(ctx, route)
	if !ok {
		return obj
	}
	obj = append(obj[:len(obj)-1], `,"ready":`...)
	obj = strconv.AppendBool(obj, ready)
	return append(obj, '}')
}

// parsePredictSubdirective parses the predict subdirectives of a model block:
//
//	kind chat|predict
//	protocol kserve_v1|oip_v2|passthrough <path>
//	input_schema <file.json>
//	tensor_input <name> <datatype> [<field>]   (repeatable, oip_v2)
//	tensor_output <name>...                    (oip_v2)
func parsePredictSubdirective(d *caddyfile.Dispenser, name string, m *ModelConfig) (err error) {
	switch name {
	case "kind":
		m.Kind, err = enumArg(d, kindChat, kindPredict)
	case "protocol":
		args := d.RemainingArgs()
		switch {
		case len(args) == 1 && (args[0] == predict.KServeV1 || args[0] == predict.OIPV2):
			m.Protocol = args[0]
		case len(args) == 2 && args[0] == predict.Passthrough:
			m.Protocol, m.PredictPath = args[0], args[1]
		default:
			return d.Errf("protocol: expected kserve_v1, oip_v2 or passthrough <path>, got %q", strings.Join(args, " "))
		}
	case "input_schema":
		m.InputSchema, err = stringArg(d)
	case "tensor_input":
		args := d.RemainingArgs()
		if len(args) < 2 || len(args) > 3 {
			return d.Errf("tensor_input: expected <name> <datatype> [<field>], got %d values", len(args))
		}
		in := predict.TensorInput{Name: args[0], Datatype: strings.ToUpper(args[1])}
		if len(args) == 3 {
			in.Field = args[2]
		}
		m.TensorInputs = append(m.TensorInputs, in)
	case "tensor_output":
		m.TensorOutputs, err = listArg(d)
	}
	return err
}
