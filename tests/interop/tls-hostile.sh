#!/bin/bash
# STARTTLS against hostile peers (issue 5's security rules), with keys made
# fresh by scripts/gen-tls-keys.sh. Every client run goes through
# tests/hostile/record_proxy.py, which records each byte both ways.
#
# 1. Our libnbd against tests/hostile/tls_hostile_server.py, which
#    misbehaves around NBD_OPT_STARTTLS (plain text injected after the ACK,
#    refusals, a plain-text reply in place of the STARTTLS reply, plain
#    text after the handshake, servers that cannot do STARTTLS), with
#    LIBNBD_TLS_REQUIRE and _ALLOW. The client is
#    tests/hostile/tls-hostile-client.c, built on our libnbd (which it
#    proves it loaded) and on Debian's as the reference: both must end the
#    same way. The recording must show what the client was allowed to send
#    and nothing more (check_recording.py): with TLS required, nothing but
#    its flags and STARTTLS before TLS, and nothing at all but perhaps
#    NBD_OPT_ABORT after a refusal.
# 2. Both libraries against real servers, our nbdkit and Debian's:
#    --tls=require (PSK, X.509), where the recording must hold only TLS
#    records after STARTTLS, both ways, and neither the export name nor the
#    data written may appear in it; and servers without TLS, which refuse
#    STARTTLS. Plain-text controls prove the recording checks can fail.
#    Our library also runs a few hostile modes under valgrind.
# 3. tests/hostile/tls_server_probe.py, a hostile client, against our
#    nbdkit and Debian's: options in plain text, STARTTLS with options
#    injected behind it, STARTTLS twice, and state from before STARTTLS.
set -uo pipefail
source "$(dirname "$0")/../../scripts/testlib.sh"
make_tmpdir
unset LD_LIBRARY_PATH EXPECT_LIBNBD

H=$REPO/tests/hostile
require_file "$OUR_LIBDIR/libnbd.so.0" "tls-hostile: our staged libnbd.so.0" || script_exit
require_file "$OUR_NBDKIT" "tls-hostile: our nbdkit" || script_exit
for b in certtool psktool python3 "$DEBIAN_NBDKIT"; do
  command -v "$b" >/dev/null || { fail "tls-hostile" "$b not installed"; script_exit; }
done
if ! "$REPO/scripts/gen-tls-keys.sh" "$TMP/k" >"$TMP/keys.log" 2>&1; then
  fail "tls-hostile: generate keys" "see below"; show_tail "$TMP/keys.log"; script_exit
fi
K=$TMP/k
src=$H/tls-hostile-client.c
if ! build_c_ours "$src" "$TMP/c-ours" >"$TMP/cc-ours.log" 2>&1; then
  fail "tls-hostile: compile tls-hostile-client.c on our libnbd" "$(tail -5 "$TMP/cc-ours.log")"; script_exit
fi
if ! build_c_real "$src" "$TMP/c-real" >"$TMP/cc-real.log" 2>&1; then
  fail "tls-hostile: compile tls-hostile-client.c on Debian's libnbd" "$(tail -5 "$TMP/cc-real.log")"; script_exit
fi
EPROTO=71 ENOTSUP=95

start_bg() { # NAME SOCKET CMD...: start a server, wait for its socket
  local name=$1 sock=$2; shift 2
  "$@" >"$TMP/$name.srv.log" 2>&1 &
  BG_PIDS+=($!)
  LAST_PID=$!
  wait_for_socket "$sock" 10 && return 0
  fail "start $name" "not listening after 10 s"; show_tail "$TMP/$name.srv.log"; return 1
}

