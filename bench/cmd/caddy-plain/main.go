// Command caddy-plain is Caddy with its standard modules only, of the version the gateway is
// built against: the baseline the benchmark compares the gateway with.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

func main() {
	caddycmd.Main()
}
