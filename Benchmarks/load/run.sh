#!/usr/bin/env bash
# Load comparison, one run, same machine, same backend (nginx), loopback only:
#   direct to nginx | nginx as reverse proxy | haproxy | one mesh-proxy (plaintext)
#   nginx pair (mTLS) | haproxy pair (mTLS, HTTP/2 between them) | mesh-proxy pair (mTLS): the pair's baselines
# HTTP/1.1 with wrk (throughput and latency percentiles under saturation), hey at a fixed rate (latency when
# not saturated: RATE requests/s, in hey's bursts and paced), HTTP/2 with h2load (direct h2c vs the mesh pair).
# Prints RPS, p50/p99/max, each proxy's peak RSS and CPU per 1,000 requests (user and system apart), ratios to
# nginx and direct, and syscalls per request (strace).
#
#   bash Benchmarks/load/run.sh            # release build (first build takes long on 2 cores)
#   BUILD=debug DURATION=5 bash Benchmarks/load/run.sh
#   PROFILE=1 bash Benchmarks/load/run.sh  # also perf-profile the plaintext proxy (needs perf);
#                                          # PROFILE_OUT=FILE keeps the perf data for `perf report -i FILE`
#   ONLY=overload bash Benchmarks/load/run.sh  # only the overload rows
#   EVENT_LOOPS=1 bash Benchmarks/load/run.sh  # the mesh proxies with --event-loops 1 (default: one per core)
#   MESH_PROXY=PATH bash Benchmarks/load/run.sh  # another mesh-proxy binary (a branch, a static build) in the same run
#   ONLY=profile PROFILE=1 bash Benchmarks/load/run.sh  # stop after the profile
#   ONLY=syscalls bash Benchmarks/load/run.sh  # only the syscalls per request (strace)
#   ONLY=wrk bash Benchmarks/load/run.sh       # only the wrk rows (throughput, CPU per request): quick A/B runs
#   ONLY=idle bash Benchmarks/load/run.sh      # only the proxies' memory once they are up and idle, by mapping
#   ONLY=idle HOLD=600 bash Benchmarks/load/run.sh  # ... then keeps everything up 600 s for experiments by hand
#   FIXED_ROUNDS=1 bash Benchmarks/load/run.sh  # one round of the fixed-rate rows instead of 3 interleaved ones
#   ONLY=fixed bash Benchmarks/load/run.sh      # only the fixed-rate rows, in bursts and paced
# Also prints each mesh-proxy's memory by kind (/proc/PID/smaps_rollup) idle, and again after all the load.
# Needs: nginx haproxy wrk hey nghttp2-client kubectl curl (Debian packages). Every load is bounded by time.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-release}
DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-32}
H2_REQUESTS=${H2_REQUESTS:-5000}
RATE=${RATE:-500}
FIXED_ROUNDS=${FIXED_ROUNDS:-3}
# Ten connections share the fixed rate (hey -q takes whole requests per second a connection; 0 would mean no limit).
[[ "$RATE" =~ ^[0-9]+$ ]] && [ "$RATE" -ge 10 ] || { echo "run.sh: RATE must be a whole number of requests/s, at least 10 (got '$RATE')" >&2; exit 2; }
# shellcheck source=Benchmarks/common.sh
source Benchmarks/common.sh
require_tools nginx haproxy wrk hey h2load kubectl curl openssl
build_mesh

# Backend nginx (HTTP/1.1 on 18081, h2c on 18084), nginx reverse proxy (18082), haproxy (18083).
mkdir -p "$W/www" "$W/ngx" "$W/ngxp"; chmod 777 "$W/www" "$W/ngx" "$W/ngxp"
head -c 1024 /dev/zero | tr '\0' 'x' > "$W/www/index.html"
cat > "$W/nginx.conf" <<NGX
worker_processes 1; pid $W/ngx/pid; error_log $W/ngx/error.log warn; daemon off;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 100000;
  server { listen 127.0.0.1:18081; listen 127.0.0.1:18084 http2; root $W/www; } }
NGX
cat > "$W/proxy.conf" <<NGX
worker_processes 1; pid $W/ngxp/pid; error_log $W/ngxp/error.log warn; daemon off;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000;
  upstream backend { server 127.0.0.1:18081; keepalive 64; }
  server { listen 127.0.0.1:18082; location / { proxy_pass http://backend; proxy_http_version 1.1;
    proxy_set_header Connection ""; } } }
