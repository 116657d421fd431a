#!/bin/bash
# libnbd 1.24.4's nbdinfo (Debian unstable's libnbd-bin, unpacked under
# /opt/libnbd-1.24 by scripts/fetch-libnbd-1.24.sh; it needs only glibc
# 2.34) runs on OUR libnbd.so.0 against our nbdkit.
#
# First the symbols: every nbd_* call the program binds, at its version
# node, must be exported by our library. While some are missing (the
# LIBNBD_1.18 calls of extended headers), the full run cannot pass: it is
# reported as a SKIP that names them, never as a pass. What can run
# without them still runs, with lazy binding, and must work:
# `nbdinfo --size`, which calls none of them.
#
# With every symbol present, nbdinfo runs with LD_BIND_NOW=1 (all symbols
# resolved at load time) and LD_DEBUG=libs, whose "calling init:" line is
# the loader's own word that it initialised our libnbd.so.0; its whole
# output is printed.
set -uo pipefail
source "$(dirname "$0")/../../scripts/testlib.sh"
make_tmpdir
unset LD_LIBRARY_PATH EXPECT_LIBNBD

REF=${LIBNBD_1_24_DIR:-/opt/libnbd-1.24}
NBDINFO=$REF/usr/bin/nbdinfo
require_file "$OUR_NBDKIT" "nbdinfo-1.24: our nbdkit" || script_exit
require_file "$OUR_LIBDIR/libnbd.so.0" "nbdinfo-1.24: our libnbd.so.0" || script_exit
if [[ ! -x $NBDINFO ]]; then
  skip "nbdinfo 1.24 on our libnbd" "$NBDINFO missing: run scripts/fetch-libnbd-1.24.sh"
  script_exit
fi
our_lib=$(realpath "$OUR_LIBDIR/libnbd.so.0")
if ! grep -qa RUST_BACKTRACE "$our_lib"; then
  fail "nbdinfo-1.24" "$our_lib is not our (Rust) libnbd"
  script_exit
fi

# NODE SYMBOL lines: what nbdinfo needs, and what our library exports.
objdump -T "$NBDINFO" | awk '/\*UND\*/ && $NF ~ /^nbd_/ {
    v = $(NF-1); gsub(/[()]/, "", v); print v, $NF }' | sort -u >"$TMP/needed"
objdump -T "$our_lib" | awk '!/\*UND\*/ && $NF ~ /^nbd_/ {
    v = $(NF-1); gsub(/[()]/, "", v); print v, $NF }' | sort -u >"$TMP/exported"
comm -23 "$TMP/needed" "$TMP/exported" >"$TMP/missing"
echo "nbdinfo 1.24 binds $(wc -l <"$TMP/needed") libnbd calls; our libnbd lacks $(wc -l <"$TMP/missing")"

# Our nbdkit on a socket of its own.
sock=$TMP/ours.sock
"$OUR_NBDKIT" -f -U "$sock" memory 1M >"$TMP/nbdkit.log" 2>&1 &
BG_PIDS+=($!)
for _ in $(seq 100); do [[ -S $sock ]] && break; sleep 0.1; done
[[ -S $sock ]] || { fail "nbdinfo-1.24: start our nbdkit" "no socket after 10 s"; script_exit; }
uri="nbd+unix:///?socket=$sock"

# run NAME BIND_NOW ARGS...: nbdinfo 1.24 on our library; checks that the
# loader initialised ours. Output in $TMP/NAME.out, status in $rc.
rc=
run() {
  local name=$1 now=$2; shift 2
  local envp=(env "LD_LIBRARY_PATH=$OUR_LIBDIR" LD_DEBUG=libs "LD_DEBUG_OUTPUT=$TMP/$name.ld")
  [[ $now == now ]] && envp+=(LD_BIND_NOW=1)
  to "${envp[@]}" "$NBDINFO" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err"
  rc=$?
  local inits
  inits=$(cat "$TMP/$name.ld".* 2>/dev/null | grep -o 'calling init: .*libnbd\.so\.0$' | sort -u)
  if [[ $inits != "calling init: $(realpath -s "$OUR_LIBDIR/libnbd.so.0")" &&
        $inits != "calling init: $our_lib" ]]; then
    fail "nbdinfo 1.24 $name on our libnbd" "the loader initialised '${inits:-no libnbd}', not ours"
    return 1
  fi
}

