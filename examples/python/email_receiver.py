"""The email service's webhook receiver. It verifies every request's Standard Webhooks
signature and sends each email once, however often the dispatcher delivers it: delivery is
at least once, and every attempt of one message carries the same `webhook-id`."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


class EmailReceiver:
    def __init__(self):
        self.secret = None
        self.sent = {}  # webhook-id -> email; a real service keeps this in a unique index
        self.duplicates = 0
        self.rejected = 0
        self.lose_first_answer = True
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                self.send_response(receiver.handle(body, dict(self.headers.items())))
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/emails"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def handle(self, body: bytes, headers: dict) -> int:
        headers = {name.lower(): value for name, value in headers.items()}
        try:
            Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError:
            with self._lock:
                self.rejected += 1
            return 401
        email = json.loads(body)
        with self._lock:
            if headers["webhook-id"] in self.sent:
                self.duplicates += 1
                return 200  # sent already: acknowledge, send nothing
            self.sent[headers["webhook-id"]] = email
            if self.lose_first_answer:
                # The email went out, but the answer is lost (a crash, a timeout): the
                # dispatcher retries, and the de-duplication above absorbs it.
                self.lose_first_answer = False
                return 503
        return 200

    def emails(self):
        with self._lock:
            return list(self.sent.values())

    def stop(self):
        self.server.shutdown()
