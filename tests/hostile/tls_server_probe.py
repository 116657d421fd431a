#!/usr/bin/python3
"""A hostile NBD client probing a server's STARTTLS rules (X.509, Python's
ssl module), for tests/interop/tls-hostile.sh.

Usage: tls_server_probe.py TARGET CERTDIR CHECK...

TARGET is a Unix socket path or tcp:HOST:PORT of a server started with
--tls=require (or --tls=on for state-reset) and certificates from
scripts/gen-tls-keys.sh; CERTDIR holds ca-cert.pem (the server's is
verified, as localhost). Each CHECK runs on a new connection and prints
"ok CHECK: ..." or "not ok CHECK: ..."; the exit status is 1 if any failed.

  plain-options      in plain text, every option but STARTTLS and ABORT
                     (LIST, INFO, GO, STRUCTURED_REPLY, SET_META_CONTEXT,
                     LIST_META_CONTEXT, an unknown one) is answered with
                     NBD_REP_ERR_TLS_REQD and nothing else; STARTTLS then
                     still works
  plain-export-name  NBD_OPT_EXPORT_NAME in plain text: the server closes
                     the connection without a byte (no size, no flags)
  plain-abort        NBD_OPT_ABORT in plain text ends the connection
  injected-option    STARTTLS and NBD_OPT_GO in one write: the server sends
                     nothing but its ACK in plain text, and the GO is never
                     executed: either the handshake fails (the server took
                     the plain text for TLS and hung up) or, inside TLS,
                     nothing unsolicited arrives and the first reply is to
                     the first option sent inside TLS
  starttls-twice     inside TLS, a second STARTTLS gets NBD_REP_ERR_INVALID
                     and the connection keeps working (GO, write, read)
  state-reset        (--tls=on) STRUCTURED_REPLY acknowledged in plain
                     text is forgotten by STARTTLS: inside TLS, a GO
                     without it gives simple replies (CVE-2021-3716)
"""
import os
import select
import socket
import ssl
import struct
import sys

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE = 0x67446698
STRUCTURED = 0x668E33EF

OPT = dict(
    EXPORT_NAME=1, ABORT=2, LIST=3, STARTTLS=5, INFO=6, GO=7,
    STRUCTURED_REPLY=8, LIST_META_CONTEXT=9, SET_META_CONTEXT=10,
)
REP_ACK, REP_SERVER, REP_INFO = 1, 2, 3
ERR = 1 << 31
ERR_INVALID, ERR_TLS_REQD = ERR | 3, ERR | 5
CMD_READ, CMD_WRITE, CMD_DISC = 0, 1, 2


class Fail(Exception):
    pass


class Closed(Exception):
    pass


def go_payload(name=b""):
    return struct.pack(">I", len(name)) + name + struct.pack(">H", 0)


def meta_payload():
    q = b"base:allocation"
    return struct.pack(">II", 0, 1) + struct.pack(">I", len(q)) + q


def option(code, payload=b""):
    return struct.pack(">QII", IHAVEOPT, code, len(payload)) + payload


