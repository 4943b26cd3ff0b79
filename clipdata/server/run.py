"""Run the review app with uvicorn in a background thread: the caller gets the URL at once
and can stop the server (a test does; the CLI waits for Ctrl+C)."""
from __future__ import annotations

import errno
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Callable

from ..errors import ClipdataError, OptionError
from ..fsutil import hold_shared

INSTALL_HINT = "pip install 'clipdata[serve]'"


class Server:
    """A running review server: `url` (with its token), `stop()`, `wait()`."""

    def __init__(self, app, sock: socket.socket, token: str | None, name: str = "review server",
                 release: Callable[[], None] = lambda: None) -> None:
        import uvicorn

        self._release = release  # called once the server has stopped (a folder lock it holds)

        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        self.host, self.port, self.token = host, port, token
        self.url = f"http://{'127.0.0.1' if host == '0.0.0.0' else shown}:{port}" + (f"/?token={token}" if token else "")
        # a bounded shutdown: open keep-alive connections get 5 s, then are closed
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=5)
        self._server = uvicorn.Server(config)
        self._sock = sock
        # Waits go through this event, never Thread.join: a join interrupted by Ctrl+C or
        # SIGTERM marks the still-running thread as stopped (Python 3.11's threading), and the
        # socket would then be closed under uvicorn's shutdown (a traceback at exit).
        self._done = threading.Event()

        def serve() -> None:
            try:
                self._server.run(sockets=[sock])
            finally:
                self._done.set()

        self._thread = threading.Thread(target=serve, name=f"clipdata-{name.replace(' ', '-')}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ClipdataError(f"the {name} did not start", where=f"{host}:{port}")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop serving and wait for the server's thread (bounded: a loaded machine took more
        than 10 s). The listening socket is closed only once that thread is done with it."""
        self._server.should_exit = True
        if not self._done.wait(timeout=60):
            self._server.force_exit = True
        if self._done.wait(timeout=10):  # (else uvicorn still holds the socket: the exit closes it)
            self._sock.close()
        release, self._release = self._release, lambda: None
        release()

    def wait(self) -> None:
        """Block until the server stops; Ctrl+C stops it."""
        try:
            while not self._done.wait(0.5):
                pass
        except KeyboardInterrupt:
            self.stop()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        # the port is taken or reserved: another port; anything else (no such address here, a
        # name that does not resolve) is the host's fault, and another port would not help
        port_fault = isinstance(e.errno, int) and e.errno in (errno.EADDRINUSE, errno.EACCES)
        raise ClipdataError(f"cannot listen on {host}:{port}: {e.strerror or e}",
                            hint="choose another --port (0 picks a free one)" if port_fault else
                            "--host must be an address of this machine (127.0.0.1: this machine only)") from None
    sock.listen(128)
    return sock


def check_port(port: int) -> int:
    """A port to listen on: 0 (any free one) to 65535; anything else is a usage error."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise OptionError(f"--port {port!r} is not a port number (0 to 65535; 0 picks a free one)")
    return port


def start(labeled: str | Path, *, images: str | Path | None = None, host: str = "127.0.0.1",
          port: int = 0, allow_hosts: tuple[str, ...] | list[str] = (), model: str | None = None) -> Server:
    check_port(port)
    try:
        import jsonschema  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ClipdataError(f"review serve needs starlette, uvicorn and jsonschema ({e.name} is not installed)",
                            hint=INSTALL_HINT) from None
    from .app import create_app
    from .guard import HostRule
    from .queue import Queue
    from .vectors import Vectors

    # Shared with other servers of the folder; a label run into it (--overwrite, --resume)
    # and this server exclude each other: nothing half-written is served, and decisions
    # never land in a folder being rewritten.
    release = hold_shared(Path(labeled))
    try:
        queue = Queue(labeled, images)
        sock = _bind(host, port)
        token = secrets.token_urlsafe(24)
        vectors = Vectors(queue, model=model)
        hosts = HostRule(host, sock.getsockname()[0], allow_hosts)
        app = create_app(queue, vectors, token, sock.getsockname()[1], hosts)
        server = Server(app, sock, token, release=release)
    except BaseException:
        release()
        raise
    vectors.warm()
    return server