# client LIB NAME TARGET TLSMODE EXPECT [VAR=VALUE...]: one client run
# through a recording proxy in front of TARGET; the recording is
# $TMP/NAME-LIB.{c2s,s2c}, the output $TMP/NAME-LIB.out. Returns the
# client's exit status (and 1 if the proxy did not come up).
client() {
  local lib=$1 name=$2 target=$3 tm=$4 expect=$5; shift 5
  local p=$TMP/$name-$lib.proxy rc
  rm -f "$p"
  python3 "$H/record_proxy.py" "$p" "$target" "$TMP/$name-$lib" 2>"$TMP/$name-$lib.proxy.log" &
  local pp=$!
  BG_PIDS+=($pp)
  wait_for_socket "$p" 10 || { echo "proxy did not start" >"$TMP/$name-$lib.out"; return 1; }
  if [[ $lib == ours ]]; then
    to env "$@" LD_LIBRARY_PATH="$OUR_LIBDIR" EXPECT_LIBNBD="$(our_so)" \
      "$TMP/c-ours" "$p" "$tm" "$expect" >"$TMP/$name-$lib.out" 2>&1
  else
    to env -u EXPECT_LIBNBD "$@" LD_LIBRARY_PATH="$REAL_LIBDIR" \
      "$TMP/c-real" "$p" "$tm" "$expect" >"$TMP/$name-$lib.out" 2>&1
  fi
  rc=$?
  # The proxy writes the recording when the connection ends; the client
  # has closed it, and the server follows.
  if ! timeout 20 tail -s 0.05 --pid="$pp" -f /dev/null; then
    kill "$pp" 2>/dev/null
  fi
  wait "$pp" 2>/dev/null
  return $rc
}

# outcome LIB NAME EXPECT: did the client run end as EXPECT says?
outcome_ok() {
  local lib=$1 name=$2 rc=$3 out=$TMP/$2-$1.out
  [[ $rc == 0 ]] && grep -q "^TEST-OK tls-hostile-client" "$out" || return 1
  if [[ $lib == ours ]]; then
    grep -q "libnbd loaded from $(our_so)\$" "$out" || return 1
  fi
}

# hostile MODE TLSMODE EXPECT RECORDING [WANT_ERRNO [WANT_TEXT]]: both
# libraries against one tls_hostile_server.py mode.
hostile() {
  local mode=$1 tm=$2 expect=$3 rec=$4 want=${5:-} text=${6:-}
  local tmname=allow; [[ $tm == 2 ]] && tmname=require
  local name=h-$mode-$tmname label="tls-hostile: server $mode, LIBNBD_TLS_${tmname^^} -> $expect"
  local lib rc why=""
  for lib in ours real; do
    local s=$TMP/$name-$lib.sock
    rm -f "$s"
    start_bg "$name-$lib" "$s" python3 "$H/tls_hostile_server.py" "$mode" "$s" "$K/pki" || return
    local spid=$LAST_PID
    client "$lib" "$name" "$s" "$tm" "$expect" TLS_CERTS="$K/pki"
    rc=$?
    kill "$spid" 2>/dev/null
    if ! outcome_ok "$lib" "$name" "$rc"; then
      fail "$label [libnbd: $lib]" "exit $rc"; show_tail "$TMP/$name-$lib.out" 10; return
    fi
    if ! python3 "$H/check_recording.py" "$TMP/$name-$lib" "$rec" \
         >"$TMP/$name-$lib.rec" 2>&1; then
      fail "$label [libnbd: $lib]: what the client sent" "$(cat "$TMP/$name-$lib.rec")"; return
    fi
  done
  local o=$TMP/$name-ours.out
  if [[ -n $want ]] && ! grep -q "failed as expected: errno $want " "$o"; then
    fail "$label [libnbd: ours]" "wanted errno $want: $(grep 'as expected' "$o")"; return
  fi
  if [[ -n $text ]] && ! grep -q "$text" "$o"; then
    fail "$label [libnbd: ours]" "wanted '$text' in: $(grep 'as expected' "$o")"; return
  fi
  [[ $expect == fail ]] && why=": ours: $(sed -n 's/.*failed as expected: //p' "$o")"
  pass "$label, same on Debian's libnbd; recorded: $(cat "$TMP/$name-ours.rec")$why"
}