NGX
cat > "$W/haproxy.cfg" <<HAP
global
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend f
  bind 127.0.0.1:18083
  default_backend b
backend b
  server s1 127.0.0.1:18081
HAP
start nginx -p "$W/ngx" -c "$W/nginx.conf"
start nginx -p "$W/ngxp" -c "$W/proxy.conf"
start haproxy -f "$W/haproxy.cfg"
NGINX_PROXY_PID=${PIDS[1]}; HAPROXY_PID=${PIDS[2]}

# The baselines for the mesh pair: two proxies with mutual TLS between them (TLS 1.3, P-256 certificates of one
# CA, each side verifying the other's name), one process each, keep-alive throughout.
#   nginx pair:   18085 -> nginx -> HTTP/1.1 over mTLS, a connection per request in flight -> 18086 nginx -> 18081
#   haproxy pair: 18087 -> haproxy -> HTTP/2 over mTLS, multiplexed as the mesh pair's hop is -> 18088 haproxy -> 18081
mkdir -p "$W/pki" "$W/ngxc" "$W/ngxs"; chmod 777 "$W/ngxc" "$W/ngxs"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$W/pki/ca.key" \
  -out "$W/pki/ca.crt" -days 2 -subj /CN=baseline-ca 2>/dev/null
for side in client server; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$W/pki/$side.key" \
    -out "$W/pki/$side.csr" -subj "/CN=$side.baseline" 2>/dev/null
  openssl x509 -req -in "$W/pki/$side.csr" -CA "$W/pki/ca.crt" -CAkey "$W/pki/ca.key" -CAcreateserial -days 2 \
    -extfile <(echo "subjectAltName=DNS:$side.baseline") -out "$W/pki/$side.crt" 2>/dev/null
  cat "$W/pki/$side.crt" "$W/pki/$side.key" > "$W/pki/$side.pem"
done
cat > "$W/pair-client.conf" <<NGX
worker_processes 1; pid $W/ngxc/pid; error_log $W/ngxc/error.log warn; daemon off;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000;
  upstream peer { server 127.0.0.1:18086; keepalive 64; }
  server { listen 127.0.0.1:18085; location / { proxy_pass https://peer; proxy_http_version 1.1;
    proxy_set_header Connection ""; proxy_ssl_protocols TLSv1.3; proxy_ssl_session_reuse on;
    proxy_ssl_certificate $W/pki/client.crt; proxy_ssl_certificate_key $W/pki/client.key;
    proxy_ssl_trusted_certificate $W/pki/ca.crt; proxy_ssl_verify on; proxy_ssl_name server.baseline; } } }
