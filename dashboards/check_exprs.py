#!/usr/bin/env python3
"""Check that every PromQL expression of a Grafana dashboard is accepted by Prometheus.

Every `targets[].expr` of the dashboard (panels inside rows included) has its Grafana
variables replaced ($namespace and $pod by `.*`, $__rate_interval and $__interval by
`1m`, $__range by `1h`) and is sent to Prometheus' /api/v1/query. An expression fails
when Prometheus answers with an error, or, with --require-data, when it returns no
series.

Prometheus is either one that already runs (--prometheus-url, loopback only) or a
throw-away one that this script starts on 127.0.0.1 with a random free port, an
empty data directory and no scrape targets (or the --scrape targets), and stops at
the end.

    python3 dashboards/check_exprs.py                        # parse check, own Prometheus
    python3 dashboards/check_exprs.py --prometheus-url http://127.0.0.1:9090
    python3 dashboards/check_exprs.py --scrape 127.0.0.1:9190 --require-data

Exit status: 0 when every expression passed, 1 when at least one failed, 2 when the
check itself could not run (no dashboard, Prometheus would not start, ...).
Standard library only.
"""

import argparse
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DASHBOARD = os.path.join(HERE, "redguard.json")

# Grafana variable -> value used for the check.
SUBSTITUTIONS = {
    "namespace": ".*",
    "pod": ".*",
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "1h",
}
# $name, ${name}, ${name:format} and the deprecated [[name]].
VARIABLE_RE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")

SCRAPE_JOB = "redguard-check"


class SetupError(Exception):
    """The check could not run at all (exit status 2)."""


def collect_exprs(node, where=""):
    """Yield (location, expr) for every targets[].expr under node, rows included."""
    if isinstance(node, dict):
        title = node.get("title", where) if "targets" in node or "panels" in node else where
        for t in node.get("targets", []) or []:
            if isinstance(t, dict) and t.get("expr"):
                yield f"{title} [{t.get('refId', '?')}]", t["expr"]
        for key, value in node.items():
            if key != "targets":
                yield from collect_exprs(value, title)
    elif isinstance(node, list):
        for item in node:
            yield from collect_exprs(item, where)


def substitute(expr):
    """Replace the Grafana variables; return (expr, [unknown variable names])."""
    unknown = []

    def repl(m):
        name = m.group(1) or m.group(2) or m.group(3)
        if name in SUBSTITUTIONS:
            return SUBSTITUTIONS[name]
        unknown.append(name)
        return m.group(0)

    return VARIABLE_RE.sub(repl, expr), unknown


def require_loopback(host, what):
    """Refuse anything but loopback addresses."""
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror as e:
        raise SetupError(f"{what}: cannot resolve {host!r}: {e}")
    for info in infos:
        addr = ipaddress.ip_address(info[4][0].split("%")[0])
        if not addr.is_loopback:
            raise SetupError(f"{what}: {host!r} is not a loopback address ({addr}); "
                             "this check only talks to 127.0.0.0/8 or ::1")


