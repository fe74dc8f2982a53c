# Crossdock. `make` lists the targets.
SHELL := /bin/bash
GO    ?= go
BIN   := bin/crossdock
TOOLS := $(CURDIR)/.bin
BUF   := $(TOOLS)/buf
BUF_VERSION := v1.75.0

.DEFAULT_GOAL := help

help: ## Show the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## Build bin/crossdock (static: CGO off)
	CGO_ENABLED=0 $(GO) build -o $(BIN) ./cmd/crossdock

test: ## Run every test with the race detector; the last line names integration tests not run
	@$(GO) build -o $(TOOLS)/testsummary ./internal/testkit/testsummary
	set -o pipefail; $(GO) test -race -json -timeout 20m $(or $(PKGS),./...) | $(TOOLS)/testsummary

demo: build ## Run a one-node control plane, an agent and sample data (Ctrl-C stops)
	$(BIN) demo

# Ledger sizes for ledgermem and growth, soak length, and the Retention document growth
# and soak apply (none when empty): make bench BENCH_RETENTION=retention.yaml
BENCH_LEDGER_SIZES ?= 1M,4M,16M
BENCH_SOAK_MINUTES ?= 30
BENCH_RETENTION    ?=

bench: build ## Run the benchmarks and load programs; figures are printed
	$(GO) test -run '^$$' -bench . -benchtime 3x ./agent/outbox/ ./controlplane/ledger/
	$(GO) test -run '^$$' -bench 'PluginBoundary|HostCapture' -benchtime 2000x -count 5 ./plugins/sdk/ ./agent/pluginhost/
	$(GO) test -run '^$$' -bench . ./controlplane/routing/
	$(GO) test -run '^$$' -bench . -benchtime 50000x ./plugins/pgcdc/
	$(GO) test -run '^$$' -bench CapturePostgres -benchtime 5x -timeout 30m ./plugins/sql/
	$(GO) run ./bench/outboxbench
	$(GO) run ./bench/ingestbench
	$(GO) run ./bench/agentmem -bin $(BIN)
	$(GO) run ./bench/clusterbench -bin $(BIN)
	$(GO) run ./bench/clusterbench -bin $(BIN) -peer '' -rate 0 -events 100000 -views 3
	$(GO) test -run '^$$' -bench . -benchtime 1x ./controlplane/views/
	$(GO) run ./bench/deliverybench
	$(GO) run ./bench/ledgermem -bin $(BIN) -sizes $(BENCH_LEDGER_SIZES)
	$(GO) run ./bench/growth -bin $(BIN) -sizes $(BENCH_LEDGER_SIZES) $(if $(BENCH_RETENTION),-retention $(BENCH_RETENTION))
	$(GO) run ./bench/soak -bin $(BIN) -minutes $(BENCH_SOAK_MINUTES) $(if $(BENCH_RETENTION),-retention $(BENCH_RETENTION))
	$(GO) run ./bench/partnerapi
	$(GO) run ./bench/ackbench -bin $(BIN)
	$(GO) run ./bench/orderbench -rate 200 -duration 10s -runs 3
	$(GO) run ./bench/edibench

VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
DATE      ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
PLATFORMS ?= linux/amd64 linux/arm64
LDFLAGS   := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(DATE)

release: ## Build static, stripped binaries for $(PLATFORMS) into dist/ with SHA256SUMS
	rm -rf dist && mkdir -p dist
	set -e; for p in $(PLATFORMS); do \
		os=$${p%/*}; arch=$${p#*/}; out=dist/crossdock-$(VERSION)-$$os-$$arch; \
		echo "build $$out"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $$out ./cmd/crossdock; \
	done
	cd dist && sha256sum crossdock-* > SHA256SUMS
	@if command -v file >/dev/null; then file dist/crossdock-*; fi

$(BUF):
	GOBIN=$(TOOLS) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)

tools: $(BUF) ## Install pinned tools into .bin