# ---------------------------------------------------------------- 1.
echo "# 1. our libnbd against tls_hostile_server.py (Debian's libnbd as reference)"
for tm in 2 1; do
  if [[ $tm == 2 ]]; then
    hostile tls-good 2 tls tls
    hostile refuse-policy 2 fail refused $ENOTSUP
    hostile refuse-unsup 2 fail refused $ENOTSUP
  else
    hostile tls-good 1 tls tls
    hostile refuse-policy 1 plain any
    hostile refuse-unsup 1 plain any
  fi
  # Plain text after the ACK to STARTTLS: never TLS, never trusted. (Ours
  # says "plain text" whether it finds the bytes before its ClientHello or
  # after; which depends on when they arrive.)
  hostile inject-go-reply $tm fail tls-or-nothing $EPROTO "plain text"
  hostile inject-garbage $tm fail tls-or-nothing $EPROTO "plain text"
  hostile late-inject $tm fail tls-or-nothing $EPROTO "plain text"
  # A plain-text reply in place of the STARTTLS reply.
  hostile ack-for-go $tm fail refused $EPROTO
  hostile info-for-starttls $tm fail refused $EPROTO
  hostile export-size $tm fail refused $EPROTO
  # Plain text after the handshake, outside TLS.
  hostile tls-then-plain $tm fail tls-or-nothing $EPROTO "plain text inside the TLS session"
done
# Servers that cannot do STARTTLS: refused before a byte is sent when TLS
# is required, plain text when it is allowed.
hostile oldstyle 2 fail nothing $ENOTSUP
hostile no-fixed 2 fail nothing $ENOTSUP
hostile oldstyle 1 plain any
hostile no-fixed 1 plain any
# Controls: the recording checks fail where the client did send more (TLS
# allowed, STARTTLS refused: it goes on in plain text).
for rec in refused tls-or-nothing; do
  r=$TMP/h-refuse-policy-allow-ours
  if [[ -e $r.c2s ]] && ! python3 "$H/check_recording.py" "$r" "$rec" >"$r.control" 2>&1; then
    pass "tls-hostile: control, check_recording.py $rec rejects a client that went on in plain text: $(cat "$r.control")"
  else
    fail "tls-hostile: control, check_recording.py $rec" "accepted (or no recording): $(cat "$r.control" 2>/dev/null)"
  fi
done

# Our library under valgrind through the new paths: memory errors or
# definite leaks fail the run.
if command -v valgrind >/dev/null; then
  for me in tls-good:tls refuse-policy:fail inject-go-reply:fail late-inject:fail tls-then-plain:fail; do
    m=${me%:*} ex=${me#*:} s=$TMP/vg-$m.sock
    label="tls-hostile: valgrind, our libnbd, server $m, LIBNBD_TLS_REQUIRE -> $ex"
    start_bg "vg-$m" "$s" python3 "$H/tls_hostile_server.py" "$m" "$s" "$K/pki" || continue
    TEST_TIMEOUT=$((TEST_TIMEOUT * 3)) to env TLS_CERTS="$K/pki" LD_LIBRARY_PATH="$OUR_LIBDIR" \
      EXPECT_LIBNBD="$(our_so)" valgrind -q --error-exitcode=99 --leak-check=full \
      --errors-for-leak-kinds=definite "$TMP/c-ours" "$s" 2 "$ex" >"$TMP/vg-$m-ours.out" 2>&1
    rc=$?
    kill "$LAST_PID" 2>/dev/null
    if outcome_ok ours "vg-$m" "$rc"; then
      pass "$label"
    else
      fail "$label" "exit $rc"; show_tail "$TMP/vg-$m-ours.out" 15
    fi
  done
else
  skip "tls-hostile: valgrind runs" "valgrind not installed"
fi

# ---------------------------------------------------------------- 2.
echo "# 2. the recording against real servers: plain text never leaves the client"
NAME=tls-hostile-secret-export
CANARY="PLAINTEXT-CANARY-7f3a"
declare -A SOCK
for S in ours debian; do
  N=$OUR_NBDKIT; [[ $S == debian ]] && N=$DEBIAN_NBDKIT
  for kind in psk x509 on plain; do
    s=$TMP/$S-$kind.sock
    case $kind in
      psk)  args=(--tls=require --tls-psk="$K/keys.psk") ;;
      x509) args=(--tls=require --tls-certificates="$K/pki") ;;
      on)   args=(--tls=on --tls-certificates="$K/pki") ;;
      plain) args=() ;;
    esac
    start_bg "$S-$kind" "$s" "$N" -f -U "$s" "${args[@]}" memory 64M && SOCK[$S-$kind]=$s
  done
done

