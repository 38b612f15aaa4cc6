"""A loopback HTTP server for the ``/vsicurl/`` tests, in a child process.

:func:`http_server` starts ``python http_serve.py ROOT MODE`` on ``127.0.0.1`` (port 0)
and stops it at the end. The server runs in a child process, not a thread: rasterio
holds the GIL while GDAL opens a dataset, so a server thread of the same process could
not answer and the open would hang. Its own tracebacks (a client that hangs up
mid-body) go nowhere: they are the server's, not alosmap's.

Modes: ``ranges`` (HEAD, GET and ``Range``, as a file server should), ``no-range``
(ignores ``Range``: 200 and the whole file), ``dies`` (answers ranges, but the body
that takes what it sent past 64 KiB, the file's header being read by then, stops
half-way and the server is gone: no resuming either).
"""

from __future__ import annotations

import http.server
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MODES = ("ranges", "no-range", "dies")


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves files of the current directory; :attr:`mode` says how it behaves."""

    protocol_version = "HTTP/1.1"
    mode = "ranges"
    sent = 0  # body bytes sent so far (dies)

    def log_message(self, *args):  # quiet
        pass

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _empty(self, status, headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _serve(self, body):
        name = self.path.split("?", 1)[0].lstrip("/")
        if not name or "/" in name or not os.path.isfile(name):
            self._empty(404)
            return
        data = Path(name).read_bytes()
        size = len(data)
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if m and self.mode != "no-range":
            start = int(m[1])
            end = min(int(m[2]) if m[2] else size - 1, size - 1)
            if start >= size:
                self._empty(416, [("Content-Range", f"bytes */{size}")])
                return
            chunk = data[start : end + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            chunk = data
            self.send_response(200)
        if self.mode != "no-range":
            self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(chunk)))
        self.end_headers()
        if not body:
            return
        if self.mode == "dies" and RangeHandler.sent + len(chunk) > 65536:
            self.wfile.write(chunk[: len(chunk) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)
            os._exit(0)  # the server dies mid-body
        RangeHandler.sent += len(chunk)
        self.wfile.write(chunk)


def _serve_forever(root: str, mode: str) -> None:
    """Child process: serve ``root`` on 127.0.0.1, print the port, run until killed."""
    os.chdir(root)
    RangeHandler.mode = mode
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


@contextmanager
def http_server(root: Path, mode: str = "ranges") -> Iterator[str]:
    """``http://127.0.0.1:<port>`` serving ``root`` in ``mode``; stopped on exit."""
    assert mode in MODES, mode
    proc = subprocess.Popen(
        [sys.executable, __file__, str(root), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = proc.stdout.readline()  # the child prints its port when it listens
        assert line.strip().isdigit(), "the test HTTP server did not start"
        yield f"http://127.0.0.1:{int(line)}"
    finally:
        proc.kill()
        proc.wait(timeout=60)
        proc.stdout.close()


if __name__ == "__main__":  # the child process of http_server()
    _serve_forever(sys.argv[1], sys.argv[2])
