# Apollo DeviceProcess — the runbook's targets and the project's own.
#
#   make demo-local        the whole runbook, self-checking, no containers (dev API server)
#   make demo-local FAST=1 the same with short intervals (well under a minute)
#   make test              every test (unit, conformance, integration, end-to-end)
#   make demo              the runbook on kind (inside `nix develop`)
#   make demo-containers   the runbook with every component in a local container (docker)
#   make demo-containers-ha the gateway's replica scenarios in containers: kill, partition (docker)

SHELL        := bash
.SHELLFLAGS  := -eu -o pipefail -c
CARGO        ?= cargo
KUBECTL      ?= kubectl
KIND         ?= kind
KIND_CLUSTER ?= apollo-dev
NAMESPACE    ?= default
IMAGE        ?= apollo/controller:dev
GATEWAY_IMAGE ?= apollo/gateway:dev
# Static binaries: glibc with crt-static here; the Nix flake builds musl.
TARGET       ?= x86_64-unknown-linux-gnu
BIN_DIR      ?= bin
BENCH_JSON   ?= $(BIN_DIR)/bench-short.json
BINS         := apollo-controller apollo-gateway apollo-agent apollo-crdgen apollo-devcluster apollo-demo apollo-fleetsim
FAST         ?=
DEVICES      ?= tor1-01 tor1-02
GATEWAY_URL  ?= http://host.docker.internal:18080
# Cargo features of the agent build: `make build AGENT_FEATURES=tls` for https:// gateways.
AGENT_FEATURES ?=
DOCKER       ?= docker
# Tag of the images `make docker-images` builds (the runbook's is dev).
IMAGE_TAG    ?= dev
VERSION      := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
REVISION     := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)

.PHONY: help tools generate manifests build build-dev test test-sandbox lint fmt install uninstall deploy \
        undeploy demo-local demo demo-down demo-containers demo-containers-ha docker-images images kind-load compose bench \
        bench-full bench-compare nix-check clean monitoring-check bench-charts

help: ## list targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-14s %s\n", $$1, $$2}'

tools: ## check the toolchain and build the CRD generator (the controller-gen equivalent)
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust (or run inside 'nix develop')"; exit 1; }
	@for t in kubectl kind docker jq; do command -v $$t >/dev/null && echo "found $$t" || echo "optional tool $$t not found (needed for 'make demo'; 'nix develop' provides it)"; done
	$(CARGO) build --release -p apollo-crdgen

generate: ## Rust types are the source of truth: there is no deepcopy/clientset code to generate; regenerates CRDs
	@echo "apollo-api types are the source of truth (no deepcopy/clientsets in Rust); regenerating CRDs"
	$(MAKE) manifests

manifests: ## write k8s/crds/*.yaml from the apollo-api types, and k8s-pre-1.31/ for older servers
	$(CARGO) run -q -p apollo-crdgen -- --out-dir k8s/crds --variants

build: ## static release binaries into bin/ (the agent with the size-optimised profile)
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release --target $(TARGET) \
	  $(addprefix -p ,$(filter-out apollo-agent,$(BINS)))
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --profile release-small --target $(TARGET) -p apollo-agent \
	  $(if $(AGENT_FEATURES),--features $(AGENT_FEATURES))
	mkdir -p $(BIN_DIR)
	for b in $(filter-out apollo-agent,$(BINS)); do install -m 0555 target/$(TARGET)/release/$$b $(BIN_DIR)/; done
	install -m 0555 target/$(TARGET)/release-small/apollo-agent $(BIN_DIR)/
	@# The image root the Dockerfiles copy (as nix/images.nix writes it): passwd, group, home, /tmp.
	rm -rf $(BIN_DIR)/rootfs
	install -d -m 0755 $(BIN_DIR)/rootfs/etc $(BIN_DIR)/rootfs/home/nonroot
	install -d -m 1777 $(BIN_DIR)/rootfs/tmp
	install -m 0644 docker/passwd docker/group $(BIN_DIR)/rootfs/etc/
	@file $(BIN_DIR)/* | sed 's/, BuildID[^,]*//'
	@ls -l $(BIN_DIR)