# real LIB S KIND TLSMODE EXPECT RECORDING LABEL [VAR=VALUE...]
real() {
  local lib=$1 S=$2 kind=$3 tm=$4 expect=$5 rec=$6 label=$7; shift 7
  local name=r-$S-$kind-$tm rc checks=()
  [[ -n ${SOCK[$S-$kind]:-} ]] || { skip "$label" "server did not start"; return; }
  client "$lib" "$name" "${SOCK[$S-$kind]}" "$tm" "$expect" \
    TEST_EXPORT_NAME="$NAME" CANARY="$CANARY" "$@"
  rc=$?
  if ! outcome_ok "$lib" "$name" "$rc"; then
    fail "$label" "exit $rc"; show_tail "$TMP/$name-$lib.out" 10; return
  fi
  if [[ $rec == control ]]; then
    checks=(any --present "$NAME" --present "$CANARY")
  else
    checks=("$rec" --absent "$NAME" --absent "$CANARY")
  fi
  if python3 "$H/check_recording.py" "$TMP/$name-$lib" "${checks[@]}" >"$TMP/$name-$lib.rec" 2>&1; then
    pass "$label: $(cat "$TMP/$name-$lib.rec")"
  else
    fail "$label" "$(cat "$TMP/$name-$lib.rec")"
  fi
}
for S in ours debian; do
  for lib in ours real; do
    w="[libnbd: $lib, nbdkit: $S]"
    real $lib $S psk 2 tls tls "tls-hostile: LIBNBD_TLS_REQUIRE, PSK, writes and reads back a canary $w" \
      TLS_PSK="$K/keys.psk" TLS_USER=alice
    real $lib $S x509 2 tls tls "tls-hostile: LIBNBD_TLS_REQUIRE, X.509, writes and reads back a canary $w" \
      TLS_CERTS="$K/pki"
    real $lib $S on 1 tls tls "tls-hostile: LIBNBD_TLS_ALLOW, --tls=on server, writes and reads back a canary $w" \
      TLS_CERTS="$K/pki"
    real $lib $S plain 2 fail refused "tls-hostile: LIBNBD_TLS_REQUIRE, server without TLS refuses STARTTLS $w"
    real $lib $S plain 0 plain control "tls-hostile: control, TLS disabled: the check sees the name and canary in plain text $w"
  done
done

# ---------------------------------------------------------------- 3.
echo "# 3. a hostile client (tls_server_probe.py) against our nbdkit and Debian's"
# probe S KIND EXPECT CHECK...: EXPECT ok, or "not ok" for a control.
probe() {
  local S=$1 kind=$2 expect=$3; shift 3
  local out=$TMP/probe-$S-$kind.out line name
  [[ -n ${SOCK[$S-$kind]:-} ]] || { skip "tls-hostile: probe $S $kind" "server did not start"; return; }
  to python3 "$H/tls_server_probe.py" "${SOCK[$S-$kind]}" "$K/pki" "$@" >"$out" 2>&1
  for name in "$@"; do
    line=$(grep -m1 -E "^(not )?ok $name:" "$out")
    local label="tls-hostile: nbdkit ($S) --tls=${kind/x509/require}, $name"
    if [[ $expect == ok && $line == "ok $name:"* ]]; then
      pass "$label: ${line#ok $name: }"
    elif [[ $expect == "not ok" && $line == "not ok $name:"* ]]; then
      pass "$label (control: the check fails on a server that allows plain text): ${line#not ok $name: }"
    else
      fail "$label" "${line:-no result}"; show_tail "$out" 10
    fi
  done
}
for S in ours debian; do
  probe $S x509 ok plain-options plain-export-name plain-abort injected-option starttls-twice
  probe $S on ok state-reset starttls-twice injected-option
  probe $S on "not ok" plain-options plain-export-name
done
# Our nbdkit says why it dropped the connection with injected options.
if grep -q "client sent plain text after NBD_OPT_STARTTLS" "$TMP/ours-x509.srv.log"; then
  pass "tls-hostile: our nbdkit logs the plain text injected after STARTTLS: $(grep -m1 'plain text after' "$TMP/ours-x509.srv.log")"
else
  fail "tls-hostile: our nbdkit's log of injected plain text" "$(tail -3 "$TMP/ours-x509.srv.log")"
fi

script_exit
