# Sourced by Benchmarks/load/instructions.sh and Scripts/order-file.sh: holds the load benchmark's cluster
# (`ONLY=idle HOLD=...`) with a copy of a mesh-proxy binary, and restarts its proxies under valgrind's
# callgrind and back, by admin port (14190 client, 14191 server, 14193 gateway).
#
#   callgrind_cluster BIN        # $work: a temporary folder, cleaned up on exit (KEEP=DIR keeps *.callgrind)
#   trace ADMIN [VALGRIND-ARG...]  # the proxy restarted under callgrind, output $work/ADMIN.callgrind
#   untrace ADMIN                # stopped (callgrind writes its last dump) and started natively again

work=$(mktemp -d)
hold_pid=""
declare -A traced=() args_of=()
cleanup() {
  [ -n "$hold_pid" ] && kill "$hold_pid" 2>/dev/null || true
  pkill -f -- "$work/mesh-proxy" 2>/dev/null || true
  wait 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP"; cp "$work"/*.callgrind "$KEEP"/ 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

ready() { for _ in $(seq 1 600); do curl -sf -o /dev/null "http://127.0.0.1:$1/ready" && return 0; sleep 0.2; done; return 1; }

callgrind_cluster() {
  # valgrind cannot read lld's DWARF 5: a copy without debug information (same symbols) runs.
  objcopy --strip-debug "$1" "$work/mesh-proxy"
  # RATE is the caller's (instructions.sh: requests/s a connection), not run.sh's fixed rate: not passed on.
  env -u RATE MESH_PROXY="$work/mesh-proxy" ONLY=idle HOLD=1800 bash Benchmarks/load/run.sh >"$work/hold.log" 2>&1 &
  hold_pid=$!
  for _ in $(seq 1 300); do grep -q "^holding" "$work/hold.log" && break; sleep 1; done
  grep -q "^holding" "$work/hold.log" || { cat "$work/hold.log" >&2; exit 1; }
}

trace() {
  local admin=$1 pid; shift
  pid=$(pgrep -f -- "$work/mesh-proxy .*--admin 127.0.0.1:$admin" | head -1)
  [ -n "$pid" ] || { echo "${0##*/}: no proxy with admin port $admin" >&2; exit 1; }
  mapfile -d '' args < <(tail -z -n +2 "/proc/$pid/cmdline")
  args_of[$admin]=$(printf '%q ' "${args[@]}")
  kill "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  valgrind --tool=callgrind --dump-instr=no -q "$@" --callgrind-out-file="$work/$admin.callgrind" \
    "$work/mesh-proxy" "${args[@]}" 2>"$work/$admin.log" &
  traced[$admin]=$!
  ready "$admin" || { echo "${0##*/}: the proxy under callgrind did not get ready" >&2; cat "$work/$admin.log" >&2; exit 1; }
}

untrace() {
  local admin=$1
  kill "${traced[$admin]}"; wait "${traced[$admin]}" 2>/dev/null || true
  eval "\"$work/mesh-proxy\" ${args_of[$admin]} 2>>\"$work/$admin.log\" &"
  ready "$admin"
}
