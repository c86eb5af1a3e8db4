# The two commands a newcomer needs (run as root on Debian/Ubuntu):
#   make demo   set everything up, then show crabmigrate at work
#   make test   set everything up, then run every test, real CRIU included
# Both run scripts/setup.sh first; it is idempotent and fast once done.
#   make install     a release build of crabmigrate in $(PREFIX)/bin
#   make uninstall   removes it

CARGO ?= cargo
TARGET := $(or $(CARGO_TARGET_DIR),target)
BIN := $(TARGET)/debug/crabmigrate
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin

.PHONY: setup build install uninstall demo test lint ci bench bench-quick

setup:
	bash scripts/setup.sh

build:
	$(CARGO) build --workspace --bins

install:
	$(CARGO) build --release -p crabmigrate
	install -D -m 0755 $(TARGET)/release/crabmigrate $(DESTDIR)$(BINDIR)/crabmigrate

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/crabmigrate

demo: setup build
	bash examples/demo.sh $(BIN)

# The README test runs the walkthroughs with an installed crabmigrate: make
# install into a private prefix under the target dir (the machine's
# /usr/local stays untouched), then every test.
TEST_PREFIX = $(abspath $(TARGET))/installed
test: setup build
	$(MAKE) install PREFIX=$(TEST_PREFIX)
	CRABMIGRATE_README_BIN=$(TEST_PREFIX)/bin/crabmigrate $(CARGO) test --workspace

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

ci: lint test

# Benchmarks (docs/benchmarks.md): release builds, results in target/bench.
#   make bench                 the full run (about 8 minutes with the build)
#   make bench BENCH_ARGS="--sizes 16,64,256 --pairs 7"
#   make bench-quick           each benchmark once at 16 MiB (a smoke test)
BENCH_OUT ?= target/bench
BENCH_BUILD = $(CARGO) build --release -p crabmigrate -p crabmigrate-tests -p crabmigrate-bench

bench: setup
	$(BENCH_BUILD)
	$(TARGET)/release/crabmigrate-bench --out $(BENCH_OUT) $(BENCH_ARGS)

bench-quick: setup
	$(BENCH_BUILD)
	$(TARGET)/release/crabmigrate-bench --quick --out $(BENCH_OUT)/quick $(BENCH_ARGS)
