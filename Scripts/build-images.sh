#!/usr/bin/env bash
# Builds SwiftMesh's OCI images offline, from nothing (no base image is pulled):
#   mesh-proxy       mesh-proxy, plus mesh-proxy-init and the iptables it runs (nft and legacy) beside it
#   mesh-controller  mesh-controller (identity, destination, injector)
#   mesh-mirror      mesh-mirror
#   meshctl          meshctl
# Each holds a release binary with the Swift runtime linked statically, the shared libraries `ldd` says it
# loads (glibc and friends), CA certificates, /etc/passwd and /etc/group with the user `swiftmesh` (uid 2102),
# USER 2102:2102, ENTRYPOINT and org.opencontainers.image.* labels. Needs umoci and skopeo (Debian packages).
#
# Usage: Scripts/build-images.sh [--skip-build] [--out DIR] [--registry REGISTRY]
#   --skip-build      use the binaries already in .build-release (from an earlier run)
#   --out DIR         where the OCI archives go (default .build-release/images/VERSION)
#   --registry REG    the registry named in the printed push commands (default ghcr.io/swiftmesh)
# Environment: SOURCE_URL (org.opencontainers.image.source), default https://github.com/swiftmesh/swiftmesh.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."

skip_build=false
out=""
registry="ghcr.io/swiftmesh"
while [ $# -gt 0 ]; do
  case "$1" in
    --skip-build) skip_build=true; shift ;;
    --out) out="$2"; shift 2 ;;
    --registry) registry="$2"; shift 2 ;;
    *) echo "build-images.sh: unknown argument '$1' (see the comment at the top of $0)" >&2; exit 2 ;;
  esac
done

for tool in umoci skopeo ldd strip; do
  command -v "$tool" >/dev/null || { echo "build-images.sh: $tool not found (apt-get install umoci skopeo binutils)" >&2; exit 1; }
done

# The package version: the one `meshctl install --version` defaults to.
version=$(sed -n 's/.*static let current = "\(.*\)".*/\1/p' Sources/MeshInstall/PackageVersion.swift)
[ -n "$version" ] || { echo "build-images.sh: no version in Sources/MeshInstall/PackageVersion.swift" >&2; exit 1; }
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ "$revision" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  revision="$revision-dirty"
fi
source_url="${SOURCE_URL:-https://github.com/swiftmesh/swiftmesh}"
created=$(git log -1 --format=%cI 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)
scratch=.build-release
out="${out:-$scratch/images/$version}"

products=(mesh-proxy mesh-proxy-init mesh-controller mesh-mirror meshctl)
if ! $skip_build; then
  # Static runtime, lean link, mesh-proxy's functions in the order it runs them (see the script).
  echo "== Scripts/build-release.sh ${products[*]}"
  Scripts/build-release.sh --scratch-path "$scratch" "${products[@]}"
fi
bin=$(swift build -c release --scratch-path "$scratch" --show-bin-path)
for product in "${products[@]}"; do
  [ -x "$bin/$product" ] || { echo "build-images.sh: $bin/$product missing (run without --skip-build)" >&2; exit 1; }
done

work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

# Copies FILE (following symlinks) to the same path under ROOT.
copy_into() {
  local root=$1 file=$2
  mkdir -p "$root$(dirname "$file")"
  cp -L "$file" "$root$file"
}

# Copies every shared library FILE loads, as `ldd` resolves it, and the dynamic loader, under ROOT.
copy_libraries() {
  local root=$1 file=$2 lib
  for lib in $(ldd "$file" | awk '/=> \// { print $3 } /^\t\/.*ld-linux/ { print $1 }'); do
    [ -e "$root$lib" ] || copy_into "$root" "$lib"
  done
}

# Installs a release binary, stripped, at /usr/local/bin/NAME with its libraries.
add_binary() {
  local root=$1 name=$2
  mkdir -p "$root/usr/local/bin"
  strip --strip-all -o "$root/usr/local/bin/$name" "$bin/$name"
  chmod 0755 "$root/usr/local/bin/$name"
  copy_libraries "$root" "$bin/$name"
}

# The files every image has: users, CA certificates, name service configuration, /tmp, and /run (where
# iptables-legacy takes its lock: mount an emptyDir there under a read-only root filesystem).
base_rootfs() {
  local root=$1
  mkdir -p "$root/etc/ssl/certs" "$root/tmp" "$root/run"
  chmod 1777 "$root/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nswiftmesh:x:2102:2102:swiftmesh:/nonexistent:/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nswiftmesh:x:2102:\n' >"$root/etc/group"
  printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
  cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
}

