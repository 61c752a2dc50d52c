#!/usr/bin/env bash
# Soak: a fixed request rate for a bounded time through client proxy -> mTLS -> server proxy -> nginx, with
# short-lived workload certificates (they rotate many times), while the destination service and the identity
# service are each restarted once. Loopback only.
#
# Every minute it prints: requests sent / failed in that minute, p50 / p99 latency, and each proxy's RSS and
# open file descriptors. At the end: totals, and whether RSS and FDs stayed flat (last minute within 10 % of
# the second).
#
#   bash Benchmarks/soak/run.sh                      # 10 minutes, 500 req/s, release build
#   MINUTES=3 RATE=200 BUILD=debug bash Benchmarks/soak/run.sh
# Needs: nginx hey kubectl curl (Debian packages). Exits 1 if a request failed or memory or FDs grew.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-release}
MINUTES=${MINUTES:-10}
RATE=${RATE:-500}
LIFETIME=${LIFETIME:-60}   # workload certificate lifetime, seconds (renewed at 70 %)
CONCURRENCY=${CONCURRENCY:-10}
[ "$MINUTES" -ge 3 ] || { echo "MINUTES must be at least 3 (the verdict compares the second and the last minute)" >&2; exit 2; }
# shellcheck source=Benchmarks/common.sh
source Benchmarks/common.sh
require_tools nginx hey kubectl curl
build_mesh

mkdir -p "$W/www" "$W/ngx"; chmod 777 "$W/www" "$W/ngx"
head -c 1024 /dev/zero | tr '\0' 'x' > "$W/www/index.html"
cat > "$W/nginx.conf" <<NGX
worker_processes 1; pid $W/ngx/pid; error_log $W/ngx/error.log warn; daemon off;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 10000000;
  server { listen 127.0.0.1:28081; root $W/www; } }
NGX
start nginx -p "$W/ngx" -c "$W/nginx.conf"

