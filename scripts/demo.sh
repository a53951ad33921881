#!/usr/bin/env bash
# The money-transfer demo: a workflow that survives a crash between its two steps, and a
# webhook that leaves with the final commit.
#
# Starts a throwaway cluster in .demo/ (as the postgres user) with the dispatcher
# preloaded, installs the extension, and moves 25 from alice to bob in two transactions.
# The process "crashes" in the middle of the second one; a recovering process claims the
# workflow once its lease expires, skips the step that is already done, finishes the
# transfer, completes the workflow and enqueues a signed transfer.completed webhook, all in
# one commit. A local receiver verifies the signature and prints the webhook.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
PG_BIN=/usr/lib/postgresql/15/bin
PORT=5499

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "Installing what the demo needs and building the extension (first run: several minutes)"
bash scripts/install.sh --debug >/dev/null
cargo build -q -p workflow-tests --bin demo-receiver
receiver_bin="$root/target/debug/demo-receiver"

# The cluster lives in the project folder unless the postgres user cannot reach it
# (a checkout under /root, say): then in the temp dir.
demo_dir="$root/.demo"
if ! sudo -n -u postgres test -x "$root"; then
  demo_dir="${TMPDIR:-/tmp}/workflow-demo"
  echo "postgres cannot enter $root; the demo cluster goes to $demo_dir"
fi
data="$demo_dir/data"
as_pg() { sudo -n -u postgres "$@"; }

if as_pg "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
  as_pg "$PG_BIN/pg_ctl" -D "$data" stop -m fast >/dev/null
fi
rm -rf "$demo_dir"
install -d -o postgres -g postgres "$demo_dir"

say "Starting a throwaway PostgreSQL 15 cluster in $demo_dir"
as_pg "$PG_BIN/initdb" --auth=trust --encoding=UTF8 --locale=C -U postgres -D "$data" >/dev/null
cat >>"$data/postgresql.conf" <<EOF
listen_addresses = ''
port = $PORT
unix_socket_directories = '$demo_dir'
shared_preload_libraries = 'workflow'
# The demo's receiver listens on 127.0.0.1, which the SSRF guard refuses by default.
workflow.allow_private_networks = on
EOF
as_pg "$PG_BIN/pg_ctl" -D "$data" -l "$demo_dir/server.log" -w start >/dev/null

PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h "$demo_dir" -p "$PORT" -U postgres -d postgres)
sql() { "${PSQL[@]}" "$@"; }

say "CREATE EXTENSION workflow, and a bank with two accounts"
sql <<'SQL'
CREATE EXTENSION workflow;
CREATE TABLE accounts (id text PRIMARY KEY, balance numeric NOT NULL CHECK (balance >= 0));
INSERT INTO accounts VALUES ('alice', 100), ('bob', 0);
SELECT * FROM accounts ORDER BY id;
SQL

say "A webhook endpoint for the bank's notifications, with a generated signing secret"
receiver_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
secret=$(sql -At -c "SELECT wf_endpoint('bank-notifications', 'http://127.0.0.1:$receiver_port/webhooks', 'generate')")
echo "  endpoint bank-notifications -> http://127.0.0.1:$receiver_port/webhooks, secret ${secret:0:12}..."
"$receiver_bin" "$receiver_port" "$secret" >"$demo_dir/receiver.log" 2>&1 &
receiver_pid=$!
trap 'kill $receiver_pid 2>/dev/null || true' EXIT

say "Process A: start the transfer (idempotency key transfer-0001), debit alice and checkpoint, in one transaction"
# A leases the workflow for 3 s: long enough to work, short enough for the demo to wait out.
set +e
sql 2>&1 <<'SQL'
SET workflow.lease_duration = '3s';
BEGIN;
SELECT wf_start('transfer', '{"from": "alice", "to": "bob", "amount": 25}', 'transfer-0001') AS id \gset
\echo   workflow :id started
UPDATE accounts SET balance = balance - 25 WHERE id = 'alice';
SELECT wf_checkpoint(:'id', 'debit', jsonb_build_object('alice', balance)) AS debit_checkpoint
  FROM accounts WHERE id = 'alice';
