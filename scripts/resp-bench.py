#!/usr/bin/env python3
"""The RESP socket against direct Redis and twemproxy, measured with redis-benchmark: one command, one table.

    cargo build --release --bin redguard && python3 scripts/resp-bench.py [--rounds 5] [--quick]

Starts, each on a Unix socket in a scratch directory: redis-server (direct), nutcracker (twemproxy) in front of
it, and the release redguard with `listen.resp_socket` in front of it. Then, interleaved round by round so that
the machine's noise falls on every target alike: `redis-benchmark -s <socket> -t get|set -d 100` at concurrency
1, concurrency 50, and concurrency 50 with `-P 16`. For each cell it prints the median over the rounds of the
throughput (and its ratio to direct in the same run), the p50 latency (and what it adds to direct's), and the
sidecar's CPU per request (user + system time of the proxy process from /proc, over the requests it served).
GET is also run against a second redguard with `resp.serve_cached_reads: false` (no PTTL behind it, no cache
fill). Last, redguard with its circuit forced open, GETs answered from the fallback cache, against direct.

`--pin` puts Redis and the proxies on CPU 1 and redis-benchmark on CPU 0 (sched_setaffinity), so that a proxy
shares its core with the Redis it talks to and the scheduler's placement stops adding to the noise; CPU per
request then shows as throughput too. The issue's method is unpinned; BENCHMARKS.md says which it quotes.

No figure is checked: this is a measurement. BENCHMARKS.md quotes its output.
"""
import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import http.client

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICKS = os.sysconf("SC_CLK_TCK")


def which(name):
    for d in os.environ.get("PATH", "").split(":") + ["/usr/sbin", "/usr/local/sbin"]:
        p = os.path.join(d, name)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def wait_socket(path, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            s.close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {path} after {timeout}s")


def wait_tcp(port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def free_port():
    """A loopback TCP port nothing listens on (free when asked; the child binds it right after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("redguard")
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.path)


def post(sock, route, body):
    c = UnixHTTP(sock)
    c.request("POST", route, body=body)
    r = c.getresponse()
    data = r.read()
    assert r.status == 200, (route, r.status, data)
    return data


# With --pin: the CPU set of the servers (Redis and the proxies) and of the load tool; None leaves them alone.
PIN = {"servers": None, "load": None}


def pinned(role):
    """A preexec_fn that pins the child to its role's CPUs (or None when not pinning)."""
    cpus = PIN[role]
    return None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))


