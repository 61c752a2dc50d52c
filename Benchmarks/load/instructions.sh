#!/usr/bin/env bash
# User-space instructions per proxied request, counted exactly by valgrind's callgrind: the number to judge a
# hot-path change by (repeatable for the same binary and workload, whatever else the machine does; RPS is not).
#
# The load benchmark's cluster is brought up and held (`ONLY=idle HOLD=...`). Then, for each path, the proxies
# it crosses are restarted under callgrind with their own arguments, warmed up with WARMUP requests, their
# counters zeroed (`callgrind_control -z`), driven with REQUESTS keep-alive requests on CONCURRENCY (8)
# connections (hey), and dumped (`callgrind_control -d`). Prints instructions per request per proxy, and with
# TOP=N the N functions that cost most for each (their own instructions, not their callees').
# Beside them, the code a request runs: the 64-byte lines of machine code holding an instruction executed at
# least once per request on average (what the instruction cache must hold, or fetch again, for each request).
# The path `nginx-pair` measures the load benchmark's nginx pair (two nginx with mutual TLS, the mesh pair's
# baseline) the same way, each nginx restarted under callgrind as one process (`master_process off`).
#
#   bash Benchmarks/load/instructions.sh                  # plaintext (one proxy) and the mTLS pair
#   PATHS=plain bash Benchmarks/load/instructions.sh      # only the plaintext proxy
#   PATHS="pair nginx-pair" ...                           # the mesh pair and the nginx pair, side by side
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

