#!/bin/bash
# make bench: ours vs Debian's, same other side, medians of $BENCH_RUNS runs.
#  (a) server: our nbdkit vs Debian's, client Debian's nbdcopy (on Debian's
#      libnbd), over a Unix socket:
#        read  a $BENCH_SIZE file export of random data (file on /dev/shm) to
#              null:, with nbdcopy's default 4 connections (multi-conn) and
#              with one
#        write from that file into a $BENCH_SIZE memory export (4 connections)
#      and the raw limit: bench/socketpair, the same bytes between two
#      processes in 2 MiB writes
#  (b) library: our libnbd vs Debian's, server Debian's nbdkit memory:
#      bench/rwloop (synchronous nbd_pwrite, then nbd_pread) in 2 MiB and
#      4 KiB blocks; and server: our nbdkit vs Debian's under Debian's
#      libnbd, the 4 KiB blocks
#  (c) library under nbdcopy: Debian's nbdcopy on our libnbd.so.0 vs on
#      Debian's, reading from Debian's nbdkit (file) to null: and writing
#      the file into Debian's nbdkit (memory)
#  (d) bench/aioread: 4 KiB random reads, $BENCH_AIO_DEPTH (64) in flight
#      through nbd_aio_pread: our libnbd vs Debian's on Debian's nbdkit
#      memory, and our nbdkit vs Debian's under Debian's libnbd, serving
#      memory and serving the file
#  (e) TLS (PSK, keys from scripts/gen-tls-keys.sh), the pairs: nbdcopy on
#      our libnbd.so.0 reading from our nbdkit vs nbdcopy on Debian's libnbd
#      reading from Debian's nbdkit, both --tls=require, the file export to
#      null over a Unix socket
#  (f) bench/connect: create / connect_uri / shutdown / close cycles on
#      our libnbd vs Debian's against Debian's nbdkit memory, and the
#      server's CPU per connection; and our nbdkit vs Debian's under
#      Debian's libnbd
#  (g) bench/aioread on our libnbd and our nbdkit, with extended headers
#      (first column) and with them turned off in the server (second)
#  (h) scale: bench/scale on Debian's libnbd, 1, 4, 16 and 64 connections
#      each with $BENCH_AIO_DEPTH 4 KiB random reads in flight, our nbdkit
#      vs Debian's (memory 1G): reads/s, server CPU per read, and the
#      server's resident memory per idle and per busy connection
#  (r) bench/request_costs.sh: system calls, futex calls, context switches
#      and CPU per request of our nbdkit and Debian's
#  (s) bench/file-reads.sh: file plugin reads per request size, sendfile
#      against copying against Debian's nbdkit
# Results go to stdout only.  Not part of make check.
#
# Knobs: BENCH_RUNS (3), BENCH_SIZE (2G), BENCH_BIG_BYTES (4 GiB of 2 MiB
# requests), BENCH_SMALL_BYTES (256 MiB of 4 KiB requests), BENCH_AIO_DEPTH
# (64), BENCH_AIO_OPS (200000), BENCH_CONNECT_CYCLES (2000),
# BENCH_SCALE_CONNS ("1 4 16 64"), BENCH_ONLY (the sections to run, e.g.
# "a e"; default all).
set -uo pipefail
REPO=${REPO:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$REPO" || exit 1
source scripts/testlib.sh
make_tmpdir
unset LD_LIBRARY_PATH EXPECT_LIBNBD
TEST_TIMEOUT=${BENCH_TIMEOUT:-600}

RUNS=${BENCH_RUNS:-3}
SIZE=${BENCH_SIZE:-2G}
BIG=${BENCH_BIG_BYTES:-$((4 << 30))}
SMALL=${BENCH_SMALL_BYTES:-$((256 << 20))}
AIO_DEPTH=${BENCH_AIO_DEPTH:-64}
AIO_OPS=${BENCH_AIO_OPS:-200000}
# want X: section X is to run (BENCH_ONLY). The sections' bodies are not
# indented under their "if want X".
want() { [[ -z ${BENCH_ONLY:-} || " $BENCH_ONLY " == *" $1 "* ]]; }

SHM=$(mktemp -d /dev/shm/nbdbench.XXXXXX)
trap '_testlib_cleanup; rm -rf "$SHM"' EXIT
SRC=$SHM/src.img

echo "# make bench: $(nproc) cores, $RUNS runs each (median), export $SIZE"
echo "# our nbdkit:  $OUR_NBDKIT"
echo "# our libnbd:  $(our_so || echo missing)"
echo "# Debian's:    $DEBIAN_NBDKIT $(nbdkit --version 2>/dev/null | head -n 1 | awk '{print $2}'), $(real_so)"
echo "# preparing $SRC ($SIZE of random data)..."
bytes=$(numfmt --from=iec "$SIZE")
head -c "$bytes" /dev/urandom >"$SRC" || { echo "cannot create $SRC" >&2; exit 1; }

median() { sort -g | awk '{ a[NR] = $1 } END { if (NR) print a[int((NR + 1) / 2)] }'; }

# timed_nbdcopy NBDKIT ENVPREFIX SERVER-ARGS... -- NBDCOPY-ARGS: prints the
# seconds nbdcopy took (measured inside --run, so server start-up is not
# counted), or nothing on failure.
timed_nbdcopy() {
  local nbdkit=$1 envp=$2; shift 2
  local args=() out
  while [[ $1 != -- ]]; do args+=("$1"); shift; done; shift
  out=$(to "$nbdkit" -U - "${args[@]}" --run \
    "s=\$(date +%s%N); $envp nbdcopy $* || exit 1; e=\$(date +%s%N); echo BENCHNS \$((e - s))" 2>"$TMP/err")
  if [[ $? -ne 0 ]]; then echo "  failed: $(tail -n 2 "$TMP/err" | tr '\n' ' ')" >&2; return 1; fi
  awk '$1 == "BENCHNS" { printf "%.6f\n", $2 / 1e9 }' <<<"$out"
}

# Every section runs in $RUNS rounds, and each round runs ours and
# Debian's one after the other, so that a slow spell of the machine falls
# on both sides rather than on one.
#
# measure KEY CMD...: one run of CMD (which prints one number), appended to
# the runs of KEY; a failed run marks KEY failed.
# settle KEY...: RES[KEY] = the median of KEY's runs (empty if one failed).
declare -A RES RUNS_OF FAILED
measure() {
  local key=$1 t; shift
  [[ -n ${FAILED[$key]:-} ]] && return
  t=$("$@") && [[ -n $t ]] || { FAILED[$key]=1; return; }
  RUNS_OF[$key]+="$t "
}
settle() {
  local key
  for key; do
    if [[ -n ${FAILED[$key]:-} || -z ${RUNS_OF[$key]:-} ]]; then
      RES[$key]=; echo "  $key: failed"; continue
    fi
    RES[$key]=$(printf '%s\n' ${RUNS_OF[$key]} | median)
    echo "  $key: runs ${RUNS_OF[$key]}-> median ${RES[$key]}"
  done
}

rows=()
# row NAME UNIT OURS THEIRS  (higher is better for both)
row() {
  local ratio=n/a
  [[ -n $3 && -n $4 ]] && ratio=$(awk -v a="$3" -v b="$4" 'BEGIN { printf "%.2f", a / b }')
  rows+=("$(printf '%-46s %12s %12s %8s %s' "$1" "${3:-failed}" "${4:-failed}" "$ratio" "$2")")
}
rate() { [[ -n $2 ]] && awk -v b="$1" -v s="$2" 'BEGIN { printf "%.2f", b / s / 1e9 }'; }

# ---------------------------------------------------------------- (a)
if want a; then
echo "# (a) nbdcopy against our nbdkit and Debian's"
# The raw limit: the same bytes through a socketpair between two processes,
# in 2 MiB writes and reads, nothing else done with them.
have_raw=false
if cc -O2 -o "$TMP/socketpair" bench/socketpair.c 2>"$TMP/cc-sp.log"; then
  have_raw=true
  raw_secs() {
    "$TMP/socketpair" "$bytes" 2097152 |
      awk '/^RESULT/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "secs") print kv[2] } }'
  }
else
  echo "  cannot build bench/socketpair.c: $(tail -n 2 "$TMP/cc-sp.log")" >&2
fi
for ((round = 0; round < RUNS; round++)); do
  for side in ours theirs; do
    nbdkit=$OUR_NBDKIT; [[ $side == theirs ]] && nbdkit=$DEBIAN_NBDKIT
    measure "read-$side" timed_nbdcopy "$nbdkit" "" -r file "$SRC" -- '"$uri"' null:
    measure "read1-$side" timed_nbdcopy "$nbdkit" "" -r file "$SRC" -- --connections=1 '"$uri"' null:
    measure "write-$side" timed_nbdcopy "$nbdkit" "" memory "$SIZE" -- "$SRC" '"$uri"'
  done
  $have_raw && measure raw raw_secs
done
settle read-ours read-theirs read1-ours read1-theirs write-ours write-theirs
$have_raw && settle raw
row "(a) nbdcopy read $SIZE -> null: (server)" GB/s \
  "$(rate "$bytes" "${RES[read-ours]:-}")" "$(rate "$bytes" "${RES[read-theirs]:-}")"
row "(a) the same, 1 connection (server)" GB/s \
  "$(rate "$bytes" "${RES[read1-ours]:-}")" "$(rate "$bytes" "${RES[read1-theirs]:-}")"
if [[ -n ${RES[raw]:-} && -n ${RES[read-ours]:-} ]]; then
  limit_note=$(awk -v o="${RES[read-ours]}" -v t="${RES[read-theirs]:-0}" -v r="${RES[raw]}" -v b="$bytes" 'BEGIN {
    printf "(a) raw socketpair limit %.2f GB/s: nbdcopy read from our nbdkit %.0f %%, from Debian'"'"'s %.0f %%",
      b / r / 1e9, 100 * r / o, (t > 0 ? 100 * r / t : 0) }')
fi
row "(a) nbdcopy write $SIZE file -> memory (server)" GB/s \
  "$(rate "$bytes" "${RES[write-ours]:-}")" "$(rate "$bytes" "${RES[write-theirs]:-}")"
fi # (a)

# ---------------------------------------------------------------- (b)
if want b; then
echo "# (b) rwloop on our libnbd and Debian's, Debian's nbdkit memory"
have_ours=false
if [[ -n $(our_so) ]] && build_c_ours bench/rwloop.c "$TMP/rwloop-ours" >"$TMP/cc-ours.log" 2>&1; then
  have_ours=true
else
  echo "  cannot build rwloop on our libnbd: $(tail -n 3 "$TMP/cc-ours.log" 2>/dev/null)" >&2
fi
build_c_real bench/rwloop.c "$TMP/rwloop-real" >"$TMP/cc-real.log" 2>&1 ||
  echo "  cannot build rwloop on Debian's libnbd: $(tail -n 3 "$TMP/cc-real.log")" >&2

# rwloop_run LIB BS BYTES [NBDKIT]: one server (Debian's unless named),
# pwrite pass then pread pass; prints "MBps_write iops_write MBps_read
# iops_read".
rwloop_run() {
  local lib=$1 bs=$2 n=$3 nbdkit=${4:-$DEBIAN_NBDKIT} bin envp out
  if [[ $lib == ours ]]; then bin=$TMP/rwloop-ours; envp=$(ours_env)
  else bin=$TMP/rwloop-real; envp=$(real_env); fi
  [[ -x $bin ]] || return 1
  out=$(to "$nbdkit" -U - memory 1G --run \
    "$envp $bin \"\$unixsocket\" pwrite $bs $n && $envp $bin \"\$unixsocket\" pread $bs $n" 2>&1) ||
    { echo "  rwloop ($lib) failed: $(tail -n 2 <<<"$out" | tr '\n' ' ')" >&2; return 1; }
  awk '/^RESULT/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
                   printf "%s %s ", v["MBps"], v["iops"] } END { print "" }' <<<"$out"
}
# rwloop_round LIB BS: one run, its four figures added to the runs of
# w-LIB-BS (MB/s), wi- (IOPS), r-, ri-.
rwloop_round() {
  local n=$BIG a b c d
  [[ $2 == 4096 ]] && n=$SMALL
  if read -r a b c d < <(rwloop_run "$1" "$2" "$n") && [[ -n ${d:-} ]]; then
    measure "w-$1-$2" echo "$a"; measure "wi-$1-$2" echo "$b"
    measure "r-$1-$2" echo "$c"; measure "ri-$1-$2" echo "$d"
  else
    for k in w wi r ri; do measure "$k-$1-$2" false; done
  fi
}
for ((round = 0; round < RUNS; round++)); do
  for bs in 2097152 4096; do
    for lib in ours real; do rwloop_round "$lib" "$bs"; done
  done
