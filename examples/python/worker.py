"""A worker of the order pool. It LISTENs on workflow_ready, claims ready `order` workflows
as its own owner, and advances each one step at a time. Every step is fenced: the
heartbeat fails with 55006 if another worker has taken the workflow over, and that rolls
the step's business write back with it.

    python worker.py NAME [--pause-after STEP]

`--pause-after` makes the worker stop dead after committing that step, still holding the
lease, so that a test can kill it mid-workflow."""

import argparse
import sys
import time

import psycopg
from psycopg.types.json import Jsonb

# How long a claimed workflow stays ours without a checkpoint. Short, so that a crashed
# worker's workflows are recovered within seconds.
LEASE = "3 seconds"


def charge(conn, order):
    charge_id = f"ch_{order['order']}"
    conn.execute(
        "UPDATE orders SET status = 'paid', charge = %s WHERE id = %s",
        (charge_id, order["order"]),
    )
    return {"charge": charge_id}


def ship(conn, order):
    conn.execute("UPDATE orders SET status = 'shipped' WHERE id = %s", (order["order"],))
    conn.execute(
        "SELECT wf_enqueue('email-service', %s, idempotency_key => %s)",
        (
            Jsonb({"template": "order-shipped", "to": order["customer"], "order": order["order"]}),
            f"order-{order['order']}.email.shipped",
        ),
    )
    return {"carrier": "post"}


STEPS = [("charge", charge), ("ship", ship)]


class LostLease(Exception):
    pass


def advance(conn, owner, workflow, pause_after):
    (order,) = conn.execute("SELECT input FROM wf_status(%s)", (workflow,)).fetchone()
    for step, action in STEPS:
        (done,) = conn.execute("SELECT wf_step(%s, %s) IS NOT NULL", (workflow, step)).fetchone()
        if done:
            continue  # recorded by whoever held this workflow before us
        try:
            with conn.transaction():
                # Fence first: 55006 unless we hold the lease, and the run stays locked to
                # the end of this transaction, so no one can take it between here and the
                # checkpoint.
                conn.execute("SELECT wf_heartbeat(%s, owner => %s)", (workflow, owner))
                output = action(conn, order)
                conn.execute(
                    "SELECT wf_checkpoint(%s, %s, %s, owner => %s)",
                    (workflow, step, Jsonb(output), owner),
                )
        except psycopg.errors.ObjectInUse as lost:  # 55006
            raise LostLease(str(lost)) from lost
        print(f"{owner}: {step} of order {order['order']}", flush=True)
        if step == pause_after:
            print(f"{owner}: pausing after {step} of order {order['order']}", flush=True)
            while True:
                time.sleep(3600)
    conn.execute("SELECT wf_complete(%s, owner => %s)", (workflow, owner))
    print(f"{owner}: completed order {order['order']}", flush=True)


def claim_all(conn, owner, pause_after):
    """Claims and advances ready workflows until there are none."""
    while True:
        claimed = conn.execute(
            "SELECT wf_claim('order', %s, %s::interval, 1)", (owner, LEASE)
        ).fetchall()
        if not claimed:
            return
        for (workflow,) in claimed:
            try:
                advance(conn, owner, workflow, pause_after)
            except LostLease as lost:
                print(f"{owner}: lost {workflow} to another worker ({lost})", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("--pause-after")
    args = parser.parse_args()

    # Connection parameters come from the libpq environment (PGHOST, PGPORT, ...).
    with psycopg.connect(autocommit=True) as conn:
        conn.execute("LISTEN workflow_ready")
        print(f"{args.name}: listening", flush=True)
        while True:
            # Claim first: what became ready before we listened is not announced again.
            claim_all(conn, args.name, args.pause_after)
            # Then wait for the next announcement. The connection can run no query while
            # its notifies() generator is open, so take one and close it.
            for _ in conn.notifies(stop_after=1):
                pass


if __name__ == "__main__":
    sys.exit(main())
