#!/bin/bash
# Load and soak: tests/soak/soak.py (8 connections x 64 requests in flight,
# random reads, writes and zeroes verified against a model of the disk)
# for each pairing of client library and server:
#   ours-ours     our libnbd.so.0 (Python's nbd module on it) -> our nbdkit
#   ours-debian   our libnbd -> Debian's nbdkit
#   debian-ours   Debian's libnbd -> our nbdkit
# each for SOAK_SECONDS, half of it in plain text and half with TLS (PSK,
# keys made here with psktool). Every run starts a fresh memory disk, and
# the server's RSS is sampled from /proc/PID/status.
#
# Before the pairings, two self-checks: with SOAK_CORRUPT_MODEL=1 the
# client corrupts its own model and must then fail, proving reads are
# verified; against a server that stops answering (nbdkit's delay filter)
# the client's watchdog must end the run with a failure.
#
# Environment (defaults from scripts/testlib.sh where not said):
#   SOAK_SECONDS      seconds per pairing (600), split between plain and TLS
#   SOAK_PAIRINGS     which pairings (all three)
#   SOAK_TLS          which modes, "plain psk" (both); the pairing's time is
#                     split evenly between them
#   SOAK_DISK_MB      export size in MiB (64)
#   SOAK_SELF_CHECK   0 to skip the self-check (1)
#   SOAK_PROGRESS     1 to show the clients' progress lines as they come
#                     (make soak sets it); otherwise only their results
#   OUR_NBDKIT        our nbdkit
#   OUR_LIBDIR        directory holding our libnbd.so.0 (build/lib for
#                     `make soak`, the stage for `make check`)
#   DEBIAN_NBDKIT     Debian's nbdkit
# Prints PASS/FAIL/SKIP lines (scripts/testlib.sh) and the SOAK-RESULT
# lines of soak.py; exits non-zero if anything failed.
set -uo pipefail
source "$(dirname "$0")/../../scripts/testlib.sh"
make_tmpdir
unset LD_LIBRARY_PATH EXPECT_LIBNBD

SOAK_SECONDS=${SOAK_SECONDS:-600}
SOAK_PAIRINGS=${SOAK_PAIRINGS:-ours-ours ours-debian debian-ours}
SOAK_DISK_MB=${SOAK_DISK_MB:-64}
SOAK_TLS=${SOAK_TLS:-plain psk}
SOAK_SELF_CHECK=${SOAK_SELF_CHECK:-1}
SOAK_PROGRESS=${SOAK_PROGRESS:-0}
SOAK_PY=$REPO/tests/soak/soak.py
PY=/usr/bin/python3

our_lib=$(realpath "$OUR_LIBDIR/libnbd.so.0" 2>/dev/null)
real_lib=$(realpath "$REAL_LIBDIR/libnbd.so.0" 2>/dev/null)
missing=()
[[ -x $OUR_NBDKIT ]] || missing+=("our nbdkit $OUR_NBDKIT (make)")
[[ -n $our_lib ]] || missing+=("our libnbd.so.0 in $OUR_LIBDIR (make)")
[[ -x $DEBIAN_NBDKIT ]] || missing+=("Debian's nbdkit $DEBIAN_NBDKIT")
$PY -c 'import nbd' 2>/dev/null || missing+=("python3-libnbd")
command -v psktool >/dev/null || missing+=("psktool (gnutls-bin)")
if [[ ${#missing[@]} -gt 0 ]]; then
  fail "soak" "missing: ${missing[*]}"
  script_exit
fi
# Our library must really be ours: Rust's runtime is in it.
if ! grep -qa RUST_BACKTRACE "$our_lib"; then
  fail "soak" "$our_lib is not our Rust build"
  script_exit
fi

psktool -u alice -p "$TMP/keys.psk" >/dev/null 2>&1 ||
  { fail "soak: psktool -u alice -p keys.psk"; script_exit; }

# soak_run LABEL LIB SERVER TLS SECONDS [ENV...]: one fresh server, one
# soak.py run against it. LIB and SERVER are ours|debian, TLS is plain|psk.
# Leaves the client's output in $TMP/LABEL.log and returns its status.
# Self-checks set server_filters (--filter= options), server_params (their
# parameters, after the plugin's) and client_extra (soak.py options).
server_filters=() server_params=() client_extra=()
soak_run() {
  local label=$1 lib=$2 server=$3 tls=$4 secs=$5
  shift 5
  local nbdkit sock=$TMP/$label.sock log=$TMP/$label.log pid rc libdir expect
  local tls_server=() tls_client=()
  case $server in ours) nbdkit=$OUR_NBDKIT ;; debian) nbdkit=$DEBIAN_NBDKIT ;; esac
  case $lib in
    ours) libdir=$OUR_LIBDIR expect=$our_lib ;;
    debian) libdir=$REAL_LIBDIR expect=$real_lib ;;
  esac
  if [[ $tls == psk ]]; then
    tls_server=(--tls=require --tls-psk="$TMP/keys.psk")
    tls_client=(--tls-psk "$TMP/keys.psk" --tls-user alice)
  fi
  "$nbdkit" -f -U "$sock" "${tls_server[@]}" "${server_filters[@]}" memory "${SOAK_DISK_MB}M" "${server_params[@]}" \
    >"$TMP/$label.server.log" 2>&1 &
  pid=$!
  BG_PIDS+=("$pid")
  if ! wait_for_socket "$sock" 20; then
    echo "$label: the server did not start:" >"$log"
    cat "$TMP/$label.server.log" >>"$log"
    kill "$pid" 2>/dev/null
    return 1
  fi
  # The outer timeout is a second watchdog behind soak.py's own.
  timeout -k 10 $((secs + 180)) env "$@" LD_LIBRARY_PATH="$libdir" \
    $PY "$SOAK_PY" --socket "$sock" --seconds "$secs" --label "$label" \
    --server-pid "$pid" --expect-libnbd "$expect" "${tls_client[@]}" "${client_extra[@]}" 2>&1 |
    if [[ $SOAK_PROGRESS == 1 && $label != selfcheck* ]]; then tee "$log"; else cat >"$log"; fi
  rc=${PIPESTATUS[0]}
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "$label: the server died during the run:" >>"$log"
    cat "$TMP/$label.server.log" >>"$log"
    rc=1
  fi
  kill "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  return $rc
}

