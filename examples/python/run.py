"""The whole example, end to end, checking what it claims: orders placed in one
transaction each, a pool of two workers, one killed with SIGKILL in the middle of an
order, the other finishing every order, and each email sent exactly once.

    python run.py        (connection parameters from PGHOST, PGPORT, PGUSER, PGDATABASE)

The dispatcher must be running for the database, and allowed to reach the receiver on
127.0.0.1 (`workflow.allow_private_networks = on`)."""

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid

import psycopg

from email_receiver import EmailReceiver
from orders import SCHEMA, place_order

HERE = os.path.dirname(os.path.abspath(__file__))
# Order numbers of their own in every run, so that the example can run again in one database.
RUN = uuid.uuid4().hex[:6]
ORDERS = [(f"{RUN}-1", "ada@example.com", "25.00"), (f"{RUN}-2", "bob@example.com", "12.50"),
          (f"{RUN}-3", "cy@example.com", "99.90"), (f"{RUN}-4", "di@example.com", "5.00")]


class Worker:
    """A worker process whose output lines can be waited for."""

    def __init__(self, name, *args):
        self.process = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "worker.py"), name, *args],
            stdout=subprocess.PIPE, text=True)
        self.lines = queue.Queue()
        self.said = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            print(f"  | {line.rstrip()}")
            self.said.append(line.strip())
            self.lines.put(line.strip())

    def wait_for(self, text, seconds=30):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if text in line:
                return
        raise AssertionError(f"worker never said {text!r}")


def eventually(what, check, seconds=60):
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def main():
    receiver = EmailReceiver()
    workers = []
    with psycopg.connect(autocommit=True) as conn:
        conn.execute(SCHEMA)
        # 'generate' makes a signing secret and returns it; this is the only time it is shown.
        (receiver.secret,) = conn.execute(
            "SELECT wf_endpoint('email-service', %s, 'generate')", (receiver.url,)).fetchone()

        try:
            print("worker-a takes the first order and dies after charging it")
            worker_a = Worker("worker-a", "--pause-after", "charge")
            workers.append(worker_a)
            worker_a.wait_for("listening")
            first = place_order(conn, *ORDERS[0])
            worker_a.wait_for("pausing after charge")
            worker_a.process.send_signal(signal.SIGKILL)
            worker_a.process.wait()
            killed_at = time.monotonic()
            print(f"worker-a killed with SIGKILL, holding the lease of {first}")

            print("worker-b joins the pool; the other orders come in, one placed twice")
            worker_b = Worker("worker-b")
            workers.append(worker_b)
            worker_b.wait_for("listening")
            ids = [first] + [place_order(conn, *order) for order in ORDERS[1:]]
            assert place_order(conn, *ORDERS[1]) == ids[1], "a repeated order got a second workflow"

            def all_completed():
                rows = conn.execute(
                    "SELECT s.status FROM unnest(%s::uuid[]) id CROSS JOIN wf_status(id) s",
                    (ids,)).fetchall()
                return all(status == "completed" for (status,) in rows)
            eventually("every order's workflow to complete", all_completed)
            print(f"all {len(ids)} orders completed, {time.monotonic() - killed_at:.1f} s after the kill")

            order = ORDERS[0][0]
            assert f"worker-b: ship of order {order}" in worker_b.said, "worker-b did not finish it"
            assert f"worker-b: charge of order {order}" not in worker_b.said, "charged twice"
            (charge, steps) = conn.execute(
                "SELECT wf_step(%s, 'charge'), steps_done FROM wf_status(%s)",
                (first, first)).fetchone()
            assert charge == {"charge": f"ch_{order}"}, f"the charge step holds {charge}"
            assert steps == 3, f"the first order has {steps} steps, not placed, charge, ship"
            shipped = conn.execute(
                "SELECT count(*) FROM orders WHERE status = 'shipped' AND id = ANY (%s)",
                ([order for order, _, _ in ORDERS],)).fetchone()
            assert shipped == (len(ORDERS),), f"shipped orders: {shipped}"

            expected = {(order, template) for order, _, _ in ORDERS
                        for template in ("order-placed", "order-shipped")}
            eventually("every email to be delivered",
                       lambda: {(e["order"], e["template"]) for e in receiver.emails()} == expected)
            emails = receiver.emails()
            assert len(emails) == len(expected), f"{len(emails)} emails sent for {len(expected)}"
            eventually("the retried email's duplicate", lambda: receiver.duplicates >= 1)
            assert receiver.rejected == 0, f"{receiver.rejected} requests failed verification"
            print(f"{len(emails)} emails sent once each; {receiver.duplicates} duplicate "
                  "delivery absorbed by webhook-id")
            print("ok")
        finally:
            for worker in workers:
                if worker.process.poll() is None:
                    worker.process.terminate()
                    worker.process.wait()
            receiver.stop()


if __name__ == "__main__":
    main()
