#!/bin/bash
# nbd_connect_vsock and nbd+vsock:// URIs on our libnbd against Debian's
# nbdkit --vsock, over the kernel's vsock loopback (CID 1). Skipped, with
# the reason, when the kernel offers no vsock loopback transport (the
# vsock_loopback module): Debian's own nbdinfo is the probe.
set -uo pipefail
source "$(dirname "$0")/../../scripts/testlib.sh"
make_tmpdir
unset LD_LIBRARY_PATH EXPECT_LIBNBD

name="vsock: our libnbd, nbd_connect_vsock and nbd+vsock:// to Debian's nbdkit --vsock"
require_file "$OUR_LIBDIR/libnbd.so.0.0.0" "$name" || script_exit
[[ -x $DEBIAN_NBDKIT ]] || { skip "$name" "$DEBIAN_NBDKIT not installed"; script_exit; }
command -v nbdinfo >/dev/null || { skip "$name" "nbdinfo not installed (libnbd-bin)"; script_exit; }

port=$(( 20000 + RANDOM % 20000 ))
"$DEBIAN_NBDKIT" -f --vsock -p "$port" memory 1M >"$TMP/nbdkit.log" 2>&1 &
BG_PIDS+=($!)
# Give nbdkit a moment to listen; a connect that times out means there
# is no loopback transport, so do not retry that.
sleep 1
probe=
for _ in 1 2 3; do
  if probe=$(timeout 10 nbdinfo --size "nbd+vsock://1:$port" 2>&1); then break; fi
  [[ $probe == *"timed out"* ]] && break
  sleep 1
done
if [[ $probe != 1048576 ]]; then
  skip "$name" "no vsock loopback in this kernel (Debian's nbdinfo on nbd+vsock://1:$port: ${probe//$'\n'/ }; needs the vsock_loopback module)"
  script_exit
fi

cat >"$TMP/vsock.c" <<'C'
#define _GNU_SOURCE
#include "testlib.h"
int
main (int argc, char *argv[])
{
  struct nbd_handle *h;
  char uri[64], *s;
  unsigned port = (unsigned) atoi (argv[1]);
  test_begin ("vsock", argc, argv, 1);
  h = nbd_create ();
  if (h == NULL) test_fail_nbd ("nbd_create");
  CHECK_OK (nbd_connect_vsock (h, 1, port));
  CHECK (nbd_get_size (h) == 1024 * 1024);
  snprintf (uri, sizeof uri, "nbd+vsock://1:%u/", port);
  s = nbd_get_uri (h);
  if (s == NULL || strcmp (s, uri) != 0) test_fail ("get_uri: %s", s ? s : "NULL");
  free (s);
  nbd_close (h);
  h = nbd_create ();
  if (h == NULL) test_fail_nbd ("nbd_create");
  CHECK_OK (nbd_connect_uri (h, uri));
  CHECK (nbd_get_size (h) == 1024 * 1024);
  nbd_close (h);
  return test_ok ();
}
C
if ! build_c_ours "$TMP/vsock.c" "$TMP/vsock" >"$TMP/cc.log" 2>&1; then
  fail "$name" "compile failed"; show_tail "$TMP/cc.log" 20; script_exit
fi
if out=$(to $(ours_env) "$TMP/vsock" "$port" 2>&1) && [[ $out == *"TEST-OK vsock"* ]] &&
   [[ $out == *"libnbd loaded from $(our_so)"* ]]; then
  pass "$name"
else
  fail "$name" "$(echo "$out" | tail -n 3 | tr '\n' ' ')"
fi
script_exit
