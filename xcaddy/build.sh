#!/usr/bin/env bash
# Builds the custom Caddy with this repository's modules, the way operators do:
#   xcaddy build <caddy version> --with github.com/caddyai/gateway=<this checkout>
# xcaddy itself is pinned and run through `go run`, so nothing needs installing beforehand.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-"$here/caddy"}
caddy_version=${CADDY_VERSION:-v2.11.9}
xcaddy_version=${XCADDY_VERSION:-v0.4.5}

cd "$here"
XCADDY_SKIP_CLEANUP=0 go run "github.com/caddyserver/xcaddy/cmd/xcaddy@${xcaddy_version}" build "$caddy_version" \
	--with "github.com/caddyai/gateway@v0.0.0=$here" \
	--output "$out"