# What runs without the missing calls.
if run size lazy --size "$uri"; then
  if [[ $rc -eq 0 && $(cat "$TMP/size.out") == 1048576 ]]; then
    pass "nbdinfo 1.24 --size on our libnbd (lazy binding; loader initialised $our_lib): 1048576"
  else
    fail "nbdinfo 1.24 --size on our libnbd" "exit $rc, output '$(cat "$TMP/size.out")'"
    show_tail "$TMP/size.err" 10
  fi
fi

# The whole program.
if [[ -s $TMP/missing ]]; then
  skip "nbdinfo 1.24 (all symbols bound) on our libnbd" \
    "expected to fail until our libnbd exports: $(awk '{ printf "%s%s@%s", sep, $2, $1; sep = ", " }' "$TMP/missing")"
elif run full now "$uri"; then
  echo "--- nbdinfo 1.24 on our libnbd, against our nbdkit:"
  indent "$TMP/full.out"
  if [[ $rc -eq 0 ]] && grep -q '^protocol: .*using extended packets' "$TMP/full.out" &&
     grep -q 'export-size: 1048576' "$TMP/full.out"; then
    pass "nbdinfo 1.24 (LD_BIND_NOW=1; loader initialised $our_lib) against our nbdkit: extended headers"
  else
    fail "nbdinfo 1.24 against our nbdkit (extended packets expected)" "exit $rc"
    show_tail "$TMP/full.err" 15
  fi

  # Our nbdkit with extended headers turned off: structured replies.
  sock2=$TMP/noeh.sock
  NBD_NO_EXTENDED_HEADERS=1 "$OUR_NBDKIT" -f -U "$sock2" memory 1M >"$TMP/noeh.log" 2>&1 &
  BG_PIDS+=($!)
  for _ in $(seq 100); do [[ -S $sock2 ]] && break; sleep 0.1; done
  if run noeh now "nbd+unix:///?socket=$sock2"; then
    if [[ $rc -eq 0 ]] && grep -q '^protocol: .*using structured packets' "$TMP/noeh.out"; then
      pass "nbdinfo 1.24 on our libnbd, our nbdkit without extended headers: $(grep '^protocol' "$TMP/noeh.out")"
    else
      fail "nbdinfo 1.24, our nbdkit without extended headers" "exit $rc: $(grep '^protocol' "$TMP/noeh.out")"
    fi
  fi

  # qemu-nbd 10 speaks extended headers too.
  if command -v qemu-nbd >/dev/null; then
    img=$TMP/q.img sock3=$TMP/q.sock
    truncate -s 1M "$img"
    qemu-nbd -f raw -k "$sock3" "$img" >"$TMP/qemu.log" 2>&1 &
    BG_PIDS+=($!)
    for _ in $(seq 100); do [[ -S $sock3 ]] && break; sleep 0.1; done
    if run qemu now "nbd+unix:///?socket=$sock3"; then
      if [[ $rc -eq 0 ]] && grep -q '^protocol: .*using extended packets' "$TMP/qemu.out"; then
        pass "nbdinfo 1.24 on our libnbd against qemu-nbd: $(grep '^protocol' "$TMP/qemu.out")"
      else
        fail "nbdinfo 1.24 on our libnbd against qemu-nbd" "exit $rc: $(grep '^protocol' "$TMP/qemu.out")"
        show_tail "$TMP/qemu.err" 10
      fi
    fi
  else
    skip "nbdinfo 1.24 against qemu-nbd" "qemu-nbd not installed"
  fi
fi
script_exit
