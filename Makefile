# The two commands of the quick start are `make run` and `make test`.
SHELL := /bin/bash
GO ?= go
CADDY := ./caddy
GO_SOURCES := $(shell find . -name '*.go' -not -path './cmd/warm/*') go.mod go.sum

.PHONY: build run test test-unit test-race test-binary fuzz vet clean bench

## build: the custom Caddy with the gateway's modules, built by the pinned xcaddy (writes ./caddy)
build: $(CADDY)

$(CADDY): $(GO_SOURCES) xcaddy/build.sh
	xcaddy/build.sh $(CADDY)

## run: serve the demo (gateway on :8080 in front of the simulator on :8081)
run: build
	$(CADDY) run --config Caddyfile --adapter caddyfile

## test: everything: vet, unit, integration (real Caddy, real Redis, official SDKs), race detector, the built binary, a few seconds of every fuzz target, a 20 s soak
test: vet test-unit test-race test-binary fuzz-smoke soak-smoke

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }

test-unit:
	$(GO) test -count=1 -timeout 15m ./...

## test-race: the concurrent packages again under the race detector
test-race:
	$(GO) test -race -count=1 -timeout 15m ./caddymodule/ ./ratelimit/ ./routing/ ./cache/ ./internal/wire/ ./policy/... ./store/

## test-binary: the xcaddy-built binary lists our modules and validates every Caddyfile
test-binary: build
	$(CADDY) list-modules | grep -q '^http.handlers.ai_gateway$$'
	$(CADDY) list-modules | grep -q '^http.reverse_proxy.upstreams.ai_gateway$$'
	$(CADDY) list-modules | grep -q '^http.handlers.ai_simulator$$'
	$(CADDY) list-modules | grep -q '^http.reverse_proxy.selection_policies.ai_least_load$$'
	$(CADDY) list-modules | grep -q '^admin.api.ai_gateway$$'
	@for f in Caddyfile examples/*.Caddyfile; do \
		$(CADDY) validate --config $$f --adapter caddyfile >/dev/null 2>&1 || { echo "invalid: $$f"; $(CADDY) validate --config $$f --adapter caddyfile; exit 1; }; \
		echo "valid: $$f"; \
	done
	CADDY_BINARY=$(abspath $(CADDY)) $(GO) test -count=1 -run 'TestBinary' ./caddymodule/

## fuzz: run every fuzz target for FUZZTIME each (default 30s)
FUZZTIME ?= 30s
fuzz:
	GO=$(GO) scripts/fuzz.sh $(FUZZTIME)

## fuzz-smoke: every fuzz target in the repository for FUZZTIME each (default 3s here; about four
## minutes for the 36 targets, most of it building their instrumented test binaries)
.PHONY: fuzz-smoke
fuzz-smoke: FUZZTIME := $(if $(filter command line environment,$(origin FUZZTIME)),$(FUZZTIME),3s)
fuzz-smoke:
	GO=$(GO) scripts/fuzz.sh $(FUZZTIME)

## soak: a bounded soak of the gateway (mixed load, faults, 401s, 429s, reloads) for SOAK_DURATION
## (default 60s), failing on goroutine or heap growth; prints the numbers
SOAK_DURATION ?= 60s
.PHONY: soak soak-smoke
soak:
	SOAK=1 SOAK_DURATION=$(SOAK_DURATION) $(GO) test -count=1 -timeout 30m -run '^TestSoak$$' -v ./caddymodule/

## soak-smoke: the soak for 20 s, part of make test
soak-smoke:
	$(MAKE) soak SOAK_DURATION=20s

## bench: the gateway against plain Caddy and the bare simulator on loopback (results in bench/out;
## BENCH_QUICK=1 for a one-minute smoke run, BENCH_FLAGS for benchrun's flags, e.g. -scenarios a,c)
bench: build bench/out/caddy-plain
	$(GO) run ./bench/cmd/benchrun -gateway $(CADDY) -plain bench/out/caddy-plain -out bench/out $(BENCH_FLAGS)

## bench-peers: scenarios a, b and c with a peer gateway beside the gateway and plain Caddy:
## Portkey's open-source gateway (@portkey-ai/gateway, pinned, installed by npm into bench/out/peers,
## never committed); skipped with a message when npm or node is unavailable
PORTKEY_VERSION := 1.15.2
PORTKEY_DIR := bench/out/peers/portkey-$(PORTKEY_VERSION)
.PHONY: bench-peers
bench-peers: build bench/out/caddy-plain
	@if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then \
		echo "bench-peers: skipped: npm and node are needed to run @portkey-ai/gateway"; exit 0; fi; \
	if [ ! -f $(PORTKEY_DIR)/node_modules/@portkey-ai/gateway/build/start-server.js ]; then \
		npm install --prefix $(PORTKEY_DIR) --no-audit --no-fund --ignore-scripts --no-save @portkey-ai/gateway@$(PORTKEY_VERSION) || \
		{ echo "bench-peers: skipped: npm could not install @portkey-ai/gateway@$(PORTKEY_VERSION)"; exit 0; }; fi; \
	$(GO) run ./bench/cmd/benchrun -gateway $(CADDY) -plain bench/out/caddy-plain -out bench/out/peers -scenarios a,b,c \
		-peer portkey=$(PORTKEY_DIR)/node_modules/@portkey-ai/gateway/build/start-server.js $(BENCH_FLAGS)

bench/out/caddy-plain: go.mod go.sum bench/cmd/caddy-plain/main.go
	$(GO) build -trimpath -ldflags '-w -s' -o $@ ./bench/cmd/caddy-plain

clean:
	rm -f $(CADDY)
