// The whole example, end to end, checking what it claims: two transfers pushed to the
// handler, one confirmed by the payment provider (twice: one signal) and completed, one
// never confirmed and refunded when its wait timed out; every push verified. The first
// step the handler runs is slow on purpose: the dispatcher gives up on that push after the
// endpoint's one-second timeout and sends it again, and the twin debits nothing.
//
//   node run.js        (connection parameters from PGHOST, PGPORT, PGUSER, PGDATABASE)
//
// The dispatcher must be running for the database, and allowed to reach the handler on
// 127.0.0.1 (`workflow.allow_private_networks = on`).
"use strict";

const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const { Pool } = require("pg");
const { SCHEMA, startTransfer } = require("./bank");
const { createServer } = require("./handler");

async function eventually(what, check, seconds = 60) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function main() {
  const pool = new Pool({ max: 4 });
  let secret = null;
  const outcomes = [];
  const server = createServer(
    pool,
    () => secret,
    (event) => {
      console.log("  |", JSON.stringify(event));
      outcomes.push(event);
    },
    { slowFirstStep: 3000 },
  );
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    const url = `http://127.0.0.1:${server.address().port}`;
    await pool.query(SCHEMA);
    // References of their own in every run, so that the example can run again in one database.
    const run = crypto.randomUUID().slice(0, 6);
    const [alice, bob] = [`alice-${run}`, `bob-${run}`];
    await pool.query("INSERT INTO accounts VALUES ($1, 100), ($2, 0)", [alice, bob]);
    // A one-second timeout, and a quick retry, so that the slow first step has a twin.
    const { rows } = await pool.query(
      `SELECT wf_endpoint('transfer-handler', $1, 'generate', timeout => '1 second',
                          retry_schedule => '{250 milliseconds}') AS secret`,
      [`${url}/workflows`],
    );
    secret = rows[0].secret;
    await pool.query("SELECT wf_handler('transfer', 'transfer-handler')");

    const status = async (id) =>
      (await pool.query("SELECT * FROM wf_status($1)", [id])).rows[0];
    const balance = async (id) =>
      Number((await pool.query("SELECT balance FROM accounts WHERE id = $1", [id])).rows[0].balance);

    console.log("two transfers from alice to bob; the first will be confirmed, the second not");
    const confirmed = await startTransfer(pool, {
      reference: `${run}-1`, from: alice, to: bob, amount: 25, confirm_within_seconds: 300,
    });
    const unconfirmed = await startTransfer(pool, {
      reference: `${run}-2`, from: alice, to: bob, amount: 10, confirm_within_seconds: 2,
    });
    assert.equal(
      await startTransfer(pool, { reference: `${run}-1`, from: alice, to: bob, amount: 25 }),
      confirmed,
      "a repeated request started a second transfer",
    );

    await eventually("the first transfer to wait for its payment", async () => {
      const s = await status(confirmed);
      return s.waiting_for === "payment.confirmed" && s.owner === null;
    });
    // The second push may come later, and its two-second wait may already have timed out:
    // count its debit and any refund with alice's balance, in one statement's snapshot.
    const ledger = await eventually("both debits to be recorded", async () => {
      const { rows } = await pool.query(
        `SELECT (SELECT balance FROM accounts WHERE id = $1)::int AS alice,
                count(*) FILTER (WHERE step = 'debit')::int AS debits,
                coalesce(sum((output->>'debited')::int), 0)::int AS debited,
                coalesce(sum((output->>'refunded')::int), 0)::int AS refunded
           FROM workflow.steps WHERE workflow_id = ANY($2::uuid[])`,
        [alice, [confirmed, unconfirmed]],
      );
      return rows[0].debits === 2 && rows[0];
    });
    assert.equal(ledger.debited, 35, "both debits are recorded");
    assert.equal(ledger.alice, 100 - ledger.debited + ledger.refunded,
      "alice's balance moves with the recorded debits and refunds, once each");
    await eventually("the slow push's twin to be turned away", async () =>
      outcomes.some((o) => o.lost));
    console.log("the slow first push was sent again; its twin debited nothing, and stopped");

    console.log("the payment provider confirms the first transfer, and repeats its callback");
    for (let i = 0; i < 2; i++) {
      const response = await fetch(`${url}/payments`, {
        method: "POST",
        body: JSON.stringify({ id: `evt-${run}`, transfer: confirmed, charge: `ch-${run}` }),
      });
      assert.equal(response.status, 200);
    }

    await eventually("both transfers to finish", async () => {
      const [a, b] = [await status(confirmed), await status(unconfirmed)];
      return a.status === "completed" && b.status === "failed";
    });
    const done = await status(confirmed);
    assert.deepEqual(done.output, { charge: `ch-${run}` });
    const signals = await pool.query(
      "SELECT count(*)::int AS n FROM workflow.signals WHERE workflow_id = $1", [confirmed]);
    assert.equal(signals.rows[0].n, 1, "the repeated callback made a second signal");
    const refunded = await status(unconfirmed);
    assert.equal(refunded.error, "the payment was not confirmed in time");
    assert.equal(await balance(alice), 75, "alice keeps what was not confirmed");
    assert.equal(await balance(bob), 25, "bob gets the confirmed transfer, once");
    assert.ok(!outcomes.some((o) => o.rejected || o.error), "a push failed");
    console.log(`alice ${await balance(alice)}, bob ${await balance(bob)}: one transfer ` +
      "completed, one refunded after its wait timed out");
    console.log("ok");
  } finally {
    // Pushes still being handled finish before their pool goes.
    await server.stop();
    await pool.end();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