def http_get_json(url, timeout):
    """GET url and decode the JSON body, also for Prometheus' 4xx/5xx answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            return json.loads(body)
        except ValueError:
            return {"status": "error", "errorType": f"http {e.code}",
                    "error": body.decode(errors="replace")[:300]}


def query(base_url, expr, timeout):
    url = base_url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    return http_get_json(url, timeout)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThrowAwayPrometheus:
    """A Prometheus on 127.0.0.1 with a temporary data dir, stopped on exit."""

    def __init__(self, binary, scrape_targets, startup_timeout):
        self.binary = binary
        self.scrape_targets = scrape_targets
        self.startup_timeout = startup_timeout
        self.proc = None
        self.tmp = None
        self.url = None

    def _config(self):
        lines = ["global:", "  scrape_interval: 5s", "  evaluation_interval: 5s"]
        if self.scrape_targets:
            lines += ["scrape_configs:", f"  - job_name: {SCRAPE_JOB}", "    static_configs:"]
            for target in self.scrape_targets:
                # namespace/pod as a Kubernetes scrape would set them.
                lines += [f"      - targets: ['{target}']",
                          "        labels:",
                          "          namespace: check",
                          f"          pod: '{target}'"]
        else:
            lines.append("scrape_configs: []")
        return "\n".join(lines) + "\n"

    def __enter__(self):
        if shutil.which(self.binary) is None and not os.path.exists(self.binary):
            raise SetupError(f"prometheus binary {self.binary!r} not found "
                             "(install it or pass --prometheus-url)")
        self.tmp = tempfile.mkdtemp(prefix="check-exprs-")
        config = os.path.join(self.tmp, "prometheus.yml")
        with open(config, "w") as f:
            f.write(self._config())
        last_log = ""
        for _attempt in range(3):  # the free port may be taken between probe and bind
            port = free_port()
            log_path = os.path.join(self.tmp, "prometheus.log")
            with open(log_path, "w") as log:
                self.proc = subprocess.Popen(
                    [self.binary,
                     f"--config.file={config}",
                     f"--storage.tsdb.path={os.path.join(self.tmp, 'data')}",
                     f"--web.listen-address=127.0.0.1:{port}",
                     "--log.level=warn"],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            self.url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + self.startup_timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                        if r.status == 200:
                            return self
                except (urllib.error.URLError, ConnectionError, socket.timeout):
                    pass
                time.sleep(0.3)
            with open(log_path) as log:
                last_log = log.read()[-2000:]
            self._stop()
        raise SetupError("throw-away prometheus did not become ready:\n" + last_log)

    def _stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def __exit__(self, *exc):
        self._stop()
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return False

    def wait_for_scrapes(self, settle, timeout):
        """Wait until every scrape target is up, then `settle` more seconds so that
        rates over 1m have at least two samples."""
        if not self.scrape_targets:
            return
        deadline = time.monotonic() + timeout
        expr = f'count(up{{job="{SCRAPE_JOB}"}} == 1)'
        while True:
            if self.proc.poll() is not None:
                raise SetupError("throw-away prometheus exited while waiting for scrapes")
            res = query(self.url, expr, timeout=5)
            result = res.get("data", {}).get("result", [])
            if result and int(float(result[0]["value"][1])) == len(self.scrape_targets):
                break
            if time.monotonic() > deadline:
                raise SetupError(f"scrape targets {self.scrape_targets} not up after {timeout}s")
            time.sleep(1)
        time.sleep(settle)


def run_checks(url, exprs, require_data, timeout, verbose):
    failures = []
    passed = 0
    for where, raw in exprs:
        expr, unknown = substitute(raw)
        if unknown:
            failures.append((where, expr, f"unknown Grafana variable(s): {', '.join(unknown)}"))
            continue
        try:
            res = query(url, expr, timeout)
        except (urllib.error.URLError, ConnectionError, socket.timeout) as e:
            raise SetupError(f"cannot reach prometheus at {url}: {e}")
        if res.get("status") != "success":
            failures.append((where, expr, f"{res.get('errorType', 'error')}: {res.get('error', res)}"))
            continue
        data = res.get("data", {})
        n = len(data.get("result", [])) if data.get("resultType") in ("vector", "matrix") else 1
        if require_data and n == 0:
            failures.append((where, expr, "no data returned"))
            continue
        passed += 1
        if verbose:
            print(f"ok    {where}: {n} series")
    return passed, failures


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dashboard", action="append",
                    help=f"dashboard JSON to check (repeatable; default {DEFAULT_DASHBOARD})")
    ap.add_argument("--prometheus-url",
                    help="use this running Prometheus (loopback only) instead of starting one")
    ap.add_argument("--prometheus-bin", default="prometheus",
                    help="prometheus binary for the throw-away server (default: from PATH)")
    ap.add_argument("--scrape", action="append", default=[], metavar="HOST:PORT",
                    help="let the throw-away Prometheus scrape this loopback target "
                         "(e.g. a redguard admin port 127.0.0.1:9190); repeatable")
    ap.add_argument("--require-data", action="store_true",
                    help="also fail expressions that return no series")
    ap.add_argument("--settle", type=float, default=20.0,
                    help="seconds to keep scraping after the targets are up (default 20)")
    ap.add_argument("--timeout", type=float, default=10.0,
                    help="timeout of each query in seconds (default 10)")
    ap.add_argument("--print", dest="print_only", action="store_true",
                    help="only print the substituted expressions, query nothing")
    ap.add_argument("-v", "--verbose", action="store_true", help="also list passing expressions")
    args = ap.parse_args(argv)

    # A SIGTERM (e.g. a CI timeout) must still stop the throw-away Prometheus.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(2))

    try:
        exprs = []
        for path in args.dashboard or [DEFAULT_DASHBOARD]:
            try:
                with open(path) as f:
                    exprs += list(collect_exprs(json.load(f)))
            except (OSError, ValueError) as e:
                raise SetupError(f"cannot read dashboard {path}: {e}")
        if not exprs:
            raise SetupError("no targets[].expr found in the dashboard(s)")

        if args.print_only:
            for where, raw in exprs:
                print(f"{where}:\n  {substitute(raw)[0]}")
            return 0

        if args.prometheus_url and args.scrape:
            raise SetupError("--scrape only applies to the throw-away Prometheus, "
                             "not to --prometheus-url")
        for target in args.scrape:
            host, _, port = target.rpartition(":")
            if not host or not port.isdigit():
                raise SetupError(f"--scrape {target!r}: expected HOST:PORT")
            require_loopback(host.strip("[]"), "--scrape")

        if args.prometheus_url:
            parsed = urllib.parse.urlparse(args.prometheus_url)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise SetupError(f"--prometheus-url {args.prometheus_url!r}: expected http://HOST:PORT")
            require_loopback(parsed.hostname, "--prometheus-url")
            passed, failures = run_checks(args.prometheus_url, exprs, args.require_data,
                                          args.timeout, args.verbose)
        else:
            with ThrowAwayPrometheus(args.prometheus_bin, args.scrape, 60) as prom:
                prom.wait_for_scrapes(args.settle, timeout=120)
                passed, failures = run_checks(prom.url, exprs, args.require_data,
                                              args.timeout, args.verbose)
    except SetupError as e:
        print(f"check_exprs: {e}", file=sys.stderr)
        return 2

    for where, expr, why in failures:
        print(f"FAIL  {where}: {why}\n      {expr}")
    print(f"{passed} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
