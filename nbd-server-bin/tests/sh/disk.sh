#!/bin/bash -
# An nbdkit sh plugin with every method, each answer chosen by a
# parameter: config stores KEY=VALUE as $tmpdir/conf/KEY, and each method
# reads its own (see `conf`). The disk is $tmpdir/disk; the data methods
# append what they were asked (arguments and flags) to the file given as
# log=, so the test can compare what two servers asked of the script.
set -u
c=$tmpdir/conf
f=$tmpdir/disk
conf() { if [ -f "$c/$1" ]; then cat "$c/$1"; else echo "$2"; fi; }
log() { echo "$*" >> "$(conf log /dev/null)"; }

# yes: exit 0; no: 3 (false); missing: 2; error: 1 with an errno.
answer() {
    case "$(conf "$1" "$2")" in
        yes) exit 0 ;;
        no) exit 3 ;;
        missing) exit 2 ;;
        *) echo "EPERM $1 refused" >&2; exit 1 ;;
    esac
}

case "$1" in
    load) mkdir -p "$c" ;;
    config) mkdir -p "$c"; printf %s "$3" > "$c/$2" ;;
    config_complete) truncate -s "$(conf size 1M)" "$f" ;;
    thread_model) echo "$(conf thread_model parallel)" ;;
    get_ready|after_fork|preconnect|close) ;;
    list_exports)
        case "$(conf list missing)" in
            missing) exit 2 ;;
            bare) printf 'a\nb\n' ;;
            names) printf 'NAMES\na\nb\nc\n' ;;
            interleaved) printf 'INTERLEAVED\na\nthe a\nb\nthe b\n' ;;
            both) printf 'NAMES+DESCRIPTIONS\na\nb\nthe a\nthe b\n' ;;
        esac ;;
    default_export)
        d=$(conf default missing)
        [ "$d" = missing ] && exit 2
        echo "$d" ;;
    open) echo "handle-$3" ;;
    get_size) stat -L -c %s "$f" ;;
    block_size)
        b=$(conf block_size missing)
        [ "$b" = missing ] && exit 2
        echo "$b" ;;
    export_description)
        [ "$(conf description yes)" = yes ] || exit 2
        echo "the disk of $2" ;;
    can_write|can_flush|can_trim|can_zero|can_extents|can_multi_conn|can_fast_zero)
        answer "$1" yes ;;
    is_rotational) answer "$1" no ;;
    can_fua|can_cache)
        v=$(conf "$1" native)
        [ "$v" = missing ] && exit 2
        echo "$v" ;;
    pread) dd if="$f" skip="$4" count="$3" iflag=count_bytes,skip_bytes status=none ;;
    pwrite)
        log "pwrite $3 $4 [$5]"
        dd of="$f" seek="$4" conv=notrunc oflag=seek_bytes status=none ;;
    flush) log flush ;;
    trim) log "trim $3 $4 [$5]" ;;
    zero)
        log "zero $3 $4 [$5]"
        if [ "$(conf zero yes)" = enotsup ]; then echo "ENOTSUP not here" >&2; exit 1; fi
        head -c "$3" /dev/zero | dd of="$f" seek="$4" conv=notrunc oflag=seek_bytes status=none ;;
    extents)
        log "extents $3 $4 [$5]"
        case "$(conf extents words)" in
            words) echo "0 256K"; echo "256K 256K hole"; echo "512K 256K zero"; echo "768K 256K hole,zero" ;;
            numbers) echo "0 262144 0"; echo "262144 262144 1"; echo "524288 262144 2"; echo "786432 262144 3" ;;
            bare) echo "0 512K"; echo "512K 512K 3" ;;
        esac ;;
    cache) log "cache $3 $4" ;;
    *) exit 2 ;;
esac
