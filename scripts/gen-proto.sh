#!/usr/bin/env bash
# Regenerates the committed protobuf code from proto/lanyard/v1/*.proto:
#   Swift -> Sources/LanyardWire/Generated   (protoc + protoc-gen-swift from swift-protobuf)
#   C     -> clients/c/gen                   (protoc-c)
#   Python -> clients/python/src/lanyard/v1  (protoc's own Python and .pyi output)
# Uses Debian's protoc/protoc-c; builds only the protoc-gen-swift product (about a minute).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_debs protobuf-compiler protobuf-c-compiler libprotobuf-c-dev

swift build --product protoc-gen-swift -c release --scratch-path .build-protoc >/dev/null
plugin="$(swift build --product protoc-gen-swift -c release --scratch-path .build-protoc --show-bin-path)/protoc-gen-swift"

protos=(proto/lanyard/v1/*.proto)
py=clients/python/src/lanyard/v1
rm -rf Sources/LanyardWire/Generated clients/c/gen "$py"
mkdir -p Sources/LanyardWire/Generated clients/c/gen
protoc -I proto --plugin=protoc-gen-swift="$plugin" \
  --swift_opt=Visibility=Public --swift_opt=FileNaming=PathToUnderscores \
  --swift_out=Sources/LanyardWire/Generated "${protos[@]}"
protoc-c -I proto --c_out=clients/c/gen "${protos[@]}"
# The proto package lanyard.v1 is the Python subpackage lanyard.v1, so the generated
# imports (`from lanyard.v1 import common_pb2`) resolve inside the installed package.
mkdir -p "$py"
protoc -I proto --python_out=clients/python/src --pyi_out=clients/python/src "${protos[@]}"
echo '"""Generated protobuf code for the lanyard.v1 wire protocol (scripts/gen-proto.sh)."""' >"$py/__init__.py"
echo "generated: $(ls Sources/LanyardWire/Generated clients/c/gen/lanyard/v1 "$py" | tr '\n' ' ')"
