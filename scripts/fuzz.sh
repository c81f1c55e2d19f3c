#!/usr/bin/env bash
# Runs the libFuzzer targets for a while each (default 600 s):
#   dispatch  bytes → frame decoder → protobuf → the daemon's request dispatch (Swift)
#   policy    bytes → the policy parser (Swift)
#   response  bytes → the C client's response path (protobuf-c)
# usage: scripts/fuzz.sh [dispatch|policy|response|all] [SECONDS]
# Builds in .build-fuzz with `--sanitize=fuzzer --sanitize=address`. The committed seeds
# (fuzz/corpus/*) are copied to .build-fuzz/corpus/*, where the fuzzer adds what it
# finds; crashes, leaks and timeouts are written to .build-fuzz/artifacts/ and fail the run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_debs "${LANYARD_DEBS[@]}"
which="${1:-all}"
seconds="${2:-600}"
scratch=.build-fuzz
mkdir -p "$scratch/artifacts"

build_swift() {  # build_swift TARGET
  # SwiftPM 6.3 passes --sanitize=fuzzer to the link only: -Xswiftc puts the coverage
  # instrumentation into every Swift module too (without it libFuzzer runs blind).
  LANYARD_FUZZ=1 swift build -q --scratch-path "$scratch" --product "$1" --sanitize=fuzzer --sanitize=address \
    -Xswiftc -sanitize=fuzzer 2>&1 \
    | { grep -v -e "Cannot export local symbol" -e "unhandled; explicitly declare" -e "CMakeLists.txt" >&2 || true; }
  if ! objdump -h "$scratch/debug/$1" | grep -q sancov_cntrs; then
    echo "fuzz: $scratch/debug/$1 has no coverage instrumentation; the fuzzer would run blind" >&2
    exit 1
  fi
  echo "$scratch/debug/$1"
}

build_c() {
  local out="$scratch/fuzz_response"
  /opt/swift/usr/bin/clang -g -O1 -fsanitize=fuzzer,address -D_GNU_SOURCE -Iclients/c -Iclients/c/gen \
    $(pkg-config --cflags libprotobuf-c) fuzz/c/fuzz_response.c clients/c/lanyard.c clients/c/gen/lanyard/v1/*.c \
    $(pkg-config --libs libprotobuf-c) -o "$out"
  echo "$out"
}

run() {  # run NAME BINARY MAX_LEN
  local corpus="$scratch/corpus/$1"
  mkdir -p "$corpus"
  cp -n fuzz/corpus/"$1"/* "$corpus"/
  echo "== fuzz $1 for $seconds s" >&2
  ASAN_OPTIONS=detect_leaks=1 "$2" "$corpus" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=8192 \
    -max_len="$3" -print_final_stats=1 -artifact_prefix="$scratch/artifacts/$1-" 2>&1 | tee "$scratch/$1.log" | grep -E '^(#[0-9]+ +(INITED|DONE)|==|SUMMARY|stat::)' >&2
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || { echo "fuzz $1: the fuzzer stopped with $rc; see $scratch/$1.log and $scratch/artifacts/" >&2; exit 1; }
}

case "$which" in
  dispatch|all) run dispatch "$(build_swift FuzzDispatch)" 4096 ;;&
  policy|all)   run policy "$(build_swift FuzzPolicy)" 8192 ;;&
  response|all) run response "$(build_c)" 4096 ;;
  dispatch|policy) ;;
  *) echo "usage: scripts/fuzz.sh [dispatch|policy|response|all] [SECONDS]" >&2; exit 2 ;;
esac
echo "fuzzing done: no crash, leak or timeout" >&2
