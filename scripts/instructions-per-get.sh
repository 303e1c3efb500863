#!/usr/bin/env bash
# User-space instructions per GET, counted by valgrind's callgrind: redguard (release build) and, when
# installed, twemproxy (nutcracker), serving the same GET of a 100-byte value one at a time over one
# connection. Instruction counts do not depend on how busy the machine is, unlike time: twemproxy's repeat
# exactly, redguard's within about 2% (its runtime's timer work varies with timing). Each sidecar runs twice,
# for 1,000 and for 3,000 GETs; the difference divided by 2,000 leaves start-up and shutdown out.
#
#   cargo build --release && bash scripts/instructions-per-get.sh
#
# Needs valgrind, redis-server and python3 (and nutcracker for the comparison). Kernel work (syscalls,
# wake-ups) is not counted: see BENCHMARKS.md for that.
set -euo pipefail

REDGUARD_BIN=${REDGUARD_BIN:-target/release/redguard}
work=$(mktemp -d)
cleanup() {
    pkill -f "callgrind-out-file=$work/" 2>/dev/null || true
    [ -n "${redis_pid:-}" ] && kill "$redis_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >"$work/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 1 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$redis_port" set key:1 "$(printf 'v%.0s' $(seq 1 100))" >/dev/null

cat >"$work/drive.py" <<'EOF'
import socket, sys
mode, addr, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "http":
    s = socket.socket(socket.AF_UNIX)
    s.connect(addr)
    body = b'{"op":"get","key":"key:1"}'
    req = b"POST /v1/cmd HTTP/1.1\r\nHost: redguard\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    for _ in range(n):
        s.sendall(req)
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(65536)
        head, rest = buf.split(b"\r\n\r\n", 1)
        length = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
        while len(rest) < length:
            rest += s.recv(65536)
        assert b'"source":"redis"' in rest, rest
else:
    host, port = addr.split(":")
    s = socket.create_connection((host, int(port)))
    for _ in range(n):
        s.sendall(b"*2\r\n$3\r\nGET\r\n$5\r\nkey:1\r\n")
        buf = b""
        while not (buf.startswith(b"$") and buf.count(b"\r\n") >= 2):
            buf += s.recv(65536)
        assert buf.startswith(b"$100"), buf
EOF

# Runs one sidecar under callgrind, sends $2 GETs, stops it, prints its instruction total.
count() {
    local what=$1 n=$2 out="$work/cg.$1.$2"
    if [ "$what" = redguard ]; then
        printf 'listen:\n  socket: %s\nredis:\n  url: redis://127.0.0.1:%s\nadmin:\n  listen: 127.0.0.1:0\n' "$work/rg.sock" "$redis_port" >"$work/rg.yaml"
        valgrind --tool=callgrind --callgrind-out-file="$out" "$REDGUARD_BIN" run --config "$work/rg.yaml" \
            >"$work/$what.log" 2>&1 &
        for _ in $(seq 1 600); do [ -S "$work/rg.sock" ] && break; sleep 0.1; done
        python3 "$work/drive.py" http "$work/rg.sock" "$n"
    else
        local port
        port=$(free_port)
        printf 'pool:\n  listen: 127.0.0.1:%s\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n  servers:\n    - 127.0.0.1:%s:1\n' \
            "$port" "$redis_port" >"$work/nc.yml"
        valgrind --tool=callgrind --callgrind-out-file="$out" nutcracker -c "$work/nc.yml" -s "$(free_port)" \
            >"$work/$what.log" 2>&1 &
        for _ in $(seq 1 600); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
        python3 "$work/drive.py" resp "127.0.0.1:$port" "$n"
    fi
    local pid=$!
    kill -TERM "$pid"
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$work/rg.sock"
    awk '/^summary:/ {print $2}' "$out"
}

targets=(redguard)
if command -v nutcracker >/dev/null; then targets+=(twemproxy); else echo "nutcracker not installed: twemproxy skipped"; fi
for what in "${targets[@]}"; do
    small=$(count "$what" 1000)
    large=$(count "$what" 3000)
    echo "$what: $(((large - small) / 2000)) user-space instructions per GET"
done
