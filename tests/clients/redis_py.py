"""redis-py (sync and asyncio, default options) against redguard's RESP socket, driven by tests/resp_clients.rs.

Usage: redis_py.py <resp socket path>. The script and the test take turns over stdin/stdout: the script prints
`killed?` when it wants Redis killed and reads a line once it is; `restarted?` likewise. Every check is an
assert; any failure exits non-zero with the traceback. The same client objects are used before, during and
after the outage: none is recreated.
"""
import asyncio
import sys
import time

import redis
import redis.asyncio as aioredis

URL = "unix://" + sys.argv[1]


def turn(prompt):
    print(prompt, flush=True)
    line = sys.stdin.readline()
    assert line.strip() == "ok", f"the test answered {line!r}"


def until(what, check, timeout=15.0):
    """Polls `check` until it returns a true value; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def error_of(call):
    try:
        call()
    except redis.exceptions.ResponseError as e:
        return str(e)
    raise AssertionError("expected an error reply")


async def main():
    r = redis.Redis.from_url(URL)  # default options: RESP2, a connection pool
    assert r.ping() is True
    assert r.set("py:user", "ada") is True
    assert r.get("py:user") == b"ada"
    r.hset("py:h", mapping={"a": "1", "b": "2"})
    assert r.hgetall("py:h") == {b"a": b"1", b"b": b"2"}
    # A pipeline (non-transactional) and a transaction.
    pipe = r.pipeline(transaction=False)
    pipe.set("py:p1", "x").incr("py:n").get("py:p1")
    assert pipe.execute() == [True, 1, b"x"]
    with r.pipeline(transaction=True) as tx:
        tx.incr("py:n").incr("py:n")
        assert tx.execute() == [2, 3]
    # A blocking pop: on a Redis connection of its own, answered by Redis's own timeout or an element.
    assert r.blpop(["py:list"], timeout=1) is None
    r.rpush("py:list", "job")
    assert r.blpop(["py:list"], timeout=1) == (b"py:list", b"job")
    # Pub/sub: a subscriber on a Redis connection of its own receives what another client publishes.
    p = r.pubsub()
    p.subscribe("py:ch")
    confirm = until("the subscription", lambda: p.get_message(timeout=0.2))
    assert confirm["type"] == "subscribe" and confirm["channel"] == b"py:ch", confirm
    assert r.publish("py:ch", "hi") == 1
    msg = until("the message", lambda: p.get_message(timeout=0.2))
    assert msg["type"] == "message" and msg["data"] == b"hi", msg
    p.close()
    # Sharded pub/sub the same way.
    p = r.pubsub()
    p.ssubscribe("py:sch")
    confirm = until("the shard subscription", lambda: p.get_sharded_message(timeout=0.2))
    assert confirm["type"] == "ssubscribe" and confirm["channel"] == b"py:sch", confirm
    assert r.spublish("py:sch", "shard-hi") == 1
    msg = until("the shard message", lambda: p.get_sharded_message(timeout=0.2))
    assert msg["type"] == "smessage" and msg["data"] == b"shard-hi", msg
    p.close()

    # asyncio, default options: the same checks on a client that lives through the outage too.
    a = aioredis.Redis.from_url(URL)
    assert await a.get("py:user") == b"ada"
    async with a.pipeline(transaction=True) as tx:
        tx.set("py:a", "1").get("py:a")
        assert await tx.execute() == [True, b"1"]

    turn("killed?")
    # Reads the cache holds come from it; writes are refused, never reported as done.
    assert r.get("py:user") == b"ada"
    assert r.hgetall("py:h") == {b"a": b"1", b"b": b"2"}
    msg = until("the circuit to open", lambda: (lambda e: e if e.startswith("CIRCUITOPEN") else None)(
        error_of(lambda: r.set("py:user", "bob"))))
    assert "retry after" in msg, msg
    assert r.get("py:user") == b"ada", "the refused write changed nothing"

    assert await a.get("py:user") == b"ada"
    try:
        await a.incr("py:n")
        raise AssertionError("INCR should be refused")
    except redis.exceptions.ResponseError as e:
        assert str(e).startswith("CIRCUITOPEN"), e

    turn("restarted?")
    # The same client object works again once the circuit closed (Redis came back empty).
    until("a write to succeed", lambda: _try(lambda: r.set("py:user", "bob")))
    assert r.get("py:user") == b"bob"
    pipe = r.pipeline(transaction=False)
    pipe.set("py:p2", "y").get("py:p2")
    assert pipe.execute() == [True, b"y"]
    assert await a.get("py:user") == b"bob"
    assert await a.incr("py:n") == 1
    await a.aclose()
    print("done", flush=True)


def _try(call):
    try:
        return call()
    except redis.exceptions.ResponseError:
        return None


if __name__ == "__main__":
    asyncio.run(main())
