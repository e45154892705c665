"""TEST DOUBLE / fault injector: a plain-HTTP proxy in front of the API server that loses answers.

The metrics sidecar reaches the API server through it (its kubeconfig points
here). Every request is forwarded to the real API server; for a share of the
HPOTrial status writes (seeded), the request is applied and then the answer is
replaced by one of:

- ``conflict``: 409 Conflict, as if a resourceVersion check had failed;
- ``error``: 500 Internal Server Error;
- ``drop``: the connection is closed with no answer at all.

So the client cannot know whether its write happened: what a timeout, a
restarting API server or a broken load balancer does to a real sidecar. A
client that simply sends again records the observation twice; one that looks
first does not.
"""

from __future__ import annotations

import json
import random
import re
import socket
import ssl
import sys
import threading
from collections import Counter
from http.client import HTTPException, HTTPSConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

STATUS_WRITE = re.compile(r"^/apis/hpo\.dev/[^/]+/namespaces/[^/]+/hpotrials/[^/]+/status$")
FAULT_KINDS = ("conflict", "error", "drop")
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host",
               "content-length", "te", "trailer"}


class FaultProxy:
    def __init__(self, upstream: str, rate: float, seed: int = 0):
        """``upstream``: the API server (https://host:port); ``rate``: share of status writes to fault."""
        target = urlsplit(upstream)
        self.upstream_host, self.upstream_port = target.hostname, target.port or 443
        self.rate = rate
        self.rng = random.Random(seed)
        self.injected: Counter = Counter()  # fault kind -> answers replaced
        self.status_writes = 0  # status writes forwarded (and applied upstream)
        self.upstream_failures = 0  # requests the API server itself did not answer (restarting)
        self._lock = threading.Lock()
        self._tls = ssl.create_default_context()
        self._tls.check_hostname = False
        self._tls.verify_mode = ssl.CERT_NONE  # loopback to the test API server; the client's token is forwarded
        self._server = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "FaultProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _fault_for(self, method: str, path: str) -> str | None:
        if method != "PATCH" or not STATUS_WRITE.match(path.split("?")[0]):
            return None
        with self._lock:
            self.status_writes += 1
            if self.rng.random() >= self.rate:
                return None
            kind = self.rng.choice(FAULT_KINDS)
            self.injected[kind] += 1
            return kind

    def _forward(self, method: str, path: str, headers: dict, body: bytes) -> tuple[int, list, bytes]:
        conn = HTTPSConnection(self.upstream_host, self.upstream_port, context=self._tls, timeout=30)
        try:
            conn.request(method, path, body=body or None, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

    def _handler_class(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet: the counters are the record
                pass

            def _proxy(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                try:
                    status, resp_headers, resp_body = proxy._forward(self.command, self.path, headers, body)
                except (OSError, HTTPException) as err:
                    with proxy._lock:
                        proxy.upstream_failures += 1
                    return self._answer(503, [], _status_body(503, "ServiceUnavailable", f"upstream: {err}"))
                fault = proxy._fault_for(self.command, self.path) if status < 300 else None
                if fault == "drop":
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return None
                if fault == "conflict":
                    return self._answer(409, [], _status_body(409, "Conflict", "Operation cannot be fulfilled: "
                                                              "the object has been modified (injected)"))
                if fault == "error":
                    return self._answer(500, [], _status_body(500, "InternalError", "injected server error"))
                return self._answer(status, resp_headers, resp_body)

            def _answer(self, status: int, headers: list, body: bytes):
                self.send_response(status)
                for key, value in headers:
                    if key.lower() not in _HOP_BY_HOP:
                        self.send_header(key, value)
                if not any(k.lower() == "content-type" for k, _ in headers):
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _proxy

        return Handler


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        """A client killed mid-request (its pod deleted) is expected here; anything else is printed."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _status_body(code: int, reason: str, message: str) -> bytes:
    return json.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": message, "reason": reason, "code": code}).encode()
