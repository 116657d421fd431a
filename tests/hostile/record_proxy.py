#!/usr/bin/python3
"""A TCP/Unix proxy that records every byte, for tests/interop/tls-hostile.sh.

Usage: record_proxy.py LISTEN TARGET PREFIX

LISTEN is a Unix socket path to listen on; TARGET a Unix socket path or
tcp:HOST:PORT. One connection is accepted and relayed to TARGET both ways,
unchanged; what the client sent is written to PREFIX.c2s and what the
server sent to PREFIX.s2c when the connection ends (then the proxy exits).
"""
import socket
import sys
import threading


def connect(target):
    if target.startswith("tcp:"):
        host, port = target[4:].rsplit(":", 1)
        return socket.create_connection((host, int(port)))
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(target)
    return s


def pump(src, dst, record):
    try:
        while True:
            b = src.recv(65536)
            if not b:
                break
            record.append(b)
            dst.sendall(b)
    except OSError:
        pass
    # Pass the end on: the half-close, or the whole close if that fails.
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: record_proxy.py LISTEN TARGET PREFIX")
    listen, target, prefix = sys.argv[1:]
    lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lst.bind(listen)
    lst.listen(1)
    client, _ = lst.accept()
    lst.close()
    server = connect(target)
    c2s, s2c = [], []
    threads = [
        threading.Thread(target=pump, args=(client, server, c2s)),
        threading.Thread(target=pump, args=(server, client, s2c)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    client.close()
    server.close()
    with open(prefix + ".c2s", "wb") as f:
        f.write(b"".join(c2s))
    with open(prefix + ".s2c", "wb") as f:
        f.write(b"".join(s2c))


if __name__ == "__main__":
    main()