NGX
cat > "$W/pair-server.conf" <<NGX
worker_processes 1; pid $W/ngxs/pid; error_log $W/ngxs/error.log warn; daemon off;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000;
  upstream backend { server 127.0.0.1:18081; keepalive 64; }
  server { listen 127.0.0.1:18086 ssl; ssl_protocols TLSv1.3;
    ssl_certificate $W/pki/server.crt; ssl_certificate_key $W/pki/server.key;
    ssl_client_certificate $W/pki/ca.crt; ssl_verify_client on;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NGX
haproxy_base=$(sed -n '1,/^  option http-keep-alive/p' "$W/haproxy.cfg")
cat > "$W/pair-client.cfg" <<HAP
$haproxy_base
frontend f
  bind 127.0.0.1:18087
  default_backend b
backend b
  server peer 127.0.0.1:18088 ssl crt $W/pki/client.pem ca-file $W/pki/ca.crt verify required verifyhost server.baseline alpn h2
HAP
cat > "$W/pair-server.cfg" <<HAP
$haproxy_base
frontend f
  bind 127.0.0.1:18088 ssl crt $W/pki/server.pem ca-file $W/pki/ca.crt verify required alpn h2
  default_backend b
backend b
  server s1 127.0.0.1:18081
HAP
start nginx -p "$W/ngxs" -c "$W/pair-server.conf"
start nginx -p "$W/ngxc" -c "$W/pair-client.conf"
NGINX_PAIR_PIDS=("${PIDS[-2]}" "${PIDS[-1]}")
start haproxy -f "$W/pair-server.cfg"
start haproxy -f "$W/pair-client.cfg"
HAPROXY_PAIR_PIDS=("${PIDS[-2]}" "${PIDS[-1]}")

# The mesh: embedded cluster, identity, destination, and two proxies.
start "$BIN/meshctl" dev kube-api --listen 127.0.0.1:16443 --kubeconfig-out "$W/kubeconfig" >"$W/kube.log" 2>&1
for _ in $(seq 1 "${WAIT_TRIES:-100}"); do [ -s "$W/kubeconfig" ] && break; sleep 0.1; done
"$BIN/meshctl" identity init --out "$W/ca" >/dev/null
printf 'web-token web default\nbackend-token backend default\ngateway-token swiftmesh-gateway swiftmesh-multicluster\n' > "$W/tokens"
echo web-token > "$W/web.token"; echo backend-token > "$W/backend.token"; echo gateway-token > "$W/gateway.token"
start "$BIN/mesh-controller" identity --issuer-dir "$W/ca" --listen 127.0.0.1:18180 --tokens "$W/tokens" 2>"$W/identity.log"
start "$BIN/mesh-controller" destination --kubeconfig "$W/kubeconfig" --listen 127.0.0.1:18186 --endpoints-api endpoints >"$W/destination.log" 2>&1
kubectl --kubeconfig "$W/kubeconfig" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: backend-0, namespace: default, annotations: {swiftmesh.io/inject: enabled}}
spec: {serviceAccountName: backend, containers: [{name: app, image: nginx}]}
---
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: default}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: backend, namespace: default}
subsets: [{addresses: [{ip: 127.0.0.1, targetRef: {kind: Pod, name: backend-0, namespace: default}}], ports: [{name: http, port: 14143}]}]
---
# What the service mirror writes for a linked cluster's backend: here the "remote" cluster is this one, so
# backend-west measures the gateway hop against the same backend.
apiVersion: v1
kind: Service
metadata:
  name: backend-west
  namespace: default
  labels: {mirror.swiftmesh.io/mirrored-service: "true", mirror.swiftmesh.io/cluster-name: west}
  annotations: {mirror.swiftmesh.io/remote-svc-fq-name: backend.default.svc.cluster.local}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Endpoints
metadata:
  name: backend-west
  namespace: default
  annotations: {mirror.swiftmesh.io/gateway-identity: swiftmesh-gateway.swiftmesh-multicluster.serviceaccount.identity.swiftmesh.cluster.local}
subsets: [{addresses: [{ip: 127.0.0.1}], ports: [{name: http, port: 14153}]}]
---
apiVersion: v1
kind: Service
metadata: {name: plain, namespace: default}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: plain, namespace: default}
subsets: [{addresses: [{ip: 127.0.0.1}], ports: [{name: http, port: 18081}]}]
---
apiVersion: v1
kind: Service
metadata: {name: backend-h2, namespace: default}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: backend-h2, namespace: default}
subsets: [{addresses: [{ip: 127.0.0.1, targetRef: {kind: Pod, name: backend-0, namespace: default}}], ports: [{name: http, port: 14145}]}]
YAML
sleep 1
IDENTITY_SERVER=127.0.0.1:18180 DESTINATION=127.0.0.1:18186
proxy client web 14140 14141 14190 1
CLIENT_PID=${PIDS[-1]}
proxy server backend 14142 14143 14191 18081
SERVER_PID=${PIDS[-1]}
# The inbound side speaks to the application in the client's protocol: HTTP/2 clients need an h2 app.
proxy server-h2 backend 14144 14145 14192 18084
start "${MESH_PROXY:-$BIN/mesh-proxy}" --gateway --identity swiftmesh-gateway.swiftmesh-multicluster.serviceaccount.identity.swiftmesh.cluster.local \
  --identity-server 127.0.0.1:18180 --ca "$W/ca/ca.crt" --token "$W/gateway.token" --destination 127.0.0.1:18186 \
  --inbound 127.0.0.1:14153 --admin 127.0.0.1:14193 --log-level warning 2>"$W/gateway.log"
