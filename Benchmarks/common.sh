# Shared by Benchmarks/load/run.sh and Benchmarks/soak/run.sh (sourced from the repository's root, BUILD set):
#   require_tools TOOL...      exits 1 naming the first one missing
#   build_mesh                 builds meshctl, mesh-controller and mesh-proxy (-c $BUILD) and sets BIN to their folder;
#                              SCRATCH names a build directory of their own (--scratch-path); a release build is the
#                              shipped one (Scripts/build-release.sh), in SCRATCH or .build-release
#   W                          a scratch folder, removed on exit with every process started by `start`
#   start CMD...               runs CMD in the background, stopped on exit
#   wait_http URL [TRIES]      waits (TRIES x 50 ms, default $WAIT_TRIES or 200) until URL answers, else exits 1
#   proxy NAME ACCOUNT OUTBOUND INBOUND ADMIN APP
#                              starts a mesh-proxy for the service account ACCOUNT of namespace default (token in
#                              $W/ACCOUNT.token, anchor $W/ca/ca.crt, control plane at $IDENTITY_SERVER and
#                              $DESTINATION), loopback ports as given, its log in $W/NAME.log
require_tools() {
  for tool in "$@"; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || { echo "missing $tool (apt-get install it)" >&2; exit 1; }
  done
}
build_mesh() {
  if [ "$BUILD" = release ]; then
    # As the images ship them: static runtime, lean link, mesh-proxy's functions in the order it runs them.
    Scripts/build-release.sh --scratch-path "${SCRATCH:-.build-release}" meshctl mesh-controller mesh-proxy >/dev/null
    BIN=$(cd "$(swift build -c release --scratch-path "${SCRATCH:-.build-release}" --show-bin-path)" && pwd)
    return
  fi
  local scratch_args=()
  [ -n "${SCRATCH:-}" ] && scratch_args=(--scratch-path "$SCRATCH")
  for product in meshctl mesh-controller mesh-proxy; do
    swift build -c "$BUILD" "${scratch_args[@]}" --product "$product" >/dev/null
  done
  BIN=$(cd "$(swift build -c "$BUILD" "${scratch_args[@]}" --show-bin-path)" && pwd)
}
W=$(mktemp -d); chmod 755 "$W"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
# A signal ends the script through the EXIT trap, so what it started is stopped too (not left running).
trap 'exit 143' TERM
trap 'exit 130' INT
start() { "$@" & PIDS+=($!); }
wait_http() {
  for _ in $(seq 1 "${2:-${WAIT_TRIES:-200}}"); do curl -s -o /dev/null "$1" && return 0; sleep 0.05; done
  echo "not up: $1" >&2; exit 1
}
proxy() {
  start "${MESH_PROXY:-$BIN/mesh-proxy}" --identity "$2.default.serviceaccount.identity.swiftmesh.cluster.local" \
    --identity-server "$IDENTITY_SERVER" --ca "$W/ca/ca.crt" --token "$W/$2.token" --destination "$DESTINATION" \
    --outbound "127.0.0.1:$3" --inbound "127.0.0.1:$4" --admin "127.0.0.1:$5" --app "127.0.0.1:$6" \
    ${EVENT_LOOPS:+--event-loops "$EVENT_LOOPS"} --log-level warning 2>"$W/$1.log"
}
