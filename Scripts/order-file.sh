#!/usr/bin/env bash
# Writes Scripts/mesh-proxy.order: the functions a mesh-proxy runs, busiest first, for the linker to put
# together at the front of the binary (see Scripts/build-release.sh). Run it after changes to the proxy's
# code paths; a stale order file costs idle memory, never correctness.
#
# How: the load benchmark's cluster is brought up and held (`ONLY=idle HOLD=...`); then the client, server
# and gateway proxies are, one at a time, restarted under valgrind's callgrind with their own arguments,
# driven through every path (plaintext, the mTLS pair, HTTP/2, the gateway, an unknown authority, the admin
# endpoints), stopped, and started again natively. callgrind lists every function each ran; the ones in the
# binary's text, ordered by instructions spent in them, are the order file.
#
# Needs valgrind plus the load benchmark's tools (nginx haproxy wrk hey nghttp2-client kubectl curl). About
# five minutes on two cores.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
command -v valgrind >/dev/null || { echo "order-file.sh: valgrind not found (apt-get install valgrind)" >&2; exit 1; }

Scripts/build-release.sh mesh-proxy meshctl mesh-controller
bin=$(swift build -c release --static-swift-stdlib --scratch-path .build-release --show-bin-path)
# shellcheck source=Benchmarks/load/callgrind.sh
source Benchmarks/load/callgrind.sh
callgrind_cluster "$bin/mesh-proxy"

workload() {
  local host admin
  for _ in 1 2 3; do
    for host in plain backend backend-west nowhere; do
      curl -s -o /dev/null -H "Host: $host.default.svc.cluster.local" http://127.0.0.1:14140/ || true
    done
    curl -s -o /dev/null --http2-prior-knowledge -H 'Host: backend-h2.default.svc.cluster.local' http://127.0.0.1:14140/ || true
    for admin in 14190 14191 14192 14193; do
      curl -s -o /dev/null "http://127.0.0.1:$admin/metrics" || true
      curl -s -o /dev/null "http://127.0.0.1:$admin/ready" || true
    done
  done
  for host in plain backend backend-west; do
    timeout 120 hey -n 200 -c 4 -host "$host.default.svc.cluster.local" http://127.0.0.1:14140/ >/dev/null || true
  done
  timeout 120 h2load -n 100 -c 2 -m 4 -H ':authority: backend-h2.default.svc.cluster.local' http://127.0.0.1:14140/ >/dev/null || true
}
for role in 14190:client 14191:server 14193:gateway; do
  admin=${role%%:*}
  trace "$admin" --demangle=no
  workload
  untrace "$admin"
  echo "${role#*:}: $(wc -c <"$work/$admin.callgrind") bytes of callgrind output"
done

nm --defined-only "$bin/mesh-proxy" | awk '$2 ~ /^[tTwW]$/ {print $3}' | sort -u >"$work/text-symbols"
python3 - "$work/text-symbols" "$work"/*.callgrind >Scripts/mesh-proxy.order <<'PY'
import collections, re, sys
text = set(open(sys.argv[1]).read().split())
cost = collections.Counter()
for path in sys.argv[2:]:
    names, fn, skip = {}, None, False
    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?$", line)
        if m:
            kind, ident, name = m.groups()
            if name: names[ident] = name
            name = names.get(ident)
            if name: cost[name] += 0
            if kind == "fn": fn = name
            continue
        if line.startswith("calls="):
            skip = True  # the next cost line is the call's inclusive cost, not this function's
            continue
        if line[:1].isdigit() or line[:1] in "+-*":
            if skip: skip = False; continue
            parts = line.split()
            if fn and len(parts) > 1 and parts[1].isdigit(): cost[fn] += int(parts[1])
for name, _ in sorted(cost.items(), key=lambda kv: (-kv[1], kv[0])):
    if name in text: print(name)
PY
echo "Scripts/mesh-proxy.order: $(wc -l <Scripts/mesh-proxy.order) functions; now run Scripts/build-release.sh mesh-proxy"
