# Shortcuts for the usual commands; each target is one line you can also type yourself.

.PHONY: run test install bench lint migrate ci

run:
	cargo run --release

# The whole suite: installs the tools the tests drive when missing (scripts/test.sh).
# Extra cargo test arguments: make test ARGS='--test it api::'
test:
	bash scripts/test.sh $(ARGS)

# The binary on PATH (~/.cargo/bin/messaging-server), for the CLI commands.
install:
	cargo install --locked --path .

bench:
	bash bench/run.sh

lint:
	cargo fmt --all -- --check && cargo clippy --all-targets -- -D warnings && cargo clippy --lib --bins -- -D warnings

migrate:
	cargo run --release -- migrate up

ci:
	bash .ci/run
