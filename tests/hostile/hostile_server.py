#!/usr/bin/python3
"""A deliberately misbehaving NBD server, for testing clients.

It serves one connection on stdin/stdout (so a client starts it with
nbd_connect_command) and misbehaves in the way MODE names:

  bad-magic         greets with a wrong magic
  truncated         sends part of the greeting, then hangs up
  huge-size         negotiates normally but claims a size over 2^63
  hangup-mid-reply  answers a READ with half its data, then hangs up
  wrong-cookie      answers a READ with a cookie it never saw
  oversize-chunk    answers a READ with a 1 GiB structured chunk header
  chunk-outside     answers a READ with data placed after the request
  endless-data      answers a READ with the same data chunk over and over,
                    never DONE (bounded: it gives up after 10,000)
  short-chunk       answers a READ with an OFFSET_HOLE chunk 6 bytes long
  endless-extents   answers BLOCK_STATUS with extent chunks over and over,
                    never DONE (bounded likewise)
  good              behaves (a control: the client must work against it)

The export is 1 MiB of the byte 0x5a (so a correct read is recognisable).
"""
import os
import struct
import sys

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x3E889045565A9
SIMPLE = 0x67446698
STRUCTURED = 0x668E33EF
SIZE = 1 << 20

MODE = sys.argv[1] if len(sys.argv) > 1 else "good"
inp = sys.stdin.buffer
out = sys.stdout.buffer


def send(b):
    out.write(b)
    out.flush()


def recv(n):
    b = b""
    while len(b) < n:
        chunk = inp.read(n - len(b))
        if not chunk:
            sys.exit(0)
        b += chunk
    return b


def opt_reply(opt, rtype, payload=b""):
    send(struct.pack(">QIII", REPLY_MAGIC, opt, rtype, len(payload)) + payload)


def main():
    greeting = struct.pack(">QQH", NBDMAGIC, IHAVEOPT, 3)
    if MODE == "bad-magic":
        send(b"NOTMAGIC" + greeting[8:])
        recv(1)
        return
    if MODE == "truncated":
        send(greeting[:10])
        return
    send(greeting)
    recv(4)  # client flags
    structured = False
    while True:
        _, opt, length = struct.unpack(">QII", recv(16))
        recv(length)
        if opt == 8:  # STRUCTURED_REPLY
            structured = True
            opt_reply(opt, 1)
        elif opt == 10 and structured:  # SET_META_CONTEXT: base:allocation
            name = b"base:allocation"
            opt_reply(opt, 4, struct.pack(">I", 1) + name)
            opt_reply(opt, 1)
        elif opt == 7:  # GO
            size = (1 << 63) + 4096 if MODE == "huge-size" else SIZE
            flags = 1 | 4  # HAS_FLAGS | SEND_FLUSH
            opt_reply(opt, 3, struct.pack(">HQH", 0, size, flags))
            opt_reply(opt, 1)
            break
        else:
            opt_reply(opt, (1 << 31) | 1)  # ERR_UNSUP
    while True:
        magic, flags, kind, cookie, offset, length = struct.unpack(">IHHQQI", recv(28))
        if kind == 2:  # DISC
            return
        if kind == 1:
            recv(length)
        if kind == 7:  # BLOCK_STATUS
            chunk = struct.pack(">IHHQIIII", STRUCTURED, 0, 5, cookie, 12, 1, length, 0)
            if MODE == "endless-extents":
                for _ in range(10000):
                    send(chunk)
                return
            send(struct.pack(">IHHQIIII", STRUCTURED, 1, 5, cookie, 12, 1, length, 0))
            continue
        if kind != 0:
            send(struct.pack(">IIQ", SIMPLE, 0, cookie))
            continue
        data = b"\x5a" * length
        if MODE == "hangup-mid-reply":
            send(struct.pack(">IHHQIQ", STRUCTURED, 1, 1, cookie, 8 + length, offset))
            send(data[: length // 2])
            return
        if MODE == "wrong-cookie":
            send(struct.pack(">IIQ", SIMPLE, 0, cookie + 1000) + data)
            continue
        if MODE == "oversize-chunk":
            send(struct.pack(">IHHQI", STRUCTURED, 1, 1, cookie, 1 << 30))
            send(b"\x00" * 4096)
            recv(1)
            return
        if MODE == "endless-data" and structured:
            head = struct.pack(">IHHQIQ", STRUCTURED, 0, 1, cookie, 8 + length, offset)
            for _ in range(10000):
                send(head + data)
            return
        if MODE == "short-chunk" and structured:
            send(struct.pack(">IHHQI", STRUCTURED, 1, 2, cookie, 6) + b"\0" * 6)
            continue
        if MODE == "chunk-outside" and structured:
            send(struct.pack(">IHHQIQ", STRUCTURED, 1, 1, cookie, 8 + length, offset + 512))
            send(data)
            continue
        if structured:
            send(struct.pack(">IHHQIQ", STRUCTURED, 1, 1, cookie, 8 + length, offset) + data)
        else:
            send(struct.pack(">IIQ", SIMPLE, 0, cookie) + data)


if __name__ == "__main__":
    try:
        main()
    except (BrokenPipeError, ConnectionResetError):
        pass
    os._exit(0)
