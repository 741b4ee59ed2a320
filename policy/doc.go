// Package policy decides who may do what: API keys (held only as SHA-256 hashes), the model
// catalogue with aliases, and, in later files, request validation and rewriting, context-window
// checks and API versions. It knows nothing of Caddy or HTTP servers; caddymodule feeds it.
package policy