done
for bs in 2097152 4096; do
  for lib in ours real; do settle "w-$lib-$bs" "wi-$lib-$bs" "r-$lib-$bs" "ri-$lib-$bs"; done
done
row "(b) nbd_pread 2 MiB (library)" MB/s "${RES[r-ours-2097152]:-}" "${RES[r-real-2097152]:-}"
row "(b) nbd_pwrite 2 MiB (library)" MB/s "${RES[w-ours-2097152]:-}" "${RES[w-real-2097152]:-}"
row "(b) nbd_pread 4 KiB (library)" IOPS "${RES[ri-ours-4096]:-}" "${RES[ri-real-4096]:-}"
row "(b) nbd_pwrite 4 KiB (library)" IOPS "${RES[wi-ours-4096]:-}" "${RES[wi-real-4096]:-}"
# The server side: Debian's libnbd, 4 KiB blocks, our nbdkit and Debian's
# in alternating runs.
declare -A SYNC
for ((i = 0; i < RUNS; i++)); do
  for side in ours theirs; do
    nbdkit=$OUR_NBDKIT; [[ $side == theirs ]] && nbdkit=$DEBIAN_NBDKIT
    read -r a b c d < <(rwloop_run real 4096 "$SMALL" "$nbdkit") || true
    [[ -n ${d:-} ]] && { SYNC[w-$side]+="$b "; SYNC[r-$side]+="$d "; }
  done
