#!/usr/bin/env bash
# Regenerates the committed Swift code of the gRPC APIs in Protos/ into Sources/MeshAPI/Generated.
# Needs protoc (Debian: protobuf-compiler); the plugins are built from the package's own dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler" >&2; exit 1; }
swift build --product protoc-gen-swift
swift build --product protoc-gen-grpc-swift-2
bin=$(cd "$(swift build --show-bin-path)" && pwd)
out=Sources/MeshAPI/Generated
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# The well-known types (google/protobuf/duration.proto): Debian's libprotobuf-dev, else swift-protobuf's copy.
wkt=/usr/include
[ -f "$wkt/google/protobuf/duration.proto" ] || wkt=.build/checkouts/swift-protobuf/Sources/protobuf/include
protoc --plugin=protoc-gen-swift="$bin/protoc-gen-swift" \
  --plugin=protoc-gen-grpc-swift-2="$bin/protoc-gen-grpc-swift-2" \
  -I Protos -I "$wkt" \
  --swift_out=Visibility=Public,UseAccessLevelOnImports=true:"$tmp" \
  --grpc-swift-2_out=Visibility=Public,UseAccessLevelOnImports=true:"$tmp" \
  Protos/*.proto
rm -rf "$out"; mkdir -p "$out"; cp "$tmp"/*.swift "$out"/
echo "generated: $(ls "$out" | tr '\n' ' ')"
