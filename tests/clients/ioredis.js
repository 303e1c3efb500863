// ioredis (default options) against redguard's RESP socket, driven by tests/resp_clients.rs.
//
// Usage: node ioredis.js <resp socket path>. The script and the test take turns over stdin/stdout: the script
// prints `killed?` when it wants Redis killed and reads a line once it is; `restarted?` likewise. Every check is
// an assert; a failure exits non-zero. The same client object is used before, during and after the outage.
"use strict";
const assert = require("node:assert/strict");
const readline = require("node:readline");
const Redis = require("ioredis");

const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();

async function turn(prompt) {
  console.log(prompt);
  const { value } = await lines.next();
  assert.equal(value, "ok");
}

async function until(what, check, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    assert.ok(Date.now() < deadline, `gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function errorOf(promise) {
  try {
    await promise;
  } catch (e) {
    return e.message;
  }
  assert.fail("expected an error reply");
}

async function main() {
  const r = new Redis(process.argv[2]); // a path: a Unix socket; the ready check waits for INFO's loading:0
  assert.equal(await r.ping(), "PONG");
  assert.equal(await r.set("js:user", "ada"), "OK");
  assert.equal(await r.get("js:user"), "ada");
  await r.hset("js:h", { a: "1", b: "2" });
  assert.deepEqual(await r.hgetall("js:h"), { a: "1", b: "2" });
  // A pipeline and a transaction.
  assert.deepEqual(await r.pipeline().set("js:p", "x").incr("js:n").get("js:p").exec(), [
    [null, "OK"],
    [null, 1],
    [null, "x"],
  ]);
  assert.deepEqual(await r.multi().incr("js:n").incr("js:n").exec(), [
    [null, 2],
    [null, 3],
  ]);
  // A blocking pop, on a Redis connection of its own.
  assert.equal(await r.blpop("js:list", 1), null);
  await r.rpush("js:list", "job");
  assert.deepEqual(await r.blpop("js:list", 1), ["js:list", "job"]);
  // Pub/sub: a subscriber on a Redis connection of its own receives what another client publishes.
  const sub = new Redis(process.argv[2]);
  const received = new Promise((resolve) => sub.on("message", (channel, message) => resolve([channel, message])));
  assert.equal(await sub.subscribe("js:ch"), 1);
  assert.equal(await r.publish("js:ch", "hi"), 1);
  assert.deepEqual(await received, ["js:ch", "hi"]);
  sub.disconnect();
  // Sharded pub/sub the same way.
  const ssub = new Redis(process.argv[2]);
  const sharded = new Promise((resolve) => ssub.on("smessage", (channel, message) => resolve([channel, message])));
  assert.equal(await ssub.ssubscribe("js:sch"), 1);
  assert.equal(await r.spublish("js:sch", "shard-hi"), 1);
  assert.deepEqual(await sharded, ["js:sch", "shard-hi"]);
  ssub.disconnect();

  await turn("killed?");
  assert.equal(await r.get("js:user"), "ada");
  assert.deepEqual(await r.hgetall("js:h"), { a: "1", b: "2" });
  const msg = await until("the circuit to open", async () => {
    const m = await errorOf(r.set("js:user", "bob"));
    return m.startsWith("CIRCUITOPEN") ? m : null;
  });
  assert.match(msg, /retry after/);
  assert.equal(await r.get("js:user"), "ada", "the refused write changed nothing");

  await turn("restarted?");
  await until("a write to succeed", async () => {
    try {
      return (await r.set("js:user", "bob")) === "OK";
    } catch (e) {
      return false;
    }
  });
  assert.equal(await r.get("js:user"), "bob");
  assert.equal(await r.incr("js:n"), 1);
  r.disconnect();
  console.log("done");
  process.exit(0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
