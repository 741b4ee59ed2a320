// Package batch holds the pure parts of OpenAI Batches and Anthropic Message Batches: reading
// and validating an OpenAI batch input file (JSONL) and an Anthropic Message Batches request
// body, the objects the two APIs return and the lines of their result files, the lifecycle of a
// batch, and the request-level checks of POST /v1/batches.
//
// It knows nothing of HTTP servers, Caddy or storage. Readers take an io.Reader and never hold a
// whole file; what they return points into the input by byte offset (Task), so the runner reads
// one request body at a time from wherever the store keeps the bytes (an io.ReaderAt). Times are
// passed in by the caller, so tests move the clock instead of sleeping.
//
// The wire facts are those of PROTOCOL-BATCHES.md: every OpenAI object validates against the
// OpenAI spec's schemas (Batch, OpenAIFile, ListBatchesResponse, ListFilesResponse,
// DeleteFileResponse), with every key present and null where there is no value.
package batch
