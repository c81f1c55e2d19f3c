#!/usr/bin/env bash
# lanyard-bench: Lanyard's throughput, latency and memory against the C transport and
# durable ceilings of this machine, measured side by side (bench/run.py says how).
#   scripts/bench.sh             the full run: the packaged release build, 5 runs × 3 s per cell
#   scripts/bench.sh --smoke     a short run on the debug build (CI runs this)
#   scripts/bench.sh --runs N --seconds S
#   scripts/bench.sh --peers     also OpenSSH's ssh-agent and Redis (appendfsync always), same ceilings
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_debs "${LANYARD_DEBS[@]}" util-linux passwd python3
if [[ " $* " == *" --peers "* ]]; then ensure_debs openssh-client redis-server redis-tools; fi
ensure_venv  # the Python SDK's authorize figure (bench/python_authorize.py)

if [[ " $* " == *" --smoke "* ]]; then
  swift build --product lanyardd >&2
  swift build --product lanyard-mcp >&2
  bin="$(swift build --show-bin-path)"
else
  swift build "${LANYARD_RELEASE_BUILD[@]}" --product lanyardd >&2
  swift build "${LANYARD_RELEASE_BUILD[@]}" --product lanyard-mcp >&2
  bin="$(swift build "${LANYARD_RELEASE_BUILD[@]}" --show-bin-path)"
fi
make -s -C clients/c >&2
make -s -C bench >&2
python3 bench/run.py "$bin" "$@"
# The MCP gateway: tool calls through lanyard-mcp against the same server called directly.
"$LANYARD_VENV/bin/python" bench/mcp_gateway.py "$bin" "$@"
