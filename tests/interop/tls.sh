#!/bin/bash
# TLS in our libnbd against Debian's nbdkit (--tls=require, --tls=on,
# --tls-verify-peer), X.509 and PSK, with keys made fresh by
# scripts/gen-tls-keys.sh (certtool, psktool).
#
# 1. tests/interop/tls/tls-client.c, built against our libnbd (which it
#    proves it loaded: EXPECT_LIBNBD, tests-c/testlib.h) and against
#    Debian's as the reference: each scenario must end the same way on
#    both (connect over TLS and read/write/compare with sync and aio calls;
#    plain text; or a failed connect), and on ours with the errno we want.
#    The servers: Debian's nbdkit and ours (listening, and with -s on the
#    client's nbd_connect_command socket), and qemu-nbd (its own TLS:
#    tls-creds-psk and tls-creds-x509, which by default also demands a
#    client certificate).
# 2. Debian's nbdinfo and nbdcopy, and Python's nbd module, running on our
#    libnbd.so.0 over TLS (LD_DEBUG=libs names the library the loader
#    initialised).
set -uo pipefail
source "$(dirname "$0")/../../scripts/testlib.sh"
make_tmpdir
unset LD_LIBRARY_PATH EXPECT_LIBNBD

require_file "$OUR_LIBDIR/libnbd.so.0" "tls: our staged libnbd.so.0" || script_exit
for b in certtool psktool nbdinfo nbdcopy; do
  command -v $b >/dev/null || { fail "tls" "$b not installed (gnutls-bin, libnbd-bin)"; script_exit; }
done
if ! "$REPO/scripts/gen-tls-keys.sh" "$TMP/k" >"$TMP/keys.log" 2>&1; then
  fail "tls: generate keys" "see below"; show_tail "$TMP/keys.log"; script_exit
fi
K=$TMP/k

src=$REPO/tests/interop/tls/tls-client.c
if ! build_c_ours "$src" "$TMP/tc-ours" >"$TMP/cc-ours.log" 2>&1; then
  fail "tls: compile tls-client.c on our libnbd" "$(tail -5 "$TMP/cc-ours.log")"; script_exit
fi
if ! build_c_real "$src" "$TMP/tc-real" >"$TMP/cc-real.log" 2>&1; then
  fail "tls: compile tls-client.c on Debian's libnbd" "$(tail -5 "$TMP/cc-real.log")"; script_exit
fi

