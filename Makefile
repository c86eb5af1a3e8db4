# The two commands a newcomer needs (run as root on Debian/Ubuntu):
#   make demo   set everything up, then show crabmigrate at work
#   make test   set everything up, then run every test, real CRIU included
# Both run scripts/setup.sh first; it is idempotent and fast once done.

CARGO ?= cargo
BIN := target/debug/crabmigrate

.PHONY: setup build demo test lint ci

setup:
	bash scripts/setup.sh

build:
	$(CARGO) build --workspace --bins

demo: setup build
	bash examples/demo.sh $(BIN)

test: setup build
	$(CARGO) test --workspace

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

ci: lint test
