#!/usr/bin/python3
"""Checks what record_proxy.py recorded of an NBD connection.

Usage: check_recording.py PREFIX EXPECT [--absent TEXT]... [--present TEXT]...

PREFIX.c2s holds what the client sent, PREFIX.s2c what the server sent.
EXPECT says what the client may have sent:

  tls             its 4 handshake flags, NBD_OPT_STARTTLS, then only TLS
                  records (content types 20-23, version 3.x), at least one,
                  all complete; and the server its greeting, the ACK to
                  STARTTLS, then only TLS records
  tls-or-nothing  the flags, NBD_OPT_STARTTLS, then nothing or only TLS
                  records (the last may be cut short: the client hung up)
  refused         the flags, NBD_OPT_STARTTLS, then nothing or one
                  NBD_OPT_ABORT
  nothing         not one byte
  any             anything (a control, for --present)

--absent TEXT: TEXT appears in neither direction (plain text never
leaked). --present TEXT: TEXT appears (for controls, which prove that
--absent can fail). Prints what it found; exits 1 on a violation.
"""
import struct
import sys

IHAVEOPT = 0x49484156454F5054
NBDMAGIC = 0x4E42444D41474943
REPLY_MAGIC = 0x3E889045565A9
OPT_ABORT, OPT_STARTTLS = 2, 5
STARTTLS = struct.pack(">QII", IHAVEOPT, OPT_STARTTLS, 0)
ABORT = struct.pack(">QII", IHAVEOPT, OPT_ABORT, 0)
MAX_RECORD = (1 << 14) + 2048


class Bad(Exception):
    pass


def tls_records(b, who, allow_partial):
    """Parses b as TLS records; returns their count and content types."""
    n, pos, types = 0, 0, set()
    while pos < len(b):
        if len(b) - pos < 5:
            if allow_partial:
                break
            raise Bad(f"{who}: {len(b) - pos} trailing bytes, not a TLS record header")
        ctype, major, minor, length = struct.unpack(">BBBH", b[pos : pos + 5])
        if ctype not in (20, 21, 22, 23) or major != 3 or minor > 4 or length > MAX_RECORD:
            raise Bad(
                f"{who}: at byte {pos} after STARTTLS: {b[pos:pos + 8].hex()} "
                f"is not a TLS record header (type {ctype}, version {major}.{minor}, "
                f"length {length})"
            )
        if pos + 5 + length > len(b) and not allow_partial:
            raise Bad(f"{who}: TLS record at byte {pos} cut short")
        pos += 5 + length
        n += 1
        types.add(ctype)
    return n, sorted(types)


def client_prefix(c2s):
    if len(c2s) < 4:
        raise Bad(f"client: only {len(c2s)} bytes, not even its flags")
    (flags,) = struct.unpack(">I", c2s[:4])
    if flags & ~3:
        raise Bad(f"client: unknown handshake flags {flags:#x}")
    if c2s[4:20] != STARTTLS:
        raise Bad(f"client: its first option is not a bare NBD_OPT_STARTTLS: {c2s[4:20].hex()}")
    return c2s[20:]


def main():
    args = sys.argv[1:]
    if len(args) < 2:
        sys.exit(__doc__)
    prefix, expect = args[0], args[1]
    absent, present = [], []
    rest = args[2:]
    while rest:
        if len(rest) < 2 or rest[0] not in ("--absent", "--present"):
            sys.exit(__doc__)
        (absent if rest[0] == "--absent" else present).append(rest[1].encode())
        rest = rest[2:]
    c2s = open(prefix + ".c2s", "rb").read()
    s2c = open(prefix + ".s2c", "rb").read()
    said = []
    try:
        if expect == "nothing":
            if c2s:
                raise Bad(f"client sent {len(c2s)} bytes: {c2s[:32].hex()}")
            said.append("client sent nothing")
        elif expect == "refused":
            after = client_prefix(c2s)
            if after not in (b"", ABORT):
                raise Bad(
                    f"client sent {len(after)} bytes after the refused STARTTLS: "
                    f"{after[:48].hex()}"
                )
            said.append(
                "client sent flags, STARTTLS" + (", NBD_OPT_ABORT" if after else "") + ", nothing else"
            )
        elif expect in ("tls", "tls-or-nothing"):
            after = client_prefix(c2s)
            n, types = tls_records(after, "client", expect != "tls")
            if expect == "tls" and n == 0:
                raise Bad("client sent no TLS record after STARTTLS")
            said.append(
                f"client sent flags, STARTTLS, then {len(after)} bytes in {n} TLS records"
                + (f" (types {types})" if n else "")
            )
            if expect == "tls":
                greeting = s2c[:18]
                ack = struct.pack(">QIII", REPLY_MAGIC, OPT_STARTTLS, 1, 0)
                if greeting[:16] != struct.pack(">QQ", NBDMAGIC, IHAVEOPT):
                    raise Bad(f"server: greeting {greeting.hex()}")
                if s2c[18:38] != ack:
                    raise Bad(f"server: not an ACK to STARTTLS: {s2c[18:38].hex()}")
                m, stypes = tls_records(s2c[38:], "server", False)
                said.append(f"server sent greeting, ACK, then {m} TLS records (types {stypes})")
        elif expect == "any":
            said.append(f"client sent {len(c2s)} bytes, server {len(s2c)}")
        else:
            sys.exit(f"unknown EXPECT {expect}")
        for t in absent:
            for who, b in (("client", c2s), ("server", s2c)):
                if t in b:
                    raise Bad(f"{who} sent {t.decode()!r} in plain text at byte {b.find(t)}")
        if absent:
            said.append(f"{len(absent)} secret string(s) absent from both directions")
        for t in present:
            if t not in c2s and t not in s2c:
                raise Bad(f"{t.decode()!r} is in neither direction (control)")
        if present:
            said.append(f"{len(present)} string(s) seen in plain text (control)")
    except Bad as e:
        print(f"recording {prefix}: {e}")
        sys.exit(1)
    print("; ".join(said))


if __name__ == "__main__":
    main()
