// The bank's side: its accounts, and the transaction that starts a transfer.
"use strict";

const SCHEMA = `
  CREATE EXTENSION IF NOT EXISTS workflow;
  CREATE TABLE IF NOT EXISTS accounts (
    id      text PRIMARY KEY,
    balance numeric NOT NULL CHECK (balance >= 0)
  );`;

// Runs `work` in one transaction on a client of the pool, and rolls back if it throws.
async function inTransaction(pool, work) {
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
    const result = await work(client);
    await client.query("COMMIT");
    return result;
  } catch (error) {
    await client.query("ROLLBACK");
    throw error;
  } finally {
    client.release();
  }
}

// Starts a transfer and returns its workflow id. It is started without an owner, so, with
// a push handler for `transfer`, it is ready at once and POSTed to the handler as soon as
// this transaction commits. The key makes a repeated request return the same transfer.
async function startTransfer(pool, transfer) {
  const { rows } = await pool.query("SELECT wf_start('transfer', $1, $2) AS id", [
    transfer,
    `transfer-${transfer.reference}`,
  ]);
  return rows[0].id;
}

module.exports = { SCHEMA, inTransaction, startTransfer };
