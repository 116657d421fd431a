#!/usr/bin/python3
"""Records the seed corpora of the fuzz targets from real peers.

Debian's nbdkit (memory plugin) serves; real clients (Debian's libnbd
through python3-libnbd, nbdinfo, qemu-img, qemu-io) connect to it through
a recording proxy that keeps both directions of every connection. What the
clients sent seeds `server_stream`; what nbdkit answered to the same
script `client_replies` runs seeds `client_replies`; the messages cut out
of both seed `wire_decoders`. The other targets' seeds are written from
the lists below. Run from anywhere: fuzz/record-seeds.sh.
"""

import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import nbd  # python3-libnbd (Debian's libnbd)

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
NBDKIT = os.environ.get("NBDKIT", "/usr/bin/nbdkit")

IHAVEOPT = 0x49484156454F5054
REQUEST_MAGIC = 0x25609513


class Proxy:
    """A Unix socket that forwards each connection to `target` and
    records what went each way: self.sessions[i] = (to_server, to_client)."""

    def __init__(self, path, target):
        self.target = target
        self.sessions = []
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(path)
        self.sock.listen(8)
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            c, _ = self.sock.accept()
            s = socket.socket(socket.AF_UNIX)
            s.connect(self.target)
            rec = [bytearray(), bytearray()]
            done = [threading.Event(), threading.Event()]
            with self.lock:
                self.sessions.append((rec, done))
            for i, (src, dst) in enumerate([(c, s), (s, c)]):
                threading.Thread(target=self.pump, args=(src, dst, rec[i], done[i]), daemon=True).start()

    @staticmethod
    def pump(src, dst, buf, done):
        try:
            while True:
                b = src.recv(65536)
                if not b:
                    break
                buf += b
                dst.sendall(b)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        done.set()

    def take(self, n_before):
        """The sessions opened since there were `n_before`, once finished."""
        with self.lock:
            new = self.sessions[n_before:]
        out = []
        for rec, done in new:
            done[0].wait(10)
            done[1].wait(10)
            out.append((bytes(rec[0]), bytes(rec[1])))
        return out


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ------------------------------------------------------------ the script
# The same sequence as fuzz/src/client_script.rs, with Debian's libnbd.
MODE_OPT, MODE_SR, MODE_META, MODE_STRICT, MODE_FULL = 1, 2, 4, 8, 16


def script(uri, mode):
    h = nbd.NBD()
    h.set_export_name("fuzz")
    h.set_request_structured_replies(bool(mode & MODE_SR))
    if mode & MODE_META:
        h.add_meta_context("base:allocation")
    h.set_full_info(bool(mode & MODE_FULL))
    if not mode & MODE_STRICT:
        h.set_strict_mode(0)
    h.set_opt_mode(bool(mode & MODE_OPT))
    h.connect_uri(uri)
    if mode & MODE_OPT:
        h.opt_list(lambda name, desc: 0)
        if h.get_structured_replies_negotiated():
            h.opt_list_meta_context(lambda name: 0)
        h.opt_info()
        h.opt_go()

    def attempt(f):
        try:
            f()
        except nbd.Error:
            pass

    attempt(lambda: h.pread_structured(512, 0, lambda *a: 0))
    attempt(lambda: h.pwrite(bytes(i % 256 for i in range(512)), 512, nbd.CMD_FLAG_FUA))
    attempt(lambda: h.block_status(4096, 0, lambda *a: 0))
    attempt(lambda: h.flush())
    attempt(lambda: h.trim(4096, 0))
    attempt(lambda: h.pread(16384, 0))
    attempt(lambda: h.zero(4096, 8192))
    attempt(lambda: h.cache(4096, 0))
    h.shutdown()


def run(cmd):
    # A client may fail (nbdinfo --map on an oldstyle server): what it
    # sent until then is still a seed.
    subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def options_and_requests(c2s):
    """Cuts a newstyle client stream into option payloads and request
    headers (the server's reading rules, simplified)."""
    pieces = []
    i = 4  # client flags
    while i + 16 <= len(c2s):
        magic, code, n = struct.unpack(">QII", c2s[i:i + 16])
        if magic != IHAVEOPT:
            break
        pieces.append(c2s[i:i + 16 + n])
        pieces.append(c2s[i + 16:i + 16 + n])
        i += 16 + n
        if code in (1, 7):
            break
    while i + 28 <= len(c2s):
        magic, _, kind, _, _, n = struct.unpack(">IHHQQI", c2s[i:i + 28])
        if magic != REQUEST_MAGIC:
            break
        pieces.append(c2s[i:i + 28])
        i += 28 + (n if kind == 1 else 0)
    return pieces