class Conn:
    def __init__(self, target, certdir):
        self.certdir = certdir
        if target.startswith("tcp:"):
            host, port = target[4:].rsplit(":", 1)
            self.sock = socket.create_connection((host, int(port)), timeout=20)
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(20)
            self.sock.connect(target)
        self.raw = self.sock

    def send(self, b):
        self.sock.sendall(b)

    def recv(self, n):
        b = b""
        while len(b) < n:
            chunk = self.sock.recv(n - len(b))
            if not chunk:
                raise Closed(f"server closed the connection after {len(b)} of {n} bytes")
            b += chunk
        return b

    def handshake(self):
        magic, ihaveopt, flags = struct.unpack(">QQH", self.recv(18))
        if magic != NBDMAGIC or ihaveopt != IHAVEOPT or not flags & 1:
            raise Fail(f"not a fixed-newstyle greeting (flags {flags:#x})")
        self.send(struct.pack(">I", 1))  # FIXED_NEWSTYLE only: no NO_ZEROES

    def reply(self):
        magic, opt, rtype, length = struct.unpack(">QIII", self.recv(20))
        if magic != REPLY_MAGIC:
            raise Fail(f"bad option reply magic {magic:#x}")
        return opt, rtype, self.recv(length)

    def plain_pending(self, wait):
        """Whether plain-text bytes arrive within `wait` seconds."""
        r, _, _ = select.select([self.raw], [], [], wait)
        if not r:
            return b""
        try:
            return self.raw.recv(4096, socket.MSG_PEEK)
        except OSError:
            return b""

    def starttls(self):
        ctx = ssl.create_default_context(cafile=os.path.join(self.certdir, "ca-cert.pem"))
        self.sock = ctx.wrap_socket(self.raw, server_hostname="localhost")

    def go(self):
        """GO on the default export; returns its size."""
        self.send(option(OPT["GO"], go_payload()))
        size = None
        while True:
            opt, rtype, payload = self.reply()
            if opt != OPT["GO"]:
                raise Fail(f"reply to option {opt} while GO was sent")
            if rtype == REP_INFO and struct.unpack(">H", payload[:2])[0] == 0:
                size = struct.unpack(">Q", payload[2:10])[0]
            elif rtype == REP_ACK:
                if size is None:
                    raise Fail("GO acknowledged without the export's size")
                return size
            elif rtype & ERR:
                raise Fail(f"GO refused: {rtype:#x} {payload!r}")

    def cmd(self, kind, cookie, offset, length, data=b""):
        self.send(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, kind, cookie, offset, length) + data)

    def simple_reply(self, cookie, length):
        magic, error, ck = struct.unpack(">IIQ", self.recv(16))
        if magic == STRUCTURED:
            raise Fail("a structured reply, though structured replies were not negotiated in TLS")
        if magic != SIMPLE or ck != cookie or error:
            raise Fail(f"bad simple reply: magic {magic:#x} error {error} cookie {ck}")
        return self.recv(length)

    def use_export(self, tag):
        """Write a block, read it back, disconnect: the connection works."""
        data = (tag * 512)[:512]
        self.cmd(CMD_WRITE, 1, 0, len(data), data)
        self.simple_reply(1, 0)
        self.cmd(CMD_READ, 2, 0, len(data))
        if self.simple_reply(2, len(data)) != data:
            raise Fail("read back differs from what was written")
        self.cmd(CMD_DISC, 3, 0, 0)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def plain_options(c):
    c.handshake()
    tried = [
        ("LIST", b""), ("INFO", go_payload()), ("GO", go_payload()),
        ("STRUCTURED_REPLY", b""), ("SET_META_CONTEXT", meta_payload()),
        ("LIST_META_CONTEXT", meta_payload()), ("unknown 99", b""),
    ]
    for name, payload in tried:
        code = OPT.get(name, 99)
        c.send(option(code, payload))
        opt, rtype, _ = c.reply()
        if (opt, rtype) != (code, ERR_TLS_REQD):
            raise Fail(f"{name} in plain text: reply type {rtype:#x} to option {opt}")
    leaked = c.plain_pending(0.3)
    if leaked:
        raise Fail(f"more than the refusals: {leaked[:32].hex()}")
    c.send(option(OPT["STARTTLS"]))
    opt, rtype, _ = c.reply()
    if (opt, rtype) != (OPT["STARTTLS"], REP_ACK):
        raise Fail(f"STARTTLS afterwards: reply type {rtype:#x}")
    c.starttls()
    size = c.go()
    c.use_export(b"after-refusals ")
    return f"{len(tried)} options refused with NBD_REP_ERR_TLS_REQD, then TLS and GO (size {size})"


def plain_export_name(c):
    c.handshake()
    c.send(option(OPT["EXPORT_NAME"], b""))
    try:
        got = c.raw.recv(4096)
    except ConnectionResetError:
        got = b""
    if got:
        raise Fail(f"the server answered with {len(got)} bytes: {got[:32].hex()}")
    return "connection closed without a byte"


def plain_abort(c):
    c.handshake()
    c.send(option(OPT["ABORT"]))
    got = b""
    try:
        while True:
            b = c.raw.recv(4096)
            if not b:
                break
            got += b
    except ConnectionResetError:
        pass
    ack = struct.pack(">QIII", REPLY_MAGIC, OPT["ABORT"], REP_ACK, 0)
    if got not in (b"", ack):
        raise Fail(f"unexpected answer to ABORT: {got[:40].hex()}")
    return "connection closed" + (" after an ACK" if got else "")