build-dev: ## debug binaries (what the tests and the fast demo use)
	$(CARGO) build $(addprefix -p ,$(BINS))

test: build-dev ## every test: unit, conformance (dev API server; real cluster if APOLLO_TEST_KUBECONFIG is set), integration, end-to-end
	$(CARGO) test --workspace --no-fail-fast

test-sandbox: ## every test under cargo nextest as the flake's check runs it: no /usr/bin, read-only HOME, no network (needs unshare)
	bash nix/tests/nextest-sandbox.sh

lint: ## rustfmt check, clippy -D warnings, rustdoc -D warnings, CRDs current, agent free of Kubernetes crates
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps
	$(CARGO) run -q -p apollo-crdgen -- --check --variants --out-dir k8s/crds
	@if $(CARGO) tree -p apollo-agent -e normal --prefix none | grep -Eq '^(kube|k8s-openapi)'; then \
	  echo "apollo-agent must not depend on Kubernetes crates"; exit 1; fi
	@echo "lint ok"

fmt: ## format the code
	$(CARGO) fmt --all

install: ## apply the CRDs to the current kubectl context (k8s/crds, or k8s-pre-1.31/crds on Kubernetes 1.29-1.30)
	@crds="$$(KUBECTL='$(KUBECTL)' bash scripts/k8s-variant.sh crds)"; \
	  echo "$(KUBECTL) apply -f $$crds/"; \
	  $(KUBECTL) apply -f "$$crds/"
	$(KUBECTL) wait --for=condition=Established crd --all --timeout=60s

uninstall: ## delete the CRDs (and every Apollo object)
	$(KUBECTL) delete -f k8s/crds/ --ignore-not-found

deploy: ## CRDs, RBAC, controller and gateway into NAMESPACE (IMAGE / GATEWAY_IMAGE override the images; k8s-pre-1.31 on Kubernetes 1.29-1.30)
	@$(KUBECTL) get secret apollo-gateway-master-key -n $(NAMESPACE) >/dev/null 2>&1 || { \
	  key=$$($(CARGO) run -q -p apollo-gateway -- keys generate); \
	  $(KUBECTL) create secret generic apollo-gateway-master-key -n $(NAMESPACE) --from-literal=master.key="$$key"; }
	@dir="$$(KUBECTL='$(KUBECTL)' bash scripts/k8s-variant.sh kustomize)"; echo "$(KUBECTL) kustomize $$dir | ... | $(KUBECTL) apply -f -"; \
	$(KUBECTL) kustomize "$$dir" \
	  | sed -e 's#image: apollo/controller:dev#image: $(IMAGE)#' -e 's#image: apollo/gateway:dev#image: $(GATEWAY_IMAGE)#' \
	        -e 's#namespace: default#namespace: $(NAMESPACE)#' \
	  | $(KUBECTL) apply -f -

undeploy: ## remove controller, gateway and RBAC
	$(KUBECTL) kustomize k8s | $(KUBECTL) delete --ignore-not-found -f -

demo-local: build-dev ## the runbook end to end with no containers (FAST=1 short intervals; DEMO_KUBECONFIG=… an existing cluster)
	$(CARGO) run -q -p apollo-demo -- local --bin-dir target/debug $(if $(filter 1 true yes,$(FAST)),--fast,) \
	  $(if $(DEMO_KUBECONFIG),--kubeconfig $(DEMO_KUBECONFIG),)

demo: ## the runbook on kind: cluster, flake images, controller, gateway, compose agents (run inside `nix develop`)
	KIND_CLUSTER=$(KIND_CLUSTER) scripts/demo-kind.sh up

demo-down: ## delete the kind cluster and stop the compose agents
	KIND_CLUSTER=$(KIND_CLUSTER) scripts/demo-kind.sh down

