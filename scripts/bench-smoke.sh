#!/usr/bin/env bash
# Smoke run of the load tool (BENCHMARKS.md): builds it, then runs every workload against every target for one
# short round, so the tool keeps working as the code changes. It checks that the run completes without request
# errors, never a timing: the figures of so short a run mean nothing.
#
# The debug profile by default: CI has just built it for `cargo test`, so only the tool itself is compiled.
# BENCH_SMOKE_PROFILE=release builds and runs the release binaries instead.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${BENCH_SMOKE_PROFILE:-dev}
case "$profile" in
  dev) profile_dir=debug ;;
  release) profile_dir=release ;;
  *) echo "bench-smoke: BENCH_SMOKE_PROFILE must be dev or release" >&2; exit 2 ;;
esac
target_dir=${CARGO_TARGET_DIR:-target}
if ! command -v nutcracker >/dev/null 2>&1 && [ ! -x /usr/sbin/nutcracker ]; then
  echo "bench-smoke: nutcracker (twemproxy) is not installed; the twemproxy target will be skipped" \
    "(apt-get install nutcracker to include it)"
fi

echo "== cargo build --profile $profile --features bench"
cargo build --locked --profile "$profile" --features bench --bins

echo "== redguard-bench smoke (1 round of 1s per target)"
"$target_dir/$profile_dir/redguard-bench" \
  --duration 1s --warmup 200ms --rounds 1 --concurrency 2 \
  --workload get,set,mix,pipeline --targets direct,redguard,redguard-open,twemproxy \
  --fill-value-sizes 16384 --no-checks --json "$target_dir/bench-smoke.json"

echo "== redguard-bench smoke with --client-read-interest (the client registered for readability only)"
"$target_dir/$profile_dir/redguard-bench" \
  --duration 1s --warmup 200ms --rounds 1 --concurrency 2 \
  --workload get,pipeline --targets direct,redguard --no-memory --no-checks --client-read-interest
