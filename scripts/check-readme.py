#!/usr/bin/env python3
"""Runs README.md's quick start as a newcomer would, and checks every answer the README shows.

The README is the source: nothing here copies its commands or answers. The convention:

- The quick-start command is the first line of the first ```sh block under the "## Quick start" heading. It is run
  exactly as written (`bash -c`), from the repository's root, in a session (process group) of its own.
- Examples are in every ```sh block of README.md that has a line starting with `curl ` or `redis-cli ` (other
  than the quick-start command's own block), unless its fence reads ```sh no-check: an example that cannot run
  against a fresh quick start (a cluster, a stopped Redis) says so, and the sentence before it says why. In a
  checked block:
    * a line starting with `curl ` or `redis-cli ` is an example; a line ending in `\\` continues onto the next one;
    * the lines right after it that start with `# ` hold its expected answer: for `curl`, their text after the
      `# `, joined, is one JSON document (it may span several lines); for `redis-cli`, the lines of its output;
    * blank lines may separate examples; any other line is an error, so that an example the check cannot run
      is never skipped in silence.
  Each example runs as written (`bash -c`, from the repository's root), in document order, against the one
  redguard the quick-start command started, so an example may rely on the ones before it. It must exit 0
  within 10 s. With an answer, its output is parsed as JSON and compared with the README's as JSON (whitespace
  and key order do not matter, values do); a difference fails the check and is shown as a diff.
- Round 1 stops the command with SIGINT to its whole process group (Ctrl-C in a terminal); round 2 starts it
  again and sends SIGTERM to the command's own process only (a service manager, `kill PID`). After each, nothing
  may be left: no process of the command's session (so no redis-server it started), no socket file. A Redis on
  127.0.0.1:6379 that was there before must still be there, the same instance (its run_id), afterwards.

Needs only python3 and what the quick start needs. The release build comes first (fat LTO: minutes the first
time), so the wait for the socket covers the start, not the build. If the admin port 127.0.0.1:9190 is taken
by something else, the command runs with REDGUARD_ADMIN_LISTEN=127.0.0.1:0 (said in the output) instead of
failing on an unrelated process, unless an example calls :9190 (then the check stops, saying so).

Usage: python3 scripts/check-readme.py [README.md]
"""

import difflib
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

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SOCKET = os.path.join(ROOT, "redguard.sock")  # examples/redguard.yaml's listen.socket, from the root
RESP_SOCKET = os.path.join(ROOT, "redis.sock")  # examples/redguard.yaml's listen.resp_socket
EXAMPLE_PREFIXES = ("curl ", "redis-cli ")
START_TIMEOUT_S = 120  # from the command's start (after the build) to a live socket
STOP_TIMEOUT_S = 30  # from the signal to the command's exit (redguard drains, then the script stops Redis)
EXAMPLE_TIMEOUT_S = 10


class ReadmeError(Exception):
    """README.md does not follow the convention above."""


class Example:
    """One `curl` or `redis-cli` line (continuations joined) and the answer the README shows for it, if any."""

    def __init__(self, line_no, command, answer_text):
        self.line_no = line_no
        self.command = command
        self.answer_text = answer_text
        self.answer = None  # parsed from answer_text by parse_readme


def sh_blocks(lines):
    """Yields (heading, fence info, first line number (1-based), block lines) for each ``` block."""
    heading, i = "", 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            heading = line[3:].strip()
        fence = re.match(r"^```(.*)$", line)
        if fence:
            info, start, body = fence.group(1).strip(), i + 2, []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            if i == len(lines):
                raise ReadmeError(f"README.md:{start - 1}: a code block is never closed")
            yield heading, info, start, body
        i += 1


def parse_examples(start, body):
    """The examples of one checked block."""
    examples, i = [], 0
    while i < len(body):
        line = body[i]
        if not line.strip():
            i += 1
            continue
        if not line.startswith(EXAMPLE_PREFIXES):
            raise ReadmeError(
                f"README.md:{start + i}: a checked block holds only `curl` / `redis-cli` examples and `# ` answer lines, "
                f"not {line!r} (write other commands in a ```sh no-check block)"
            )
        line_no, command = start + i, line
        while command.endswith("\\"):
            i += 1
            if i == len(body):
                raise ReadmeError(f"README.md:{line_no}: the example ends in a `\\` continuation")
            command += "\n" + body[i]
        i += 1
        answer = []
        while i < len(body) and (body[i].startswith("# ") or body[i] == "#"):
            answer.append(body[i][2:])
            i += 1
        examples.append(Example(line_no, command, "\n".join(answer) if answer else None))
    return examples


