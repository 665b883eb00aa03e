"""A customer's webhook receiver for tests/it/webhooks.rs: every delivery is checked with the
Standard Webhooks reference library (PyPI `standardwebhooks`), as a customer would.

Usage: webhook_receiver.py DIR [--port N]

Listens on 127.0.0.1 (port N, or a free one) and reads, at each request, files of DIR:
  secrets   the endpoint's secrets, one a line (a delivery verifies if one of them does);
  answer    the status to answer a verified delivery (default 204);
  delay     seconds to wait before answering (default 0).
Reports on stdout, one JSON object a line:
  {"ready": PORT} once it listens;
  {"arrived": WEBHOOK_ID} as each request arrives;
  {"id", "timestamp", "signature", "verified", "answered", "event"} for each request,
  "event" being the parsed body when it verified (else null), and "body" the raw body.
An unverified request is answered 401.
"""

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

lock = threading.Lock()


def emit(event):
    with lock:
        print(json.dumps(event), flush=True)


def read(path, default):
    try:
        text = path.read_text().strip()
        return text if text else default
    except FileNotFoundError:
        return default


def make_handler(directory):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            emit({"arrived": headers.get("webhook-id")})
            event = None
            for secret in read(directory / "secrets", "").split():
                try:
                    event = Webhook(secret).verify(body, headers)
                    break
                except WebhookVerificationError:
                    continue
            time.sleep(float(read(directory / "delay", "0")))
            status = int(read(directory / "answer", "204")) if event is not None else 401
            emit({
                "id": headers.get("webhook-id"),
                "timestamp": headers.get("webhook-timestamp"),
                "signature": headers.get("webhook-signature"),
                "verified": event is not None,
                "answered": status,
                "event": event,
                "body": body.decode("utf-8", "replace"),
            })
            self.send_response(status)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    return Handler


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(Path(args.dir)))
    server.daemon_threads = True
    emit({"ready": server.server_address[1]})
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