def injected_option(c):
    c.handshake()
    c.send(option(OPT["STARTTLS"]) + option(OPT["GO"], go_payload()))
    opt, rtype, _ = c.reply()
    if (opt, rtype) != (OPT["STARTTLS"], REP_ACK):
        raise Fail(f"STARTTLS: reply type {rtype:#x} to option {opt}")
    leaked = c.plain_pending(0.5)
    if leaked:
        # EOF (the server hung up) peeks as b"" and is fine.
        raise Fail(f"the server sent plain text after its ACK: {leaked[:32].hex()}")
    try:
        c.starttls()
    except (ssl.SSLError, OSError) as e:
        return f"the server fed the injected bytes to TLS: handshake failed ({type(e).__name__})"
    # Inside TLS: nothing unsolicited, and the first reply answers the
    # first option sent in TLS (LIST), not the injected GO.
    c.sock.settimeout(0.5)
    try:
        got = c.sock.recv(4096)
    except (socket.timeout, TimeoutError):
        got = b""
    except (ssl.SSLError, OSError):
        return "connection ended after the handshake, nothing executed"
    c.sock.settimeout(20)
    if got:
        raise Fail(f"unsolicited data inside TLS: {got[:40].hex()}")
    c.send(option(OPT["LIST"]))
    opt, rtype, _ = c.reply()
    if opt != OPT["LIST"]:
        raise Fail(f"first reply inside TLS is to option {opt} (the injected GO?)")
    while rtype == REP_SERVER:
        opt, rtype, _ = c.reply()
    size = c.go()
    c.use_export(b"injected ")
    return f"injected GO discarded: TLS up, first reply to LIST, then GO (size {size}) works"


def starttls_twice(c):
    c.handshake()
    c.send(option(OPT["STARTTLS"]))
    opt, rtype, _ = c.reply()
    if (opt, rtype) != (OPT["STARTTLS"], REP_ACK):
        raise Fail(f"STARTTLS: reply type {rtype:#x}")
    c.starttls()
    c.send(option(OPT["STARTTLS"]))
    opt, rtype, msg = c.reply()
    if (opt, rtype) != (OPT["STARTTLS"], ERR_INVALID):
        raise Fail(f"second STARTTLS: reply type {rtype:#x}, not NBD_REP_ERR_INVALID")
    size = c.go()
    c.use_export(b"twice ")
    return f"second STARTTLS refused with NBD_REP_ERR_INVALID ({msg.decode(errors='replace')!r}); GO (size {size}), write, read work"


def state_reset(c):
    c.handshake()
    c.send(option(OPT["STRUCTURED_REPLY"]))
    opt, rtype, _ = c.reply()
    if (opt, rtype) != (OPT["STRUCTURED_REPLY"], REP_ACK):
        raise Fail(f"plain STRUCTURED_REPLY: reply type {rtype:#x} (is the server --tls=on?)")
    c.send(option(OPT["STARTTLS"]))
    opt, rtype, _ = c.reply()
    if (opt, rtype) != (OPT["STARTTLS"], REP_ACK):
        raise Fail(f"STARTTLS: reply type {rtype:#x}")
    c.starttls()
    c.go()
    c.use_export(b"reset ")
    return "structured replies from plain text forgotten: simple replies inside TLS"


CHECKS = {
    "plain-options": plain_options,
    "plain-export-name": plain_export_name,
    "plain-abort": plain_abort,
    "injected-option": injected_option,
    "starttls-twice": starttls_twice,
    "state-reset": state_reset,
}


def main():
    if len(sys.argv) < 4 or any(a not in CHECKS for a in sys.argv[3:]):
        sys.exit(__doc__)
    target, certdir = sys.argv[1], sys.argv[2]
    bad = 0
    for name in sys.argv[3:]:
        c = Conn(target, certdir)
        try:
            print(f"ok {name}: {CHECKS[name](c)}")
        except (Fail, Closed, OSError, ssl.SSLError, struct.error) as e:
            print(f"not ok {name}: {type(e).__name__}: {e}")
            bad += 1
        finally:
            c.close()
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
