#!/usr/bin/env bash
# The whole test suite under ThreadSanitizer and/or AddressSanitizer (with LeakSanitizer).
# usage: scripts/sanitize.sh [thread|address|all]    (default all)
#        LANYARD_LEAKS=0 scripts/sanitize.sh address   (ASan without LeakSanitizer)
# Each sanitizer builds into its own folder (.build-tsan, .build-asan); the end-to-end
# tests run the sanitized lanyardd and lanyardctl from there (LANYARD_BIN_DIR). A report
# stops the process that found it (halt_on_error), so any finding fails the run.
# scripts/lsan.supp lists the only leaks tolerated: the Swift toolchain's own, each
# reproduced without Lanyard's code.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_debs "${LANYARD_DEBS[@]}"
which="${1:-all}"

run() {  # run SANITIZER SCRATCH
  echo "== swift test --sanitize=$1" >&2
  for product in lanyardd lanyardctl; do
    swift build --sanitize="$1" --scratch-path "$2" --product "$product" 2>&1 | grep -E "error|warning: .*(race|leak)" >&2 || true
  done
  set +e  # the status is judged below, with the log
  # As in scripts/test.sh: the suites that measure a peer's latency during an attack
  # (LoadSensitive) run after the rest, on a machine the other suites no longer load.
  local rc=0 pass
  : > "$2/sanitize.log"
  for pass in "--skip LoadSensitive" "--filter LoadSensitive"; do
    # Two tests at a time (Swift Testing's default is twice the cores): the sanitized
    # daemons and clients are several times slower, and four at once on two cores stretched
    # in-process calls past the suites' wall-clock windows (an idle timeout, a revocation wait).
    # shellcheck disable=SC2086  # the pass's two words
    SWT_EXPERIMENTAL_MAXIMUM_PARALLELIZATION_WIDTH=2 \
    LANYARD_BIN_DIR="$PWD/$2/debug" LANYARD_SANITIZER="$1" \
    TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
    ASAN_OPTIONS="halt_on_error=1 detect_leaks=${LANYARD_LEAKS:-1}" \
    LSAN_OPTIONS="suppressions=$PWD/scripts/lsan.supp" \
      swift test --disable-xctest --sanitize="$1" --scratch-path "$2" $pass 2>&1 | tee -a "$2/sanitize.log" | grep -a -E "Test run with|✘|WARNING: ThreadSanitizer|ERROR: (Address|Leak)Sanitizer|SUMMARY" >&2
    [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
  done
  set -e
  if [ "$rc" -ne 0 ] || grep -a -q -E "WARNING: ThreadSanitizer|ERROR: (Address|Leak)Sanitizer" "$2/sanitize.log"; then
    echo "sanitize $1: failed; the report is in $2/sanitize.log" >&2
    exit 1
  fi
  echo "sanitize $1: clean" >&2
}

case "$which" in
  thread)  run thread .build-tsan ;;
  address) run address .build-asan ;;
  all)     run thread .build-tsan; run address .build-asan ;;
  *) echo "usage: scripts/sanitize.sh [thread|address|all]" >&2; exit 2 ;;
esac
