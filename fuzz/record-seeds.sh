#!/bin/sh
# Regenerates the recorded seed corpora (fuzz/corpus/{client_replies,
# server_stream,wire_decoders}) from sessions of real peers: Debian's
# nbdkit serving, Debian's libnbd (python3-libnbd, nbdinfo), qemu-img and
# qemu-io connecting. The other targets' seeds are small hand-written files
# kept in git as they are. See record-seeds.py.
set -e
exec /usr/bin/python3 "$(dirname "$0")/record-seeds.py" "$@"
