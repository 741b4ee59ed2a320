// Package gateway is the AI gateway for Caddy. Importing it (as xcaddy does with
// `xcaddy build --with github.com/caddyai/gateway`) registers every module of the project:
// the ai_gateway handler, the ai_gateway dynamic upstreams and the ai_simulator handler.
package gateway

import (
	// Register the Caddy modules.
	_ "github.com/caddyai/gateway/caddymodule"
)
