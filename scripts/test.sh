#!/usr/bin/env bash
# Runs the whole test suite: unit and integration tests (real redis-server, real redguard binary), the
# Prometheus alert-rule tests, the Kubernetes manifest checks, and the README's quick start with its examples
# (scripts/check-readme.py). Installs missing tools first.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh

echo "== cargo test"
cargo test --locked --all-targets

echo "== alert rules"
promtool check rules alerts/redguard.rules.yml
promtool test rules alerts/tests/*.yml
amtool check-config alerts/alertmanager.example.yml

echo "== container image and Kubernetes manifests"
# REDGUARD_BIN: also run `redguard check-config` on the shipped configs.
REDGUARD_BIN=target/debug/redguard bash deploy/check.sh

echo "== the README's quick start, run as written, and its examples"
# Builds the release binary first (fat LTO: several minutes the first time).
python3 scripts/check-readme.py
