#!/usr/bin/env bash
# The README's quick start: one command that ends with redguard serving in front of a working Redis, on a machine
# that has only a Rust toolchain. It installs redis-server from Debian's packages when it is missing (root or
# sudo), builds redguard, starts a Redis of its own for this session (a free loopback port, its own temporary
# directory, no persistence), then runs `cargo run --release -- run --config examples/redguard.yaml` against it
# through the REDGUARD_REDIS_URL override. The socket is ./redguard.sock in the repository's root, the admin
# listener 127.0.0.1:9190 (REDGUARD_ADMIN_LISTEN chooses another). When redguard stops (Ctrl-C, SIGTERM or
# SIGHUP to this script, or redguard exiting by itself) the script stops its Redis and removes its directory.
#
# It never touches a Redis it did not start: a Redis on 6379 (or any other port) is neither used nor stopped.
# (Where systemd runs, installing Debian's package also enables the package's own Redis service on 6379; this
# script leaves that one alone too.)
# A script rather than a `redguard` subcommand: installing packages and running a Redis are the newcomer's
# set-up, not the sidecar's job, and the binary that ships stays free of package management.
# `redguard run --config FILE` stays the command for real deployments.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "quickstart: $*" >&2; }
die() {
  say "$*"
  exit 1
}

command -v cargo >/dev/null || die "cargo is not on PATH: install a Rust toolchain (https://rustup.rs) and run again"

# --- redis-server: on PATH, else from Debian's packages (the style of scripts/install-test-deps.sh).
redis_server=$(command -v redis-server || true)
if [ -z "$redis_server" ]; then
  command -v apt-get >/dev/null || die "redis-server is not installed and apt-get is missing; install redis-server and run again"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "redis-server is not installed; installing it needs root or sudo"
    sudo="sudo"
  fi
  say "installing redis-server from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends redis-server >/dev/null
  # Debian installs it to /usr/bin, which a trimmed PATH may lack.
  redis_server=$(command -v redis-server || echo /usr/bin/redis-server)
  [ -x "$redis_server" ] || die "redis-server is still missing after installing the package"
fi

# --- A taken admin port fails here, before the build, with a hint (redguard would refuse it too).
admin=${REDGUARD_ADMIN_LISTEN:-127.0.0.1:9190}
listening() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
if listening "${admin%:*}" "${admin##*:}"; then
  die "the admin address $admin is taken (another redguard?). Stop that process, or pick another address: REDGUARD_ADMIN_LISTEN=127.0.0.1:9191 bash scripts/quickstart.sh"
fi

# --- Build in the foreground: the first release build takes minutes, and Ctrl-C stops it as usual. Redis starts
# only once there is a redguard to put in front of it.
cargo build --release --bin redguard

# --- Everything this session starts, and how it is stopped again (on every exit path).
dir=$(mktemp -d "${TMPDIR:-/tmp}/redguard-quickstart.XXXXXX")
redis_pid=""
redguard_pid=""
# Stops one of our children (SIGTERM) and waits for it, killing it if it lingers past the deadline.
stop() {
  local pid=$1 name=$2 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "$name (pid $pid) did not stop within 15 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  trap - EXIT INT TERM HUP
  [ -z "$redguard_pid" ] || stop "$redguard_pid" redguard
  [ -z "$redis_pid" ] || stop "$redis_pid" redis-server
  rm -rf "$dir"
  [ -z "$redis_pid" ] || say "stopped the session's Redis (127.0.0.1:$port) and removed $dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# --- A Redis of our own on a free loopback port: try random ports until one binds.
port=""
for ((attempt = 0; attempt < 20; attempt++)); do
  candidate=$((20000 + RANDOM % 20000))
  listening 127.0.0.1 "$candidate" && continue
  "$redis_server" --port "$candidate" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
    --daemonize no --logfile "$dir/redis.log" &
  redis_pid=$!
  # Ready when it answers PING; gone when the port was taken after all (then the next candidate).
  for ((i = 0; i < 100; i++)); do
    kill -0 "$redis_pid" 2>/dev/null || break
    if { exec 3<>"/dev/tcp/127.0.0.1/$candidate"; } 2>/dev/null; then
      printf 'PING\r\n' >&3
      reply=""
      read -r -t 1 reply <&3 || true
      exec 3>&-
      if [ "${reply%$'\r'}" = "+PONG" ]; then
        port=$candidate
        break
      fi
    fi
    sleep 0.1
  done
  [ -z "$port" ] || break
  stop "$redis_pid" redis-server
  redis_pid=""
done
if [ -z "$port" ]; then
  [ ! -f "$dir/redis.log" ] || tail -n 20 "$dir/redis.log" >&2
  die "could not start redis-server on a free loopback port"
fi
say "redis-server $("$redis_server" --version | sed -n 's/.* v=\([^ ]*\).*/\1/p') on 127.0.0.1:$port for this session (pid $redis_pid, $dir)"
say "redguard: socket ./redguard.sock, Redis protocol ./redis.sock, admin $admin; Ctrl-C stops both"

# --- redguard, in the background so that the traps above run as soon as a signal arrives (bash defers them while
# a foreground command runs). `cargo run` execs the binary, so $! is redguard itself.
# The Redis-protocol socket too, so redis-cli and Redis client libraries can try redguard as they are.
REDGUARD_LISTEN_RESP_SOCKET=./redis.sock REDGUARD_REDIS_URL="redis://127.0.0.1:$port" \
  cargo run --release -- run --config examples/redguard.yaml &
redguard_pid=$!
status=0
wait "$redguard_pid" || status=$?
redguard_pid=""
say "redguard exited with status $status"
exit "$status"
