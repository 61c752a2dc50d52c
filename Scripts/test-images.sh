#!/usr/bin/env bash
# Checks the OCI archives Scripts/build-images.sh wrote: each image's config (user 2102:2102, entrypoint,
# org.opencontainers.image.* labels), then, unpacked with umoci, its binaries run `--help` under chroot as
# the image's user, with nothing but the image's files (and /proc, as a runtime mounts it). mesh-proxy's mesh-proxy-init also installs and
# removes its rules with the image's iptables (nft and legacy) in a fresh network namespace, as root, as the
# init container runs. Needs root (chroot, unshare), umoci, skopeo and jq.
#
# Usage: Scripts/test-images.sh [DIR]   (default .build-release/images/VERSION)
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."

version=$(sed -n 's/.*static let current = "\(.*\)".*/\1/p' Sources/MeshInstall/PackageVersion.swift)
dir="${1:-.build-release/images/$version}"
for tool in umoci skopeo jq chroot ip mount; do
  command -v "$tool" >/dev/null || { echo "test-images.sh: $tool not found" >&2; exit 1; }
done
work=$(mktemp -d)
mounted=()
netns="swiftmesh-images-$$"
cleanup() {
  for mountpoint in "${mounted[@]}"; do umount "$mountpoint" 2>/dev/null || true; done
  ip netns del "$netns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
failures=0
fail() { echo "FAIL $*" >&2; failures=$((failures + 1)); }
pass() { echo "ok   $*"; }

# expect IMAGE WHAT ACTUAL EXPECTED
expect() {
  if [ "$3" = "$4" ]; then pass "$1: $2 $3"; else fail "$1: $2 is '$3', expected '$4'"; fi
}

# Runs the command under chroot ROOT as USER (uid:gid) and checks it exits 0 printing USAGE.
runs_help() {
  local image=$1 root=$2 user=$3; shift 3
  local output
  if output=$(chroot --userspec="$user" "$root" "$@" --help 2>&1) && grep -q "USAGE:" <<<"$output"; then
    pass "$image: $* --help as $user"
  else
    fail "$image: $* --help as $user: $(head -c 400 <<<"$output")"
  fi
}

# mesh-proxy-init, run from ROOT as root in a fresh network namespace with each iptables backend, installs
# its chains (as the image's iptables-save shows them) and removes them again.
proxy_init_applies() {
  local root=$1 mode output
  for mode in nft legacy; do
    ip netns add "$netns"
    if output=$(ip netns exec "$netns" chroot "$root" /usr/local/bin/mesh-proxy-init --iptables-mode "$mode" 2>&1) \
      && output=$(ip netns exec "$netns" chroot "$root" "/usr/sbin/iptables-$mode-save" -t nat 2>&1) \
      && grep -q -- "-A SWIFTMESH_INIT_OUTPUT" <<<"$output" \
      && ip netns exec "$netns" chroot "$root" /usr/local/bin/mesh-proxy-init --iptables-mode "$mode" --cleanup >/dev/null 2>&1 \
      && ! ip netns exec "$netns" chroot "$root" "/usr/sbin/iptables-$mode-save" -t nat 2>&1 | grep -q SWIFTMESH; then
      pass "mesh-proxy: mesh-proxy-init --iptables-mode $mode applies and cleans up with the image's iptables"
    else
      fail "mesh-proxy: mesh-proxy-init --iptables-mode $mode: $(head -c 600 <<<"$output")"
    fi
    ip netns del "$netns"
  done
}

check_image() {
  local image=$1; shift
  local archive="$dir/$image-$version.tar"
  [ -f "$archive" ] || { fail "$image: no $archive (run Scripts/build-images.sh)"; return; }
  local config
  config=$(skopeo inspect --config "oci-archive:$archive")
  expect "$image" user "$(jq -r .config.User <<<"$config")" "2102:2102"
  expect "$image" entrypoint "$(jq -c .config.Entrypoint <<<"$config")" "[\"/usr/local/bin/$1\"]"
  expect "$image" version "$(jq -r '.config.Labels["org.opencontainers.image.version"]' <<<"$config")" "$version"
  local revision source
  revision=$(jq -r '.config.Labels["org.opencontainers.image.revision"] // ""' <<<"$config")
  source=$(jq -r '.config.Labels["org.opencontainers.image.source"] // ""' <<<"$config")
  if [[ "$revision" =~ ^[0-9a-f]{40}(-dirty)?$ ]]; then pass "$image: revision $revision"; else fail "$image: revision '$revision'"; fi
  if [[ "$source" =~ ^https:// ]]; then pass "$image: source $source"; else fail "$image: source '$source'"; fi

  local layout="$work/$image-layout" bundle="$work/$image-bundle"
  skopeo copy --quiet "oci-archive:$archive" "oci:$layout:$version"
  umoci unpack --image "$layout:$version" "$bundle" >/dev/null
  local root="$bundle/rootfs"
  # As a container runtime does: /proc (the Swift runtime reads its arguments from /proc/self/cmdline).
  mkdir -p "$root/proc"
  mount -t proc proc "$root/proc"
  mounted+=("$root/proc")
  expect "$image" "passwd entry" "$(grep '^swiftmesh:' "$root/etc/passwd" | cut -d: -f3,4)" "2102:2102"
  [ -s "$root/etc/ssl/certs/ca-certificates.crt" ] && pass "$image: CA certificates" || fail "$image: no CA certificates"
  local binary
  for binary in "$@"; do runs_help "$image" "$root" 2102:2102 "/usr/local/bin/$binary"; done
  if [ -e "$root/bin/sh" ] || [ -e "$root/usr/bin/sh" ]; then fail "$image: holds a shell"; else pass "$image: no shell"; fi
  if [ "$image" = mesh-proxy ]; then proxy_init_applies "$root"; fi
  echo "     $image: $(du -shx "$root" | cut -f1) unpacked, $(find "$root" -xdev -type f | wc -l) files"
}

check_image mesh-proxy mesh-proxy mesh-proxy-init
check_image mesh-controller mesh-controller
check_image mesh-mirror mesh-mirror
check_image meshctl meshctl

if [ "$failures" -gt 0 ]; then
  echo "test-images.sh: $failures check(s) failed" >&2
  exit 1
fi
echo "test-images.sh: all images OK"
