#!/usr/bin/env bash
# Builds the DocC catalogs of the libraries a user embeds first (Sources/<Target>/<Target>.docc) with
# swift-docc-plugin, and fails on any DocC warning (a symbol link that resolves to nothing, a missing article).
# The archives land in .build/plugins/Swift-DocC/outputs/<Target>.doccarchive.
#
#   Scripts/build-docs.sh                       # every catalog below
#   Scripts/build-docs.sh MeshProxy MeshTLS     # some
set -euo pipefail
cd "$(dirname "$0")/.."
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(MeshProxy MeshBalancer MeshTLS MeshIdentity MeshMulticluster)
args=()
for target in "${targets[@]}"; do
  [ -d "Sources/$target/$target.docc" ] || { echo "build-docs: Sources/$target/$target.docc does not exist" >&2; exit 1; }
  args+=(--target "$target")
done
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! swift package generate-documentation "${args[@]}" --warnings-as-errors >"$log" 2>&1; then
  grep -E "warning|error" "$log" | sort -u | head -50 >&2 || true
  tail -5 "$log" >&2
  echo "build-docs: FAILED for ${targets[*]}" >&2
  exit 1
fi
grep -E "^Generated|doccarchive" "$log" | sort -u || true
echo "build-docs: ${#targets[@]} catalogs, no warnings"
