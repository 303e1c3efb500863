#!/usr/bin/env bash
# Smoke run of the load tool (BENCHMARKS.md): builds the release binaries, then runs every workload against
# every target for one short round, so the tool keeps working as the code changes. It checks that the run
# completes without request errors, never a timing: the figures of so short a run mean nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir=${CARGO_TARGET_DIR:-target}
if ! command -v nutcracker >/dev/null 2>&1 && [ ! -x /usr/sbin/nutcracker ]; then
  echo "bench-smoke: nutcracker (twemproxy) is not installed; the twemproxy target will be skipped" \
    "(apt-get install nutcracker to include it)"
fi

echo "== cargo build --release --features bench"
cargo build --release --locked --features bench --bins

echo "== redguard-bench smoke (1 round of 1s per target)"
"$target_dir/release/redguard-bench" \
  --duration 1s --warmup 200ms --rounds 1 --concurrency 2 \
  --workload get,set,mix,pipeline --targets direct,redguard,redguard-open,twemproxy \
  --fill-value-sizes 16384 --json "$target_dir/bench-smoke.json"