if [[ $SOAK_SELF_CHECK != 0 ]]; then
  soak_run selfcheck ours ours plain 5 SOAK_CORRUPT_MODEL=1
  rc=$?
  if [[ $rc -ne 0 ]] && grep -q 'corrupted the model' "$TMP/selfcheck.log" &&
     grep -q 'ERROR MISMATCH' "$TMP/selfcheck.log"; then
    pass "soak self-check: SOAK_CORRUPT_MODEL=1 makes the run fail with a mismatch"
  else
    fail "soak self-check: SOAK_CORRUPT_MODEL=1 must fail with a mismatch" "exit $rc"
    indent "$TMP/selfcheck.log" | tail -n 20
  fi
  # Every request takes 10 s (flushes excepted), so after the first few
  # flushes nothing completes for longer than the 3 s allowed.
  server_filters=(--filter=delay) server_params=(delay-read=10 delay-write=10 delay-zero=10)
  client_extra=(--stall-seconds 3)
  soak_run selfcheck-stall ours ours plain 2
  rc=$?
  server_filters=() server_params=() client_extra=()
  if [[ $rc -ne 0 && $rc -ne 124 && $rc -ne 137 ]] &&
     grep -q 'ERROR watchdog: .* none completed for 3 s' "$TMP/selfcheck-stall.log"; then
    pass "soak self-check: a server that stops answering fails the run (watchdog)"
  else
    fail "soak self-check: the watchdog must fail a stalled run" "exit $rc"
    indent "$TMP/selfcheck-stall.log" | tail -n 20
  fi
fi

read -ra tls_modes <<<"$SOAK_TLS"
secs_each=$(( (SOAK_SECONDS + ${#tls_modes[@]} - 1) / ${#tls_modes[@]} ))
for pairing in $SOAK_PAIRINGS; do
  lib=${pairing%-*} server=${pairing#*-}
  case $lib-$server in ours-ours | ours-debian | debian-ours | debian-debian) ;;
    *) fail "soak $pairing" "unknown pairing (ours-ours, ours-debian, debian-ours, debian-debian)"; continue ;;
  esac
  for tls in "${tls_modes[@]}"; do
    case $tls in plain | psk) ;;
      *) fail "soak $pairing $tls" "unknown TLS mode (plain, psk)"; continue ;;
    esac
    label=$pairing-$tls
    what="soak [libnbd: $lib, nbdkit: $server, TLS: $tls] ${secs_each}s, 8 connections x 64 in flight"
    soak_run "$label" "$lib" "$server" "$tls" "$secs_each"
    rc=$?
    [[ $SOAK_PROGRESS == 1 ]] ||
      grep -E '^SOAK-RESULT |server RSS over time| loaded from ' "$TMP/$label.log"
    if [[ $rc -eq 0 ]] && grep -qx "SOAK-OK $label" "$TMP/$label.log" &&
       grep -q ' errors=0 ' "$TMP/$label.log"; then
      pass "$what"
    else
      case $rc in 124 | 137) why="timed out (hung?)" ;; *) why="exit $rc" ;; esac
      fail "$what" "$why"
      indent "$TMP/$label.log" | tail -n 25
    fi
  done
done
script_exit