GATEWAY_PID=${PIDS[-1]}
wait_http http://127.0.0.1:18081/; wait_http http://127.0.0.1:18085/; wait_http http://127.0.0.1:18087/
wait_http http://127.0.0.1:14190/ready; wait_http http://127.0.0.1:14191/ready
wait_http http://127.0.0.1:14192/ready; wait_http http://127.0.0.1:14193/ready
if ! curl -sf -o /dev/null -H 'Host: backend.default.svc.cluster.local' http://127.0.0.1:14140/; then
  echo "mesh path not working:"; curl -s -D - -H 'Host: backend.default.svc.cluster.local' http://127.0.0.1:14140/ | head -8
  "$BIN/meshctl" diagnostics endpoints --destination 127.0.0.1:18186 backend.default.svc.cluster.local:80 || true
  tail -n 5 "$W"/*.log; exit 1
fi

# RSS of a process by kind, MB: total, anonymous (heap, stacks), file-backed (binary, libraries).
memory() { awk '/^Rss:/ {r=$2} /^Anonymous:/ {a=$2} END {printf "RSS %.1f MB (anonymous %.1f, file-backed %.1f)", r/1024, a/1024, (r-a)/1024}' "/proc/$1/smaps_rollup"; }
echo "mesh-proxy memory, idle: client $(memory "$CLIENT_PID"); server $(memory "$SERVER_PID")"
# Resident KB by mapping (file, or [anon]) and permissions: where a proxy's memory is.
maps() { awk '/^[0-9a-f]+-[0-9a-f]+ / { n = ($6 == "" ? "[anon]" : $6) " " $2 } /^Rss:/ { r[n] += $2 }
  END { for (n in r) if (r[n] >= 64) printf "%8d KB  %s\n", r[n], n }' "/proc/$1/smaps" | sort -rn | head -"${MAPS:-12}"; }
if [ "${ONLY:-}" = "idle" ]; then
  echo "the client proxy's largest resident mappings:"; maps "$CLIENT_PID"
  # HOLD=SECONDS keeps everything up for experiments by hand (ports as above).
  [ -n "${HOLD:-}" ] && { echo "holding ${HOLD} s: client proxy pid $CLIENT_PID, server $SERVER_PID"; sleep "$HOLD" & PIDS+=($!); wait $!; }
  exit 0
fi
family() { echo "$1"; pgrep -P "$1" || true; }                    # a server and its workers (nginx, haproxy)
# CPU time of a process family, ms: "user system" (clock ticks of 10 ms, /proc/PID/stat fields 14 and 15).
cpu_ms() {
  local u=0 s=0; for p in $(family "$1"); do read -r pu ps < <(awk '{print $14*10, $15*10}' "/proc/$p/stat"); u=$((u + pu)); s=$((s + ps)); done
  echo "$u $s"
}
peak_rss_mb() { local t=0; for p in $(family "$1"); do t=$((t + $(awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$p/status"))); done; echo $t; }
to_ms() { awk -v v="$1" 'BEGIN { n=v+0; if (v ~ /us$/) n/=1000; else if (v ~ /ms$/) n=n; else if (v ~ /s$/) n*=1000; printf "%.2f", n }'; }

# Syscalls per request: strace -c -f follows every thread of the given processes (and their workers) while hey
# sends SYSCALL_REQUESTS requests on 8 keep-alive connections; prints the total per request and the most
# frequent calls. strace slows the processes down; only the counts are read.
syscalls() { # label url host pids...
  local label=$1 url=$2 host=$3; shift 3
  local n=${SYSCALL_REQUESTS:-2000} args=() p t
  for p in "$@"; do for t in $(family "$p"); do args+=(-p "$t"); done; done
  strace -c -f -qq -o "$W/strace.out" "${args[@]}" & local tracer=$!
  sleep 1
  hey -n "$n" -c 8 -host "$host" "$url" > "$W/hey.out"
  kill -INT "$tracer"; wait "$tracer" 2>/dev/null || true
  local ok; ok=$(awk '/\[200\]/ {print $2}' "$W/hey.out")
  [ "${ok:-0}" = "$n" ] || grep -A4 "Status code\|Error distribution" "$W/hey.out" | head -8 >&2
  awk -v n="$n" -v l="$label" -v ok="${ok:-0}" '
    $NF == "total" { total = $4 }
    $1 ~ /^[0-9.]+$/ && $NF != "total" { calls[$NF] = $4 }
    END {
      printf "%-24s %6.1f per request (%s of %d answered 200):", l, total / n, ok, n
      k = 0; while (k < 5) { best = ""; for (c in calls) if (best == "" || calls[c] > calls[best]) best = c
        if (best == "") break; printf " %s %.1f", best, calls[best] / n; delete calls[best]; k++ }
      printf "\n" }' "$W/strace.out"
}
syscall_rows() {
  command -v strace >/dev/null || { echo "(strace not installed: no syscall counts)"; return 0; }
  echo
  echo "Syscalls per request (strace -c -f, hey -n ${SYSCALL_REQUESTS:-2000} -c 8, keep-alive; both proxies for the pair)"
  syscalls "nginx reverse proxy" http://127.0.0.1:18082/ backend "$NGINX_PROXY_PID"
  syscalls "haproxy" http://127.0.0.1:18083/ backend "$HAPROXY_PID"
  syscalls "nginx pair (mTLS)" http://127.0.0.1:18085/ backend "${NGINX_PAIR_PIDS[@]}"
  syscalls "haproxy pair (mTLS, h2)" http://127.0.0.1:18087/ backend "${HAPROXY_PAIR_PIDS[@]}"
  syscalls "mesh-proxy (plaintext)" http://127.0.0.1:14140/ plain.default.svc.cluster.local "$CLIENT_PID"
  syscalls "mesh-proxy pair (mTLS)" http://127.0.0.1:14140/ backend.default.svc.cluster.local "$CLIENT_PID" "$SERVER_PID"
  syscalls "  the pair's client proxy" http://127.0.0.1:14140/ backend.default.svc.cluster.local "$CLIENT_PID"
  syscalls "  the pair's server proxy" http://127.0.0.1:14140/ backend.default.svc.cluster.local "$SERVER_PID"
}
if [ "${ONLY:-}" = "syscalls" ]; then syscall_rows; exit 0; fi

# At a fixed rate every row runs FIXED_ROUNDS times, the rows interleaved and each round starting one row
# later, so the machine's drift over the phase (other work, frequency, caches) falls on every row alike
# rather than on whichever row came last. Each row's percentiles are over all its requests (hey -o csv).
# Two shapes of the same RATE, each its own phase:
#   - bursts: one hey with ten connections (-c 10 -q RATE/10). Its ten workers tick in step, so requests come
#     ten at a time every 10/RATE s, and a burst queues behind the proxies' CPU on the machine's cores;
#   - paced: ten hey processes of one connection each (-c 1 -q RATE/10), started 1/RATE s apart, so their
#     ticks fall between each other's and requests come one at a time, about every 1/RATE s: the shape of a
#     constant-rate load generator (wrk2, fortio), which published service-mesh latency figures are taken with.
FIXED_ROWS=(
  "direct (nginx)|http://127.0.0.1:18081/|backend"
  "nginx reverse proxy|http://127.0.0.1:18082/|backend"
  "haproxy|http://127.0.0.1:18083/|backend"
  "nginx pair (mTLS)|http://127.0.0.1:18085/|backend"
  "haproxy pair (mTLS, h2)|http://127.0.0.1:18087/|backend"
  "mesh-proxy (plaintext)|http://127.0.0.1:14140/|plain.default.svc.cluster.local"
  "mesh-proxy pair (mTLS)|http://127.0.0.1:14140/|backend.default.svc.cluster.local"
  "pair via gateway (mTLS)|http://127.0.0.1:14140/|backend-west.default.svc.cluster.local"
)
# hey_csv connections url host out: RATE/10 req/s a connection for DURATION s; hey -o csv writes one line a
# response, its time in seconds first and its status seventh.
hey_csv() {
  timeout $((DURATION + 30)) hey -z "${DURATION}s" -c "$1" -q $((RATE / 10)) -o csv -host "$3" "$2" 2>/dev/null |
    awk -F, 'NR > 1' > "$4" || true
}
fixed_load() { # shape url host out
  local shape=$1 url=$2 host=$3 out=$4
  if [ "$shape" = bursts ]; then hey_csv 10 "$url" "$host" "$out"; return; fi
  local k pids=() gap; gap=$(awk -v r="$RATE" 'BEGIN { printf "%.4f", 1 / r }')
  for k in $(seq 0 9); do
    hey_csv 1 "$url" "$host" "$out.$k" &
    pids+=($!)
    sleep "$gap"
  done
  wait "${pids[@]}" || true
  cat "$out".? > "$out"; rm -f "$out".?
}
# percentiles FILE...: responses, non-2xx, p50 p90 p99 max in ms (nearest rank over every response).
percentiles() {
  cat "$@" | awk -F, '{print $1 * 1000, $7}' | LC_ALL=C sort -n | awk '
    {t[NR] = $1; if ($2 !~ /^2/) bad++}
    function at(q) { i = int(q * NR + 0.999999); if (i < 1) i = 1; return t[i] }
    END { if (NR == 0) { print "0 0 0 0 0 0"; exit } printf "%d %d %.2f %.2f %.2f %.2f\n", NR, bad, at(0.5), at(0.9), at(0.99), t[NR] }'
}
fixed_phase() { # shape
  local shape=$1 round k i label url host all rounds direct=""
  for round in $(seq 1 "$FIXED_ROUNDS"); do
    for k in "${!FIXED_ROWS[@]}"; do
      i=$(((k + round - 1) % ${#FIXED_ROWS[@]}))
      IFS='|' read -r _ url host <<<"${FIXED_ROWS[$i]}"
      fixed_load "$shape" "$url" "$host" "$W/fixed-$shape-$i-$round.csv"
    done
  done
  printf '%-24s %10s %8s %8s %8s %8s %10s %10s  %s\n' target achieved p50_ms p90_ms p99_ms max_ms "+p50/dir" "+p99/dir" \
    "p50 by round; non-2xx"
  for i in "${!FIXED_ROWS[@]}"; do
    IFS='|' read -r label _ _ <<<"${FIXED_ROWS[$i]}"
    all=$(percentiles "$W"/fixed-"$shape"-"$i"-*.csv)
    [ "$i" = 0 ] && direct=$all
    rounds=""; for round in $(seq 1 "$FIXED_ROUNDS"); do rounds+="$(percentiles "$W/fixed-$shape-$i-$round.csv" | awk '{print $3}') "; done
    awk -v l="$label" -v a="$all" -v d="$direct" -v s=$((FIXED_ROUNDS * DURATION)) -v r="$rounds" 'BEGIN {
      split(a, A, " "); split(d, D, " ")
      printf "%-24s %10.0f %8.2f %8.2f %8.2f %8.2f %+10.2f %+10.2f  %s; %d\n", l, A[1] / s, A[3], A[4], A[5], A[6], A[3] - D[3], A[5] - D[5], r, A[2] }'
  done
}
fixed_rows() {
  echo
  echo "HTTP/1.1 at a fixed rate in bursts: hey -z ${DURATION}s -c 10 -q $((RATE / 10)) (${RATE} req/s offered), ${FIXED_ROUNDS} interleaved rounds a row"
  fixed_phase bursts
  echo
  echo "HTTP/1.1 at a fixed rate, paced: 10 x hey -z ${DURATION}s -c 1 -q $((RATE / 10)) started 1/${RATE} s apart, ${FIXED_ROUNDS} interleaved rounds a row"
  fixed_phase paced
  echo "(+p50/dir, +p99/dir: what the row adds over the direct connection; the gateway hop: client -> outbound -> gateway"
  echo " -> inbound -> nginx, compare with the pair's row)"
}
if [ "${ONLY:-}" = "fixed" ]; then fixed_rows; exit 0; fi

RESULTS=()
if [ "${ONLY:-}" != "overload" ]; then
run_wrk() { # label url host pids...
  local label=$1 url=$2 host=$3; shift 3
  local u0=0 s0=0 u1=0 s1=0 u s
  for p in "$@"; do read -r u s < <(cpu_ms "$p"); u0=$((u0 + u)); s0=$((s0 + s)); done
  local out; out=$(wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -H "Host: $host" "$url")
  for p in "$@"; do read -r u s < <(cpu_ms "$p"); u1=$((u1 + u)); s1=$((s1 + s)); done
  local rps p50 p99 max reqs cpu="-" user="-" sys="-" rss="-"
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(to_ms "$(awk '$1=="50%" {print $2}' <<<"$out")")
  p99=$(to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")")
  max=$(to_ms "$(awk '$1=="Latency" {print $4}' <<<"$out")")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  if [ $# -gt 0 ]; then
    per_1k() { awk -v c="$1" -v r="$reqs" 'BEGIN { printf "%.1f", c / (r / 1000) }'; }
    user=$(per_1k $((u1 - u0))); sys=$(per_1k $((s1 - s0))); cpu=$(per_1k $((u1 - u0 + s1 - s0)))
    rss=0; for p in "$@"; do rss=$((rss + $(peak_rss_mb "$p"))); done
  fi
  RESULTS+=("$label|$rps|$p50|$p99|$max|$rss|$cpu|$user|$sys")
}

run_wrk "direct (nginx)" http://127.0.0.1:18081/ backend
run_wrk "nginx reverse proxy" http://127.0.0.1:18082/ backend "$NGINX_PROXY_PID"
run_wrk "haproxy" http://127.0.0.1:18083/ backend "$HAPROXY_PID"
run_wrk "nginx pair (mTLS)" http://127.0.0.1:18085/ backend "${NGINX_PAIR_PIDS[@]}"
run_wrk "haproxy pair (mTLS, h2)" http://127.0.0.1:18087/ backend "${HAPROXY_PAIR_PIDS[@]}"
if [ -n "${PROFILE:-}" ] && command -v perf >/dev/null; then
  # Where the plaintext proxy's CPU goes: perf samples it (call graphs) for the length of one wrk run.
  perf record -q -g -F 499 -p "$CLIENT_PID" -o "$W/perf.data" -- sleep "$DURATION" >/dev/null 2>&1 &
  PERF_PID=$!
  wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" -H "Host: plain.default.svc.cluster.local" http://127.0.0.1:14140/ >/dev/null
  wait "$PERF_PID" || true
  echo "perf: the plaintext mesh-proxy's hottest symbols under wrk (self time):"
  perf report -q -i "$W/perf.data" --no-children --sort symbol --stdio > "$W/perf.txt" 2>/dev/null || true
  awk -v n="${PROFILE_LINES:-40}" '/%/ && c < n { sub(/[ \t-]+$/, ""); print; c++ }' "$W/perf.txt"
  if [ -n "${PROFILE_OUT:-}" ]; then cp "$W/perf.data" "$PROFILE_OUT"; echo "perf data: $PROFILE_OUT"; fi
  [ "${ONLY:-}" = "profile" ] && exit 0
fi
run_wrk "mesh-proxy (plaintext)" http://127.0.0.1:14140/ plain.default.svc.cluster.local "$CLIENT_PID"
run_wrk "mesh-proxy pair (mTLS)" http://127.0.0.1:14140/ backend.default.svc.cluster.local "$CLIENT_PID" "$SERVER_PID"
AFTER_WRK="mesh-proxy memory at the end of the wrk rows: client $(memory "$CLIENT_PID"); server $(memory "$SERVER_PID")"

echo
echo "HTTP/1.1, wrk -t2 -c$CONNECTIONS -d${DURATION}s, 1 KiB responses, build: $BUILD"
direct_rps=$(cut -d'|' -f2 <<<"${RESULTS[0]}"); nginx_rps=$(cut -d'|' -f2 <<<"${RESULTS[1]}")
direct_p99=$(cut -d'|' -f4 <<<"${RESULTS[0]}"); nginx_p99=$(cut -d'|' -f4 <<<"${RESULTS[1]}")
printf '%-24s %10s %8s %8s %8s %9s %10s %8s %8s %10s %10s %10s %10s\n' target RPS p50_ms p99_ms max_ms peakRSS_MB cpu_ms/1k \
  user sys rps/nginx rps/direct p99/nginx p99/direct
for row in "${RESULTS[@]}"; do
  IFS='|' read -r label rps p50 p99 max rss cpu user sys <<<"$row"
  awk -v l="$label" -v rps="$rps" -v p50="$p50" -v p99="$p99" -v max="$max" -v rss="$rss" -v cpu="$cpu" \
    -v user="$user" -v sys="$sys" -v dr="$direct_rps" -v nr="$nginx_rps" -v dp="$direct_p99" -v np="$nginx_p99" \
    'BEGIN { printf "%-24s %10.0f %8.2f %8.2f %8.2f %9s %10s %8s %8s %10.2f %10.2f %10.2f %10.2f\n", l, rps, p50, p99, max, rss, cpu, user, sys, rps/nr, rps/dr, p99/np, p99/dp }'
done
echo "$AFTER_WRK"
[ "${ONLY:-}" = "wrk" ] && exit 0
syscall_rows

fixed_rows

echo
echo "HTTP/2, h2load -n $H2_REQUESTS -c 16 -m 10"
h2() { timeout 120 h2load -n "$H2_REQUESTS" -c 16 -m 10 -H ":authority: $2" "$1" | awk -v l="$3" '/finished in/ {rps=$4} /time for request/ {mean=$6; max=$5} /status codes/ {codes=$3" 2xx, "$7" 5xx"} END {printf "%-24s %12s req/s  request time mean %s max %s  (%s)\n", l, rps, mean, max, codes}' || true; }
h2 http://127.0.0.1:18084/ backend "direct (nginx h2c)"
h2 http://127.0.0.1:14140/ backend-h2.default.svc.cluster.local "mesh-proxy pair (mTLS)"
fi

# Overload: goodput (2xx per second) under a flood against a normal concurrency, same pair, same run. What
# is shed must be shed fast (503 overloaded), and the pair must answer normally right after the flood.
echo
echo "Overload through the mTLS pair (h2load -D ${DURATION}s): goodput at a flood / goodput at a normal concurrency"
goodput() { # label url authority args...
  local label=$1 url=$2 authority=$3; shift 3
  timeout $((DURATION + 60)) h2load -D "$DURATION" "$@" -H ":authority: $authority" "$url" 2>/dev/null |
    awk -v l="$label" '/finished in/ {t=$3+0; if ($3 ~ /ms,$/) t/=1000} /status codes/ {ok=$3; s5=$9}
      END {printf "%s|%.0f|%s\n", l, (t > 0 ? ok / t : 0), s5}' || echo "$label|0|?"
}
overload_row() { # label url authority normal-args -- flood-args
  local label=$1 url=$2 authority=$3; shift 3
  local normal=() flood=(); while [ "$1" != "--" ]; do normal+=("$1"); shift; done; shift; flood=("$@")
  local n f
  n=$(goodput normal "$url" "$authority" "${normal[@]}"); f=$(goodput flood "$url" "$authority" "${flood[@]}")
  sleep 1
  local proto=(--http2-prior-knowledge); [ "${normal[0]}" = "--h1" ] && proto=()
  local after; after=$(curl -s -m 30 -o /dev/null -w '%{http_code} in %{time_total}s' "${proto[@]}" -H "Host: $authority" "$url" 2>/dev/null || true)
  awk -v l="$label" -v n="$n" -v f="$f" -v a="$after" 'BEGIN { split(n, N, "|"); split(f, F, "|");
    printf "%-34s normal %8.0f 2xx/s  flood %8.0f 2xx/s (%s shed 5xx)  ratio %.2f  1 s later: %s\n",
      l, N[2], F[2], F[3], (N[2] > 0 ? F[2] / N[2] : 0), a }'
}
overload_row "HTTP/2, 5,000 streams (50 x 100)" http://127.0.0.1:14140/ backend-h2.default.svc.cluster.local \
  -c 16 -m 10 -- -c 50 -m 100
overload_row "HTTP/1.1, 2,000 connections" http://127.0.0.1:14140/ backend.default.svc.cluster.local \
  --h1 -c 16 -- --h1 -c 2000
echo "mesh-proxy memory after the load: client $(memory "$CLIENT_PID"); server $(memory "$SERVER_PID")"
sleep 11  # the proxies give what malloc holds free back every 10 s
echo "and 11 s later: client $(memory "$CLIENT_PID"); server $(memory "$SERVER_PID")"
for admin in 14190:client 14191:server 14192:server-h2; do
  echo "${admin#*:} proxy answered itself: $(curl -s "http://127.0.0.1:${admin%%:*}/metrics" | awk '/^proxy_(errors|shed_requests)_total/ {printf "%s ", $0}')"
done
