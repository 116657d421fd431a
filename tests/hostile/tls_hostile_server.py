#!/usr/bin/python3
"""An NBD server that misbehaves around NBD_OPT_STARTTLS, for testing
clients (tests/interop/tls-hostile.sh).

Usage: tls_hostile_server.py MODE SOCKET [CERTDIR]

Listens on the Unix socket SOCKET, serves one connection, and exits. Where
a mode completes a TLS handshake it uses Python's ssl module with
CERTDIR/server-cert.pem and server-key.pem (scripts/gen-tls-keys.sh).

  tls-good          a control: ACKs STARTTLS, completes TLS, then serves
                    the export inside TLS (the TLS 1.3 session tickets sent
                    in one write with the first reply: see TlsConn)
  refuse-policy     answers STARTTLS with NBD_REP_ERR_POLICY, then serves
                    in plain text to a client that goes on
  refuse-unsup      the same with NBD_REP_ERR_UNSUP
  inject-go-reply   ACKs STARTTLS and, in the same write, appends a forged
                    plain-text reply to NBD_OPT_GO (REP_INFO with a size,
                    then REP_ACK), then tries the TLS handshake and serves
                    inside TLS if the client goes along (CVE-2021-3716's
                    class: plain text from before the handshake must never
                    be taken for TLS, nor trusted)
  inject-garbage    the same with 64 bytes of 0x5a instead of a reply
  late-inject       ACKs STARTTLS, waits for the client's ClientHello, and
                    answers it with the forged plain-text GO reply
  ack-for-go        answers STARTTLS with an NBD_REP_ACK for NBD_OPT_GO
  info-for-starttls answers STARTTLS with NBD_REP_INFO (an export size)
  export-size       answers STARTTLS with an NBD_OPT_EXPORT_NAME reply (a
                    fake export size, flags and 124 zeroes)
  tls-then-plain    completes TLS, then answers the client's next option in
                    plain text, outside TLS
  oldstyle          an oldstyle greeting (size included: no options, so no
                    STARTTLS)
  no-fixed          newstyle without the fixed-newstyle flag (no STARTTLS
                    possible either)

The export is 1 MiB of the byte 0x5a.
"""
import os
import socket
import ssl
import struct
import sys

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
OLDSTYLE = 0x00420281861253
REPLY_MAGIC = 0x3E889045565A9
SIMPLE = 0x67446698
STRUCTURED = 0x668E33EF
SIZE = 1 << 20

OPT_EXPORT_NAME, OPT_ABORT, OPT_STARTTLS, OPT_GO = 1, 2, 5, 7
OPT_STRUCTURED_REPLY, OPT_SET_META_CONTEXT = 8, 10
REP_ACK, REP_INFO, REP_META = 1, 3, 4
ERR_UNSUP, ERR_POLICY = (1 << 31) | 1, (1 << 31) | 2


class Conn:
    """Blocking reads and writes on a socket, plain text."""

    def __init__(self, sock):
        self.sock = sock

    def send(self, b):
        self.sock.sendall(b)

    def recv(self, n):
        b = b""
        while len(b) < n:
            chunk = self.sock.recv(n - len(b))
            if not chunk:
                raise EOFError
            b += chunk
        return b


class TlsConn(Conn):
    """TLS through memory BIOs, so the server decides when ciphertext goes
    out: what OpenSSL writes once the handshake is over (TLS 1.3 session
    tickets) is held back and sent in one write with the first reply, as a
    busy server may well do; the client must then find the reply behind
    the tickets without reading the socket again. With plain_replies
    (tls-then-plain) the tickets go out at once and every reply is written
    in plain text, outside TLS."""

    def __init__(self, sock, certdir, plain_replies=False):
        super().__init__(sock)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(
            os.path.join(certdir, "server-cert.pem"), os.path.join(certdir, "server-key.pem")
        )
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_side=True)
        self.plain_replies = plain_replies
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.flush()
                self.fill()
        if plain_replies:
            self.flush()

    def flush(self):
        data = self.out.read()
        if data:
            self.sock.sendall(data)

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.inc.write(data)

    def send(self, b):
        if self.plain_replies:
            self.sock.sendall(b)
            return
        self.obj.write(b)
        self.flush()

    def recv(self, n):
        b = b""
        while len(b) < n:
            try:
                chunk = self.obj.read(n - len(b))
            except ssl.SSLWantReadError:
                self.fill()
                continue
            if not chunk:
                raise EOFError
            b += chunk
        return b


def opt_reply(opt, rtype, payload=b""):
    return struct.pack(">QIII", REPLY_MAGIC, opt, rtype, len(payload)) + payload


def go_reply():
    flags = 1 | 4  # HAS_FLAGS | SEND_FLUSH
    return opt_reply(OPT_GO, REP_INFO, struct.pack(">HQH", 0, SIZE, flags)) + opt_reply(
        OPT_GO, REP_ACK
    )


