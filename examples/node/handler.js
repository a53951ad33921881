// The transfer's push handler and the payment provider's inbound webhook, on node's http
// module. The dispatcher POSTs every ready `transfer` workflow here as a signed
// `workflow.ready` webhook; the handler advances it as the owner named in the push, and
// answers 2xx. A transfer debits the sender, waits for the payment provider to confirm,
// and then credits the receiver, or refunds the sender if no confirmation came in time.
"use strict";

const http = require("node:http");
const { Webhook, WebhookVerificationError } = require("standardwebhooks");
const { inTransaction } = require("./bank");

const OBJECT_IN_USE = "55006"; // the owner no longer holds the lease

// One fenced step: the heartbeat fails with 55006 unless `owner` still holds the lease, and
// locks the run until the step's checkpoint commits with its business write. One push can
// reach the handler twice (the dispatcher sends it again when a request times out, while
// the first goes on), both as the same owner: so whether the step is done is read under
// the lock, where the twin's commit is seen, not from the push's `steps`.
async function step(pool, push, name, write, slowDown) {
  await inTransaction(pool, async (client) => {
    await client.query("SELECT wf_heartbeat($1, owner => $2)", [push.workflow, push.owner]);
    const { rows } = await client.query("SELECT wf_step($1, $2) IS NOT NULL AS done", [
      push.workflow,
      name,
    ]);
    if (rows[0].done) return;
    await slowDown();
    const output = await write(client, push.input);
    await client.query("SELECT wf_checkpoint($1, $2, $3, owner => $4)", [
      push.workflow,
      name,
      output,
      push.owner,
    ]);
  });
}

async function advance(pool, push, slowDown) {
  const transfer = push.input;
  if (!("debit" in push.steps)) {
    await step(pool, push, "debit", async (client) => {
      await client.query("UPDATE accounts SET balance = balance - $2 WHERE id = $1", [
        transfer.from,
        transfer.amount,
      ]);
      return { debited: transfer.amount };
    }, slowDown);
  }
  // Replay-safe: the first call parks the workflow and returns null; the push after the
  // signal (or the timeout) returns what was recorded.
  const { rows } = await pool.query(
    "SELECT wf_wait($1, 'confirmed', 'payment.confirmed', $2::interval, $3) AS event",
    [push.workflow, `${transfer.confirm_within_seconds} seconds`, push.owner],
  );
  const event = rows[0].event;
  if (event === null) return "waiting for payment.confirmed";

  if (event.timed_out) {
    await step(pool, push, "refund", async (client) => {
      await client.query("UPDATE accounts SET balance = balance + $2 WHERE id = $1", [
        transfer.from,
        transfer.amount,
      ]);
      return { refunded: transfer.amount };
    }, slowDown);
    await pool.query("SELECT wf_fail($1, 'the payment was not confirmed in time', $2)", [
      push.workflow,
      push.owner,
    ]);
    return "refunded";
  }
  await step(pool, push, "credit", async (client) => {
    await client.query("UPDATE accounts SET balance = balance + $2 WHERE id = $1", [
      transfer.to,
      transfer.amount,
    ]);
    return { credited: transfer.amount, charge: event.payload.charge };
  }, slowDown);
  await pool.query("SELECT wf_complete($1, $2, $3)", [
    push.workflow,
    { charge: event.payload.charge },
    push.owner,
  ]);
  return "completed";
}

function readBody(request) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    request.on("data", (chunk) => chunks.push(chunk));
    request.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    request.on("error", reject);
  });
}

// `secret()` is the endpoint's signing secret; `log` hears what each request did. With
// `slowFirstStep` (milliseconds), the first step the server runs takes that much longer
// inside its transaction, like a slow call to the bank's core system.
// `stop()` closes the server and waits for the requests it is still handling, including
// those whose caller gave up waiting (the dispatcher's request timeout): their work goes on.
function createServer(pool, secret, log, { slowFirstStep = 0 } = {}) {
  let slowed = false;
  const slowDown = async () => {
    if (slowed || slowFirstStep === 0) return;
    slowed = true;
    await new Promise((resolve) => setTimeout(resolve, slowFirstStep));
  };
  const handling = new Set();
  const server = http.createServer((request, response) => {
    const work = handle(request, response).finally(() => handling.delete(work));
    handling.add(work);
  });
  server.stop = async () => {
    await new Promise((resolve) => server.close(resolve));
    await Promise.all(handling);
  };
  return server;

  async function handle(request, response) {
    const answer = (status, text) => {
      response.writeHead(status, { "content-type": "text/plain" }).end(text);
    };
    try {
      const body = await readBody(request);
      if (request.url === "/workflows") {
        let push;
        try {
          push = new Webhook(secret()).verify(body, request.headers);
        } catch (error) {
          if (!(error instanceof WebhookVerificationError)) throw error;
          log({ rejected: error.message });
          return answer(401, "bad signature");
        }
        const outcome = await advance(pool, push, slowDown);
        log({ workflow: push.workflow, outcome });
        return answer(200, outcome);
      }
      if (request.url === "/payments") {
        // The payment provider's callback. Its event id is the signal's idempotency key,
        // so a callback the provider repeats is one signal.
        const event = JSON.parse(body);
        await pool.query("SELECT wf_signal($1, 'payment.confirmed', $2, $3)", [
          event.transfer,
          { charge: event.charge },
          event.id,
        ]);
        return answer(200, "confirmed");
      }
      answer(404, "not found");
    } catch (error) {
      if (error.code === OBJECT_IN_USE) {
        // This owner no longer holds the lease: it ran out and another owner took over, or
        // this is a retried push whose owner parked the workflow already. Not ours to go on.
        log({ lost: error.message });
        return answer(200, "taken over");
      }
      log({ error: error.message });
      answer(500, "failed"); // the dispatcher retries the push
    }
  }
}

module.exports = { createServer };