def bench(sock, test, clients, pipeline, requests):
    """One redis-benchmark run: (requests per second, p50 in ms)."""
    out = subprocess.run(
        ["redis-benchmark", "-s", sock, "-t", test, "-d", "100", "-c", str(clients), "-P", str(pipeline),
         "-n", str(requests), "--csv"],
        capture_output=True, text=True, check=True, preexec_fn=pinned("load"))
    for line in out.stdout.splitlines():
        cells = [c.strip('"') for c in line.split(",")]
        if cells and cells[0] == test.upper():
            return float(cells[1]), float(cells[4])
    raise SystemExit(f"no result line for {test} in: {out.stdout}\n{out.stderr}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="few requests per run (a smoke run; figures mean nothing)")
    ap.add_argument("--redguard", default=os.path.join(ROOT, "target/release/redguard"))
    ap.add_argument("--pin", action="store_true",
                    help="Redis and the proxies on CPU 1, redis-benchmark on CPU 0 (needs 2 CPUs)")
    args = ap.parse_args()
    if args.pin:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            raise SystemExit("--pin needs two CPUs to run on")
        PIN["servers"], PIN["load"] = {cpus[1]}, {cpus[0]}
    scale = 0.02 if args.quick else 1.0
    for tool in ("redis-server", "redis-benchmark"):
        if not which(tool):
            raise SystemExit(f"{tool} is not installed (scripts/install-test-deps.sh)")
    nutcracker = which("nutcracker")
    scratch = tempfile.mkdtemp(prefix="resp-bench-")
    procs = []
    try:
        direct = os.path.join(scratch, "redis.sock")
        procs.append(subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", direct, "--unixsocketperm", "700", "--save", "",
             "--appendonly", "no", "--dir", scratch], stdout=subprocess.DEVNULL, preexec_fn=pinned("servers")))
        wait_socket(direct)
        # redguard and twemproxy reach Redis over loopback TCP, as a sidecar does.
        port = free_port()
        procs.append(subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", scratch], stdout=subprocess.DEVNULL, preexec_fn=pinned("servers")))
        wait_tcp(port)
        targets = {"direct": (direct, None)}
        if nutcracker:
            nc_sock = os.path.join(scratch, "nutcracker.sock")
            conf = os.path.join(scratch, "nutcracker.yml")
            with open(conf, "w") as f:
                f.write(f"pool:\n  listen: {nc_sock} 0600\n  redis: true\n  servers:\n   - 127.0.0.1:{port}:1\n")
            # Its stats server too on loopback and a free port: the default (0.0.0.0:22222) is open to the
            # network, and taken when another nutcracker runs.
            nc = subprocess.Popen([nutcracker, "-c", conf, "-o", os.path.join(scratch, "nc.log"),
                                   "-a", "127.0.0.1", "-s", str(free_port())], preexec_fn=pinned("servers"))
            procs.append(nc)
            wait_socket(nc_sock)
            targets["twemproxy"] = (nc_sock, nc.pid)
        else:
            print("nutcracker (twemproxy) is not installed: its column is left out", file=sys.stderr)
        rg_sock = os.path.join(scratch, "rg.sock")
        rg_resp = os.path.join(scratch, "rg-resp.sock")
        conf = os.path.join(scratch, "redguard.yaml")
        with open(conf, "w") as f:
            f.write(f"listen:\n  socket: {rg_sock}\n  resp_socket: {rg_resp}\nadmin:\n  listen: 127.0.0.1:0\n"
                    f"redis:\n  url: redis://127.0.0.1:{port}\nlog:\n  level: warn\n")
        rg = subprocess.Popen([args.redguard, "run", "--config", conf],
                              stderr=open(os.path.join(scratch, "rg.log"), "w"), preexec_fn=pinned("servers"))
        procs.append(rg)
        wait_socket(rg_resp)
        targets["redguard"] = (rg_resp, rg.pid)
        # A second redguard with `resp.serve_cached_reads: false`: GET goes to Redis as it came, with no PTTL
        # behind it and nothing put in the cache (what the fallback costs is the difference).
        nc_resp = os.path.join(scratch, "rg-nocache-resp.sock")
        conf = os.path.join(scratch, "redguard-nocache.yaml")
        with open(conf, "w") as f:
            f.write(f"listen:\n  socket: {os.path.join(scratch, 'rg-nocache.sock')}\n  resp_socket: {nc_resp}\n"
                    f"admin:\n  listen: 127.0.0.1:0\nredis:\n  url: redis://127.0.0.1:{port}\nlog:\n  level: warn\n"
                    f"resp:\n  serve_cached_reads: false\n")
        rg_nocache = subprocess.Popen([args.redguard, "run", "--config", conf],
                                      stderr=open(os.path.join(scratch, "rg-nocache.log"), "w"),
                                      preexec_fn=pinned("servers"))
        procs.append(rg_nocache)
        wait_socket(nc_resp)

        cells = [("GET", 1, 1, 20000), ("GET", 50, 1, 100000), ("GET", 50, 16, 400000),
                 ("SET", 1, 1, 20000), ("SET", 50, 1, 100000), ("SET", 50, 16, 400000)]
        results = {}  # (cell, target) -> [(rps, p50, cpu_us_per_req)]
        for r in range(args.rounds):
            for cell in cells:
                test, c, p, n = cell
                n = max(200, int(n * scale))
                runs = list(targets.items())
                if test == "GET":
                    runs.append(("redguard-nocache", (nc_resp, rg_nocache.pid)))
                for name, (sock, pid) in runs:
                    before = cpu_seconds(pid) if pid else 0.0
                    rps, p50 = bench(sock, test.lower(), c, p, n)
                    cpu = (cpu_seconds(pid) - before) / n * 1e6 if pid else 0.0
                    results.setdefault((cell, name), []).append((rps, p50, cpu))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

        # Circuit forced open: GETs of a key the cache holds, answered without Redis.
        bench(rg_resp, "get", 1, 1, 100)  # fills the cache with redis-benchmark's key
        post(rg_sock, "/v1/breaker", b'{"action":"force_open"}')
        open_cells = [("GET", 1, 1, 20000), ("GET", 50, 1, 100000), ("GET", 50, 16, 400000)]
        for r in range(args.rounds):
            for cell in open_cells:
                test, c, p, n = cell
                n = max(200, int(n * scale))
                for name, sock, pid in (("direct", direct, None), ("redguard-open", rg_resp, rg.pid)):
                    before = cpu_seconds(pid) if pid else 0.0
                    rps, p50 = bench(sock, "get", c, p, n)
                    cpu = (cpu_seconds(pid) - before) / n * 1e6 if pid else 0.0
                    results.setdefault((("open",) + cell, name), []).append((rps, p50, cpu))
        post(rg_sock, "/v1/breaker", b'{"action":"reset"}')

        med = lambda xs: statistics.median(xs)
        where = " (pinned: Redis and the proxies on one CPU, redis-benchmark on the other)" if args.pin else ""
        print(f"\nredis-benchmark -d 100, medians of {args.rounds} interleaved rounds{where}; ratio = throughput /"
              f" direct's in the same run; +p50 = p50 minus direct's; CPU = the sidecar's user+system time per"
              f" request.\n")
        names = [n for n in targets if n != "direct"]
        header = "| test | clients | pipeline | direct rps | " + " | ".join(
            f"{n} rps (ratio) | {n} +p50 ms | {n} CPU µs/req" for n in names) + " |"
        print(header)
        print("|" + "---|" * (header.count("|") - 1))
        for cell in cells:
            test, c, p, _ = cell
            d = results[(cell, "direct")]
            d_rps, d_p50 = med([x[0] for x in d]), med([x[1] for x in d])
            row = f"| {test} | {c} | {p} | {d_rps:,.0f} |"
            for n in names:
                xs = results[(cell, n)]
                rps, p50, cpu = med([x[0] for x in xs]), med([x[1] for x in xs]), med([x[2] for x in xs])
                row += f" {rps:,.0f} ({rps / d_rps:.2f}x) | {p50 - d_p50:+.3f} | {cpu:.1f} |"
            print(row)
        print("\nGET through a redguard with `resp.serve_cached_reads: false` (no PTTL, no cache fill), same rounds:\n")
        print("| clients | pipeline | direct rps | redguard-nocache rps (ratio) | +p50 ms | CPU µs/req |")
        print("|---|---|---|---|---|---|")
        for cell in cells:
            test, c, p, _ = cell
            if test != "GET":
                continue
            d = results[(cell, "direct")]
            d_rps, d_p50 = med([x[0] for x in d]), med([x[1] for x in d])
            xs = results[(cell, "redguard-nocache")]
            rps, p50, cpu = med([x[0] for x in xs]), med([x[1] for x in xs]), med([x[2] for x in xs])
            print(f"| {c} | {p} | {d_rps:,.0f} | {rps:,.0f} ({rps / d_rps:.2f}x) | {p50 - d_p50:+.3f} | {cpu:.1f} |")
        print("\nCircuit forced open, GETs answered from the fallback cache:\n")
        print("| clients | pipeline | direct rps | redguard-open rps (ratio) | redguard-open CPU µs/req |")
        print("|---|---|---|---|---|")
        for cell in open_cells:
            _, c, p, _ = cell
            d = med([x[0] for x in results[(("open",) + cell, "direct")]])
            xs = results[(("open",) + cell, "redguard-open")]
            rps, cpu = med([x[0] for x in xs]), med([x[2] for x in xs])
            print(f"| {c} | {p} | {d:,.0f} | {rps:,.0f} ({rps / d:.2f}x) | {cpu:.1f} |")
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
