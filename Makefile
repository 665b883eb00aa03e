# Shortcuts for the usual commands; each target is one line you can also type yourself.

.PHONY: run test bench lint migrate ci

run:
	cargo run --release

test:
	cargo test

bench:
	bash bench/run.sh

lint:
	cargo fmt --all -- --check && cargo clippy --all-targets -- -D warnings

migrate:
	cargo run --release -- migrate up

ci:
	bash .ci/run
