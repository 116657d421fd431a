#!/bin/bash
# request_costs.sh: what one request costs an NBD server, per request:
# system calls and futex calls (strace -f -c of the server), context
# switches and CPU time (perf stat on the server), for each nbdkit named.
#
#   bench/request_costs.sh [NBDKIT...]
#
# Default servers: our $OUR_NBDKIT (target/debug/nbdkit unless set) and
# Debian's /usr/bin/nbdkit. The client is bench/aioread built on Debian's
# libnbd: COSTS_OPS (100000) random 4 KiB reads, COSTS_DEPTH (64) in
# flight, over a Unix socket, from an export made of COSTS_PLUGIN
# ("memory 1G"). Each figure is one run's total divided by COSTS_OPS; the
# server's start-up and the one connection's handshake are included and
# are a few hundred system calls in all, under 0.01 per request.
#
# strace slows every system call down, so the strace run and the perf run
# are separate runs. perf needs perf_event_paranoid <= 1 (or root); without
# perf that column says "-". Results go to stdout only.
set -uo pipefail
REPO=${REPO:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$REPO" || exit 1
: "${OUR_NBDKIT:=$REPO/target/debug/nbdkit}"
source scripts/testlib.sh
make_tmpdir
unset LD_LIBRARY_PATH EXPECT_LIBNBD

OPS=${COSTS_OPS:-100000}
DEPTH=${COSTS_DEPTH:-64}
read -r -a PLUGIN <<<"${COSTS_PLUGIN:-memory 1G}"
SERVERS=("$@")
[[ ${#SERVERS[@]} -gt 0 ]] || SERVERS=("$OUR_NBDKIT" "$DEBIAN_NBDKIT")

command -v strace >/dev/null || { echo "strace is missing (apt-get install strace)" >&2; exit 1; }
build_c_real bench/aioread.c "$TMP/aioread" >"$TMP/cc.log" 2>&1 ||
  { echo "cannot build bench/aioread.c: $(tail -n 3 "$TMP/cc.log")" >&2; exit 1; }
have_perf=
perf stat -e context-switches true >/dev/null 2>&1 && have_perf=1

# Starts server $1 (wrapped by the rest of the words in WRAP) on socket
# $TMP/sock; sets SRV_PID (the wrapper's when wrapped) and NBDKIT_PID.
start() {
  local bin=$1
  rm -f "$TMP/sock"
  "${WRAP[@]}" "$bin" -f -U "$TMP/sock" "${PLUGIN[@]}" &
  SRV_PID=$!
  BG_PIDS+=("$SRV_PID")
  for _ in $(seq 1 500); do [[ -S $TMP/sock ]] && break; sleep 0.02; done
  [[ -S $TMP/sock ]] || { echo "$bin did not start" >&2; return 1; }
  NBDKIT_PID=$SRV_PID
  if [[ ${#WRAP[@]} -gt 0 ]]; then NBDKIT_PID=$(pgrep -P "$SRV_PID" | head -n 1); fi
}

# Ends the server started last and waits for it (and its wrapper).
stop() {
  kill -TERM "$NBDKIT_PID" 2>/dev/null
  wait "$SRV_PID" 2>/dev/null
}

client() { to env -u EXPECT_LIBNBD LD_LIBRARY_PATH="$REAL_LIBDIR" "$TMP/aioread" "$TMP/sock" "$DEPTH" "$OPS"; }

per_op() { awk -v a="$1" -v n="$OPS" 'BEGIN { printf "%.2f", a / n }'; }

echo "# request_costs: $OPS random 4 KiB reads, $DEPTH in flight, export: ${PLUGIN[*]}, $(nproc) cores"
printf '%-44s %9s %9s %9s %9s %9s %9s %10s\n' server syscalls futex read+recv write+send ctxsw cpu_us iops
for bin in "${SERVERS[@]}"; do
  # System calls, under strace.
  WRAP=(strace -f -c -o "$TMP/strace.out")
  start "$bin" || continue
  client >/dev/null || echo "  client failed on $bin (strace run)" >&2
  stop
  # strace -c rows: % time, seconds, usecs/call, calls, [errors,] name.
  total=$(awk '$NF == "total" { print $4 }' "$TMP/strace.out")
  count() { awk -v re="$1" '$NF ~ re && $NF != "total" { s += $4 } END { print s + 0 }' "$TMP/strace.out"; }
  futex=$(count '^futex$')
  reads=$(count '^(read|readv|recvfrom|recvmsg)$')
  writes=$(count '^(write|writev|sendto|sendmsg)$')

  # Context switches and CPU, under perf, without strace.
  WRAP=()
  start "$bin" || continue
  if [[ -n $have_perf ]]; then
    to perf stat -x, -o "$TMP/perf.out" -e context-switches,task-clock -p "$NBDKIT_PID" -- \
      env -u EXPECT_LIBNBD LD_LIBRARY_PATH="$REAL_LIBDIR" "$TMP/aioread" "$TMP/sock" "$DEPTH" "$OPS" \
      >"$TMP/client.out" 2>&1 || echo "  client failed on $bin (perf run)" >&2
    cs=$(awk -F, '$3 == "context-switches" { print $1 }' "$TMP/perf.out")
    ms=$(awk -F, '$3 == "task-clock" { print $1 }' "$TMP/perf.out")
    result=$(grep '^RESULT' "$TMP/client.out")
    ctx=$(per_op "$cs")
    cpu=$(awk -v m="$ms" -v n="$OPS" 'BEGIN { printf "%.2f", m * 1000 / n }')
  else
    result=$(client | grep '^RESULT')
    ctx=- cpu=-
  fi
  stop
  iops=$(sed -n 's/.*iops=\([0-9]*\).*/\1/p' <<<"$result")
  printf '%-44s %9s %9s %9s %9s %9s %9s %10s\n' "$bin" "$(per_op "$total")" "$(per_op "$futex")" \
    "$(per_op "$reads")" "$(per_op "$writes")" "$ctx" "$cpu" "${iops:--}"
done
