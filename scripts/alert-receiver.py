#!/usr/bin/env python3
"""A webhook receiver for Alertmanager, for `make alert-drill`: listens on
127.0.0.1:9099 (or the port given) and appends one JSON line per alert of
every notification to the file given, with the time it arrived:

    {"received": "...", "status": "firing", "alertname": "...",
     "labels": {...}, "startsAt": "...", "endsAt": "..."}

Only POST /alerts is accepted; anything else is answered 404 and dropped.
Stdlib only; stops on SIGTERM."""

import json
import sys
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 1 << 20


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(f"usage: {sys.argv[0]} OUT_FILE [PORT]")
    out = sys.argv[1]
    port = int(sys.argv[2]) if len(sys.argv) == 3 else 9099
    # Notifications may come on several connections at once: one writer.
    writing = threading.Lock()

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = 0
            if self.path != "/alerts" or not 0 < length <= MAX_BODY:
                self.send_error(404 if self.path != "/alerts" else 400)
                return
            try:
                notification = json.loads(self.rfile.read(length))
            except ValueError:
                self.send_error(400)
                return
            received = datetime.now(timezone.utc).isoformat(timespec="seconds")
            with writing, open(out, "a") as file:
                for alert in notification.get("alerts", []):
                    labels = alert.get("labels", {})
                    file.write(json.dumps({
                        "received": received,
                        "status": alert.get("status"),
                        "alertname": labels.get("alertname"),
                        "labels": labels,
                        "startsAt": alert.get("startsAt"),
                        "endsAt": alert.get("endsAt"),
                    }) + "\n")
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Receiver).serve_forever()


if __name__ == "__main__":
    main()
