#!/usr/bin/env bash
# Installs what the test suite needs and is missing: redis-server/redis-cli (tests start their own Redis),
# promtool and prometheus (metric lint, alert-rule tests, the end-to-end alert test), Alertmanager and amtool (the
# end-to-end paging test, the example Alertmanager config's check), kubectl (renders the
# Kubernetes manifests), openssl (TLS test certificates), nutcracker (the load tool's peer proxy).
# Debian/Ubuntu packages; needs root (or sudo) only when something is missing.
set -euo pipefail

need=()
command -v redis-server >/dev/null && command -v redis-cli >/dev/null || need+=(redis-server)
# redis-benchmark drives the RESP socket in tests/resp.rs and the load comparison.
command -v redis-benchmark >/dev/null || need+=(redis-tools)
command -v promtool >/dev/null && command -v prometheus >/dev/null || need+=(prometheus)
# Debian names the Alertmanager binary prometheus-alertmanager; the package also ships amtool.
command -v prometheus-alertmanager >/dev/null && command -v amtool >/dev/null || need+=(prometheus-alertmanager)
command -v kubectl >/dev/null || need+=(kubernetes-client)
# twemproxy, the peer proxy the load tool's smoke run compares against (scripts/bench-smoke.sh).
command -v nutcracker >/dev/null || [ -x /usr/sbin/nutcracker ] || need+=(nutcracker)
command -v python3 >/dev/null || need+=(python3 python3-pip)
# Node.js runs ioredis against the RESP socket (tests/resp_clients.rs).
command -v node >/dev/null && command -v npm >/dev/null || need+=(nodejs npm)
# The TLS tests make their certificates with the openssl CLI (redguard itself uses rustls, not OpenSSL).
command -v openssl >/dev/null || need+=(openssl)

# The Redis client libraries the RESP socket is tested with, pinned in tests/clients/ (after the system
# packages, which may bring python3 and npm).
clients() {
  python3 -c 'import redis' 2>/dev/null || python3 -m pip install -q -r tests/clients/requirements.txt
  [ -d tests/clients/node_modules/ioredis ] || npm ci --silent --prefix tests/clients
}

if [ ${#need[@]} -eq 0 ]; then
  clients
  exit 0
fi
echo "installing: ${need[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# --no-install-recommends keeps Prometheus's web UI assets and exporters out; the tests need the binaries only.
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
clients