gen: $(BUF) ## Regenerate protobuf code (local, pinned plugins)
	rm -rf proto/gen
	$(BUF) generate --template proto/buf.gen.yaml --exclude-path proto/crossdock/plugin
	$(BUF) generate --template proto/buf.gen.grpc.yaml --path proto/crossdock/plugin
	$(BUF) build -o $(TOOLS)/partner-image.binpb --path proto/crossdock/partner
	$(GO) run ./controlplane/partner/openapigen -image $(TOOLS)/partner-image.binpb -o controlplane/partner/partner.v1.openapi.yaml

check-gen: gen ## Fail if generated code is stale
	@git diff --exit-code -- proto/gen controlplane/partner/partner.v1.openapi.yaml || (echo "generated code is stale: run make gen and commit" && exit 1)
	@test -z "$$(git status --porcelain -- proto/gen controlplane/partner/partner.v1.openapi.yaml)" || (echo "untracked generated files: run make gen and commit" && git status --porcelain -- proto/gen && exit 1)

lint: $(BUF) ## gofmt, go vet, buf lint
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^proto/gen/')); test -z "$$out" || (echo "gofmt needed:"; echo "$$out"; exit 1)
	$(GO) vet ./...
	$(BUF) lint

fuzz: ## Run each fuzzer briefly
	$(GO) test -run '^$$' -fuzz FuzzParseToken -fuzztime 20s ./internal/pki/
	$(GO) test -run '^$$' -fuzz '^FuzzParseAdminToken$$' -fuzztime 20s ./internal/pki/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime 20s ./internal/seal/
	$(GO) test -run '^$$' -fuzz '^FuzzOpen$$' -fuzztime 20s ./internal/seal/
	$(GO) test -run '^$$' -fuzz FuzzRestore -fuzztime 20s ./controlplane/ledger/
	$(GO) test -run '^$$' -fuzz FuzzParseIngestBatch -fuzztime 20s -test.fuzzminimizetime 5s ./controlplane/ledger/
	$(GO) test -run '^$$' -fuzz FuzzDecodePosting -fuzztime 20s ./controlplane/ledger/
	$(GO) test -run '^$$' -fuzz FuzzDecodeRunBlock -fuzztime 20s ./controlplane/ledger/
	$(GO) test -run '^$$' -fuzz FuzzChunkEvent -fuzztime 20s ./controlplane/ledger/
	$(GO) test -run '^$$' -fuzz FuzzWalkChunk -fuzztime 20s ./controlplane/ledger/
	$(GO) test -run '^$$' -fuzz FuzzDecodeEvent -fuzztime 20s ./controlplane/views/
	$(GO) test -run '^$$' -fuzz FuzzSubmitOrder -fuzztime 20s ./controlplane/partner/
	$(GO) test -run '^$$' -fuzz FuzzEventType -fuzztime 20s ./controlplane/orders/
	$(GO) test -run '^$$' -fuzz FuzzUplinkCodec -fuzztime 20s ./controlplane/api/
	$(GO) test -run '^$$' -fuzz FuzzDecodeCommand -fuzztime 20s ./internal/wire/
	$(GO) test -run '^$$' -fuzz FuzzParseNodeIdentity -fuzztime 20s ./controlplane/
	$(GO) test -run '^$$' -fuzz FuzzErrorLogKey -fuzztime 20s ./controlplane/api/
	$(GO) test -run '^$$' -fuzz FuzzChunk -fuzztime 20s ./agent/outbox/
	$(GO) test -run '^$$' -fuzz FuzzAllowedHost -fuzztime 20s ./agent/localapi/
	$(GO) test -run '^$$' -fuzz FuzzScanValueLog -fuzztime 20s ./agent/outbox/
	$(GO) test -run '^$$' -fuzz FuzzBadgerReadError -fuzztime 20s ./agent/outbox/
	$(GO) test -run '^$$' -fuzz '^FuzzRead$$' -fuzztime 20s ./internal/x12/
	$(GO) test -run '^$$' -fuzz '^FuzzMap850$$' -fuzztime 20s ./internal/edi/
	$(GO) test -run '^$$' -fuzz FuzzParseState -fuzztime 20s ./plugins/edi/
	$(GO) test -run '^$$' -fuzz FuzzMatchers -fuzztime 20s ./internal/canonical/
	$(GO) test -run '^$$' -fuzz FuzzEventValid -fuzztime 20s ./internal/wire/
	$(GO) test -run '^$$' -fuzz FuzzReadEventHead -fuzztime 20s ./internal/wire/
	$(GO) test -run '^$$' -fuzz FuzzParseLine -fuzztime 20s ./internal/platform/mapadvise/
	$(GO) test -run '^$$' -fuzz FuzzReadEvents -fuzztime 20s ./cmd/crossdock/
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 20s ./agent/config/
	$(GO) test -run '^$$' -fuzz FuzzParseRetryAfter -fuzztime 20s ./controlplane/delivery/
	$(GO) test -run '^$$' -fuzz FuzzParseSecret -fuzztime 20s ./controlplane/delivery/
	$(GO) test -run '^$$' -fuzz FuzzAddressPolicy -fuzztime 20s ./controlplane/delivery/
	$(GO) test -run '^$$' -fuzz FuzzParseMessages -fuzztime 20s ./internal/demo/samplemarket/
	$(GO) test -run '^$$' -fuzz FuzzParseReplayFrom -fuzztime 20s ./cmd/crossdock/
	$(GO) test -run '^$$' -fuzz FuzzEventForTest -fuzztime 20s ./cmd/crossdock/
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 20s ./controlplane/routing/
	$(GO) test -run '^$$' -fuzz '^FuzzParsePosition$$' -fuzztime 20s ./plugins/sql/
	$(GO) test -run '^$$' -fuzz '^FuzzParseNamed$$' -fuzztime 20s ./plugins/sql/
	$(GO) test -run '^$$' -fuzz FuzzBuild -fuzztime 20s ./plugins/internal/rowmap/
	$(GO) test -run '^$$' -fuzz '^FuzzParsePosition$$' -fuzztime 20s ./plugins/tryton/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeResponse$$' -fuzztime 20s ./plugins/tryton/
	$(GO) test -run '^$$' -fuzz '^FuzzParsePosition$$' -fuzztime 20s ./plugins/pgcdc/
	$(GO) test -run '^$$' -fuzz '^FuzzParseSettings$$' -fuzztime 20s ./plugins/pgcdc/
	$(GO) test -run '^$$' -fuzz '^FuzzParseSettings$$' -fuzztime 20s ./plugins/tryton/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeSettings$$' -fuzztime 20s ./plugins/sql/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime 20s ./internal/platform/procmem/
	$(GO) test -run '^$$' -fuzz '^FuzzParseKeys$$' -fuzztime 20s ./cmd/crossdock/
	$(GO) test -run '^$$' -fuzz '^FuzzParseArchiveTime$$' -fuzztime 20s ./cmd/crossdock/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeFile$$' -fuzztime 20s ./controlplane/archive/
	$(GO) test -run '^$$' -fuzz '^FuzzParseManifest$$' -fuzztime 20s ./controlplane/archive/
	$(GO) test -run '^$$' -fuzz '^FuzzCheckLoopback$$' -fuzztime 20s ./cmd/crossdock/
	$(GO) test -run '^$$' -fuzz '^FuzzParsePartnerKey$$' -fuzztime 20s ./controlplane/partner/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodePartnerRequests$$' -fuzztime 20s ./controlplane/partner/
	$(GO) test -run '^$$' -fuzz '^FuzzAllocate$$' -fuzztime 20s ./controlplane/routing/
	$(GO) test -run '^$$' -fuzz '^FuzzParseLifetime$$' -fuzztime 20s ./cmd/crossdock/
	$(GO) test -run '^$$' -fuzz '^FuzzParseKeys$$' -fuzztime 20s ./controlplane/console/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime 20s ./internal/labels/

.PHONY: help build test demo bench tools gen check-gen lint fuzz release