docker-images: ## the runbook's images from bin/ without Nix (make build first): apollo/{controller,gateway,agent,devcluster}:IMAGE_TAG
	@for b in apollo-controller apollo-gateway apollo-agent apollo-devcluster; do \
	  test -x $(BIN_DIR)/$$b || { echo "$(BIN_DIR)/$$b is missing: run 'make build' first (static binaries)"; exit 1; }; done
	@test -d $(BIN_DIR)/rootfs/etc || { echo "$(BIN_DIR)/rootfs is missing: run 'make build' first"; exit 1; }
	$(DOCKER) build -q --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) \
	  -t apollo/controller:$(IMAGE_TAG) -t apollo-deviceprocess-controller:$(IMAGE_TAG) -f Dockerfile.controller .
	$(DOCKER) build -q --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) -t apollo/gateway:$(IMAGE_TAG) -f Dockerfile.gateway .
	$(DOCKER) build -q --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) -t apollo/agent:$(IMAGE_TAG) -f Dockerfile.agent .
	$(DOCKER) build -q --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) -t apollo/devcluster:$(IMAGE_TAG) -f Dockerfile.devcluster .
	@$(DOCKER) image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' | grep -E '^apollo(/|-deviceprocess-)[a-z-]+:$(IMAGE_TAG)\b' || true

demo-containers: build ## the runbook with the dev API server, controller and gateway as containers, agents in docker compose (FAST=1 short intervals)
	$(MAKE) --no-print-directory docker-images
	$(BIN_DIR)/apollo-demo containers --image-tag $(IMAGE_TAG) $(if $(filter 1 true yes,$(FAST)),--fast,)

demo-containers-ha: build ## three gateway containers, agents in docker compose: docker kill one, docker network disconnect one from the API; checked, leaves nothing behind
	$(MAKE) --no-print-directory docker-images
	$(BIN_DIR)/apollo-demo containers-ha --image-tag $(IMAGE_TAG)

images: ## distroless images from the flake (result-images/ holds one archive per image, SIZES.txt)
	nix build .#images --out-link result-images
	cat result-images/SIZES.txt

kind-load: images ## load the flake's images into the kind cluster
	./result-images/load-into-kind --name $(KIND_CLUSTER)

compose: ## write docker-compose.yaml for the agents from compose.nix (DEVICES, GATEWAY_URL)
	nix-instantiate --eval --strict --json compose.nix \
	  --arg devices '[ $(foreach d,$(DEVICES),"$(d)") ]' \
	  --argstr gatewayUrl '$(GATEWAY_URL)' > docker-compose.yaml
	@echo "each agent reads APOLLO_DEVICE_KEY from keys/<device>.env (not in git)"

bench: build ## short fleet benchmark (under 5 minutes): 1,000 devices, 1 s heartbeat (BENCH_ARGS=… more flags, e.g. --kubeconfig K --compare OLD.json)
	$(BIN_DIR)/apollo-fleetsim bench --short --bin-dir $(BIN_DIR) --json $(BIN_DIR)/bench-short.json $(BENCH_ARGS)

bench-charts: ## SVG charts of the short benchmark's JSON into docs/bench (BENCH_JSON=… another report)
	$(CARGO) run -q -p apollo-fleetsim -- charts --json $(BENCH_JSON) --out-dir docs/bench

bench-full: build ## full fleet benchmark: 1,000 / 10,000 / 100,000 devices, 10 s heartbeat (run as root for the fd limit; BENCH_ARGS=… more flags)
	$(BIN_DIR)/apollo-fleetsim bench --bin-dir $(BIN_DIR) --json $(BIN_DIR)/bench-full.json $(BENCH_ARGS)

bench-compare: ## per-row deltas between two bench JSONs: make bench-compare OLD=a.json NEW=b.json
	$(CARGO) run -q -p apollo-fleetsim -- compare $(OLD) $(NEW)

monitoring-check: ## promtool check + unit tests of the alerts, kustomize render of k8s/monitoring (needs promtool: Debian's prometheus package)
	scripts/monitoring-check.sh

nix-check: ## parse the flake and nix/, evaluate compose.nix, check flake.lock (needs Debian's nix-bin)
	bash nix/tests/check-nix.sh

clean: ## remove build outputs and demo leftovers
	$(CARGO) clean
	rm -rf $(BIN_DIR) .demo result result-* docker-compose.yaml
