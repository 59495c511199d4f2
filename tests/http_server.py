"""A local HTTP file server on 127.0.0.1 for download tests: serves in-memory files, honours Range requests,
and can cut a response short to simulate an interrupted download."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        server = self.server
        body = server.files.get(self.path)
        server.requests.append((self.path, self.headers.get("Range")))
        if body is None:
            self.send_error(404)
            return
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if server.cut_after is not None:
            cut, server.cut_after = server.cut_after, None
            self.wfile.write(payload[:cut])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(payload)


class FileServer:
    """``with FileServer({"/a.bin": b"..."}) as s: s.url("/a.bin")``"""

    def __init__(self, files: dict[str, bytes]):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.files = dict(files)
        self.httpd.requests = []
        self.httpd.cut_after = None
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def cut_next_response_after(self, n: int) -> None:
        self.httpd.cut_after = n

    @property
    def requests(self) -> list:
        return self.httpd.requests

    def __enter__(self) -> "FileServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port_url(path: str = "/file") -> str:
    """A URL on 127.0.0.1 at a port nobody listens on (bound, then released), so connecting is refused."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"