# iptables for mesh-proxy-init: the nft and legacy multi-call binaries under the names it runs
# (ip[6]tables-{nft,legacy}-{save,restore}), the extensions they load with dlopen (which ldd cannot see),
# and their libraries.
add_iptables() {
  local root=$1 multi variant family action extension
  for multi in xtables-nft-multi xtables-legacy-multi; do
    copy_into "$root" "/usr/sbin/$multi"
    copy_libraries "$root" "/usr/sbin/$multi"
  done
  for variant in nft legacy; do
    for family in iptables ip6tables; do
      for action in save restore; do
        ln -sf "xtables-$variant-multi" "$root/usr/sbin/$family-$variant-$action"
      done
      ln -sf "xtables-$variant-multi" "$root/usr/sbin/$family-$variant"
    done
  done
  for extension in /usr/lib/x86_64-linux-gnu/xtables/*.so; do
    copy_into "$root" "$extension"
    copy_libraries "$root" "$extension"
  done
}

# Makes IMAGE (an OCI archive tagged VERSION) from the root filesystem ROOT with ENTRYPOINT.
make_image() {
  local image=$1 root=$2 entrypoint=$3 description=$4
  local layout="$work/$image-layout" bundle="$work/$image-bundle"
  umoci init --layout "$layout"
  umoci new --image "$layout:$version"
  umoci unpack --image "$layout:$version" "$bundle" >/dev/null
  cp -a "$root/." "$bundle/rootfs/"
  umoci repack --image "$layout:$version" "$bundle"
  umoci config --image "$layout:$version" \
    --os linux --architecture amd64 \
    --config.user 2102:2102 \
    --config.entrypoint "$entrypoint" \
    --config.workingdir / \
    --config.env PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    --config.label "org.opencontainers.image.title=$image" \
    --config.label "org.opencontainers.image.description=$description" \
    --config.label "org.opencontainers.image.version=$version" \
    --config.label "org.opencontainers.image.revision=$revision" \
    --config.label "org.opencontainers.image.source=$source_url" \
    --config.label "org.opencontainers.image.created=$created" \
    --config.label "org.opencontainers.image.licenses=Apache-2.0" \
    --created "$created" --history.created_by "Scripts/build-images.sh"
  umoci gc --layout "$layout"
  rm -f "$out/$image-$version.tar"
  skopeo copy --quiet "oci:$layout:$version" "oci-archive:$out/$image-$version.tar:$version"
}

# The compressed size of IMAGE's layers and config, as a registry stores it.
compressed_size() {
  local archive=$1
  skopeo inspect --raw "oci-archive:$archive" |
    sed 's/,/\n/g' | sed -n 's/.*"size": *\([0-9]*\).*/\1/p' | awk '{ s += $1 } END { print s }'
}

build_image() {
  local image=$1 description=$2; shift 2
  local root="$work/$image-rootfs" binary
  base_rootfs "$root"
  for binary in "$@"; do add_binary "$root" "$binary"; done
  if [ "$image" = mesh-proxy ]; then add_iptables "$root"; fi
  make_image "$image" "$root" "/usr/local/bin/$1" "$description"
  local size
  size=$(compressed_size "$out/$image-$version.tar")
  printf '%-16s %s  %6.1f MB compressed\n' "$image" "$out/$image-$version.tar" "$(echo "$size" | awk '{ print $1 / 1000000 }')"
}

echo "== images $version (revision $revision) into $out"
build_image mesh-proxy "SwiftMesh data-plane proxy, with mesh-proxy-init" mesh-proxy mesh-proxy-init
build_image mesh-controller "SwiftMesh control plane: identity, destination, injector" mesh-controller
build_image mesh-mirror "SwiftMesh multi-cluster service mirror" mesh-mirror
build_image meshctl "SwiftMesh command-line tool" meshctl

echo
echo "Push them to your registry (skopeo logs in with: skopeo login REGISTRY):"
for image in mesh-proxy mesh-controller mesh-mirror meshctl; do
  echo "  skopeo copy oci-archive:$out/$image-$version.tar docker://$registry/$image:$version"
done
echo "then: meshctl install --image-registry $registry --version $version --issuer-dir ISSUER_DIR | kubectl apply -f -"
