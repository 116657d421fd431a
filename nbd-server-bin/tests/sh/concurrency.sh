#!/bin/bash -
# A 1 MiB disk of zeroes whose reads take a while and record how many
# reads were running when each started (a file per running read), in the
# file given as log=. The thread model is the one given as model=, or
# none (the script then has no thread_model method).
case "$1" in
    config) printf %s "$3" > "$tmpdir/$2" ;;
    thread_model) [ -f "$tmpdir/model" ] || exit 2; cat "$tmpdir/model" ;;
    get_size) echo 1M ;;
    pread)
        touch "$tmpdir/running.$$"
        ls "$tmpdir"/running.* | wc -l >> "$(cat "$tmpdir/log")"
        sleep 0.2
        rm -f "$tmpdir/running.$$"
        head -c "$3" /dev/zero ;;
    *) exit 2 ;;
esac
