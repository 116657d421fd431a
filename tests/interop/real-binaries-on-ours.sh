#!/bin/bash
# Debian's programs linked against the real libnbd.so.0 (nbdinfo, nbdcopy,
# nbddump, Python's nbd module) run unchanged on OUR libnbd.so.0 and give
# the same results as on the real one, against three servers: our nbdkit,
# Debian's nbdkit and qemu-nbd (with a qemu:dirty-bitmap context from a
# qcow2 bitmap).
#
# Each run on our library sets LD_BIND_NOW=1 (every symbol the program
# binds must resolve at load time, at its version node) and LD_DEBUG=libs,
# whose "calling init:" line is the dynamic loader's own word for which
# libnbd.so.0 it loaded: ours must be, and for the reference runs it must
# not be.
set -uo pipefail
source "$(dirname "$0")/../../scripts/testlib.sh"
make_tmpdir
unset LD_LIBRARY_PATH EXPECT_LIBNBD

require_file "$OUR_NBDKIT" "real-binaries: our nbdkit" || script_exit
require_file "$OUR_LIBDIR/libnbd.so.0" "real-binaries: our staged libnbd.so.0" || script_exit
for b in nbdinfo nbdcopy nbddump qemu-nbd qemu-img qemu-io; do
  command -v $b >/dev/null || { fail "real-binaries" "$b not installed (libnbd-bin, qemu-utils)"; script_exit; }
done

# The images: 64 MiB of random data with holes (raw), and a qcow2 whose
# bitmap "b0" records writes at 1 MiB and 40 MiB.
raw=$TMP/data.img
truncate -s 64M "$raw"
for spec in 0:2 9:1 30:4 63:1; do
  dd if=/dev/urandom of="$raw" bs=1M seek="${spec%%:*}" count="${spec##*:}" conv=notrunc status=none
done
qcow=$TMP/data.qcow2
qemu-img create -q -f qcow2 "$qcow" 64M
qemu-img bitmap --add "$qcow" b0
qemu-io -f qcow2 -c 'write -P 0x55 1M 64k' -c 'write -P 0xaa 40M 128k' "$qcow" >/dev/null

# Servers on sockets of their own, serving many clients until the end.
start_bg() { # NAME SOCKET CMD...
  local name=$1 sock=$2; shift 2
  "$@" >"$TMP/$name.srv.log" 2>&1 &
  BG_PIDS+=($!)
  for _ in $(seq 100); do [[ -S $sock ]] && return 0; sleep 0.1; done
  fail "start $name" "no socket after 10 s"; show_tail "$TMP/$name.srv.log"; return 1
}
declare -A URI
start_bg ours "$TMP/ours.sock" "$OUR_NBDKIT" -f -U "$TMP/ours.sock" file "$raw" &&
  URI[ours]="nbd+unix:///?socket=$TMP/ours.sock"
start_bg debian "$TMP/debian.sock" "$DEBIAN_NBDKIT" -f -U "$TMP/debian.sock" file "$raw" &&
  URI[debian]="nbd+unix:///?socket=$TMP/debian.sock"
start_bg qemu "$TMP/qemu.sock" qemu-nbd -r -t -f qcow2 -k "$TMP/qemu.sock" -B b0 "$qcow" &&
  URI[qemu]="nbd+unix:///?socket=$TMP/qemu.sock"
# Writable scratch exports for the copies into a server.
start_bg ours-mem "$TMP/ours-mem.sock" "$OUR_NBDKIT" -f -U "$TMP/ours-mem.sock" memory 64M &&
  URI[ours-mem]="nbd+unix:///?socket=$TMP/ours-mem.sock"
start_bg debian-mem "$TMP/debian-mem.sock" "$DEBIAN_NBDKIT" -f -U "$TMP/debian-mem.sock" memory 64M &&
  URI[debian-mem]="nbd+unix:///?socket=$TMP/debian-mem.sock"

