# The two set-up commands are `make demo` and `make test` (see README.md).
# Every target goes through scripts/cargo.sh, which installs the Debian packages the build
# needs (only when missing), links the cached static RocksDB, and keeps the cargo target
# directory outside the clone ($HOME/.cache/pmh/target unless CARGO_TARGET_DIR is set).

CARGO := scripts/cargo.sh
PERSONS ?= 1000000

.PHONY: demo demo-engine test lint unit bench bench-engine bench-criterion bench-components bench-loader bench-render fmt clean-store

## demo: build, generate and load 100,000 synthetic people, serve them on 127.0.0.1:8080
## and print ready-to-paste curl commands (PERSONS=…, PMH_LISTEN=…)
demo:
	scripts/demo.sh

## demo-engine: the engine alone (no server): a consented lookup, a refusal, the access log
demo-engine:
	$(CARGO) run --locked --release -p pmh-bench --bin pmh-bench -- demo

## test: formatting, lints and every test of the workspace
test: lint unit

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets --release -- -D warnings

unit:
	scripts/test-deps.sh
	$(CARGO) test --locked --workspace --release

## bench: every figure in one unattended run, written into docs/benchmarks.md and
## docs/latency-vs-rate.svg (SIZE=10000000 for the nationwide-scale run)
bench:
	scripts/bench.sh

## bench-engine: engine lookup vs. raw get_pinned with latency percentiles (PERSONS=…)
bench-engine:
	$(CARGO) run --locked --release -p pmh-bench --bin pmh-bench -- engine --persons $(PERSONS)

## bench-criterion: the criterion suites
bench-criterion:
	PMH_BENCH_PERSONS=$(PERSONS) $(CARGO) bench --locked -p pmh-bench --bench lookup

## bench-components: criterion suite of the hot path's parts
bench-components:
	$(CARGO) bench --locked -p pmh-bench --bench components

## bench-loader: criterion suite of the loader's parts (parse + validate per row, SST writing)
bench-loader:
	$(CARGO) bench --locked -p pmh-bench --bench loader

## bench-render: criterion bench of the server's JSON rendering next to the engine lookup
bench-render:
	$(CARGO) bench --locked -p pmh-server --bench render

fmt:
	cargo fmt --all

clean-store:
	rm -rf var/