def options(c, mode, certdir):
    """Option haggling; returns (conn, structured) once GO is answered."""
    structured = False
    tls = False
    while True:
        _, opt, length = struct.unpack(">QII", c.recv(16))
        c.recv(length)
        if opt == OPT_STARTTLS and not tls:
            if mode in ("refuse-policy", "refuse-unsup"):
                err = ERR_POLICY if mode == "refuse-policy" else ERR_UNSUP
                c.send(opt_reply(opt, err, b"no TLS here"))
                continue
            if mode == "ack-for-go":
                c.send(opt_reply(OPT_GO, REP_ACK))
                continue
            if mode == "info-for-starttls":
                c.send(opt_reply(opt, REP_INFO, struct.pack(">HQH", 0, SIZE, 1)))
                continue
            if mode == "export-size":
                c.send(struct.pack(">QH", SIZE, 1) + b"\0" * 124)
                continue
            extra = b""
            if mode == "inject-go-reply":
                extra = go_reply()
            elif mode == "inject-garbage":
                extra = b"\x5a" * 64
            # One write: the ACK and whatever is injected after it.
            c.send(opt_reply(opt, REP_ACK) + extra)
            if mode == "late-inject":
                c.sock.recv(65536)  # the start of the ClientHello
                c.send(go_reply())
            if certdir is None:
                raise EOFError
            # tls-then-plain: read the client's options inside TLS, answer
            # them in plain text on the same connection, outside TLS.
            c = TlsConn(c.sock, certdir, plain_replies=mode == "tls-then-plain")
            tls = True
            structured = False
            continue
        if opt == OPT_STRUCTURED_REPLY:
            structured = True
            c.send(opt_reply(opt, REP_ACK))
        elif opt == OPT_SET_META_CONTEXT and structured:
            c.send(opt_reply(opt, REP_META, struct.pack(">I", 1) + b"base:allocation"))
            c.send(opt_reply(opt, REP_ACK))
        elif opt == OPT_GO:
            c.send(go_reply())
            return c, structured
        elif opt == OPT_ABORT:
            c.send(opt_reply(opt, REP_ACK))
            raise EOFError
        elif opt == OPT_EXPORT_NAME:
            c.send(struct.pack(">QH", SIZE, 1 | 4) + b"\0" * 124)
            return c, False
        else:
            c.send(opt_reply(opt, ERR_UNSUP))


def transmission(c, structured):
    while True:
        _, _, kind, cookie, offset, length = struct.unpack(">IHHQQI", c.recv(28))
        if kind == 2:  # DISC
            return
        if kind == 1:  # WRITE
            c.recv(length)
        if kind == 7:  # BLOCK_STATUS
            c.send(struct.pack(">IHHQIIII", STRUCTURED, 1, 5, cookie, 12, 1, length, 0))
            continue
        if kind != 0:
            c.send(struct.pack(">IIQ", SIMPLE, 0, cookie))
            continue
        data = b"\x5a" * length
        if structured:
            c.send(struct.pack(">IHHQIQ", STRUCTURED, 1, 1, cookie, 8 + length, offset) + data)
        else:
            c.send(struct.pack(">IIQ", SIMPLE, 0, cookie) + data)


def serve(sock, mode, certdir):
    c = Conn(sock)
    if mode == "oldstyle":
        c.send(struct.pack(">QQQI", NBDMAGIC, OLDSTYLE, SIZE, 1 | 4) + b"\0" * 124)
        transmission(c, False)
        return
    flags = 2 if mode == "no-fixed" else 3  # NO_ZEROES, | FIXED_NEWSTYLE
    c.send(struct.pack(">QQH", NBDMAGIC, IHAVEOPT, flags))
    c.recv(4)  # client flags
    if mode == "no-fixed":
        # Without fixed newstyle the only option is EXPORT_NAME.
        _, opt, length = struct.unpack(">QII", c.recv(16))
        c.recv(length)
        if opt != OPT_EXPORT_NAME:
            raise EOFError
        c.send(struct.pack(">QH", SIZE, 1 | 4))
        transmission(c, False)
        return
    c, structured = options(c, mode, certdir)
    transmission(c, structured)


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: tls_hostile_server.py MODE SOCKET [CERTDIR]")
    mode, path = sys.argv[1], sys.argv[2]
    certdir = sys.argv[3] if len(sys.argv) == 4 else None
    lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lst.bind(path)
    lst.listen(1)
    sock, _ = lst.accept()
    lst.close()
    try:
        serve(sock, mode, certdir)
    except (EOFError, OSError, ssl.SSLError) as e:
        # The client hung up or refused us: that is what most modes expect.
        print(f"tls_hostile_server {mode}: connection ended: {e!r}", file=sys.stderr)
    sock.close()


if __name__ == "__main__":
    main()