our_lib=$OUR_LIBDIR/libnbd.so.0
# Where the loader found libnbd says nothing about what it is: make sure
# the staged file is our Rust build (Rust's standard library carries the
# string RUST_BACKTRACE; the C libnbd cannot).
if ! grep -qa RUST_BACKTRACE "$(realpath "$our_lib")"; then
  fail "real-binaries" "$our_lib is not our (Rust) libnbd"
  script_exit
fi

# on LIB NAME CMD...: runs CMD with libnbd LIB (ours|real); stdout to
# $TMP/NAME.LIB, exit status to $TMP/NAME.LIB.rc; checks which libnbd the
# loader initialised. Returns non-zero if that check failed.
on() {
  local lib=$1 name=$2; shift 2
  local envp=(env LD_BIND_NOW=1 LD_DEBUG=libs "LD_DEBUG_OUTPUT=$TMP/$name.$lib.ld")
  [[ $lib == ours ]] && envp+=("LD_LIBRARY_PATH=$OUR_LIBDIR")
  to "${envp[@]}" "$@" >"$TMP/$name.$lib" 2>"$TMP/$name.$lib.err"
  echo $? >"$TMP/$name.$lib.rc"
  local inits
  inits=$(cat "$TMP/$name.$lib.ld".* 2>/dev/null | grep -o 'calling init: .*libnbd\.so\.0$' | sort -u)
  rm -f "$TMP/$name.$lib.ld".*
  if [[ $lib == ours && $inits != "calling init: $our_lib" ]]; then
    fail "$name on our libnbd" "the loader initialised '${inits:-no libnbd}', not $our_lib"
    return 1
  fi
  if [[ $lib == real && $inits == *"$OUR_LIBDIR"* ]]; then
    fail "$name on Debian's libnbd" "our library was loaded for the reference run"
    return 1
  fi
}

# same NAME WHAT RC CMD...: runs CMD on both libraries; passes when both
# exit with RC (what the program must answer here, so that two equal
# failures cannot pass) and print the same.
same() {
  local name=$1 what=$2 want=$3; shift 3
  on ours "$name" "$@" || return
  on real "$name" "$@" || return
  local rc_ours rc_real
  rc_ours=$(cat "$TMP/$name.ours.rc"); rc_real=$(cat "$TMP/$name.real.rc")
  if [[ $rc_ours != "$want" || $rc_real != "$want" ]]; then
    fail "$what" "exit $rc_ours on ours, $rc_real on Debian's libnbd; expected $want"
    show_tail "$TMP/$name.ours.err" 10
    show_tail "$TMP/$name.real.err" 10
  elif ! cmp -s "$TMP/$name.ours" "$TMP/$name.real"; then
    fail "$what" "output differs (- Debian's libnbd, + ours)"
    diff -u "$TMP/$name.real" "$TMP/$name.ours" | indent | head -n 30
  else
    pass "$what: same on our libnbd as on Debian's (exit $rc_ours)"
  fi
}

for srv in ours debian qemu; do
  u=${URI[$srv]:-}
  [[ -n $u ]] || { skip "$srv server" "it did not start (see above)"; continue; }
  same "info-$srv" "nbdinfo [$srv]" 0 nbdinfo "$u"
  same "json-$srv" "nbdinfo --json [$srv]" 0 nbdinfo --json "$u"
  same "list-$srv" "nbdinfo --list [$srv]" 0 nbdinfo --list "$u"
  same "map-$srv" "nbdinfo --map [$srv]" 0 nbdinfo --map "$u"
  same "size-$srv" "nbdinfo --size [$srv]" 0 nbdinfo --size "$u"
  # nbdinfo --can/--is answer by exit status: 0 true, 2 false. Every
  # server here flushes; only qemu-nbd (-r) is read-only.
  same "can-$srv" "nbdinfo --can flush [$srv]" 0 nbdinfo --can flush "$u"
  ro=2; [[ $srv == qemu ]] && ro=0
  same "is-$srv" "nbdinfo --is read-only [$srv]" $ro nbdinfo --is read-only "$u"
  same "dump-$srv" "nbddump [$srv]" 0 nbddump --length=1M "$u"
  same "py-$srv" "python3 nbd module [$srv]" 0 /usr/bin/python3 -c '
