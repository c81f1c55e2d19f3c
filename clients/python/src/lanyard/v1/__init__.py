"""Generated protobuf code for the lanyard.v1 wire protocol (scripts/gen-proto.sh)."""