def parse_readme(path):
    """(the quick-start command, its line number, the examples in document order)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except OSError as e:
        raise ReadmeError(f"cannot read {path}: {e}")
    command, command_line, examples = None, None, []
    for heading, info, start, body in sh_blocks(lines):
        words = info.split()
        if not words or words[0] != "sh":
            continue
        if heading == "Quick start" and command is None:
            if not body or not body[0].strip():
                raise ReadmeError(f"README.md:{start}: the quick start's first ```sh block is empty")
            command, command_line = body[0].strip(), start
            continue
        if "no-check" not in words[1:] and any(line.startswith(EXAMPLE_PREFIXES) for line in body):
            examples.extend(parse_examples(start, body))
    if command is None:
        raise ReadmeError('README.md has no ```sh block under "## Quick start" (the quick-start command)')
    if not examples:
        raise ReadmeError("README.md has no curl examples to check")
    for ex in examples:
        if ex.answer_text is not None and ex.command.startswith("curl "):
            try:
                ex.answer = json.loads(ex.answer_text)
            except json.JSONDecodeError as e:
                raise ReadmeError(f"README.md:{ex.line_no}: the answer is not JSON ({e}):\n{ex.answer_text}")
    return command, command_line, examples


def tcp_listening(host, port):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def redis_identity(port):
    """What answers on 127.0.0.1:`port`: None if nothing, else its run_id (or its first reply line, e.g. an
    authentication error), so that a restarted or replaced Redis shows as a different identity."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"INFO server\r\n")
            data, deadline = b"", time.monotonic() + 2
            while time.monotonic() < deadline and b"run_id:" not in data and not data.startswith(b"-"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            m = re.search(rb"run_id:(\w+)", data)
            return m.group(1).decode() if m else data.split(b"\r\n")[0].decode(errors="replace")
    except OSError:
        return None


def socket_live(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def session_processes(sid):
    """{pid: command line} of the live processes in session `sid`."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            # Fields after the parenthesised command name: state ppid pgrp session ...
            fields = stat[stat.rindex(")") + 2 :].split()
            if fields[0] == "Z" or int(fields[3]) != sid:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                found[int(entry)] = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return found


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def show_log(log_path, lines=40):
    with open(log_path, errors="replace") as f:
        tail = f.read().splitlines()[-lines:]
    print("---- the command's output (last lines) ----")
    print("\n".join(tail))
    print("----")


def run_example(ex):
    """The failure message of one example, or None if it answered as the README shows."""
    try:
        done = subprocess.run(
            ["bash", "-c", ex.command], cwd=ROOT, capture_output=True, text=True, timeout=EXAMPLE_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return f"no answer within {EXAMPLE_TIMEOUT_S} s"
    if done.returncode != 0:
        return f"exit status {done.returncode}\n{done.stderr.strip()}"
    if ex.answer_text is None:
        return None
    if ex.command.startswith("redis-cli "):
        want, got = ex.answer_text.strip().splitlines(), done.stdout.strip().splitlines()
        if want == got:
            return None
        diff = difflib.unified_diff(want, got, "README.md", "actual output", lineterm="")
        return "the output differs from the README's:\n" + "\n".join(diff)
    try:
        actual = json.loads(done.stdout)
    except json.JSONDecodeError:
        return f"the answer is not JSON:\n{done.stdout}"
    if actual == ex.answer:
        return None
    want = json.dumps(ex.answer, indent=2, sort_keys=True).splitlines()
    got = json.dumps(actual, indent=2, sort_keys=True).splitlines()
    diff = difflib.unified_diff(want, got, "README.md", "actual answer", lineterm="")
    return "the answer differs from the README's:\n" + "\n".join(diff)


class Round:
    """One start of the quick-start command, and the checks that it stopped cleanly."""

    def __init__(self, command, env, log_path):
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            ["bash", "-c", command],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own session and process group: the terminal's Ctrl-C reaches all of it
        )
        self.started = {}

    def wait_for_socket(self):
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                show_log(self.log_path)
                return f"the command exited with status {self.proc.returncode} before serving ./redguard.sock"
            if socket_live(SOCKET):
                self.started = session_processes(self.proc.pid)
                return None
            time.sleep(0.1)
        show_log(self.log_path)
        return f"./redguard.sock was not served within {START_TIMEOUT_S} s"

    def stop(self, sig, group):
        """Sends `sig` to the process group or to the command's process only; the problems left behind."""
        if group:
            os.killpg(self.proc.pid, sig)
        else:
            os.kill(self.proc.pid, sig)
        problems = []
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            problems.append(f"the command did not exit within {STOP_TIMEOUT_S} s of {signal.Signals(sig).name}")
        # The command's children are waited for by it; give stragglers a moment, bounded, before judging.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (session_processes(self.proc.pid) or any(map(alive, self.started))):
            time.sleep(0.1)
        left = session_processes(self.proc.pid)
        left.update({pid: cmd for pid, cmd in self.started.items() if alive(pid)})
        for pid, cmd in sorted(left.items()):
            problems.append(f"still running after the command stopped: pid {pid}: {cmd}")
        for path in (SOCKET, RESP_SOCKET):
            if os.path.exists(path):
                problems.append(f"./{os.path.basename(path)} is left behind")
        if left or self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # leave this machine as we found it
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            self.proc.wait()
        self.log.close()
        if problems:
            show_log(self.log_path)
        return problems


def main():
    readme = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "README.md")
    try:
        command, command_line, examples = parse_readme(readme)
    except ReadmeError as e:
        print(f"check-readme: {e}")
        return 1
    print(f"check-readme: the quick-start command (README.md:{command_line}): {command}")
    print(f"check-readme: {len(examples)} examples, {sum(e.answer_text is not None for e in examples)} with answers")

    if os.path.exists(SOCKET) and socket_live(SOCKET):
        print("check-readme: something already serves ./redguard.sock (a quick start running?); stop it first")
        return 1
    env = dict(os.environ)
    if tcp_listening("127.0.0.1", 9190):
        admin_examples = [ex.line_no for ex in examples if ":9190" in ex.command]
        if admin_examples:
            print(f"check-readme: 127.0.0.1:9190 is taken by another process, and examples call it "
                  f"(README.md:{', '.join(map(str, admin_examples))}); stop that process first")
            return 1
        env["REDGUARD_ADMIN_LISTEN"] = "127.0.0.1:0"
        print("check-readme: 127.0.0.1:9190 is taken by another process; running with REDGUARD_ADMIN_LISTEN=127.0.0.1:0")
    redis_6379 = redis_identity(6379)
    print(f"check-readme: 127.0.0.1:6379 before: {'free' if redis_6379 is None else 'taken, run_id ' + redis_6379}")

    # The build first, so that the deadline for the socket measures the start, not a fat-LTO build.
    print("check-readme: cargo build --release --bin redguard")
    subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "redguard"], cwd=ROOT, check=True)

    failures = 0
    log_dir = tempfile.mkdtemp(prefix="check-readme.")
    for n, (sig, group, how) in enumerate(
        [(signal.SIGINT, True, "SIGINT to its process group"), (signal.SIGTERM, False, "SIGTERM to its process")], 1
    ):
        print(f"check-readme: round {n}: starting `{command}`")
        rnd = Round(command, env, os.path.join(log_dir, f"round{n}.log"))
        problem = rnd.wait_for_socket()
        if problem:
            print(f"check-readme: FAIL: {problem}")
            rnd.stop(signal.SIGKILL, True)
            return 1
        servers = [f"{pid}" for pid, cmd in rnd.started.items() if "redis-server" in cmd]
        print(f"check-readme: serving; the command's session has {len(rnd.started)} processes "
              f"(redis-server: {', '.join(servers) or 'none'})")
        if n == 1:
            for ex in examples:
                shown = ex.command.replace("\\\n", "").replace("\n", " ")
                problem = run_example(ex)
                if problem:
                    failures += 1
                    print(f"FAIL README.md:{ex.line_no}: {shown}\n{problem}")
                else:
                    print(f"ok   README.md:{ex.line_no}: {shown}")
        print(f"check-readme: round {n}: stopping it with {how}")
        for problem in rnd.stop(sig, group):
            failures += 1
            print(f"FAIL {problem}")
        print(f"check-readme: round {n}: the command exited with status {rnd.proc.returncode}")

    after = redis_identity(6379)
    if after != redis_6379:
        failures += 1
        print(f"FAIL 127.0.0.1:6379 changed: before {redis_6379}, after {after}")
    if failures:
        print(f"check-readme: {failures} failure(s); the command's output is in {log_dir}")
        return 1
    shutil.rmtree(log_dir)
    print("check-readme: OK: the quick start runs as written and every example answers as README.md shows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
