# A 1 MiB disk in memory for nbdkit-python-plugin(3), API version 2:
# the first half is 4 KiB blocks of letters, the second half a hole.
# It implements every callback the Python plugin offers, so that the
# language test compares each one through both servers.
import nbdkit

API_VERSION = 2
BLOCK = 4096
BLOCKS = 256

disk = bytearray(BLOCK * BLOCKS)
for b in range(BLOCKS // 2):
    disk[b * BLOCK:(b + 1) * BLOCK] = bytes([65 + b % 26]) * BLOCK
# Blocks that read as zeroes because they were never written or trimmed.
hole = [b >= BLOCKS // 2 for b in range(BLOCKS)]
label = "python"


def config(key, value):
    global label
    if key == "label":
        label = value
    else:
        raise RuntimeError("unknown parameter " + key)


def thread_model():
    return nbdkit.THREAD_MODEL_SERIALIZE_REQUESTS


def open(readonly):
    return {"readonly": readonly}


def get_size(h):
    return len(disk)


def can_write(h):
    return True


def can_flush(h):
    return True


def can_trim(h):
    return True


def can_zero(h):
    return True


def can_fast_zero(h):
    return True


def can_fua(h):
    return nbdkit.FUA_NATIVE


def can_multi_conn(h):
    return True


def can_extents(h):
    return True


def can_cache(h):
    return nbdkit.CACHE_NATIVE


def is_rotational(h):
    return False


def export_description(h):
    return "a " + label + " disk"


def pread(h, buf, offset, flags):
    buf[:] = disk[offset:offset + len(buf)]


def pwrite(h, buf, offset, flags):
    if offset >= len(disk) - BLOCK:
        raise RuntimeError("the last block is read-only")
    disk[offset:offset + len(buf)] = buf
    for b in range(offset // BLOCK, (offset + len(buf) + BLOCK - 1) // BLOCK):
        hole[b] = False


def flush(h, flags):
    pass


def trim(h, count, offset, flags):
    disk[offset:offset + count] = bytes(count)
    # Only whole blocks become holes.
    for b in range((offset + BLOCK - 1) // BLOCK, (offset + count) // BLOCK):
        hole[b] = True


def zero(h, count, offset, flags):
    if flags & nbdkit.FLAG_MAY_TRIM:
        trim(h, count, offset, flags)
    else:
        pwrite(h, bytes(count), offset, flags)


def cache(h, count, offset, flags):
    pass


def extents(h, count, offset, flags):
    result = []
    b = offset // BLOCK
    end = offset + count
    while b * BLOCK < end and b < BLOCKS:
        start = b
        while b < BLOCKS and hole[b] == hole[start] and b * BLOCK < end:
            b += 1
        kind = nbdkit.EXTENT_HOLE | nbdkit.EXTENT_ZERO if hole[start] else 0
        result.append((start * BLOCK, (b - start) * BLOCK, kind))
    return result
