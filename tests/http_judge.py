"""A real HTTP judge on 127.0.0.1 for the ``http`` channel tests (imported by tests, not a test file).

Paths choose the behaviour; every request is recorded (path, headers, items):

- ``/score``: ``len(completion)`` per item, null for an empty completion;
- ``/flaky/<k>``: HTTP 503 for the first k requests, then like /score;
- ``/status/<code>``: always that HTTP status;
- ``/slow/<seconds>``: like /score after sleeping;
- ``/garbage``: 200 with a body that is not JSON; ``/short``: one score too few;
- ``/auth``: like /score if ``Authorization: Bearer <expected key>``, else 401 echoing the header it got.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class JudgeLog:
    """What the judge received."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    expected_key: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, prefix: str) -> int:
        """Requests whose path starts with ``prefix``."""
        with self.lock:
            return sum(1 for r in self.requests if r["path"].startswith(prefix))


def _scores(items: list[dict[str, Any]]) -> list[float | None]:
    return [float(len(item["completion"])) if item["completion"] else None for item in items]


def make_handler(log: JudgeLog) -> type[BaseHTTPRequestHandler]:
    """The request handler class bound to ``log``."""

    class Judge(BaseHTTPRequestHandler):
        def _reply(self, status: int, body: bytes) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout tests)

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            items = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["items"]
            with log.lock:
                seen = sum(1 for r in log.requests if r["path"] == self.path)
                log.requests.append({"path": self.path, "headers": dict(self.headers), "items": items})
            parts = self.path.strip("/").split("/")
            ok = json.dumps({"scores": _scores(items)}).encode()
            if parts[0] == "flaky" and seen < int(parts[1]):
                self._reply(503, b'{"error": "busy"}')
            elif parts[0] == "status":
                self._reply(int(parts[1]), b'{"error": "no"}')
            elif parts[0] == "slow":
                time.sleep(float(parts[1]))
                self._reply(200, ok)
            elif parts[0] == "garbage":
                self._reply(200, b"<html>not json</html>")
            elif parts[0] == "short":
                self._reply(200, json.dumps(_scores(items)[:-1]).encode())
            elif parts[0] == "auth" and self.headers.get("Authorization") != f"Bearer {log.expected_key}":
                self._reply(401, json.dumps({"error": f"bad header {self.headers.get('Authorization')}"}).encode())
            else:
                self._reply(200, ok)

        def log_message(self, *args: object) -> None:
            pass

    return Judge


def start_judge(expected_key: str = "") -> tuple[ThreadingHTTPServer, JudgeLog, str]:
    """Serve on a free port of 127.0.0.1 in a daemon thread; returns (server, log, base URL)."""
    log = JudgeLog(expected_key=expected_key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(log))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, log, f"http://127.0.0.1:{server.server_address[1]}"
