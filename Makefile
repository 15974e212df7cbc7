# browser-lease broker. `make help` lists the targets.

# Pinned versions, in one place.
PLAYWRIGHT_VERSION := 1.52.0
BUF                := github.com/bufbuild/buf/cmd/buf@v1.75.0
PROTOC_GEN_GO      := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC := google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
GRPCURL            := github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4

CACHE      := $(CURDIR)/.cache
TOOLS      := $(CACHE)/bin
DRIVER_DIR := $(CACHE)/playwright/$(PLAYWRIGHT_VERSION)
CHROMIUM   := /usr/bin/chromium

# Tests find the browser, the driver and grpcurl through these, and fail
# (instead of skipping) when BROKER_REQUIRE_BROWSER is set.
TEST_ENV := PLAYWRIGHT_DRIVER_PATH=$(DRIVER_DIR) BROKER_CHROMIUM=$(CHROMIUM) \
            GRPCURL=$(TOOLS)/grpcurl BROKER_REQUIRE_BROWSER=1

GO_TEST_FLAGS ?= -race -count=1 -timeout 15m

export PATH := $(TOOLS):$(PATH)

.PHONY: help setup gen build run test fuzz fuzz-short lint bench soak clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

setup: ## install Chromium, the Playwright driver and the pinned tools (idempotent)
	@scripts/setup.sh $(PLAYWRIGHT_VERSION) $(DRIVER_DIR) $(TOOLS) \
		$(BUF) $(PROTOC_GEN_GO) $(PROTOC_GEN_GO_GRPC) $(GRPCURL)
	@scripts/setup-examples.sh

gen: setup ## regenerate gen/ from proto/
	buf generate

# The version the binaries report (broker --version, client --version).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

build: ## build bin/broker and bin/client
	go build -ldflags '$(LDFLAGS)' -o bin/ ./cmd/broker ./cmd/client

run: setup ## start the broker on localhost:7070 with defaults (extra flags: ARGS=...)
	go run -ldflags '$(LDFLAGS)' ./cmd/broker --driver-dir $(DRIVER_DIR) --chromium $(CHROMIUM) $(ARGS)

# Tests kill browsers and drivers on purpose; what those leave in TMPDIR
# stays in a folder of ours: in /tmp, named after this clone, as Chromium
# cannot start under a TMPDIR deeper than 62 bytes (its socket path).
TEST_TMP := /tmp/browserbroker-test-$(shell printf %s '$(CURDIR)' | cksum | cut -d' ' -f1)

test: setup ## run every test, with -race, against real Chromium
	rm -rf $(TEST_TMP) && mkdir -p $(TEST_TMP)
	TMPDIR=$(TEST_TMP) $(TEST_ENV) go test $(GO_TEST_FLAGS) ./...
	rm -rf $(TEST_TMP)

# The fuzz targets, as package:target. Go fuzzes one target per run; a
# failing input is saved in the package's testdata/fuzz/TARGET, where plain
# `go test` (and so `make test`) replays it from then on.
FUZZ_TARGETS := ./internal/server:FuzzAcquireRequest ./internal/server:FuzzPageRequests \
                ./internal/lease:FuzzLeaseEvents
FUZZTIME ?= 5m

fuzz: ## run each fuzz target for FUZZTIME (default 5m)
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "fuzz $${t#*:} in $${t%%:*} for $(FUZZTIME)"; \
		go test -run='^$$' -fuzz="^$${t#*:}\$$" -fuzztime=$(FUZZTIME) $${t%%:*}; \
	done

fuzz-short: ## run each fuzz target for 10s (CI)
	@$(MAKE) --no-print-directory fuzz FUZZTIME=10s

# buf breaking compares proto/ with the last release tag, or with main when
# there is none yet.
HASH := \#
BREAKING_AGAINST ?= $(shell t=$$(git describe --tags --abbrev=0 --match 'v*' 2>/dev/null); \
	if [ -n "$$t" ]; then echo ".git$(HASH)tag=$$t"; else echo ".git$(HASH)branch=main"; fi)

lint: setup ## gofmt, go vet, buf lint, buf breaking, and gen/ up to date with proto/
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/')); \
		if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi
	go vet ./...
	buf lint
	buf breaking --against '$(BREAKING_AGAINST)'
	buf generate --output $(CACHE)/gen-check
	@diff -r gen $(CACHE)/gen-check/gen >/dev/null || { echo "gen/ differs from proto/: run make gen"; exit 1; }

bench: setup ## benchmark the broker against in-process Playwright and Playwright's browser server; writes bench/results.json (flags: BENCH_ARGS=...)
	go run ./cmd/bench --driver-dir $(DRIVER_DIR) --chromium $(CHROMIUM) $(BENCH_ARGS)

SOAK_CYCLES ?= 2000

soak: setup ## churn SOAK_CYCLES leases (default 2000) through a real broker and check nothing leaks
	go run ./cmd/soak --cycles $(SOAK_CYCLES) --driver-dir $(DRIVER_DIR) --chromium $(CHROMIUM)

clean: ## remove build output (keeps the installed tools)
	rm -rf bin $(CACHE)/gen-check