done
for side in ours theirs; do
  echo "  server $side bs=4096: pwrite ${SYNC[w-$side]:-}IOPS; pread ${SYNC[r-$side]:-}IOPS"
  RES[syncw-$side]=$(printf '%s\n' ${SYNC[w-$side]:-} | median)
  RES[syncr-$side]=$(printf '%s\n' ${SYNC[r-$side]:-} | median)
done
row "(b) nbd_pread 4 KiB (server)" IOPS "${RES[syncr-ours]:-}" "${RES[syncr-theirs]:-}"
row "(b) nbd_pwrite 4 KiB (server)" IOPS "${RES[syncw-ours]:-}" "${RES[syncw-theirs]:-}"
fi # (b)

# ---------------------------------------------------------------- (d)
# 4 KiB random reads, AIO_DEPTH in flight through the AIO API: the library
# (ours and Debian's, Debian's nbdkit memory) and the server (ours and
# Debian's, Debian's libnbd).
if want d; then
echo "# (d) bench/aioread: 4 KiB random reads, $AIO_DEPTH in flight (nbd_aio_pread)"
have_aio_ours=false
if [[ -n $(our_so) ]] && build_c_ours bench/aioread.c "$TMP/aioread-ours" >"$TMP/cc-aio-ours.log" 2>&1; then
  have_aio_ours=true
