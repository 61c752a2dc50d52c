#!/usr/bin/env bash
# The identity walkthrough: a trust anchor and issuer, the identity service on loopback, a workload
# certificate obtained over gRPC, and openssl as the judge. Cleans up what it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build --product meshctl --product mesh-controller >/dev/null 2>&1 || swift build
bin=$(cd "$(swift build --show-bin-path)" && pwd)
work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

echo "== meshctl identity init"
"$bin/meshctl" identity init --trust-domain cluster.local --out "$work/ca"
echo "== meshctl identity issuer (a second cluster's issuer under the same anchor)"
"$bin/meshctl" identity issuer --ca-dir "$work/ca" --out "$work/west" --cluster-name west

echo "web-token web default" > "$work/tokens"
echo "web-token" > "$work/web.token"
port=${IDENTITY_PORT:-18080}
echo "== mesh-controller identity on 127.0.0.1:$port"
"$bin/mesh-controller" identity --issuer-dir "$work/ca" --listen "127.0.0.1:$port" --tokens "$work/tokens" \
  2>"$work/identity.log" &
pid=$!
for _ in $(seq 1 100); do grep -q "identity service listening" "$work/identity.log" && break; sleep 0.1; done
grep -q "identity service listening" "$work/identity.log" || { cat "$work/identity.log"; exit 1; }

echo "== meshctl identity certify"
"$bin/meshctl" identity certify --server "127.0.0.1:$port" --ca "$work/ca/ca.crt" --token "$work/web.token" \
  --name web.default.serviceaccount.identity.swiftmesh.cluster.local --out "$work/web"
echo "== openssl verify"
openssl verify -CAfile "$work/ca/ca.crt" -untrusted "$work/ca/issuer.crt" "$work/web/tls.crt"
openssl x509 -in "$work/web/tls.crt" -noout -subject -ext subjectAltName -dates
