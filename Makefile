# Apollo DeviceProcess — the runbook's targets and the project's own.
#
#   make demo-local        the whole runbook, self-checking, no containers (dev API server)
#   make demo-local FAST=1 the same with short intervals (well under a minute)
#   make test              every test (unit, conformance, integration, end-to-end)
#   make demo              the runbook on kind (inside `nix develop`)

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
BINS         := apollo-controller apollo-gateway apollo-agent apollo-crdgen apollo-devcluster apollo-demo apollo-fleetsim
FAST         ?=
DEVICES      ?= tor1-01 tor1-02
GATEWAY_URL  ?= http://host.docker.internal:18080

.PHONY: help tools generate manifests build build-dev test lint fmt install uninstall deploy undeploy \
        demo-local demo demo-down images kind-load compose bench bench-full nix-check clean

help: ## list targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-14s %s\n", $$1, $$2}'

tools: ## check the toolchain and build the CRD generator (the controller-gen equivalent)
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust (or run inside 'nix develop')"; exit 1; }
	@for t in kubectl kind docker jq; do command -v $$t >/dev/null && echo "found $$t" || echo "optional tool $$t not found (needed for 'make demo'; 'nix develop' provides it)"; done
	$(CARGO) build --release -p apollo-crdgen

generate: ## Rust types are the source of truth: there is no deepcopy/clientset code to generate; regenerates CRDs
	@echo "apollo-api types are the source of truth (no deepcopy/clientsets in Rust); regenerating CRDs"
	$(MAKE) manifests

manifests: ## write k8s/crds/*.yaml from the apollo-api types
	$(CARGO) run -q -p apollo-crdgen -- --out-dir k8s/crds

build: ## static release binaries into bin/ (the agent with the size-optimised profile)
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release --target $(TARGET) \
	  $(addprefix -p ,$(filter-out apollo-agent,$(BINS)))
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --profile release-small --target $(TARGET) -p apollo-agent
	mkdir -p $(BIN_DIR)
	for b in $(filter-out apollo-agent,$(BINS)); do cp target/$(TARGET)/release/$$b $(BIN_DIR)/; done
	cp target/$(TARGET)/release-small/apollo-agent $(BIN_DIR)/
	@file $(BIN_DIR)/* | sed 's/, BuildID[^,]*//'
	@ls -l $(BIN_DIR)

build-dev: ## debug binaries (what the tests and the fast demo use)
	$(CARGO) build $(addprefix -p ,$(BINS))

test: build-dev ## every test: unit, conformance (dev API server; real cluster if APOLLO_TEST_KUBECONFIG is set), integration, end-to-end
	$(CARGO) test --workspace --no-fail-fast

lint: ## rustfmt check, clippy -D warnings, CRDs current, agent free of Kubernetes crates
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) run -q -p apollo-crdgen -- --check --out-dir k8s/crds
	@if $(CARGO) tree -p apollo-agent -e normal --prefix none | grep -Eq '^(kube|k8s-openapi)'; then \
	  echo "apollo-agent must not depend on Kubernetes crates"; exit 1; fi
	@echo "lint ok"

fmt: ## format the code
	$(CARGO) fmt --all

install: ## apply the CRDs to the current kubectl context
	$(KUBECTL) apply -f k8s/crds/
	$(KUBECTL) wait --for=condition=Established crd --all --timeout=60s

uninstall: ## delete the CRDs (and every Apollo object)
	$(KUBECTL) delete -f k8s/crds/ --ignore-not-found

deploy: ## RBAC, controller and gateway into NAMESPACE (IMAGE / GATEWAY_IMAGE override the images)
	@$(KUBECTL) get secret apollo-gateway-master-key -n $(NAMESPACE) >/dev/null 2>&1 || { \
	  key=$$($(CARGO) run -q -p apollo-gateway -- keys generate); \
	  $(KUBECTL) create secret generic apollo-gateway-master-key -n $(NAMESPACE) --from-literal=master.key="$$key"; }
	$(KUBECTL) kustomize k8s \
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

bench: build ## short fleet benchmark (under 5 minutes): 1,000 devices, 1 s heartbeat
	$(BIN_DIR)/apollo-fleetsim bench --short --bin-dir $(BIN_DIR) --json $(BIN_DIR)/bench-short.json

bench-full: build ## full fleet benchmark: 1,000 / 10,000 / 100,000 devices, 10 s heartbeat
	$(BIN_DIR)/apollo-fleetsim bench --bin-dir $(BIN_DIR) --json $(BIN_DIR)/bench-full.json

nix-check: ## parse the flake and nix/, evaluate compose.nix, check flake.lock (needs Debian's nix-bin)
	bash nix/tests/check-nix.sh

clean: ## remove build outputs and demo leftovers
	$(CARGO) clean
	rm -rf $(BIN_DIR) .demo result result-* docker-compose.yaml