# One pass over a dump made with --dump-instr=yes (cost lines: instruction address, source line, Ir). Prints the
# code a request runs: the 64-byte lines holding an instruction that ran at least once per request on average,
# by object file; then, with TOP=N, the N functions that cost most (their own instructions, not their callees').
analyse() { # dump requests
  python3 - "$1" "$2" "${TOP:-0}" <<'PY' | swift demangle --simplified | cut -c1-160
import collections, re, sys
path, requests, top = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
names, objects, fn, ob, address, npos, skip = {}, {}, None, None, 0, 1, False
runs, owner, cost = collections.Counter(), {}, collections.Counter()
for line in open(path, errors="replace"):
    if line.startswith("positions:"):
        npos = len(line.split()) - 1
        continue
    first = line[:1]
    if first.isdigit() or first in "+-*":
        parts = line.split()
        token = parts[0]
        if token == "*": pass
        elif token[0] in "+-": address += int(token[1:], 0) * (1 if token[0] == "+" else -1)
        else: address = int(token, 0)
        if skip: skip = False; continue  # a call's inclusive cost
        if len(parts) > npos:
            ir = int(parts[npos])
            runs[address] += ir; owner[address] = ob
            if fn: cost[fn] += ir
        continue
    m = re.match(r"(c?ob|c?fn)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
    if m:
        kind, ident, name = m.groups()
        table = objects if kind.endswith("ob") else names
        if name: table[ident] = name
        if kind == "ob": ob = objects.get(ident)
        elif kind == "fn": fn = names.get(ident)
        continue
    if line.startswith("calls="): skip = True
lines, by_object = set(), collections.defaultdict(set)
for address, count in runs.items():
    if count >= requests:
        lines.add(address >> 6)
        by_object[(owner[address] or "?").rsplit("/", 1)[-1]].add(address >> 6)
parts = ", ".join(f"{name} {len(s) * 64 // 1024}" for name, s in sorted(by_object.items(), key=lambda x: -len(x[1]))[:4])
print(f"{len(lines) * 64 // 1024} KB of code ({parts})")
for name, value in cost.most_common(top):
    print(f"{value / requests:8.0f}  {name}")
PY
}
report() { # label role dump
  local total; total=$(awk '/^summary:/ {print $2}' "$3")
  local out; out=$(analyse "$3" "$SENT")
  printf '%-24s %-7s %8.0f instructions per request, %s\n' "$1" "$2" "$(awk -v t="$total" -v n="$SENT" 'BEGIN { print t / n }')" \
    "$(head -1 <<<"$out")"
  tail -n +2 <<<"$out" | sed 's/^/    /'
}
# hey on 8 keep-alive connections to URL (the client proxy unless a caller sets it); the measured run must answer
# every request with 200 (the warm-up, where a proxy under callgrind starts slowly, need not).
URL=http://127.0.0.1:14140/
load() { # host requests [warmup]
  local c=${CONCURRENCY:-8}
  local out; out=$(timeout 600 hey -n "$2" -c "$c" ${RATE:+-q "$RATE"} -host "$1" "$URL")
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
  for admin in "$@"; do trace "$admin" --dump-instr=yes; done
  load "$host" "$WARMUP" warmup
  for admin in "$@"; do callgrind_control -z "${traced[$admin]}" >/dev/null 2>&1; done
  load "$host" "$REQUESTS"
  for admin in "$@"; do callgrind_control -d "${traced[$admin]}" >/dev/null 2>&1; done
  for admin in "$@"; do
    local role; case $admin in 14190) role=client;; 14191) role=server;; *) role=$admin;; esac
    record "$label" "$role" "$work/$admin.callgrind" "$work/$label-$admin.callgrind"
  done
  for admin in "$@"; do untrace "$admin"; done
}
# record label role out-file kept-name: the latest dump of out-file reported (and its TOP), then kept by that name.
record() {
  local dump; dump=$(ls -t "$3".* 2>/dev/null | head -1)
  [ -n "$dump" ] || { echo "instructions.sh: no callgrind dump for $1 $2 ($3)" >&2; exit 1; }
  report "$1" "$2" "$dump"
  mv "$dump" "$4" 2>/dev/null || true
}
# The nginx pair (18085 -> nginx -> mTLS -> nginx -> 18081): both nginx restarted under callgrind, each one
# process (its master runs the requests), measured as the proxies are.
nginx_traced=()
stop_nginx_traced() { for pid in "${nginx_traced[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap 'stop_nginx_traced; cleanup' EXIT
measure_nginx_pair() {
  local role prefix master conf dir pids=()
  for role in client server; do
    prefix=ngxc; [ "$role" = server ] && prefix=ngxs
    master=$(pgrep -f -- "nginx -p [^ ]*/$prefix -c " | head -1)
    [ -n "$master" ] || { echo "instructions.sh: the held cluster has no nginx pair $role" >&2; exit 1; }
    read -r dir conf < <(tr '\0' ' ' <"/proc/$master/cmdline" | sed -E 's/.* -p ([^ ]+) -c ([^ ]+).*/\1 \2/'; echo)
    kill "$master"; while kill -0 "$master" 2>/dev/null; do sleep 0.1; done
    valgrind --tool=callgrind --dump-instr=yes -q --callgrind-out-file="$work/nginx-$role.callgrind" \
      nginx -g 'master_process off;' -p "$dir" -c "$conf" 2>"$work/nginx-$role.log" &
    nginx_traced+=($!); pids+=($!)
  done
  local URL=http://127.0.0.1:18085/ ready=""
  for _ in $(seq 1 300); do curl -sf -o /dev/null -H 'Host: backend' "$URL" && { ready=1; break; }; sleep 0.2; done
  [ -n "$ready" ] || { echo "instructions.sh: the nginx pair under callgrind did not answer" >&2; cat "$work"/nginx-*.log >&2; exit 1; }
  load backend "$WARMUP" warmup
  for pid in "${pids[@]}"; do callgrind_control -z "$pid" >/dev/null 2>&1; done
  load backend "$REQUESTS"
  for pid in "${pids[@]}"; do callgrind_control -d "$pid" >/dev/null 2>&1; done
  for role in client server; do record nginx-pair "$role" "$work/nginx-$role.callgrind" "$work/nginx-pair-$role.callgrind"; done
}
for path in $PATHS; do
  case $path in
    plain) measure plain plain.default.svc.cluster.local 14190 ;;
    pair) measure pair backend.default.svc.cluster.local 14190 14191 ;;
    nginx-pair) measure_nginx_pair ;;
    *) echo "instructions.sh: unknown path $path (plain, pair, nginx-pair)" >&2; exit 2 ;;
  esac
done
