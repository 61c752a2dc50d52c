#!/usr/bin/env bash
# Builds release products the way they ship (the images, the load benchmark): the Swift runtime linked
# statically, and linked lean, which is most of what an idle mesh-proxy's memory is:
#   - every function in its own section (Swift and C), linked by lld in the order of Scripts/mesh-proxy.order:
#     the code a proxy runs (start-up and the request paths, about 3 MB) sits together at the front of the
#     binary instead of being spread over its 30 MB, where the kernel maps 64 KB around every page touched;
#   - no exported dynamic symbols (the static runtime's link arguments export every symbol, which the loader
#     and dladdr then read at start-up);
#   - packed relative relocations (DT_RELR): 26 KB instead of 3.2 MB of .rela.dyn read at start-up.
# And without dynamic exclusivity checks (`-enforce-exclusivity=unchecked`), as the Vapor and Hummingbird
# templates build their release images: the compiler's static checks stay, the runtime's bookkeeping of every
# class-property and global access goes. Nearly all of those checks are in SwiftNIO's hot paths (ByteBuffer
# writes, the channel's lifecycle), 12 % of the instructions a proxied request costs
# (Benchmarks/load/instructions.sh). Debug builds, and so the test suite, keep checking.
# With cross-module optimization (`-cross-module-optimization`): a module's functions, generic or not, can be
# specialised and inlined in the modules that call them, not only those marked `@inlinable`. swift-nio's
# `HTTPHeaders` iteration, its heads' getters and the balancer's pick are then compiled into the proxy's
# request path: a request through the mTLS pair costs 3.2 % (client) and 2.6 % (server) fewer instructions.
# Measured with `ONLY=idle bash Benchmarks/load/run.sh`: an idle mesh-proxy 39.5 MB (dynamic runtime) ->
# 35 MB (static) -> 30 MB (lld, no exports, RELR) -> about 23 MB (ordered).
#
# Usage: Scripts/build-release.sh [--scratch-path DIR] PRODUCT...   (default scratch path .build-release)
# Prints nothing but the build's own output; the binaries are in `swift build -c release --scratch-path DIR
# --show-bin-path`. Scripts/order-file.sh writes Scripts/mesh-proxy.order again after the code changed (a stale
# order costs memory, never correctness: names it lists that no longer exist are ignored).
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."

scratch=.build-release
if [ "${1:-}" = "--scratch-path" ]; then scratch=$2; shift 2; fi
[ $# -gt 0 ] || { echo "usage: Scripts/build-release.sh [--scratch-path DIR] PRODUCT..." >&2; exit 2; }

order="$PWD/Scripts/mesh-proxy.order"
flags=(
  -c release --static-swift-stdlib --scratch-path "$scratch"
  -Xswiftc -Xfrontend -Xswiftc -function-sections -Xcc -ffunction-sections
  -Xswiftc -enforce-exclusivity=unchecked -Xswiftc -cross-module-optimization
  -Xswiftc -use-ld=lld -Xlinker --no-export-dynamic -Xlinker -z -Xlinker pack-relative-relocs
  -Xlinker "--symbol-ordering-file=$order" -Xlinker --no-warn-symbol-ordering
)
bin=$(swift build "${flags[@]}" --show-bin-path)
for product in "$@"; do
  # The order file is a linker input SwiftPM does not track: a binary older than it is linked again.
  if [ -e "$bin/$product" ] && [ "$order" -nt "$bin/$product" ]; then rm -f "$bin/$product"; fi
  swift build "${flags[@]}" --product "$product"
done
