// Package predict decides everything about requests to predict models (classifiers, rankers,
// vision and tabular models served by KServe, Triton, MLServer, TorchServe, BentoML or a FastAPI
// app): it validates a body against the model's JSON Schema (draft 2020-12, compiled once) and
// applies the schema's defaults, builds the upstream request of the model's protocol (KServe V1
// instances, Open Inference Protocol V2 tensors, or the body as is), and turns the upstream's
// answer back into the gateway's one prediction shape with its usage.
//
// It knows nothing of Caddy or HTTP servers; caddymodule wires it into the request path.
package predict
