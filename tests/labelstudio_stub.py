"""A stand-in for the parts of Label Studio an ML backend reads: uploaded and local-files
images and the project export, answered as Label Studio 1.23.2 answers them (a token is
required). Shared by tests/test_backend.py and benchmarks/backend.py."""
from __future__ import annotations

import io
import json
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from helpers import world

TOKEN = "tok123"  # the token in the recorded /setup (tests/fixtures/labelstudio/)
WAIT = 120  # seconds an export may be held back by `export_gate`


def jpeg(seed: int, shape: str | None = None, colour: str | None = None) -> bytes:
    """One shapes-world image (a random item, or the given shape and colour) as JPEG bytes."""
    rnd = random.Random(seed)
    buf = io.BytesIO()
    world.render(world.random_item(rnd, shape, colour), rnd).save(buf, "JPEG", quality=90)
    return buf.getvalue()


class FakeStudio:
    """Label Studio's image and export endpoints as 1.23.2 answers them: every request needs
    `Authorization: Token <token>` (or a Bearer token from /api/token/refresh); `files` maps
    an upload path or a local-files `d` to bytes; `export` is the project export."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token, self.files, self.export, self.seen = token, {}, {}, []
        self.export_gate: threading.Event | None = None
        self.export_status = 200
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, body: bytes, kind="application/json", headers=()):
                self.send_response(code)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(body)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _authorised(self) -> bool:
                got = self.headers.get("authorization")
                return got in (f"Token {fake.token}", "Bearer access-1")

            def do_POST(self):
                fake.seen.append(("POST", self.path, self.headers.get("authorization")))
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
                if self.path == "/api/token/refresh" and body.get("refresh") == fake.token:
                    return self._send(200, json.dumps({"access": "access-1"}).encode())
                self._send(401, b'{"detail": "no"}')

            def do_GET(self):
                fake.seen.append(("GET", self.path, self.headers.get("authorization")))
                if not self._authorised():
                    return self._send(401, b'{"detail": "Authentication credentials were not provided."}')
                parts = urlsplit(self.path)
                if parts.path.startswith("/api/projects/") and parts.path.endswith("/export"):
                    if fake.export_gate is not None:
                        fake.export_gate.wait(WAIT)
                    pid = int(parts.path.split("/")[3])
                    if fake.export_status != 200:
                        return self._send(fake.export_status, b'{"detail": "broken"}')
                    return self._send(200, json.dumps(fake.export.get(pid, [])).encode())
                if parts.path == "/redirect-out":
                    return self._send(302, b"", headers=[("location", "http://127.0.0.2:9/x.jpg")])
                key = parse_qs(parts.query).get("d", [""])[0] if parts.path == "/data/local-files/" else parts.path
                if key in fake.files:
                    return self._send(200, fake.files[key], "image/jpeg")
                self._send(404, b'{"detail": "not found"}')

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
