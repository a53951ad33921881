"""The order service: one transaction records the order, starts its workflow, checkpoints
the first step and queues the confirmation email, so either all of it happens or none."""

from psycopg import Connection
from psycopg.types.json import Jsonb

SCHEMA = """
CREATE EXTENSION IF NOT EXISTS workflow;
CREATE TABLE IF NOT EXISTS orders (
    id       text PRIMARY KEY,
    customer text NOT NULL,
    total    numeric NOT NULL,
    status   text NOT NULL DEFAULT 'placed',
    charge   text
);
"""


def place_order(conn: Connection, order_id: str, customer: str, total: str) -> str:
    """Places an order and returns its workflow's id. Placing the same order again (a retry
    after a lost connection) changes nothing and returns the same id."""
    with conn.transaction():
        inserted = conn.execute(
            "INSERT INTO orders (id, customer, total) VALUES (%s, %s, %s)"
            " ON CONFLICT (id) DO NOTHING RETURNING id",
            (order_id, customer, total),
        ).fetchone()
        key = f"order-{order_id}"
        if inserted is None:
            return str(conn.execute("SELECT wf_find('order', %s)", (key,)).fetchone()[0])

        (workflow,) = conn.execute(
            "SELECT wf_start('order', %s, %s)",
            (Jsonb({"order": order_id, "customer": customer, "total": total}), key),
        ).fetchone()
        conn.execute(
            "SELECT wf_checkpoint(%s, 'placed', %s)", (workflow, Jsonb({"total": total}))
        )
        conn.execute(
            "SELECT wf_enqueue('email-service', %s, idempotency_key => %s)",
            (
                Jsonb({"template": "order-placed", "to": customer, "order": order_id}),
                f"{key}.email.placed",
            ),
        )
        # Hand the rest to the worker pool: releasing the lease makes the workflow ready
        # (NOTIFY workflow_ready) the moment this transaction commits.
        conn.execute("SELECT wf_release(%s)", (workflow,))
        return str(workflow)
