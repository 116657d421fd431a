#!/usr/bin/env python3
"""A small HTTP server for the curl plugin's tests.

    http_server.py DISK LOG [CERT KEY]

Serves the file DISK at every path (so it can stand for an HTTP proxy
too: a proxy's requests name a whole URL): HEAD (its size), GET with or without
a Range header, and PUT with a Content-Range header (written at the
range's first byte, as many bytes as the body holds, sent with a length
or in chunks). Each request is
logged to LOG as one JSON line: the method, the range headers and the
headers the tests send (Cookie, Authorization, User-Agent, X-*). It binds port 0 on
127.0.0.1 itself and prints the port it got on standard output. With
CERT and KEY it speaks HTTPS.
"""

import json
import os
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DISK, LOG = sys.argv[1], sys.argv[2]
log_lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def record(self):
        h = {k: v for k, v in self.headers.items()
             if k.lower() in ("range", "content-range", "cookie", "authorization",
                              "user-agent", "proxy-authorization")
             or k.lower().startswith("x-")}
        with log_lock, open(LOG, "a") as f:
            f.write(json.dumps({"method": self.command, "headers": h}) + "\n")

    def cookie(self):
        # A URL with "?setcookie" makes the server set a cookie.
        if self.path.endswith("?setcookie"):
            self.send_header("Set-Cookie", "served=yes; Path=/")

    def do_HEAD(self):
        self.record()
        self.send_response(200)
        self.cookie()
        self.send_header("Content-Length", str(os.path.getsize(DISK)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()

    def do_GET(self):
        self.record()
        size = os.path.getsize(DISK)
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if m:
            start = int(m.group(1))
            end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
            with open(DISK, "rb") as f:
                f.seek(start)
                data = f.read(end - start + 1)
            self.send_response(206)
            self.cookie()
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            with open(DISK, "rb") as f:
                data = f.read()
            self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self):
        self.record()
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            # nbdkit 1.32 gives libcurl no upload size: chunks.
            body = b""
            while True:
                n = int(self.rfile.readline().split(b";")[0], 16)
                body += self.rfile.read(n)
                self.rfile.readline()
                if n == 0:
                    break
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        m = re.match(r"bytes (\d+)-", self.headers.get("Content-Range", ""))
        if not m:
            self.send_response(400)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        with open(DISK, "r+b") as f:
            f.seek(int(m.group(1)))
            f.write(body)
        self.send_response(204)
        self.end_headers()


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
if len(sys.argv) > 4:
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[3], sys.argv[4])
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