start "$BIN/meshctl" dev kube-api --listen 127.0.0.1:26443 --kubeconfig-out "$W/kubeconfig" >"$W/kube.log" 2>&1
for _ in $(seq 1 100); do [ -s "$W/kubeconfig" ] && break; sleep 0.1; done
"$BIN/meshctl" identity init --out "$W/ca" >/dev/null
printf 'web-token web default\nbackend-token backend default\n' > "$W/tokens"
echo web-token > "$W/web.token"; echo backend-token > "$W/backend.token"
identity() {
  "$BIN/mesh-controller" identity --issuer-dir "$W/ca" --listen 127.0.0.1:28180 --tokens "$W/tokens" \
    --certificate-lifetime "$LIFETIME" --log-level warning 2>>"$W/identity.log" &
  IDENTITY_PID=$!; PIDS+=($IDENTITY_PID)
}
destination() {
  "$BIN/mesh-controller" destination --kubeconfig "$W/kubeconfig" --listen 127.0.0.1:28186 --log-level warning \
    >>"$W/destination.log" 2>&1 &
  DESTINATION_PID=$!; PIDS+=($DESTINATION_PID)
}
identity; destination
kubectl --kubeconfig "$W/kubeconfig" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: backend-0, namespace: default}
spec: {serviceAccountName: backend, containers: [{name: app, image: nginx}]}
---
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: default}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: backend-1, namespace: default, labels: {kubernetes.io/service-name: backend}}
addressType: IPv4
endpoints: [{addresses: [127.0.0.1], conditions: {ready: true}, targetRef: {kind: Pod, name: backend-0, namespace: default}}]
ports: [{name: http, port: 24143}]
YAML
IDENTITY_SERVER=127.0.0.1:28180 DESTINATION=127.0.0.1:28186
proxy client web 24140 24141 24190 1
CLIENT_PID=${PIDS[-1]}
proxy server backend 24142 24143 24191 28081
SERVER_PID=${PIDS[-1]}
wait_http http://127.0.0.1:28081/ 300; wait_http http://127.0.0.1:24190/ready 300; wait_http http://127.0.0.1:24191/ready 300
curl -sf -o /dev/null -H 'Host: backend.default.svc.cluster.local' http://127.0.0.1:24140/ || {
  echo "mesh path not working"; tail -n 5 "$W"/*.log; exit 1; }

rss_mb() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
fds() { ls "/proc/$1/fd" | wc -l; }

echo "soak: ${MINUTES} min at ${RATE} req/s (hey -c $CONCURRENCY -q), certificates live ${LIFETIME}s, build $BUILD"
printf '%-6s %8s %7s %8s %8s %10s %10s %9s %9s\n' MINUTE SENT FAILED P50_MS P99_MS CLIENT_MB SERVER_MB CLIENT_FD SERVER_FD
TOTAL=0; FAILED=0; declare -a CRSS SRSS CFD SFD
per_worker=$(( (RATE + CONCURRENCY - 1) / CONCURRENCY ))
for minute in $(seq 1 "$MINUTES"); do
  hey -z 60s -c "$CONCURRENCY" -q "$per_worker" -host backend.default.svc.cluster.local http://127.0.0.1:24140/ \
    >"$W/hey.out" 2>&1 &
  HEY=$!
  # Half-way through minute 2 the destination service restarts (2 s away); through minute 3, the identity
  # service (5 s away). The proxies keep serving with what they have.
  if [ "$minute" -eq 2 ]; then sleep 30; kill "$DESTINATION_PID"; wait "$DESTINATION_PID" 2>/dev/null || true
    sleep 2; destination; echo "minute 2: destination service restarted" >>"$W/events"; fi
  if [ "$minute" -eq 3 ]; then sleep 30; kill "$IDENTITY_PID"; wait "$IDENTITY_PID" 2>/dev/null || true
    sleep 5; identity; echo "minute 3: identity service restarted" >>"$W/events"; fi
  wait "$HEY" || true
  # hey: "[200] N responses" per status; "[N] <error>" per distinct error.
  ok=$(awk '/^ *\[200\][ \t]+[0-9]+ responses/ {print $2}' "$W/hey.out"); ok=${ok:-0}
  statuses=$(awk '/^ *\[[0-9]+\][ \t]+[0-9]+ responses/ {s+=$2} END {print s+0}' "$W/hey.out")
  errors=$(awk '/Error distribution/ {e=1; next} e && /^ *\[[0-9]+\]/ {n=$1; gsub(/[^0-9]/, "", n); s+=n} END {print s+0}' "$W/hey.out")
  sent=$((statuses + errors)); bad=$((sent - ok))
  p50=$(awk '/ 50% in/ {printf "%.2f", $3*1000}' "$W/hey.out"); p99=$(awk '/ 99% in/ {printf "%.2f", $3*1000}' "$W/hey.out")
  CRSS[$minute]=$(rss_mb "$CLIENT_PID"); SRSS[$minute]=$(rss_mb "$SERVER_PID")
  CFD[$minute]=$(fds "$CLIENT_PID"); SFD[$minute]=$(fds "$SERVER_PID")
  TOTAL=$((TOTAL + sent)); FAILED=$((FAILED + bad))
  printf '%-6s %8s %7s %8s %8s %10s %10s %9s %9s\n' "$minute" "$sent" "$bad" "${p50:-?}" "${p99:-?}" \
    "${CRSS[$minute]}" "${SRSS[$minute]}" "${CFD[$minute]}" "${SFD[$minute]}"
done
echo "events: $(tr '\n' ';' <"$W/events" 2>/dev/null)"
echo "total: $TOTAL requests, $FAILED failed"
flat() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(b <= a * 1.10 + 0.5) }'; }
verdict=0
for pair in "client RSS:${CRSS[2]}:${CRSS[$MINUTES]}" "server RSS:${SRSS[2]}:${SRSS[$MINUTES]}" \
  "client FDs:${CFD[2]}:${CFD[$MINUTES]}" "server FDs:${SFD[2]}:${SFD[$MINUTES]}"; do
  IFS=: read -r name second last <<<"$pair"
  if flat "$second" "$last"; then echo "flat: $name (minute 2: $second, last: $last)"; else echo "GREW: $name (minute 2: $second, last: $last)"; verdict=1; fi
done
[ "$FAILED" -eq 0 ] || { echo "FAILED REQUESTS: $FAILED"; verdict=1; }
grep -h -i ' error\|critical' "$W/client.log" "$W/server.log" | tail -n 5 || true
exit $verdict
