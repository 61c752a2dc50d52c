#!/usr/bin/env bash
# Runs README.md's "On a real cluster" section: its ```sh blocks, in order, in one bash session, against two
# embedded Kubernetes API servers (`meshctl dev kube-api`) standing in for the clusters `east` and `west`
# (kubectl contexts of those names). Skips the push (a block naming docker://: it needs a registry). Stands
# in for the cloud's load balancer by publishing an address for west's gateway before the link. Then checks
# what the section promises: the control plane's objects in both clusters, the annotated namespace, the Link.
#
#   Scripts/readme-real-cluster.sh          (after Scripts/build-images.sh, which the section runs again)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

work=$(mktemp -d "${TMPDIR:-/tmp}/readme-real-cluster.XXXXXX")
pids=()
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$status" -eq 0 ]; then rm -rf "$work"; echo "readme-real-cluster: OK"; else
    echo "readme-real-cluster: FAILED (exit $status); files in $work" >&2
    for log in "$work"/*.log; do echo "--- $log" >&2; tail -n 15 "$log" >&2; done
  fi
}
trap cleanup EXIT

# The section's blocks, one file each.
awk -v dir="$work" '
  /^## On a real cluster/ { section = 1; next }
  /^## / && section        { section = 0 }
  section && /^```sh[[:space:]]*$/ { inside = 1; block++; next }
  inside && /^```/         { inside = 0; next }
  inside                   { print > (dir "/block-" block ".sh") }
' README.md
blocks=$(ls "$work"/block-*.sh 2>/dev/null | wc -l)
[ "$blocks" -gt 0 ] || { echo "readme-real-cluster: no sh blocks in README.md's \"On a real cluster\"" >&2; exit 1; }

# Two clusters: the embedded API server, its kubeconfig's names changed to the cluster's.
meshctl_debug=$(swift build --show-bin-path)/meshctl
[ -x "$meshctl_debug" ] || swift build --product meshctl
for cluster in east west; do
  "$meshctl_debug" dev kube-api --listen 127.0.0.1:0 --kubeconfig-out "$work/$cluster.raw" >"$work/$cluster-api.log" 2>&1 &
  pids+=($!)
done
for cluster in east west; do
  for _ in $(seq 1 300); do [ -s "$work/$cluster.raw" ] && break; sleep 0.1; done
  [ -s "$work/$cluster.raw" ] || { echo "readme-real-cluster: the $cluster API server wrote no kubeconfig" >&2; exit 1; }
  sed "s/swiftmesh-local/$cluster/g" "$work/$cluster.raw" >"$work/$cluster.kubeconfig"
done
export KUBECONFIG="$work/east.kubeconfig:$work/west.kubeconfig"

# The section, from a scratch directory (it writes ca/, issuer-*/, west-remote.kubeconfig), with the
# repository's paths as the README gives them.
mkdir -p "$work/run"
ln -s "$root/Scripts" "$work/run/Scripts"
ln -s "$root/.build-release" "$work/run/.build-release"
cd "$work/run"
for n in $(seq 1 "$blocks"); do
  block="$work/block-$n.sh"
  if grep -q 'docker://' "$block"; then
    echo "=== readme-real-cluster: block $n of $blocks: the push, skipped" >&2
    continue
  fi
  if grep -q 'multicluster link' "$block"; then
    # What west's cloud load balancer would do: publish the gateway's address.
    kubectl --context west -n swiftmesh-multicluster annotate --overwrite service swiftmesh-gateway \
      mirror.swiftmesh.io/gateway-addresses=203.0.113.10
  fi
  echo "=== readme-real-cluster: block $n of $blocks" >&2
  # shellcheck disable=SC1090
  source "$block"
done

# What the section promises.
for cluster in east west; do
  deployments=$(kubectl --context $cluster get deployments -A -o name | sort | tr '\n' ' ')
  expected="deployment.apps/swiftmesh-destination deployment.apps/swiftmesh-gateway deployment.apps/swiftmesh-identity deployment.apps/swiftmesh-injector deployment.apps/swiftmesh-mirror "
  [ "$deployments" = "$expected" ] || { echo "readme-real-cluster: $cluster has $deployments" >&2; exit 1; }
  image=$(kubectl --context $cluster -n swiftmesh get deployment swiftmesh-identity -o jsonpath='{.spec.template.spec.containers[0].image}')
  [ "$image" = "$REGISTRY/mesh-controller:0.1.0" ] || { echo "readme-real-cluster: $cluster identity image $image" >&2; exit 1; }
  kubectl --context $cluster get mutatingwebhookconfiguration swiftmesh-proxy-injector -o name >/dev/null
done
[ "$(kubectl --context east get namespace default -o jsonpath='{.metadata.annotations.swiftmesh\.io/inject}')" = enabled ]
kubectl --context east -n swiftmesh-multicluster get link west -o jsonpath='{.spec.gatewayAddresses}' | grep -q 203.0.113.10
