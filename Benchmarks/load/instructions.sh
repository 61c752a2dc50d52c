#!/usr/bin/env bash
# User-space instructions per proxied request, counted exactly by valgrind's callgrind: the number to judge a
# hot-path change by (repeatable for the same binary and workload, whatever else the machine does; RPS is not).
#
# The load benchmark's cluster is brought up and held (`ONLY=idle HOLD=...`). Then, for each path, the proxies
# it crosses are restarted under callgrind with their own arguments, warmed up with WARMUP requests, their
# counters zeroed (`callgrind_control -z`), driven with REQUESTS keep-alive requests on CONCURRENCY (8)
# connections (hey), and dumped (`callgrind_control -d`). Prints instructions per request per proxy, and with
# TOP=N the N functions that cost most for each (their own instructions, not their callees').
#
#   bash Benchmarks/load/instructions.sh                  # plaintext (one proxy) and the mTLS pair
#   PATHS=plain bash Benchmarks/load/instructions.sh      # only the plaintext proxy
#   TOP=25 bash Benchmarks/load/instructions.sh           # ... and where the instructions go
#   MESH_PROXY=PATH bash Benchmarks/load/instructions.sh  # another mesh-proxy binary (A/B)
#   KEEP=DIR ...                                          # keeps the callgrind outputs in DIR
#   CONCURRENCY=32 ...                                    # hey connections (default 8)
#   RATE=2 CONCURRENCY=10 ...                             # each connection at most RATE requests/s (hey -q):
#                                                         # the work a request costs when it is not batched
#
# Needs valgrind plus the load benchmark's tools. About two minutes per path on two cores.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/../.."
command -v valgrind >/dev/null || { echo "instructions.sh: valgrind not found (apt-get install valgrind)" >&2; exit 1; }
command -v callgrind_control >/dev/null || { echo "instructions.sh: callgrind_control not found" >&2; exit 1; }
REQUESTS=${REQUESTS:-2000}
WARMUP=${WARMUP:-500}
PATHS=${PATHS:-plain pair}

if [ -z "${MESH_PROXY:-}" ]; then
  build_log=$(mktemp)
  Scripts/build-release.sh mesh-proxy meshctl mesh-controller >"$build_log" 2>&1 || {
    cat "$build_log" >&2; echo "instructions.sh: the release build failed" >&2; exit 1; }
  rm -f "$build_log"
  MESH_PROXY=$(swift build -c release --static-swift-stdlib --scratch-path .build-release --show-bin-path)/mesh-proxy
fi
# shellcheck source=Benchmarks/load/callgrind.sh
source Benchmarks/load/callgrind.sh
callgrind_cluster "$MESH_PROXY"

# The TOP functions of a callgrind dump by their own instructions per request, names demangled.
top() {
  python3 - "$1" "$SENT" "$TOP" <<'PY' | swift demangle --simplified | cut -c1-160
import collections, re, sys
path, requests, top = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
names, cost, fn, skip = {}, collections.Counter(), None, False
for line in open(path, errors="replace"):
    m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
    if m:
        kind, ident, name = m.groups()
        if name: names[ident] = name
        if kind == "fn": fn = names.get(ident)
        continue
    if line.startswith("calls="):
        skip = True  # the next cost line is the call's inclusive cost
        continue
    if line[:1].isdigit() or line[:1] in "+-*":
        if skip: skip = False; continue
        parts = line.split()
        if fn and len(parts) > 1 and parts[1].isdigit(): cost[fn] += int(parts[1])
for name, value in cost.most_common(top):
    print(f"{value / requests:8.0f}  {name}")
PY
}
# hey on 8 keep-alive connections; the measured run must answer every request with 200 (the warm-up, where a
# proxy under callgrind starts slowly, need not).
load() { # host requests [warmup]
  local c=${CONCURRENCY:-8}
  local out; out=$(timeout 600 hey -n "$2" -c "$c" ${RATE:+-q "$RATE"} -host "$1" http://127.0.0.1:14140/)
  local ok; ok=$(awk '$1 == "[200]" {print $2}' <<<"$out")
  # hey gives each of its c workers n / c requests (whole numbers): n - n % c in all.
  local sent=$(( $2 / c * c ))
  [ "${ok:-0}" = "$sent" ] || [ -n "${3:-}" ] || {
    echo "instructions.sh: only ${ok:-0} of $sent requests answered 200:" >&2; sed -n '/Status code/,$p' <<<"$out" >&2; exit 1; }
  SENT=$sent
}
measure() { # label host admin...
  local label=$1 host=$2; shift 2
  local admin
  for admin in "$@"; do trace "$admin"; done
  load "$host" "$WARMUP" warmup
  for admin in "$@"; do callgrind_control -z "${traced[$admin]}" >/dev/null 2>&1; done
  load "$host" "$REQUESTS"
  for admin in "$@"; do callgrind_control -d "${traced[$admin]}" >/dev/null 2>&1; done
  for admin in "$@"; do
    local dump; dump=$(ls -t "$work/$admin.callgrind".* 2>/dev/null | head -1)
    [ -n "$dump" ] || { echo "instructions.sh: no callgrind dump for admin port $admin" >&2; exit 1; }
    local total; total=$(awk '/^summary:/ {print $2}' "$dump")
    local role; case $admin in 14190) role=client;; 14191) role=server;; *) role=$admin;; esac
    printf '%-24s %-7s %8.0f instructions per request\n' "$label" "$role" "$(awk -v t="$total" -v n="$SENT" 'BEGIN { print t / n }')"
    [ -n "${TOP:-}" ] && top "$dump" | sed 's/^/    /'
    mv "$dump" "$work/$label-$admin.callgrind" 2>/dev/null || true
  done
  for admin in "$@"; do untrace "$admin"; done
}
for path in $PATHS; do
  case $path in
    plain) measure plain plain.default.svc.cluster.local 14190 ;;
    pair) measure pair backend.default.svc.cluster.local 14190 14191 ;;
    *) echo "instructions.sh: unknown path $path (plain, pair)" >&2; exit 2 ;;
  esac
done