import nbd, sys, hashlib
h = nbd.NBD()
h.add_meta_context("base:allocation")
h.connect_uri(sys.argv[1])
print("size", h.get_size(), "flush", h.can_flush(), "ro", h.is_read_only())
print("md5", hashlib.md5(h.pread(4 << 20, 0)).hexdigest())
ext = []
h.block_status(8 << 20, 0, lambda ctx, off, e, err: ext.append((ctx, off, list(e))) or 0)
print("extents", ext)
h.shutdown()' "$u"
  # nbdcopy out of the server, with several connections and requests in
  # flight; the file must equal what the server serves (the raw image, or
  # qemu-img's own conversion of the qcow2).
  out_ours=$TMP/copy-$srv.ours.img
  if on ours "copy-$srv" nbdcopy --connections=4 --requests=16 "$u" "$out_ours" &&
     [[ $(cat "$TMP/copy-$srv.ours.rc") == 0 ]]; then
    want=$raw
    if [[ $srv == qemu ]]; then
      want=$TMP/qcow-as-raw.img
      [[ -f $want ]] || qemu-img convert -O raw "$qcow" "$want"
    fi
    if cmp -s "$out_ours" "$want"; then pass "nbdcopy NBD -> file [$srv] on our libnbd: byte-identical"
    else fail "nbdcopy NBD -> file [$srv] on our libnbd" "copy differs from the source"; fi
  elif [[ -f $TMP/copy-$srv.ours.rc ]]; then
    fail "nbdcopy NBD -> file [$srv] on our libnbd" "exit $(cat "$TMP/copy-$srv.ours.rc")"
    show_tail "$TMP/copy-$srv.ours.err" 10
  fi
  rm -f "$out_ours"
done

# qemu:dirty-bitmap:b0 from qemu-nbd, through nbdinfo's --map=CONTEXT.
if [[ -n ${URI[qemu]:-} ]]; then
  same "bitmap" "nbdinfo --map=qemu:dirty-bitmap:b0 [qemu]" 0 \
    nbdinfo --map=qemu:dirty-bitmap:b0 "${URI[qemu]}"
  if grep -q "dirty" "$TMP/bitmap.ours" 2>/dev/null; then
    pass "qemu:dirty-bitmap:b0 on our libnbd reports the dirty ranges"
  else
    fail "qemu:dirty-bitmap:b0 on our libnbd" "no dirty extent: $(head -c 200 "$TMP/bitmap.ours" 2>/dev/null)"
  fi
fi

# nbdcopy into a server and NBD -> NBD, on our library: file -> our and
# Debian's memory export, then one export to the other, then back to a
# file, which must equal the source.
for dst in ours-mem debian-mem; do
  u=${URI[$dst]:-}
  [[ -n $u ]] || continue
  other=debian-mem; [[ $dst == debian-mem ]] && other=ours-mem
  back=$TMP/back-$dst.img
  if on ours "in-$dst" nbdcopy --requests=32 "$raw" "$u" &&
     on ours "nbd2nbd-$dst" nbdcopy --connections=2 "$u" "${URI[$other]}" &&
     on ours "back-$dst" nbdcopy "${URI[$other]}" "$back" &&
     [[ $(cat "$TMP/in-$dst.ours.rc" "$TMP/nbd2nbd-$dst.ours.rc" "$TMP/back-$dst.ours.rc" | sort -u) == 0 ]]; then
    if cmp -s "$raw" "$back"; then
      pass "nbdcopy file -> NBD [$dst] -> NBD [$other] -> file on our libnbd: byte-identical"
    else
      fail "nbdcopy file -> $dst -> $other -> file on our libnbd" "result differs from the source"
    fi
  else
    fail "nbdcopy file -> $dst -> $other -> file on our libnbd" "a copy failed"
    for n in in nbd2nbd back; do show_tail "$TMP/$n-$dst.ours.err" 5; done
  fi
  rm -f "$back"
done

[[ -n ${KEEP_OUTPUT:-} ]] && cat "$TMP/bitmap.ours"
script_exit
