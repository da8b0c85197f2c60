# Stagehost: the two commands are `make run` and `make test`.
#
#   make run         set up, build, start local Kafka if none answers, run config.yml
#   make test        set up, build, start local Kafka, lint, run the whole test suite
#   make run-graph   the same as `make run` for the tutorial's graph, examples/graph.yml
#   make kafka-up    start the local Apache Kafka broker (KRaft) on 127.0.0.1:9092
#   make kafka-down  stop it
#   make plugins     build the handler components (both build variants)
#   make lint        cargo fmt --check and clippy -D warnings, host and plugins
#   make bench-e2e   end-to-end benchmark on local Kafka: Stagehost (Rust and Python handlers), a native Rust loop, the tutorial's Python consumer
#   make bench-state stateful handlers: running total against Kafka Streams, restore times, get+set cost
#   make graph-picture  redraw examples/graph.svg from examples/graph.yml (needs Graphviz `dot`)

CARGO ?= cargo
HOST  := target/release/host

.PHONY: run run-graph test setup setup-test plugins plugins-run build kafka-up kafka-down lint fuzz graph-picture bench-e2e bench-state

# The first run needs only the wasm32-wasip2 plugin build (no cargo-component).
run: setup plugins-run build kafka-up
	$(HOST) run config.yml

run-graph: setup plugins-run build kafka-up
	$(HOST) run examples/graph.yml

test: setup-test plugins kafka-up lint
	$(CARGO) test --release --workspace
	cd plugins && $(CARGO) test --workspace
	cd plugins/multiply && python3 -m unittest -q
	cd plugins/divide && npm test --silent
	cd plugins/running-total-py && python3 -m unittest -q
	cd plugins/running-total-js && npm test --silent

setup:
	scripts/setup.sh

setup-test:
	scripts/setup.sh --test

# Both plugin build variants (cargo build for wasm32-wasip2, cargo component).
plugins: setup-test
	scripts/build-plugins.sh

plugins-run: setup
	scripts/build-plugins.sh --wasip2-only

build:
	$(CARGO) build --release -p stagehost

kafka-up:
	scripts/kafka.sh up

kafka-down:
	scripts/kafka.sh down

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --release --all-targets -- -D warnings
	cd plugins && $(CARGO) fmt --all --check
	cd plugins && $(CARGO) clippy --release --target wasm32-wasip2 -- -D warnings

# Each cargo-fuzz target for FUZZ_SECONDS (default 60); needs nightly (installed if missing).
fuzz:
	scripts/fuzz.sh

# The picture of the example graph in README.md and examples/README.md.
graph-picture: build
	$(HOST) graph examples/graph.yml --format dot | dot -Tsvg -o examples/graph.svg

# End-to-end benchmark against the local broker; prints a Markdown table.
# Knobs: MESSAGES, ROUNDS, WARMUP_MESSAGES, PARTITIONS, SIZE, CONTENDERS, LATENCY_SECONDS (see host/benches/e2e.rs).
bench-e2e: plugins kafka-up
	scripts/bench/setup-python.sh >/dev/null
	$(CARGO) build --release -p stagehost --example native_loop
	$(CARGO) bench -p stagehost --bench e2e

# Stateful handlers (BENCHMARKS.md, "Stateful handlers"): the running total
# end to end against a Kafka Streams app, restore times for 1,000,000 keys,
# and the in-process cost of a get + set. Prints Markdown tables.
# Knobs: see the headers of scripts/bench/state-e2e.sh, scripts/bench/state-restore.sh
# and host/benches/state_cost.rs.
bench-state: plugins kafka-up build
	scripts/bench/state-e2e.sh
	scripts/bench/state-restore.sh
	$(CARGO) bench -p stagehost --bench state_cost
