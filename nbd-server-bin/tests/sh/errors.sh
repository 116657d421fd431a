#!/bin/bash -
# A 16 KiB disk whose reads fail in a different way at each 512-byte
# block, and whose other data methods fail each with its own errno, for
# comparing the errno each failure reaches the client with.
case "$1" in
    get_size) echo 16K ;;
    thread_model) echo parallel ;;
    can_write|can_flush|can_trim|can_zero) exit 0 ;;
    can_fua|can_cache) echo native ;;
    pwrite) cat >/dev/null; echo "ENOSPC disk full" >&2; exit 1 ;;
    flush) echo "EIO flush failed" >&2; exit 1 ;;
    trim) echo "EPERM no trimming" >&2; exit 1 ;;
    zero) echo "EOVERFLOW zero too far" >&2; exit 1 ;;
    cache) echo "ENOMEM cache" >&2; exit 1 ;;
    pread)
        case $(( $4 / 512 )) in
            0) head -c "$3" /dev/zero ;;
            1) echo "EPERM denied" >&2; exit 1 ;;
            2) echo "ENOSPC Out of space" >&2; exit 1 ;;
            3) echo "EINVALID is no errno" >&2; exit 1 ;;
            4) exit 1 ;;
            5) echo "EIO x" >&2; exit 4 ;;
            6) exit 3 ;;
            7) echo "einval in lower case" >&2; exit 1 ;;
            8) echo "ENOMEM" >&2; exit 1 ;;
            9) printf 'ESHUTDOWN going\nsecond line\n' >&2; exit 1 ;;
            10) echo "EOVERFLOW too big" >&2; exit 1 ;;
            11) echo "ENOTSUP nope" >&2; exit 1 ;;
            12) echo "EROFS read-only" >&2; exit 1 ;;
            13) head -c 10 /dev/zero ;;
            14) kill -9 $$ ;;
            15) exit 2 ;;
        esac ;;
    *) exit 2 ;;
esac