else
  echo "  cannot build aioread on our libnbd: $(tail -n 3 "$TMP/cc-aio-ours.log" 2>/dev/null)" >&2
fi
build_c_real bench/aioread.c "$TMP/aioread-real" >"$TMP/cc-aio-real.log" 2>&1 ||
  echo "  cannot build aioread on Debian's libnbd: $(tail -n 3 "$TMP/cc-aio-real.log")" >&2

# aio_iops LIB NBDKIT [PLUGIN ARGS...]: prints the IOPS of one run
# (plugin: memory 1G unless named).
aio_iops() {
  local lib=$1 nbdkit=$2 bin envp out
  shift 2
  local plugin=("$@")
  [[ ${#plugin[@]} -gt 0 ]] || plugin=(memory 1G)
  if [[ $lib == ours ]]; then bin=$TMP/aioread-ours; envp=$(ours_env)
  else bin=$TMP/aioread-real; envp=$(real_env); fi
  [[ -x $bin ]] || return 1
  out=$(to "$nbdkit" -U - "${plugin[@]}" --run \
    "$envp $bin \"\$unixsocket\" $AIO_DEPTH $AIO_OPS" 2>&1) ||
    { echo "  aioread ($lib on $nbdkit) failed: $(tail -n 2 <<<"$out" | tr '\n' ' ')" >&2; return 1; }
  awk '/^RESULT/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "iops") print kv[2] } }' <<<"$out"
}
for ((round = 0; round < RUNS; round++)); do
  $have_aio_ours && measure aio-lib-ours aio_iops ours "$DEBIAN_NBDKIT"
  measure aio-lib-real aio_iops real "$DEBIAN_NBDKIT"
  measure aio-srv-ours aio_iops real "$OUR_NBDKIT"
  measure aio-srv-theirs aio_iops real "$DEBIAN_NBDKIT"
  measure aio-file-ours aio_iops real "$OUR_NBDKIT" file "$SRC"
  measure aio-file-theirs aio_iops real "$DEBIAN_NBDKIT" file "$SRC"
done
settle aio-lib-ours aio-lib-real aio-srv-ours aio-srv-theirs aio-file-ours aio-file-theirs
row "(d) 4 KiB random read, $AIO_DEPTH in flight (library)" IOPS "${RES[aio-lib-ours]:-}" "${RES[aio-lib-real]:-}"
row "(d) 4 KiB random read, $AIO_DEPTH in flight (server)" IOPS "${RES[aio-srv-ours]:-}" "${RES[aio-srv-theirs]:-}"
row "(d) the same, file plugin (server)" IOPS "${RES[aio-file-ours]:-}" "${RES[aio-file-theirs]:-}"
fi # (d)

# (g) The cost of extended headers: our library on our nbdkit, the same
# AIO 4 KiB random reads, with extended headers (32-byte requests and
# replies) in the first column and structured replies (the server started
# with NBD_NO_EXTENDED_HEADERS=1) in the second, runs interleaved.
if want g; then
echo "# (g) extended headers against structured replies, ours on ours (bench/aioread)"
if [[ -n $(our_so) ]] && { [[ -x $TMP/aioread-ours ]] ||
     build_c_ours bench/aioread.c "$TMP/aioread-ours" >"$TMP/cc-aio-ours.log" 2>&1; }; then
  eh_iops() { # NO_EH (0 or 1)
    local out
    out=$(NBD_NO_EXTENDED_HEADERS=$1 to "$OUR_NBDKIT" -U - memory 1G --run \
      "$(ours_env) $TMP/aioread-ours \"\$unixsocket\" $AIO_DEPTH $AIO_OPS" 2>&1) ||
      { echo "  aioread (NBD_NO_EXTENDED_HEADERS=$1) failed: $(tail -n 2 <<<"$out" | tr '\n' ' ')" >&2; return 1; }
    awk '/^RESULT/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "iops") print kv[2] } }' <<<"$out"
  }
  ehs=() srs=()
  for ((i = 0; i < RUNS; i++)); do
    v=$(eh_iops 0) && ehs+=("$v")
    v=$(eh_iops 1) && srs+=("$v")
  done
  [[ ${#ehs[@]} -gt 0 ]] && RES[eh-on]=$(printf '%s\n' "${ehs[@]}" | median)
  [[ ${#srs[@]} -gt 0 ]] && RES[eh-off]=$(printf '%s\n' "${srs[@]}" | median)
  echo "  extended: ${ehs[*]}  structured: ${srs[*]} IOPS"
else
  echo "  cannot build aioread on our libnbd" >&2
fi
row "(g) 4 KiB AIO reads: extended / structured (ours)" IOPS "${RES[eh-on]:-}" "${RES[eh-off]:-}"
fi # (g)

# ---------------------------------------------------------------- (c)
if want c; then
echo "# (c) Debian's nbdcopy on our libnbd.so.0 and on Debian's"
for ((round = 0; round < RUNS; round++)); do
  if [[ -n $(our_so) ]]; then
    measure "copy-ours" timed_nbdcopy "$DEBIAN_NBDKIT" "env LD_LIBRARY_PATH=$OUR_LIBDIR" -r file "$SRC" -- '"$uri"' null:
  fi
  measure "copy-real" timed_nbdcopy "$DEBIAN_NBDKIT" "" -r file "$SRC" -- '"$uri"' null:
  if [[ -n $(our_so) ]]; then
    measure "copyw-ours" timed_nbdcopy "$DEBIAN_NBDKIT" "env LD_LIBRARY_PATH=$OUR_LIBDIR" memory "$SIZE" -- "$SRC" '"$uri"'
  fi
  measure "copyw-real" timed_nbdcopy "$DEBIAN_NBDKIT" "" memory "$SIZE" -- "$SRC" '"$uri"'
done
settle copy-ours copy-real copyw-ours copyw-real
row "(c) nbdcopy read -> null: on the library" GB/s \
  "$(rate "$bytes" "${RES[copy-ours]:-}")" "$(rate "$bytes" "${RES[copy-real]:-}")"
row "(c) nbdcopy write file -> memory on the library" GB/s \
  "$(rate "$bytes" "${RES[copyw-ours]:-}")" "$(rate "$bytes" "${RES[copyw-real]:-}")"
fi # (c)

# ---------------------------------------------------------------- (e)
# The same keys for both pairs; the URI names the PSK file and user, and
# $unixsocket is the --run socket.
if want e; then
echo "# (e) TLS (PSK): nbdcopy on our libnbd + our nbdkit vs Debian's on Debian's"
if scripts/gen-tls-keys.sh "$TMP/keys" >"$TMP/keys.log" 2>&1; then
  psk=$TMP/keys/keys.psk
  tlsuri="\"nbds+unix://alice@/?socket=\$unixsocket&tls-psk-file=$psk\""
  for ((round = 0; round < RUNS; round++)); do
    if [[ -n $(our_so) ]]; then
      measure "tls-ours" timed_nbdcopy "$OUR_NBDKIT" "env LD_LIBRARY_PATH=$OUR_LIBDIR" \
        --tls=require --tls-psk="$psk" -r file "$SRC" -- "$tlsuri" null:
    fi
    measure "tls-theirs" timed_nbdcopy "$DEBIAN_NBDKIT" "" \
      --tls=require --tls-psk="$psk" -r file "$SRC" -- "$tlsuri" null:
  done
  settle tls-ours tls-theirs
else
  echo "  cannot make TLS keys: $(tail -n 3 "$TMP/keys.log")" >&2
fi
row "(e) TLS (PSK) nbdcopy read $SIZE -> null (pair)" GB/s \
  "$(rate "$bytes" "${RES[tls-ours]:-}")" "$(rate "$bytes" "${RES[tls-theirs]:-}")"
fi # (e)

# ---------------------------------------------------------------- (f)
# bench/connect: $CONNECT_CYCLES cycles of nbd_create, nbd_connect_uri
# (nbd+unix), nbd_shutdown, nbd_close against Debian's nbdkit memory; our
# libnbd vs Debian's, rounds interleaved. Besides the rate, the server's
# CPU time (utime + stime of the serving nbdkit, read from /proc inside
# --run) per connection, shown as connections per
# server CPU second so that higher is better like every other row.
if want f; then
echo "# (f) bench/connect: create / connect_uri / shutdown / close, Debian's nbdkit memory"
build_c_ours bench/connect.c "$TMP/connect-ours" >"$TMP/cc-conn-ours.log" 2>&1 ||
  echo "  cannot build connect on our libnbd: $(tail -n 3 "$TMP/cc-conn-ours.log")" >&2
build_c_real bench/connect.c "$TMP/connect-real" >"$TMP/cc-conn-real.log" 2>&1 ||
  echo "  cannot build connect on Debian's libnbd: $(tail -n 3 "$TMP/cc-conn-real.log")" >&2
# connect_run LIB [NBDKIT]: prints "CYCLES_PER_SEC SERVER_US_PER_CONNECTION"
# (server Debian's nbdkit unless named).
connect_run() {
  local lib=$1 nbdkit=${2:-$DEBIAN_NBDKIT} bin envp out stat
  if [[ $lib == ours ]]; then bin=$TMP/connect-ours; envp=$(ours_env)
  else bin=$TMP/connect-real; envp=$(real_env); fi
  [[ -x $bin ]] || return 1
  # Debian's nbdkit --run forks: the parent runs the command, the child
  # (its sibling here) serves. Ours serves in the process that runs it.
  stat='read -r _ _ _ _ _ _ _ _ _ _ _ _ _ u s _ < /proc/$(pgrep -P $PPID -x nbdkit || echo $PPID)/stat'
  out=$(to "$nbdkit" -U - memory 1M --run \
    "$stat; t0=\$((u + s)); $envp $bin \"\$unixsocket\" uri $CONNECT_CYCLES || exit 1; $stat; echo SRVTICKS \$((u + s - t0))" 2>&1) ||
    { echo "  connect ($lib) failed: $(tail -n 2 <<<"$out" | tr '\n' ' ')" >&2; return 1; }
  awk -v n="$CONNECT_CYCLES" -v hz="$(getconf CLK_TCK)" '
    /^RESULT/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "per_sec") r = kv[2] } }
    $1 == "SRVTICKS" { us = $2 * 1e6 / hz / n }
    END { if (r != "") printf "%s %.0f\n", r, us }' <<<"$out"
}
CONNECT_CYCLES=${BENCH_CONNECT_CYCLES:-2000}
declare -A CONN_RATE CONN_CPU
for ((i = 0; i < RUNS; i++)); do
  for lib in ours real; do
    if v=$(connect_run "$lib") && [[ -n $v ]]; then
      CONN_RATE[$lib]+="${v% *} "; CONN_CPU[$lib]+="${v#* } "
    fi
  done
done
for lib in ours real; do
  echo "  connect-$lib: ${CONN_RATE[$lib]:-}cycles/s; server CPU ${CONN_CPU[$lib]:-}us per connection"
  RES[conn-$lib]=$(printf '%s\n' ${CONN_RATE[$lib]:-} | median)
  us=$(printf '%s\n' ${CONN_CPU[$lib]:-} | median)
  RES[conncpu-$lib]=$([[ -n $us && $us != 0 ]] && awk -v u="$us" 'BEGIN { printf "%.0f", 1e6 / u }')
done
row "(f) connect + handshake + close (library)" cycles/s "${RES[conn-ours]:-}" "${RES[conn-real]:-}"
row "(f) connections per server CPU second (library)" conn/s "${RES[conncpu-ours]:-}" "${RES[conncpu-real]:-}"
# The server side: Debian's libnbd against our nbdkit and Debian's.
declare -A SCONN_RATE
for ((i = 0; i < RUNS; i++)); do
  for side in ours theirs; do
    nbdkit=$OUR_NBDKIT; [[ $side == theirs ]] && nbdkit=$DEBIAN_NBDKIT
    if v=$(connect_run real "$nbdkit") && [[ -n $v ]]; then SCONN_RATE[$side]+="${v% *} "; fi
  done
done
for side in ours theirs; do
  echo "  server $side: ${SCONN_RATE[$side]:-}cycles/s"
  RES[sconn-$side]=$(printf '%s\n' ${SCONN_RATE[$side]:-} | median)
done
row "(f) connect + handshake + close (server)" cycles/s "${RES[sconn-ours]:-}" "${RES[sconn-theirs]:-}"
fi # (f)

# ---------------------------------------------------------------- (h)
# bench/scale on Debian's libnbd: N connections, each with $AIO_DEPTH reads
# in flight, one poll loop; the program reads the server's CPU time and
# resident memory from /proc itself (the serving process: Debian's nbdkit's
# forked child, or ours, which serves in the process that runs --run).
scale_rows=()
if want h; then
echo "# (h) scale: N connections x $AIO_DEPTH 4 KiB random reads in flight, Debian's libnbd, memory 1G"
if build_c_real bench/scale.c "$TMP/scale" >"$TMP/cc-scale.log" 2>&1; then
  # scale_run NBDKIT N: prints "IOPS US_PER_REQ RSS_BASE RSS_IDLE RSS_BUSY".
  scale_run() {
    local out
    out=$(to "$1" -U - memory 1G --run \
      "$(real_env) $TMP/scale \"\$unixsocket\" $2 $AIO_DEPTH $AIO_OPS \$(pgrep -P \$PPID -x nbdkit || echo \$PPID)" 2>&1) ||
      { echo "  scale ($1, $2 connections) failed: $(tail -n 2 <<<"$out" | tr '\n' ' ')" >&2; return 1; }
    awk '/^RESULT/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
                     print v["iops"], v["srv_us_per_req"], v["rss_base_kib"], v["rss_idle_kib"], v["rss_busy_kib"] }' <<<"$out"
  }
  declare -A SC
  for n in ${BENCH_SCALE_CONNS:-1 4 16 64}; do
    for ((i = 0; i < RUNS; i++)); do
      for side in ours theirs; do
        nbdkit=$OUR_NBDKIT; [[ $side == theirs ]] && nbdkit=$DEBIAN_NBDKIT
        read -r iops us base idle busy < <(scale_run "$nbdkit" "$n") || continue
        [[ -n ${busy:-} ]] || continue
        SC[iops-$side-$n]+="$iops "; SC[us-$side-$n]+="$us "
        SC[idle-$side-$n]+="$(( (idle - base) / n )) "; SC[busy-$side-$n]+="$(( (busy - base) / n )) "
      done
    done
    for side in ours theirs; do
      echo "  $side, $n connections: ${SC[iops-$side-$n]:-}reads/s; server ${SC[us-$side-$n]:-}us/read;" \
        "RSS per connection idle ${SC[idle-$side-$n]:-}busy ${SC[busy-$side-$n]:-}KiB"
      for k in iops us idle busy; do
        SC[$k-$side-$n]=$(printf '%s\n' ${SC[$k-$side-$n]:-} | median)
      done
    done
    row "(h) $n x $AIO_DEPTH in flight (server)" reads/s "${SC[iops-ours-$n]:-}" "${SC[iops-theirs-$n]:-}"
    scale_rows+=("$(printf '%5s %14s %14s %10s %10s %10s %10s %10s %10s' "$n" \
      "${SC[iops-ours-$n]:-}" "${SC[iops-theirs-$n]:-}" "${SC[us-ours-$n]:-}" "${SC[us-theirs-$n]:-}" \
      "${SC[idle-ours-$n]:-}" "${SC[idle-theirs-$n]:-}" "${SC[busy-ours-$n]:-}" "${SC[busy-theirs-$n]:-}")")
  done
else
  echo "  cannot build bench/scale.c: $(tail -n 3 "$TMP/cc-scale.log")" >&2
fi
fi # (h)

echo
printf '%-46s %12s %12s %8s %s\n' "workload" "ours" "Debian's" "ratio" "unit"
printf '%s\n' "${rows[@]}"
echo "(ratio = ours / Debian's; higher is better)"
[[ -n ${limit_note:-} ]] && echo "$limit_note"
if [[ ${#scale_rows[@]} -gt 0 ]]; then
  echo
  echo "(h) scale, per number of connections (server CPU in us per read; resident memory per connection in KiB above the server's idle figure, lower is better):"
  printf '%5s %14s %14s %10s %10s %10s %10s %10s %10s\n' conns "reads/s ours" "Debian's" "us ours" "Debian's" \
    "idle ours" "Debian's" "busy ours" "Debian's"
  printf '%s\n' "${scale_rows[@]}"
fi

# ---------------------------------------------------------------- (r), (s)
# Their own scripts, with their own tables: costs per request, and file
# plugin reads per request size.
if want r; then
  echo
  echo "# (r) bench/request_costs.sh"
  OUR_NBDKIT=$OUR_NBDKIT bench/request_costs.sh "$OUR_NBDKIT" "$DEBIAN_NBDKIT"
fi
if want s; then
  echo
  echo "# (s) bench/file-reads.sh"
  OUR_NBDKIT=$OUR_NBDKIT BENCH_RUNS=$RUNS bench/file-reads.sh
fi
