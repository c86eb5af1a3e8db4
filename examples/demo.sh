#!/usr/bin/env bash
# The README's demo. For now it shows what this host can do; it grows into
# checkpoint -> restore of a running workload with the process commands.
set -euo pipefail
BIN=${1:-target/debug/crabmigrate}
echo "== crabmigrate check: what this host can do"
"$BIN" check
