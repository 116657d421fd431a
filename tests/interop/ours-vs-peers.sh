#!/bin/bash
# OUR libnbd (the staged libnbd.so.0, loaded through LD_LIBRARY_PATH; the
# C program proves it through EXPECT_LIBNBD) reading and writing exports of
# other servers: qemu-nbd, and Debian's nbd-server over a Unix socket and
# over TCP (nbd_connect_tcp).  After each run the bytes in the image behind
# the server are checked against the pattern the program wrote, so the
# writes are proven to have reached the peer.
#
# The program is tests-c/rw-pattern (from $TESTC_BIN, or built here from
# tests-c/ against the stage with pkg-config).  It exercises flush and FUA
# only where the peer advertises them (nbd-server advertises neither by
# default) and then checks that the library refuses them with EINVAL.
set -uo pipefail
source "$(dirname "$0")/../../scripts/testlib.sh"
make_tmpdir
unset LD_LIBRARY_PATH EXPECT_LIBNBD

so=$(our_so)
[[ -n $so ]] || { fail "ours-vs-peers: our staged libnbd.so.0.0.0" "missing under $OUR_LIBDIR (run make stage)"; script_exit; }
bin=$TESTC_BIN/rw-pattern
if [[ ! -x $bin ]]; then
  bin=$TMP/rw-pattern
  if ! build_c_ours "$REPO/tests-c/rw-pattern.c" "$bin" >"$TMP/cc.log" 2>&1; then
    fail "ours-vs-peers: build tests-c/rw-pattern.c on our libnbd" "$(tail -n 5 "$TMP/cc.log")"
    script_exit
  fi
fi

# verify_image IMG LABEL: the bytes rw-pattern wrote, read from the file.
verify_image() {
  local r
  if r=$(/usr/bin/python3 - "$1" <<'PY'
import os, sys
MiB = 1 << 20
img = sys.argv[1]
size = os.path.getsize(img)
def expect(off, n):
    return bytes(((o * 7 + (o >> 12) + 1) & 0xff) for o in range(off, off + n))
ranges = [(0, 6 * MiB), (size // 2 - 4097, 8193), (size - 65536, 65536)]
with open(img, "rb") as f:
    for off, n in ranges:
        f.seek(off)
        got = f.read(n)
        if got != expect(off, n):
            i = next(i for i in range(n) if got[i:i+1] != expect(off + i, 1))
            print(f"mismatch at offset {off + i}"); sys.exit(1)
PY
  ); then
    pass "$2: image file holds the written pattern"
  else
    fail "$2: image file" "${r:-python check failed}"
  fi
}

# run_client LABEL TARGET [EXPORTNAME]
run_client() {
  local label=$1 target=$2 exportname=${3:-} out rc
  out=$(to env LD_LIBRARY_PATH="$OUR_LIBDIR" EXPECT_LIBNBD="$so" \
        ${exportname:+TEST_EXPORT_NAME=$exportname} "$bin" "$target" 2>&1)
  rc=$?
  if [[ $rc -eq 0 && $out == *"TEST-OK rw-pattern"* ]]; then
    pass "$label: rw-pattern on our libnbd ($(grep -o 'can_flush [01], can_fua [01]' <<<"$out"))"
    return 0
  fi
  fail "$label: rw-pattern on our libnbd" "exit $rc"
  echo "$out" | tail -n 15 | indent
  return 1
}

stop_bg() {
  local p
  for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  BG_PIDS=()
}

# --- qemu-nbd over a Unix socket
if command -v qemu-nbd >/dev/null; then
  img=$TMP/qemu.img; sock=$TMP/qemu.sock
  truncate -s 64M "$img"
  timeout -k 5 300 qemu-nbd -k "$sock" -f raw -t "$img" >"$TMP/qemu-nbd.log" 2>&1 &
  BG_PIDS+=($!)
  if wait_for_socket "$sock"; then
    run_client "qemu-nbd (Unix socket)" "$sock" && verify_image "$img" "qemu-nbd"
  else
    fail "qemu-nbd: server did not start" "$(tail -n 3 "$TMP/qemu-nbd.log")"
  fi
  stop_bg
else
  fail "qemu-nbd" "not installed (qemu-utils)"
fi

# --- nbd-server over a Unix socket, then over TCP.  nbd-server has no
# default export: the export is named "disk".  -d: stay in the foreground.
if command -v nbd-server >/dev/null; then
  for transport in unix tcp; do
    img=$TMP/nbd-server-$transport.img
    truncate -s 64M "$img"
    conf=$TMP/nbd-server-$transport.conf
    if [[ $transport == unix ]]; then
      sock=$TMP/nbd-server.sock; target=$sock
      printf '[generic]\n    unixsock = %s\n    allowlist = true\n' "$sock" >"$conf"
    else
      port=$(free_port); target=tcp:127.0.0.1:$port
      printf '[generic]\n    listenaddr = 127.0.0.1\n    port = %s\n    allowlist = true\n' "$port" >"$conf"
    fi
    printf '[disk]\n    exportname = %s\n' "$img" >>"$conf"
    timeout -k 5 300 nbd-server -C "$conf" -d >"$TMP/nbd-server-$transport.log" 2>&1 &
    BG_PIDS+=($!)
    if [[ $transport == unix ]]; then wait_for_socket "$sock"; else wait_for_port "$port"; fi
    started=$?
    if [[ $started -eq 0 ]]; then
      run_client "nbd-server ($transport)" "$target" disk &&
        verify_image "$img" "nbd-server ($transport)"
    else
      fail "nbd-server ($transport): server did not start" "$(tail -n 3 "$TMP/nbd-server-$transport.log")"
    fi
    stop_bg
  done
else
  fail "nbd-server" "not installed (nbd-server)"
fi

script_exit