COMMIT;
\echo   committed: debit + checkpoint
\echo
\echo   Process A begins the credit step ... and crashes before it commits:
BEGIN;
UPDATE accounts SET balance = balance + 25 WHERE id = 'bob';
SELECT pg_terminate_backend(pg_backend_pid());
SQL
status=$?
set -e
[ "$status" -ne 0 ] || { echo "expected process A to crash" >&2; exit 1; }

say "After the crash: the debit and its checkpoint are committed, the half-done credit is gone"
sql <<'SQL'
SELECT * FROM accounts ORDER BY id;
SELECT step, output FROM workflow.steps WHERE workflow_name = 'transfer';
SQL

say "Process B (recovery): the same idempotency key finds the same workflow; it is claimable once A's lease expires"
sql <<'SQL'
SELECT wf_start('transfer', '{"from": "alice", "to": "bob", "amount": 25}', 'transfer-0001') AS id \gset
\echo   wf_start with key transfer-0001 returns :id again
SELECT owner AS dead_owner, lease_expires_at FROM wf_status(:'id');
SQL
# Poll for the claim with a deadline, as a recovery loop in the application would.
claimed=""
for _ in $(seq 150); do
  claimed=$(sql -At -c "SELECT wf_claim('transfer', 'process-B', interval '1 minute')")
  [ -n "$claimed" ] && break
  sleep 0.2
done
[ -n "$claimed" ] || { echo "the transfer never became claimable" >&2; exit 1; }
echo "  process-B claimed workflow $claimed (recovery attempt 1)"

say "Process B resumes: debit is done (wf_step), so it credits bob, checkpoints, completes and enqueues the webhook, in one transaction"
sql <<'SQL'
SELECT wf_start('transfer', NULL, 'transfer-0001') AS id \gset
SELECT wf_step(:'id', 'debit') IS NOT NULL AS debit_done \gset
\if :debit_done
\echo   step debit already done: skipped
\else
\echo   step debit not done: this would debit now
\endif
BEGIN;
UPDATE accounts SET balance = balance + 25 WHERE id = 'bob';
SELECT wf_checkpoint(:'id', 'credit', jsonb_build_object('bob', balance)) AS credit_checkpoint
  FROM accounts WHERE id = 'bob';
SELECT wf_complete(:'id', '{"transferred": 25}') \gset
SELECT wf_enqueue('bank-notifications',
                  jsonb_build_object('type', 'transfer.completed', 'workflow', :'id', 'amount', 25),
                  idempotency_key => 'transfer-0001.completed') AS message_id \gset
\echo   enqueued webhook message :message_id
COMMIT;
\echo
\echo   Final state of the workflow:
\x on
SELECT * FROM wf_status(:'id');
\x off
SELECT * FROM accounts ORDER BY id;
SQL

say "The dispatcher delivers the webhook once the transaction commits"
delivered=""
for _ in $(seq 150); do
  delivered=$(sql -At -c "SELECT status FROM workflow.messages WHERE idempotency_key = 'transfer-0001.completed'")
  [ "$delivered" = delivered ] && break
  sleep 0.2
done
[ "$delivered" = delivered ] || { echo "the webhook was not delivered; see $demo_dir/server.log" >&2; exit 1; }
cat "$demo_dir/receiver.log"
sql <<'SQL'
SELECT id, target, status, attempts, delivered_at - created_at AS commit_to_delivery FROM workflow.messages;
SELECT message_id, attempt, status_code, round(duration_ms::numeric, 1) AS duration_ms FROM workflow.attempts;
SQL

say "Done. The cluster is still running (the receiver stops with this script)."
cat <<EOF
  Connect:  psql -h $demo_dir -p $PORT -U postgres
  Stop:     sudo -u postgres $PG_BIN/pg_ctl -D $data stop
EOF
