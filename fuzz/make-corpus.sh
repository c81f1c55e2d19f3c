#!/usr/bin/env bash
# Encodes the seed corpus from its text form (fuzz/seeds/*.txt) with Debian's protoc and
# writes fuzz/corpus/{dispatch,response,policy}/. The output is committed; run this again
# after changing the seeds or the protocol.
set -euo pipefail
cd "$(dirname "$0")/.."
out=fuzz/corpus
rm -rf "$out" && mkdir -p "$out/dispatch" "$out/response" "$out/policy"

# frame FILE: a 4-byte big-endian length, then the body.
frame() { python3 -c 'import sys; b=open(sys.argv[1],"rb").read(); sys.stdout.buffer.write(len(b).to_bytes(4,"big")+b)' "$1"; }

encode() {  # encode MESSAGE SEEDS DIR NAME PREFIX
  local n=0 tmp; tmp=$(mktemp)
  while IFS= read -r line; do
    [[ -z "$line" || "$line" == \#* ]] && continue
    n=$((n + 1))
    printf '%s\n' "$line" | protoc -Iproto --encode="$1" proto/lanyard/v1/agent.proto > "$tmp"
    { printf "$5"; frame "$tmp"; } > "$3/$4-$(printf %02d $n)"
  done < "$2"
  rm -f "$tmp"
}
# Dispatch inputs start with a caller byte (even: the registered agent, odd: a stranger).
encode lanyard.v1.Request fuzz/seeds/requests.txt "$out/dispatch" agent '\x00'
encode lanyard.v1.Request <(grep -v '^#' fuzz/seeds/requests.txt | head -3) "$out/dispatch" stranger '\x01'
for f in "$out"/dispatch/agent-0[2-4]; do cat "$f" <(tail -c +2 "$out/dispatch/agent-07") > "$f-pipelined"; done
encode lanyard.v1.Response fuzz/seeds/responses.txt "$out/response" response ''
cp examples/policy.yaml "$out/policy/example.yaml"
cp fuzz/seeds/*.yaml "$out/policy/"
echo "corpus: $(ls "$out/dispatch" | wc -l) dispatch, $(ls "$out/response" | wc -l) response, $(ls "$out/policy" | wc -l) policy inputs"
