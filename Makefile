# refit — see `make help`.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
E2E_TIMEOUT ?= 80m

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets.
	@awk 'BEGIN {FS = ":.*## "} /^[a-z0-9-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build bin/refit.
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/refit ./cmd/refit

.PHONY: test
test: vet unit fuzz tools browser ## Everything CI runs: vet, unit tests, the fuzz targets briefly, e2e tests and the chaos test in E2E_SHARDS processes (builds the cluster tools on first use).
	E2E_CHAOS=1 E2E_SHARDS=$(E2E_SHARDS) E2E_TIMEOUT=$(E2E_TIMEOUT) test/e2e-shards.sh

.PHONY: unit
unit: ## Unit tests (no cluster).
	$(GO) test -count=1 ./...

.PHONY: fuzz
FUZZTIME ?= 10s
fuzz: ## Each native fuzz target for FUZZTIME (default 10s): config files, webhook payloads and requests, renders.
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./config/
	$(GO) test -run '^$$' -fuzz '^FuzzPayloadRepoURLs$$' -fuzztime $(FUZZTIME) ./source/
	$(GO) test -run '^$$' -fuzz '^FuzzReceiver$$' -fuzztime $(FUZZTIME) ./source/
	$(GO) test -run '^$$' -fuzz '^FuzzRender$$' -fuzztime $(FUZZTIME) ./render/

.PHONY: e2e
E2E_SHARDS ?= 2
e2e: tools browser ## End-to-end tests (and the live view in headless Chromium) in E2E_SHARDS processes, each with a local cluster of its own; E2E_RUN=regexp picks tests.
	E2E_SHARDS=$(E2E_SHARDS) E2E_TIMEOUT=$(E2E_TIMEOUT) test/e2e-shards.sh

.PHONY: e2e-durations
e2e-durations: tools browser ## Time every e2e test in one sequential run (about 25 min) into test/e2e/durations.txt, by which the shards are dealt.
	set -o pipefail; REFIT_CHAOS=1 $(GO) test -tags e2e -count=1 -p 1 -timeout $(E2E_TIMEOUT) -v ./test/e2e/... | tee /dev/stderr | \
		awk '/^--- (PASS|FAIL|SKIP): Test/ { gsub(/[()s]/, "", $$4); print $$3, $$4 }' > test/e2e/durations.txt

.PHONY: chaos
chaos: tools ## SIGKILL refit at random points of >= 20 in-place rollouts, about 3 min (REFIT_CHAOS_SEED=N replays one run's choices).
	REFIT_CHAOS=1 $(GO) test -tags e2e -count=1 -timeout 30m -run '^TestChaos$$' -v ./test/e2e/

.PHONY: browser
browser: ## Install Debian's Chromium for the browser test when it is missing (needs root and apt-get).
	@if [ -x /usr/bin/chromium ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium (Debian package) for the browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	else \
		echo "browser: /usr/bin/chromium is missing and cannot be installed here (needs root and apt-get): the browser test will skip"; \
	fi

.PHONY: tools
tools: ## Build and cache the test binaries (kube-*, etcd, kwok, Gitea) if missing.
	$(GO) run ./test/cmd/refit-cluster tools

.PHONY: cluster
cluster: ## Start (or reuse) the local cluster; prints KUBECONFIG=<path>.
	$(GO) run ./test/cmd/refit-cluster up

.PHONY: cluster-down
cluster-down: ## Stop the local cluster and remove its state.
	$(GO) run ./test/cmd/refit-cluster down

.PHONY: demo
demo: build tools ## The main job on a local cluster and a local Git host: an image bump rolled out in place.
	$(GO) run ./test/cmd/refit-demo --refit bin/refit

.PHONY: bench
bench: tools ## In-place rollout vs recreation, side by side (BENCH_PODS=100,500 by default); pre-pull vs none vs recreation (BENCH_PREPULL_PODS=100).
	$(GO) test -tags bench -count=1 -timeout 60m -run 'InPlaceVersusRecreate|PrePullVersusNot' -v ./test/bench/

.PHONY: generate
generate: ## Regenerate the App API's deep copies and CRD (api/v1alpha1 -> deploy/crds) with the pinned controller-gen.
	$(GO) generate ./api/...

.PHONY: verify-generate
verify-generate: ## Fail when the generated files are not what the types say.
	$(GO) generate ./api/... && git diff --exit-code -- api deploy/crds

.PHONY: bench-apps
BENCH_APPS ?= 100,500,1000
bench-apps: tools ## N App objects (each app 5 objects, a Service among them) on one repository from cold, then a commit touching one app (BENCH_APPS=100,500,1000; 7 min quiet, about 25 min on a loaded machine).
	BENCH_APPS=$(BENCH_APPS) $(GO) test -tags bench -count=1 -timeout 90m -run 'AppsAtScale$$' -v ./test/bench/

.PHONY: bench-shard
BENCH_SHARD_APPS ?= 100,500
bench-shard: tools ## N App objects over 3 refit run --shard replicas from cold, one SIGKILLed mid-way (BENCH_SHARD_APPS=100,500; 3.5 min quiet, longer on a loaded machine).
	BENCH_SHARD_APPS=$(BENCH_SHARD_APPS) $(GO) test -tags bench -count=1 -timeout 90m -run 'AppsShardedAtScale$$' -v ./test/bench/

.PHONY: fmt
fmt: ## gofmt the tree.
	gofmt -w .

.PHONY: vet
vet: ## go vet, and fail on unformatted files.
	$(GO) vet ./...
	$(GO) vet -tags e2e ./test/...
	$(GO) vet -tags bench ./test/bench/...
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

.PHONY: lint
lint: vet ## Alias of vet (no third-party linter is installed).