def option_replies(s2c):
    pieces = []
    i = 18
    while i + 20 <= len(s2c):
        magic, _, _, n = struct.unpack(">QIII", s2c[i:i + 20])
        if magic != 0x0003E889045565A9:
            break
        pieces.append(s2c[i:i + 20])
        pieces.append(s2c[i + 20:i + 20 + n])
        i += 20 + n
    return pieces


def extended_headers_seed():
    """A server_stream seed with extended headers, which Debian's peers
    (nbdkit 1.32, libnbd 1.14) cannot record: EXTENDED_HEADERS, GO, then
    32-byte requests (magic, flags, type, cookie, offset, 64-bit length)
    with a WRITE's payload, and a disconnect."""
    def option(code, data=b""):
        return struct.pack(">QII", IHAVEOPT, code, len(data)) + data

    def request(kind, cookie, offset, length, payload=b""):
        return struct.pack(">IHHQQQ", 0x21E41C71, 0, kind, cookie, offset, length) + payload

    name = b"fuzz"
    c2s = struct.pack(">I", 3)  # FIXED_NEWSTYLE | NO_ZEROES
    c2s += option(11)  # NBD_OPT_EXTENDED_HEADERS
    c2s += option(7, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))  # GO
    c2s += request(1, 1, 4096, 512, bytes(range(256)) * 2)  # WRITE
    c2s += request(0, 2, 4096, 512)  # READ
    c2s += request(6, 3, 0, 8192)  # WRITE_ZEROES
    c2s += request(3, 4, 0, 0)  # FLUSH
    c2s += request(0, 5, 0, 8192)  # READ
    c2s += request(2, 6, 0, 0)  # DISC
    # Mode byte 0: newstyle, read-write, one worker, extended headers on.
    write("server_stream", "newstyle-extended-headers", bytes([0]) + c2s)


def main():
    for t in ("client_replies", "server_stream", "wire_decoders"):
        shutil.rmtree(os.path.join(CORPUS, t), ignore_errors=True)
    tmp = tempfile.mkdtemp(prefix="nbd-seeds-")
    wire = set()
    try:
        for style in ("newstyle", "oldstyle"):
            real = os.path.join(tmp, f"{style}.sock")
            proxied = os.path.join(tmp, f"{style}-proxy.sock")
            args = [NBDKIT, "-f", "-U", real, "-e", "fuzz"]
            if style == "oldstyle":
                args.append("--oldstyle")
            srv = subprocess.Popen(args + ["memory", "size=1M"], stderr=subprocess.DEVNULL)
            for _ in range(100):
                if os.path.exists(real):
                    break
                time.sleep(0.05)
            proxy = Proxy(proxied, real)
            uri = f"nbd+unix:///fuzz?socket={proxied}"
            # Server mode byte of server_stream: bit 2 is --oldstyle.
            smode = bytes([4 if style == "oldstyle" else 0])

            modes = {"sr-meta": MODE_SR | MODE_META | MODE_STRICT, "simple": MODE_STRICT,
                     "loose": MODE_SR | MODE_META}
            if style == "newstyle":
                modes["opt-mode"] = MODE_OPT | MODE_SR | MODE_META | MODE_STRICT | MODE_FULL
            for name, mode in modes.items():
                n = len(proxy.sessions)
                script(uri, mode)
                (c2s, s2c), = proxy.take(n)
                write("client_replies", f"{style}-{name}", bytes([mode]) + s2c)
                write("server_stream", f"{style}-libnbd-{name}", smode + c2s)
                wire.update(options_and_requests(c2s) + option_replies(s2c))

            clients = {
                "nbdinfo": ["nbdinfo", uri],
                "nbdinfo-map": ["nbdinfo", "--map", uri],
                "qemu-img-info": ["qemu-img", "info", uri],
                "qemu-io": ["qemu-io", "-f", "raw", "-c", "write -P 0x55 4096 4096",
                            "-c", "read 0 8192", "-c", "discard 0 4096", "-c", "flush", uri],
            }
            if style == "newstyle":
                clients["nbdinfo-list"] = ["nbdinfo", "--list", f"nbd+unix://?socket={proxied}"]
            for name, cmd in clients.items():
                n = len(proxy.sessions)
                run(cmd)
                for k, (c2s, s2c) in enumerate(proxy.take(n)):
                    write("server_stream", f"{style}-{name}-{k}", smode + c2s)
                    wire.update(options_and_requests(c2s) + option_replies(s2c))
            srv.terminate()
            srv.wait()
        extended_headers_seed()
        for k, piece in enumerate(sorted(wire)):
            if piece:
                write("wire_decoders", f"recorded-{k:03}", piece)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
