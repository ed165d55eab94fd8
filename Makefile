# inventory-bridge: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO ?= cargo

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

.PHONY: toolchain
toolchain: ## Check Rust and Go are there; add rustfmt/clippy when rustup can
	@command -v $(CARGO) >/dev/null || { echo "Rust (cargo) is required: https://rustup.rs" >&2; exit 1; }
	@command -v go >/dev/null || { echo "Go is required: https://go.dev/dl" >&2; exit 1; }
	@if command -v rustup >/dev/null; then rustup component add rustfmt clippy >/dev/null 2>&1 || true; fi

.PHONY: controlplane
controlplane: toolchain ## Build (once, cached) the etcd + kube-apiserver + kube-controller-manager binary
	@bash tests/controlplane/build.sh >/dev/null

.PHONY: helm
helm: toolchain ## Build (once, cached) Helm from its Go module (tests/helm) and print its path
	@bash tests/helm/build.sh

.PHONY: crds
crds: ## Regenerate the committed ClusterProfile CRD from the Rust types
	$(CARGO) run -q -p adapters --example crdgen charts/crds/multicluster.x-k8s.io_clusterprofiles.yaml

.PHONY: lint
lint: toolchain ## cargo fmt --check and clippy with warnings denied
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

.PHONY: test
test: lint controlplane helm-quiet ## Everything: lint, unit tests, and integration tests on real control planes
	$(CARGO) build --workspace --bins --locked
	$(CARGO) test --workspace --locked

BENCH_ARGS ?=
.PHONY: bench
bench: controlplane ## Scale benchmark (release build, ~21 min): table + target/bench/bench.json; BENCH_ARGS="--sources 10000"
	$(CARGO) build --release --workspace --bins --locked
	target/release/bench $(BENCH_ARGS)

.PHONY: helm-quiet
helm-quiet: toolchain
	@bash tests/helm/build.sh >/dev/null

.PHONY: demo
demo: toolchain ## Run the whole bridge on a local hub + 3 members, print the inventory and proofs (DEMO_ARGS=--once exits)
	@echo "demo 1/3: control plane (etcd + kube-apiserver + kube-controller-manager): cached after the first build, which takes 5-20 minutes on 2 cores"
	@bash tests/controlplane/build.sh >/dev/null
	@echo "demo 2/3: the five adapters and the demo (cargo build; first build: several minutes, then seconds)"
	$(CARGO) build --workspace --bins --locked
	@echo "demo 3/3: running (Ctrl-C stops everything)"
	@$(CARGO) run -q --locked -p inventory-bridge-tests --bin demo -- $(DEMO_ARGS)

.PHONY: fleet
fleet: controlplane ## Only start a local hub and two members and print how to reach them (Ctrl-C stops)
	$(CARGO) run -q -p inventory-bridge-tests --bin fleet -- --members 2
