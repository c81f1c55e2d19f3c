#!/usr/bin/env bash
# lanyard-bench: Lanyard's throughput, latency and memory against the C transport and
# durable ceilings of this machine, measured side by side (bench/run.py says how).
#   scripts/bench.sh             the full run: release build, 5 runs × 3 s per cell
#   scripts/bench.sh --smoke     a short run on the debug build (CI runs this)
#   scripts/bench.sh --runs N --seconds S
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_debs "${LANYARD_DEBS[@]}" util-linux passwd python3
ensure_venv  # the Python SDK's authorize figure (bench/python_authorize.py)

if [[ " $* " == *" --smoke "* ]]; then
  swift build --product lanyardd >&2
  bin="$(swift build --show-bin-path)"
else
  swift build -c release --product lanyardd >&2
  bin="$(swift build -c release --show-bin-path)"
fi
make -s -C clients/c >&2
make -s -C bench >&2
exec python3 bench/run.py "$bin" "$@"
