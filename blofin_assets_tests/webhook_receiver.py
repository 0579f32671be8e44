"""A real webhook receiver for the alert tests: an HTTP server on 127.0.0.1 in a thread that
records every POST, answers with the status it is told to (or stalls), and can be stopped and
started again on the same port, as a receiver that goes down and comes back."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    content_type: str
    body: dict[str, Any]


@dataclass
class Receiver:
    """``answers`` are the statuses of the next requests, in order (then 200); ``stall``
    seconds are slept before answering, to make a client time out."""

    port: int = 0
    answers: list[int] = field(default_factory=list)
    stall: float = 0.0
    received: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/secret-token"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                time.sleep(receiver.stall)
                with receiver._lock:
                    status = receiver.answers.pop(0) if receiver.answers else 200
                    if status == 200:
                        receiver.received.append(
                            Received(
                                self.path, self.headers.get("Content-Type", ""), json.loads(raw)
                            )
                        )
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"receiver trouble")

            def log_message(self, *args: object) -> None:  # quiet test output
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Close the socket: a post now meets a refused connection."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def bodies(self) -> list[dict[str, Any]]:
        with self._lock:
            return [message.body for message in self.received]

    def wait_for(
        self, done: Callable[[list[dict[str, Any]]], bool], timeout: float, poll: float = 0.5
    ) -> list[dict[str, Any]]:
        """The bodies once ``done`` holds for them; the bodies so far when time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            bodies = self.bodies()
            if done(bodies):
                return bodies
            time.sleep(poll)
        return self.bodies()
