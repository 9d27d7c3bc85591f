"""A throwaway local HTTP server: serves a folder on 127.0.0.1 so downloads can run for real, offline.

The demo twins of the web-crawled sets and the tests point img2dataset at it. The server runs in a
daemon thread of the calling process and stops when its ``with`` block ends (or with the process),
so a workflow rule can never leave it behind. It counts the requests per path, which is how the
tests prove that a resumed download fetched nothing twice.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

HOST = "127.0.0.1"


@dataclass
class LocalServer:
    """A running server: ``url_for(relpath)`` gives a file's URL; ``hits`` counts GETs per path."""

    root: Path
    port: int
    headers: Callable[[str], dict[str, str]] | None = None
    hits: Counter = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def url_for(self, relpath: str) -> str:
        return f"{self.base_url}/{quote(relpath)}"

    def record_hit(self, path: str) -> None:
        with self._lock:
            self.hits[path] = self.hits.get(path, 0) + 1


class _CountingHandler(SimpleHTTPRequestHandler):
    """Serves files like ``python -m http.server``, counts requests and keeps quiet."""

    def __init__(self, *args, server_state: LocalServer, **kwargs):
        self.server_state = server_state
        super().__init__(*args, directory=str(server_state.root), **kwargs)

    def _relpath(self) -> str:
        return unquote(urlsplit(self.path).path).lstrip("/")

    def do_GET(self) -> None:
        self.server_state.record_hit(self._relpath())
        super().do_GET()

    def end_headers(self) -> None:
        if self.server_state.headers is not None:
            for name, value in self.server_state.headers(self._relpath()).items():
                self.send_header(name, value)
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        pass  # one line per image on stderr would drown the real logs


@contextlib.contextmanager
def serve_directory(
    root: str | Path, headers: Callable[[str], dict[str, str]] | None = None
) -> Iterator[LocalServer]:
    """Serve ``root`` on 127.0.0.1 at a free port for the duration of the ``with`` block.

    ``headers(relpath)``, when given, adds response headers per file (e.g. the ETag and commit
    headers a Hugging Face Hub endpoint sends).
    """
    state = LocalServer(root=Path(root).resolve(), port=0, headers=headers)
    handler = functools.partial(_CountingHandler, server_state=state)
    httpd = ThreadingHTTPServer((HOST, 0), handler)
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, name=f"serve-{state.port}", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def closed_port_url(relpath: str = "image.jpg") -> str:
    """A URL on a port nothing listens on: connecting to it is refused (a dead host, offline).

    The port is taken from the OS and released at once; another process could bind it in between,
    which on a test machine is rare enough to accept.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    return f"http://{HOST}:{port}/{quote(relpath)}"
