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

echo "== redguard-bench stopped by SIGTERM leaves no process and no scratch directory behind"
log=$(mktemp)
"$target_dir/$profile_dir/redguard-bench" \
  --duration 60s --rounds 1 --concurrency 1 --workload get --targets direct,redguard --no-memory --no-checks \
  2>"$log" &
tool=$!
# Wait (at most 60 s) until redguard is up in the tool's scratch directory.
scratch=""
for _ in $(seq 1 600); do
  scratch=$(sed -n 's/^redguard-bench: starting processes in //p' "$log")
  if [ -n "$scratch" ] && pgrep -f "$scratch/redguard.yaml" >/dev/null; then break; fi
  sleep 0.1
done
if [ -z "$scratch" ] || ! pgrep -f "$scratch/redguard.yaml" >/dev/null; then
  echo "bench-smoke: redguard did not start under the tool"; cat "$log"; kill "$tool"; exit 1
fi
# Its children (redis-server renames itself, so they are found by parent, not by command line).
children=$(pgrep -P "$tool" | tr '\n' ' ')
kill -TERM "$tool"
status=0
wait "$tool" || status=$?
if [ "$status" -eq 0 ]; then
  echo "bench-smoke: the tool exited 0 after SIGTERM"; cat "$log"; exit 1
fi
left=""
for pid in $children; do
  if kill -0 "$pid" 2>/dev/null; then
    echo "bench-smoke: process $pid outlived the tool: $(ps -o args= -p "$pid")"
    left="$left $pid"
  fi
done
if [ -n "$left" ]; then
  kill $left; exit 1
fi
if [ -e "$scratch" ]; then
  echo "bench-smoke: $scratch outlived the tool"; exit 1
fi
grep -q "SIGTERM: stopped the processes it started" "$log"
rm -f "$log"
echo "ok: exit status $status; none of its processes ($children) and no $scratch left"
