# genai-gateway — `make help` lists the targets.
GO        ?= go
BIN       ?= bin
PKGS      ?= ./...
FUZZTIME  ?= 30s
BENCHCOUNT ?= 1   # 6 for benchstat comparisons
IMAGE     ?= genai-gateway:dev
CONFIG    ?=

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z0-9-]+:.*## / {printf "  make %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## build static binaries into bin/ (the same command the Dockerfile runs)
	CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=auto -ldflags "-s -w" -o $(BIN)/ ./cmd/...

.PHONY: test
test: ## vet, then every test with -race (unit, cluster, end-to-end, deploy with Prometheus)
	bash .ci/deps
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

.PHONY: lint
lint: ## gofmt, go vet, staticcheck, go mod tidy check
	@test -z "$$(gofmt -l .)" || (gofmt -l . && echo "gofmt: files above need formatting" && exit 1)
	$(GO) vet $(PKGS)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 $(PKGS)
	$(GO) mod tidy -diff

.PHONY: fmt
fmt: ## format the code
	gofmt -w .

.PHONY: bench
bench: ## Go benchmarks (hot paths, convergence, over-admission), then the load run (bench-load)
	$(GO) test -run='^$$' -bench=. -benchmem -count=$(BENCHCOUNT) ./proxy/ ./limiter/
	$(GO) test -run='^$$' -bench='StoreAddSum|GossipBytes|StoreMemory|StateBytes' -benchmem -count=$(BENCHCOUNT) ./cluster/
	$(GO) test -run='^$$' -bench=Convergence -benchtime=100x -count=$(BENCHCOUNT) ./cluster/
	$(GO) test -run='^$$' -bench=OverAdmission -benchtime=5x -count=$(BENCHCOUNT) ./cmd/genai-gateway/
	bash bench/loadbench.sh

.PHONY: bench-load
bench-load: ## the load run alone: req/s, proxy CPU and +p50 per request vs nginx, allocs (see bench/loadbench.sh)
	bash bench/loadbench.sh

.PHONY: bench-scale
bench-scale: ## cluster at scale (issue 14): join with 1M keys, memory per key by writers, 32/64 nodes with 1 % loss (~25 min)
	$(GO) test -run='^$$' -bench='StoreMemory|StateBytes' -count=$(BENCHCOUNT) -timeout=30m ./cluster/
	$(GO) test -run='^$$' -bench=JoinMillion -benchtime=3x -count=$(BENCHCOUNT) -timeout=30m ./cluster/
	$(GO) test -run='^$$' -bench=Dissemination -benchtime=300x -count=$(BENCHCOUNT) -timeout=60m ./cluster/
	$(GO) test -run='^$$' -bench=GossipBandwidth -benchtime=1x -count=$(BENCHCOUNT) -timeout=30m ./cluster/

.PHONY: bench-cluster32
bench-cluster32: ## 32 replicas as processes, rolling restart of all under load: no count lost, /cluster agrees (~5 min)
	bash bench/cluster32.sh

.PHONY: fuzz
fuzz: ## run every fuzz target for FUZZTIME each
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run='^$$' -fuzz="^$$f$$" -fuzztime=$(FUZZTIME) $$pkg; \
	  done; done

.PHONY: run
run: build ## run one replica (CONFIG=path to use a file; defaults otherwise)
	$(BIN)/genai-gateway $(if $(CONFIG),--config $(CONFIG),)

.PHONY: demo
demo: build ## mockllm + three replicas as processes; shows a user limited cluster-wide
	bash deploy/demo.sh

.PHONY: image
image: ## build the container image (needs a Docker engine)
	docker build -f deploy/Dockerfile -t $(IMAGE) .