start_bg() { # NAME WAITFOR CMD...   (WAITFOR: a socket path or a port)
  local name=$1 w=$2; shift 2
  "$@" >"$TMP/$name.srv.log" 2>&1 &
  BG_PIDS+=($!)
  if [[ $w == /* ]]; then wait_for_socket "$w" 10 && return 0
  else wait_for_port "$w" 10 && return 0; fi
  fail "start $name" "not listening after 10 s"; show_tail "$TMP/$name.srv.log"; return 1
}
# start_act NAME CMD...: runs CMD with systemd socket activation
# (LISTEN_FDS=1) on a TCP socket listening on 127.0.0.1, at a port the
# kernel picked (so no race for a free port); sets PORT[NAME]. nbdkit
# (both) and qemu-nbd take their socket that way.
declare -A PORT
start_act() {
  local name=$1 n; shift
  /usr/bin/python3 -c '
import os, socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(16)
if s.fileno() != 3:
    os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write("%d\n" % s.getsockname()[1])
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
os.environ.pop("LISTEN_FDNAMES", None)
os.execvp(sys.argv[2], sys.argv[2:])' "$TMP/$name.port" "$@" >"$TMP/$name.srv.log" 2>&1 &
  BG_PIDS+=($!)
  for ((n = 0; n < 100; n++)); do
    if [[ -s $TMP/$name.port ]]; then PORT[$name]=$(cat "$TMP/$name.port"); return 0; fi
    sleep 0.1
  done
  fail "start $name" "no port after 10 s"; show_tail "$TMP/$name.srv.log"; return 1
}
# case NAME TARGET MODE EXPECT WANT_ERRNO [VAR=VALUE...] [-- COMMAND...]
# (TARGET cmd: the client runs COMMAND with nbd_connect_command.)
case_() {
  local name=$1 target=$2 mode=$3 expect=$4 want=$5; shift 5
  local rc_o rc_r envs=() cmd=()
  while [[ $# -gt 0 && $1 != -- ]]; do envs+=("$1"); shift; done
  [[ $# -gt 0 ]] && { shift; cmd=("$@"); }
  to env "${envs[@]}" LD_LIBRARY_PATH="$OUR_LIBDIR" EXPECT_LIBNBD="$(our_so)" \
    "$TMP/tc-ours" "$target" "$mode" "$expect" "${cmd[@]}" >"$TMP/$name.ours" 2>&1
  rc_o=$?
  to env -u EXPECT_LIBNBD "${envs[@]}" LD_LIBRARY_PATH="$REAL_LIBDIR" \
    "$TMP/tc-real" "$target" "$mode" "$expect" "${cmd[@]}" >"$TMP/$name.real" 2>&1
  rc_r=$?
  if [[ $rc_o != 0 ]] || ! grep -q "TEST-OK" "$TMP/$name.ours"; then
    fail "tls: $name on our libnbd" "exit $rc_o"; show_tail "$TMP/$name.ours" 10; return
  fi
  if [[ $rc_r != 0 ]] || ! grep -q "TEST-OK" "$TMP/$name.real"; then
    fail "tls: $name on Debian's libnbd (reference)" "exit $rc_r"; show_tail "$TMP/$name.real" 10; return
  fi
  if [[ $expect == fail && -n $want ]] &&
     ! grep -q "failed as expected: errno $want " "$TMP/$name.ours"; then
    fail "tls: $name on our libnbd" "wanted errno $want: $(grep 'as expected' "$TMP/$name.ours")"; return
  fi
  local why="" e_o e_r
  if [[ $expect == fail ]]; then
    why=": $(sed -n 's/.*failed as expected: //p' "$TMP/$name.ours")"
    e_o=$(sed -n 's/.*failed as expected: errno \([0-9]*\) .*/\1/p' "$TMP/$name.ours")
    e_r=$(sed -n 's/.*failed as expected: errno \([0-9]*\) .*/\1/p' "$TMP/$name.real")
    [[ $e_o == "$e_r" ]] || why+=" [Debian's libnbd: errno $e_r]"
  fi
  pass "tls: $name -> $expect, same on our libnbd and Debian's$why"
}
EIO=5 EINVAL=22 ENOTSUP=95
declare -A PSKSOCK XPORT
# suite S NBDKIT: the servers, then every client scenario against them.
# S names the server (debian, ours) in socket names and test names.
suite() {
  local S=$1 N=$2
  start_bg $S-psk "$TMP/$S-psk.sock" $N -f -U "$TMP/$S-psk.sock" --tls=require --tls-psk="$K/keys.psk" memory 64M
  start_act $S-x509-tcp $N -f --tls=require --tls-certificates="$K/pki" memory 64M
  start_bg $S-x509-unix "$TMP/$S-x509.sock" $N -f -U "$TMP/$S-x509.sock" --tls=require --tls-certificates="$K/pki" memory 64M
  start_act $S-x509-vp $N -f --tls=require --tls-verify-peer --tls-certificates="$K/pki" memory 64M
  port=${PORT[$S-x509-tcp]} port_vp=${PORT[$S-x509-vp]}
  start_bg $S-tls-on "$TMP/$S-on.sock" $N -f -U "$TMP/$S-on.sock" --tls=on --tls-psk="$K/keys.psk" memory 64M
  start_bg $S-plain "$TMP/$S-plain.sock" $N -f -U "$TMP/$S-plain.sock" memory 64M

  PSKSOCK[$S]=$TMP/$S-psk.sock XPORT[$S]=$port
  P=$TMP/$S-psk.sock X=$TMP/$S-x509.sock
  case_ $S-psk-require        "$P" 2 tls   "" TLS_PSK="$K/keys.psk" TLS_USER=alice
  case_ $S-psk-allow          "$P" 1 tls   "" TLS_PSK="$K/keys.psk" TLS_USER=alice
  case_ $S-psk-opt-mode       "$P" 2 tls   "" TLS_PSK="$K/keys.psk" TLS_USER=alice OPT_MODE=1
  case_ $S-psk-logname        "$P" 2 tls   "" TLS_PSK="$K/keys.psk" LOGNAME=alice
  case_ $S-psk-wrong-key      "$P" 2 fail  "" TLS_PSK="$K/wrong.psk" TLS_USER=alice
  case_ $S-psk-unknown-user   "$P" 2 fail  $EINVAL TLS_PSK="$K/keys.psk" TLS_USER=bob
  case_ $S-psk-no-such-file   "$P" 2 fail  "" TLS_PSK="$TMP/nonexistent.psk" TLS_USER=alice
  case_ $S-x509-tcp-verified  "tcp:localhost:$port" 2 tls "" TLS_CERTS="$K/pki"
  case_ $S-x509-tcp-ip        "tcp:127.0.0.1:$port" 2 tls "" TLS_CERTS="$K/pki"
  case_ $S-x509-tcp-rogue-ca  "tcp:localhost:$port" 2 fail $EIO TLS_CERTS="$K/rogue"
  case_ $S-x509-tcp-rogue-noverify "tcp:localhost:$port" 2 tls "" TLS_CERTS="$K/rogue" TLS_VERIFY=0
  # Over a Unix socket there is no host name to verify: libnbd accepts any
  # certificate there (nbd_set_tls_verify_peer(3)).
  case_ $S-x509-unix-rogue-ca "$X" 2 tls   "" TLS_CERTS="$K/rogue"
  case_ $S-x509-client-cert   "tcp:localhost:$port_vp" 2 tls "" TLS_CERTS="$K/pki"
  case_ $S-x509-rogue-client-cert "tcp:localhost:$port_vp" 2 fail "" TLS_CERTS="$K/rogue" TLS_VERIFY=0
  case_ $S-plain-server-require "$TMP/$S-plain.sock" 2 fail $ENOTSUP
  case_ $S-plain-server-allow "$TMP/$S-plain.sock" 1 plain ""
  case_ $S-tls-on-server-disable "$TMP/$S-on.sock" 0 plain ""
  case_ $S-tls-on-server-allow "$TMP/$S-on.sock" 1 tls "" TLS_PSK="$K/keys.psk" TLS_USER=alice
  case_ $S-tls-required-server-disable "$P" 0 fail ""
}

suite debian "$DEBIAN_NBDKIT"
have_ours=false
if require_file "$OUR_NBDKIT" "tls: our nbdkit"; then
  suite ours "$OUR_NBDKIT"
  have_ours=true
fi

# Host name check: a server certificate from the trusted CA for another
# name (wrong.example, no IP address) must be refused over TCP with
# verify-peer on, whether the client dialled localhost or 127.0.0.1; with
# verify-peer off it is accepted. The certificate itself checks out
# against the CA (certtool --verify), so the name is what is refused.
if certtool --verify --load-ca-certificate "$K/pki/ca-cert.pem" \
     --infile "$K/wrongname/server-cert.pem" >"$TMP/wrongname-verify.log" 2>&1; then
  for S in debian ours; do
    N=$DEBIAN_NBDKIT; [[ $S == ours ]] && { $have_ours || continue; N=$OUR_NBDKIT; }
    start_act $S-wrongname $N -f --tls=require --tls-certificates="$K/wrongname" memory 64M || continue
    p=${PORT[$S-wrongname]}
    case_ $S-x509-wrong-hostname "tcp:localhost:$p" 2 fail $EIO TLS_CERTS="$K/pki"
    case_ $S-x509-wrong-hostname-ip "tcp:127.0.0.1:$p" 2 fail $EIO TLS_CERTS="$K/pki"
    case_ $S-x509-wrong-hostname-noverify "tcp:localhost:$p" 2 tls "" TLS_CERTS="$K/pki" TLS_VERIFY=0
  done
else
  fail "tls: the wrong.example certificate does not verify against the test CA" "see below"
  show_tail "$TMP/wrongname-verify.log" 10
fi

# nbdkit -s: one connection on the server's stdin/stdout, which here is
# the socket nbd_connect_command gives it; PSK and X.509 (with a client
# certificate the server checks), and refusals.
for S in debian ours; do
  N=$DEBIAN_NBDKIT; [[ $S == ours ]] && { $have_ours || continue; N=$OUR_NBDKIT; }
  psk=(-s --tls=require --tls-psk="$K/keys.psk" memory 64M)
  x509=(-s --tls=require --tls-verify-peer --tls-certificates="$K/pki" memory 64M)
  case_ $S-s-psk              cmd 2 tls  "" TLS_PSK="$K/keys.psk" TLS_USER=alice -- $N "${psk[@]}"
  case_ $S-s-psk-opt-mode     cmd 2 tls  "" TLS_PSK="$K/keys.psk" TLS_USER=alice OPT_MODE=1 -- $N "${psk[@]}"
  case_ $S-s-psk-wrong-key    cmd 2 fail "" TLS_PSK="$K/wrong.psk" TLS_USER=alice -- $N "${psk[@]}"
  case_ $S-s-plain-client     cmd 0 fail "" -- $N "${psk[@]}"
  case_ $S-s-x509-client-cert cmd 2 tls  "" TLS_CERTS="$K/pki" -- $N "${x509[@]}"
  case_ $S-s-x509-rogue-client-cert cmd 2 fail "" TLS_CERTS="$K/rogue" TLS_VERIFY=0 -- $N "${x509[@]}"
  # stdin and stdout as two pipes (as under a shell pipeline or ssh), cat
  # relaying them to the client's socket. Ours only: Debian's nbdkit 1.32
  # leaves GnuTLS's transport at recv(2)/send(2), which fail on a pipe.
  if [[ $S == ours ]]; then
    pipes=(sh -c 'cat | "$0" "$@" | cat' "$N")
    case_ $S-s-psk-pipes      cmd 2 tls "" TLS_PSK="$K/keys.psk" TLS_USER=alice -- "${pipes[@]}" "${psk[@]}"
    case_ $S-s-x509-pipes     cmd 2 tls "" TLS_CERTS="$K/pki" -- "${pipes[@]}" "${x509[@]}"
  fi
done

# xnbd-server --inetd: one client on standard input, through the same TLS
# code as nbdkit -s (PSK; a wrong key and a plain client refused).
XNBD=$(dirname "$OUR_NBDKIT")/xnbd-server
if $have_ours && require_file "$XNBD" "tls: our xnbd-server"; then
  truncate -s 64M "$TMP/xnbd.img"
  xi=(--target --inetd --tls=require --tls-psk="$K/keys.psk" "$TMP/xnbd.img")
  case_ xnbd-inetd-psk           cmd 2 tls  "" TLS_PSK="$K/keys.psk" TLS_USER=alice -- "$XNBD" "${xi[@]}"
  case_ xnbd-inetd-psk-wrong-key cmd 2 fail "" TLS_PSK="$K/wrong.psk" TLS_USER=alice -- "$XNBD" "${xi[@]}"
  case_ xnbd-inetd-plain-client  cmd 0 fail "" -- "$XNBD" "${xi[@]}"
fi

# qemu-nbd as the TLS server (one image each: qemu-nbd locks it).
# tls-creds-x509 with endpoint=server has verify-peer=yes by default: the
# client must present a certificate from the CA.
if command -v qemu-nbd >/dev/null; then
  for k in psk x509; do truncate -s 64M "$TMP/qemu-$k.img"; done
  mkdir -p "$TMP/ca-only" && cp "$K/pki/ca-cert.pem" "$TMP/ca-only/"
  qo=(-t -e 0 -f raw --tls-creds=tls0)
  Q=$TMP/qemu-psk.sock
  start_bg qemu-psk "$Q" qemu-nbd "${qo[@]}" -k "$Q" \
    --object "tls-creds-psk,id=tls0,endpoint=server,dir=$K" "$TMP/qemu-psk.img" &&
  {
    case_ qemu-psk-require      "$Q" 2 tls  "" TLS_PSK="$K/keys.psk" TLS_USER=alice
    case_ qemu-psk-allow        "$Q" 1 tls  "" TLS_PSK="$K/keys.psk" TLS_USER=alice
    case_ qemu-psk-opt-mode     "$Q" 2 tls  "" TLS_PSK="$K/keys.psk" TLS_USER=alice OPT_MODE=1
    case_ qemu-psk-wrong-key    "$Q" 2 fail "" TLS_PSK="$K/wrong.psk" TLS_USER=alice
    case_ qemu-psk-plain-client "$Q" 0 fail ""
  }
  start_act qemu-x509 qemu-nbd "${qo[@]}" \
    --object "tls-creds-x509,id=tls0,endpoint=server,dir=$K/pki" "$TMP/qemu-x509.img" &&
  {
    p=${PORT[qemu-x509]}
    case_ qemu-x509-tcp-verified "tcp:localhost:$p" 2 tls "" TLS_CERTS="$K/pki"
    case_ qemu-x509-tcp-ip       "tcp:127.0.0.1:$p" 2 tls "" TLS_CERTS="$K/pki"
    case_ qemu-x509-tcp-rogue-ca "tcp:localhost:$p" 2 fail $EIO TLS_CERTS="$K/rogue"
    case_ qemu-x509-rogue-client-cert "tcp:localhost:$p" 2 fail "" TLS_CERTS="$K/rogue" TLS_VERIFY=0
    case_ qemu-x509-no-client-cert "tcp:localhost:$p" 2 fail "" TLS_CERTS="$TMP/ca-only"
    # ... and the refusals came from the checks, not from a dead server.
    case_ qemu-x509-still-serving "tcp:localhost:$p" 2 tls "" TLS_CERTS="$K/pki"
  }
else
  fail "tls: qemu-nbd" "not installed (qemu-utils)"
fi

# Debian's nbdinfo and nbdcopy over TLS: on our libnbd.so.0 against both
# servers, and on Debian's libnbd against our nbdkit.
our_lib=$OUR_LIBDIR/libnbd.so.0
run_on() { # LIB NAME CMD...: runs on libnbd LIB (ours|real), checks which
  # the loader loaded, and that the exit status is ${WANT_RC:-0}
  local lib=$1 name=$2 want_rc=${WANT_RC:-0}; shift 2
  local envp=(env LD_BIND_NOW=1 LD_DEBUG=libs "LD_DEBUG_OUTPUT=$TMP/$name.ld")
  [[ $lib == ours ]] && envp+=("LD_LIBRARY_PATH=$OUR_LIBDIR")
  to "${envp[@]}" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err"
  local rc=$? inits
  inits=$(cat "$TMP/$name.ld".* 2>/dev/null | grep -o 'calling init: .*libnbd\.so\.0$' | sort -u)
  rm -f "$TMP/$name.ld".*
  if [[ $lib == ours && $inits != "calling init: $our_lib" ]]; then
    fail "tls: $name" "the loader initialised '${inits:-no libnbd}', not $our_lib"; return 1
  fi
  if [[ $lib == real && $inits == *"$OUR_LIBDIR"* ]]; then
    fail "tls: $name" "our library was loaded for the run on Debian's"; return 1
  fi
  if [[ $rc != "$want_rc" ]]; then
    fail "tls: $name" "exit $rc, wanted $want_rc"; show_tail "$TMP/$name.err" 10; return 1
  fi
}
for combo in ours:debian ours:ours real:ours; do
  lib=${combo%%:*} srv=${combo##*:}
  [[ -n ${PSKSOCK[$srv]:-} ]] || continue
  who="Debian's nbdinfo/nbdcopy on $([[ $lib == ours ]] && echo our || echo "Debian's") libnbd, $srv nbdkit"
  upsk="nbds+unix://alice@/?socket=${PSKSOCK[$srv]}&tls-psk-file=$K/keys.psk"
  ux509="nbds://localhost:${XPORT[$srv]}/?tls-certificates=$K/pki"
  for kind in psk x509; do
    u=$upsk; [[ $kind == x509 ]] && u=$ux509
    n=$lib-$srv-$kind
    if run_on "$lib" "nbdinfo-$n" nbdinfo "$u"; then
      if grep -q "with TLS" "$TMP/nbdinfo-$n.out"; then
        pass "tls: $who, nbdinfo over TLS ($kind): $(head -1 "$TMP/nbdinfo-$n.out")"
      else
        fail "tls: $who, nbdinfo ($kind)" "no 'with TLS' in: $(head -1 "$TMP/nbdinfo-$n.out")"
      fi
    fi
    img=$TMP/src-$n.img back=$TMP/back-$n.img
    head -c 32M /dev/urandom >"$img"
    if run_on "$lib" "nbdcopy-in-$n" nbdcopy --requests=16 "$img" "$u" &&
       run_on "$lib" "nbdcopy-out-$n" nbdcopy --connections=4 "$u" "$back"; then
      # The export is 64M, the image the first 32M of it.
      if cmp -s -n $((32 << 20)) "$img" "$back"; then
        pass "tls: $who, nbdcopy file -> NBD -> file over TLS ($kind): byte-identical"
      else
        fail "tls: $who, nbdcopy over TLS ($kind)" "copy differs"
      fi
    fi
    rm -f "$img" "$back"
  done
done

# nbdkit -s with Python's nbd module (Debian's, on our libnbd.so.0) as the
# client: nbd_connect_command, TLS with PSK, a write read back.
for S in debian ours; do
  N=$DEBIAN_NBDKIT; [[ $S == ours ]] && { $have_ours || continue; N=$OUR_NBDKIT; }
  if run_on ours py-s-$S /usr/bin/python3 -c '
import nbd, os, sys
h = nbd.NBD()
h.set_tls(nbd.TLS_REQUIRE)
h.set_tls_psk_file(sys.argv[1])
h.set_tls_username("alice")
h.connect_command(sys.argv[2:])
buf = os.urandom(3 << 20)
h.pwrite(buf, 1 << 20)
same = h.pread(len(buf), 1 << 20) == buf
print("tls", h.get_tls_negotiated(), "size", h.get_size(), "same", same)
h.shutdown()' "$K/keys.psk" $N -s --tls=require --tls-psk="$K/keys.psk" memory 64M; then
    if [[ $(cat "$TMP/py-s-$S.out") == "tls True size 67108864 same True" ]]; then
      pass "tls: Python's nbd module on our libnbd, connect_command $S nbdkit -s --tls=require (psk): write read back"
    else
      fail "tls: Python's nbd module on our libnbd, $S nbdkit -s" "printed: $(cat "$TMP/py-s-$S.out")"
    fi
  fi
done

# nbdinfo -- [ CMD ] (nbdinfo(1): the server runs with systemd socket
# activation) has no way to turn TLS on: on our libnbd, nbdkit
# --tls=require must refuse it before anything about the export is said.
for S in debian ours; do
  N=$DEBIAN_NBDKIT; [[ $S == ours ]] && { $have_ours || continue; N=$OUR_NBDKIT; }
  if WANT_RC=1 run_on ours nbdinfo-act-$S nbdinfo -- [ $N --tls=require --tls-psk="$K/keys.psk" memory 64M ]; then
    if grep -q export-size "$TMP/nbdinfo-act-$S.out"; then
      fail "tls: nbdinfo -- [ $S nbdkit --tls=require ] on our libnbd" "the export was described: $(grep export-size "$TMP/nbdinfo-act-$S.out")"
    else
      pass "tls: nbdinfo -- [ $S nbdkit --tls=require ] on our libnbd: refused (exit 1), nothing about the export: $(head -1 "$TMP/nbdinfo-act-$S.err")"
    fi
  fi
done

# Our nbdkit --tls=require: a plain-text client learns nothing (every
# option but STARTTLS is refused with NBD_REP_ERR_TLS_REQD).
if [[ -n ${PSKSOCK[ours]:-} ]]; then
  to nbdinfo --list "nbd+unix:///?socket=${PSKSOCK[ours]}" >"$TMP/plain-list.out" 2>"$TMP/plain-list.err"
  rc=$?
  if [[ $rc == 0 ]]; then
    fail "tls: our nbdkit --tls=require, plain nbdinfo --list" "listed: $(head -3 "$TMP/plain-list.out")"
  elif [[ ! -s $TMP/plain-list.out ]]; then
    pass "tls: our nbdkit --tls=require refuses a plain-text nbdinfo --list (exit $rc): $(head -1 "$TMP/plain-list.err")"
  else
    fail "tls: our nbdkit --tls=require, plain nbdinfo --list" "printed: $(head -2 "$TMP/plain-list.out")"
  fi
fi

# qemu-img (QEMU's own NBD client and TLS) against our nbdkit.
if [[ -n ${PSKSOCK[ours]:-} ]] && command -v qemu-img >/dev/null; then
  for kind in psk x509; do
    if [[ $kind == psk ]]; then
      obj="tls-creds-psk,id=tls0,endpoint=client,dir=$K,username=alice"
      spec="driver=nbd,path=${PSKSOCK[ours]},tls-creds=tls0"
    else
      obj="tls-creds-x509,id=tls0,endpoint=client,dir=$K/pki"
      spec="driver=nbd,host=localhost,port=${XPORT[ours]},tls-creds=tls0"
    fi
    img=$TMP/q-$kind.img back=$TMP/q-back-$kind.img
    head -c 64M /dev/urandom >"$img"
    if to qemu-img convert -n -f raw --object "$obj" --target-image-opts "$img" "$spec" \
         >"$TMP/q-$kind.log" 2>&1 &&
       to qemu-img convert --object "$obj" --image-opts "$spec" -O raw "$back" \
         >>"$TMP/q-$kind.log" 2>&1 && cmp -s "$img" "$back"; then
      pass "tls: qemu-img to and from our nbdkit --tls=require ($kind): byte-identical"
    else
      fail "tls: qemu-img with our nbdkit ($kind)" "see below"; show_tail "$TMP/q-$kind.log" 10
    fi
    rm -f "$img" "$back"
  done
fi

script_exit
