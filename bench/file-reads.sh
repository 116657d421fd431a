#!/bin/bash
# File plugin reads, per request size: our nbdkit sending read data with
# sendfile(2) (NBDKIT_SENDFILE_MIN=1: at every size, whatever the
# threshold), our nbdkit copying it (NBDKIT_NO_SENDFILE=1), and Debian's
# nbdkit (which copies), each serving a file in the page cache over a
# Unix socket to Debian's nbdcopy (export -> null:, its default 4
# connections and 64 requests in flight each, --request-size=SIZE).
#
# For each (server, size): the median of $BENCH_RUNS runs of the copy's
# throughput, and the server's CPU time (user + system, all its threads,
# from /proc/PID/stat) per GiB sent. The time is measured inside --run,
# so server start-up is not counted. Results go to stdout only.
#
# Knobs: OUR_NBDKIT (default: the release build; set it to
# target/debug/nbdkit for a debug build), BENCH_RUNS (3),
# BENCH_FILE_SIZE (1G, the export), BENCH_SIZES ("4K 8K 16K 64K 1M 4M").
set -uo pipefail
REPO=${REPO:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$REPO" || exit 1
source scripts/testlib.sh
make_tmpdir
TEST_TIMEOUT=${BENCH_TIMEOUT:-600}

RUNS=${BENCH_RUNS:-3}
FILE_SIZE=${BENCH_FILE_SIZE:-1G}
SIZES=${BENCH_SIZES:-4K 8K 16K 64K 1M 4M}
TICK=$(getconf CLK_TCK)

for bin in "$OUR_NBDKIT" "$DEBIAN_NBDKIT"; do
  [[ -x $bin ]] || { echo "missing $bin" >&2; exit 1; }
done
command -v nbdcopy >/dev/null || { echo "missing nbdcopy (libnbd-bin)" >&2; exit 1; }

# A file on the disk's file system (not tmpfs), read once so that it is
# in the page cache.
file=$TMP/disk.img
head -c "$(numfmt --from=iec "$FILE_SIZE")" /dev/urandom >"$file" || exit 1
cat "$file" >/dev/null
bytes=$(stat -c %s "$file")

echo "# file plugin reads: $(nproc) cores, $RUNS runs each (median)"
echo "# our nbdkit: $OUR_NBDKIT"
echo "# Debian's:   $DEBIAN_NBDKIT $($DEBIAN_NBDKIT --version | head -n 1 | awk '{print $2}')"
echo "# export: $FILE_SIZE file, page cache warm; nbdcopy to null: per request size"

median() { sort -g | awk '{ a[NR] = $1 } END { if (NR) print a[int((NR + 1) / 2)] }'; }

# one_run NBDKIT ENV FILE REQUEST-SIZE: prints "SECONDS SERVER-CPU-SECONDS".
one_run() {
  local nbdkit=$1 env=$2 file=$3 rsize=$4 out
  # The server's utime and stime (fields 14 and 15 of /proc/PID/stat)
  # before and after the copy. $PPID inside --run is our nbdkit, the
  # server; Debian's nbdkit serves from a child of $PPID (the parent runs
  # the command), so the nbdkit children of $PPID are counted too.
  out=$(env $env timeout -k 5 "$TEST_TIMEOUT" "$nbdkit" -U - -r file "$file" --run "
    cpu() {
      t=0
      for p in \$PPID \$(cat /proc/\$PPID/task/*/children); do
        [ \"\$(cat /proc/\$p/comm 2>/dev/null)\" = nbdkit ] || continue
        t=\$((t + \$(awk '{ print \$14 + \$15 }' /proc/\$p/stat)))
      done
      echo \$t
    }
    c0=\$(cpu); s=\$(date +%s%N)
    nbdcopy --request-size=$rsize \"\$uri\" null: || exit 1
    e=\$(date +%s%N); c1=\$(cpu)
    echo BENCH \$((e - s)) \$((c1 - c0))" 2>"$TMP/err")
  if [[ $? -ne 0 ]]; then echo "  failed: $(tail -n 2 "$TMP/err" | tr '\n' ' ')" >&2; return 1; fi
  awk -v tick="$TICK" '$1 == "BENCH" { printf "%.6f %.4f\n", $2 / 1e9, $3 / tick }' <<<"$out"
}

printf '%-6s %-22s %10s %14s\n' size server "GB/s" "CPU s/GiB"
for size in $SIZES; do
  rsize=$(numfmt --from=iec "$size")
  for mode in sendfile copy debian; do
    nbdkit=$OUR_NBDKIT env=NBDKIT_SENDFILE_MIN=1
    case $mode in
      copy) env=NBDKIT_NO_SENDFILE=1 ;;
      debian) nbdkit=$DEBIAN_NBDKIT ;;
    esac
    : >"$TMP/runs"
    for ((i = 0; i < RUNS; i++)); do
      one_run "$nbdkit" "$env" "$file" "$rsize" >>"$TMP/runs" || continue
    done
    [[ -s $TMP/runs ]] || { printf '%-6s %-22s %10s\n' "$size" "$mode" failed; continue; }
    secs=$(awk '{ print $1 }' "$TMP/runs" | median)
    # CPU per GiB, from each run, then the median.
    cpu=$(awk -v b="$bytes" '{ print $2 / (b / 2^30) }' "$TMP/runs" | median)
    gbs=$(awk -v b="$bytes" -v s="$secs" 'BEGIN { printf "%.2f", b / s / 1e9 }')
    label=ours-sendfile; [[ $mode == copy ]] && label=ours-copy
    [[ $mode == debian ]] && label=debian-nbdkit
    printf '%-6s %-22s %10s %14.3f   (runs: %s)\n' "$size" "$label" "$gbs" "$cpu" \
      "$(awk '{ printf "%ss/%scpu ", $1, $2 }' "$TMP/runs")"
  done
done
