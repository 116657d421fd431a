#!/bin/sh
# Runs fuzz targets for SECONDS each: fuzz/run.sh SECONDS [TARGET...]
# (default: every target). Used by `make fuzz` and `make fuzz-smoke`.
#
# New inputs go to fuzz/work/TARGET (not in git); the checked-in seeds in
# fuzz/corpus/TARGET are read, never written. A crash, a panic, an
# allocation over -malloc_limit_mb or an input running over -timeout
# stops the run with the reproducer in fuzz/artifacts/TARGET/ and a
# non-zero exit.
#
# Environment:
#   FUZZ_SANITIZER  none (default: coverage only, works on stable) or
#                   address (needs a nightly toolchain: FUZZ_TOOLCHAIN=+nightly)
#   FUZZ_TOOLCHAIN  e.g. +nightly
#   FUZZ_BUILD      --dev (default, a debug build with overflow checks);
#                   empty for an optimised build
#   FUZZ_FLAGS      extra libFuzzer flags
set -e
cd "$(dirname "$0")"
secs=${1:-60}
[ $# -gt 0 ] && shift
san=${FUZZ_SANITIZER:-none}
tc=${FUZZ_TOOLCHAIN:-}
build=${FUZZ_BUILD---dev}
# Our own target folder, whatever the caller's CARGO_TARGET_DIR.
export CARGO_TARGET_DIR="$PWD/target"
targets=${*:-$(cargo $tc fuzz list)}
cargo $tc fuzz build $build -s "$san"
for t in $targets; do
  mkdir -p "work/$t"
  log="work/$t.log"
  echo "fuzz: $t for ${secs}s"
  if ! cargo $tc fuzz run $build -s "$san" "$t" "work/$t" "corpus/$t" -- \
      -max_total_time="$secs" -dict=nbd.dict -timeout=30 \
      -malloc_limit_mb=256 -rss_limit_mb=1024 -print_final_stats=1 \
      $FUZZ_FLAGS >"$log" 2>&1; then
    # Without the input's Debug dump, which can be long.
    sed '/^Output of `std::fmt::Debug`:/,/^Reproduce with:/d' "$log" | grep -v '^ *[0-9]*: \|^ *at ' | tail -30 | cut -c1-2000
    echo "fuzz: $t FAILED (log: fuzz/$log, reproducer in fuzz/artifacts/$t/)" >&2
    exit 1
  fi
  grep -E '^stat::number_of_executed_units|^Done' "$log" | tr '\n' ' '
  echo
done
