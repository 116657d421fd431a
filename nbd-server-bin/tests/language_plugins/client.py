# The language test's client (python3-libnbd): connects to the URI in
# argv[1], or runs the command after "--" (for `nbdkit -s`), then writes,
# zeroes, trims, flushes and caches, and prints what it reads back: the
# capabilities, the extents and an md5 of the whole disk, before and after.
import hashlib
import sys

import nbd

h = nbd.NBD()
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
if sys.argv[1] == "--":
    h.connect_command(sys.argv[2:])
else:
    h.connect_uri(sys.argv[1])
size = h.get_size()


def extents():
    found = []

    def got(context, offset, entries, err):
        for i in range(0, len(entries), 2):
            found.append((entries[i], entries[i + 1]))

    if h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION):
        offset = 0
        while offset < size:
            before = len(found)
            h.block_status(size - offset, offset, got)
            offset += sum(n for n, _ in found[before:])
    return found


def show(when):
    data = h.pread(size, 0)
    print(when, "md5", hashlib.md5(data).hexdigest())
    print(when, "extents", extents())


print("size", size)
for flag in ["is_read_only", "can_flush", "can_trim", "can_zero", "can_fast_zero",
             "can_fua", "can_multi_conn", "can_cache", "is_rotational"]:
    print(flag, getattr(h, flag)())
show("before")
h.pwrite(b"W" * 4096, 8192)
h.pwrite(b"hello", 600000)
if h.can_fua():
    h.pwrite(b"F" * 512, 16384, nbd.CMD_FLAG_FUA)
h.zero(4096, 0)
h.zero(8192, 24576, nbd.CMD_FLAG_NO_HOLE)
if h.can_trim():
    h.trim(65536, 131072)
if h.can_flush():
    h.flush()
if h.can_cache():
    h.cache(4096, 0)
try:
    h.pwrite(b"L" * 512, size - 512)
except nbd.Error as e:
    print("write to the last block:", e.errno)
try:
    h.pread(512, size)
except nbd.Error as e:
    print("read past the end:", e.errno)
show("after")
h.shutdown()
