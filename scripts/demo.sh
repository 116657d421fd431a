#!/bin/bash
# The body of `make demo` (after the staged install): build demo/demo.c on
# our staged libnbd with pkg-config, and run it under our nbdkit.
set -euo pipefail
REPO=${REPO:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$REPO"
source scripts/testlib.sh

for f in "$OUR_NBDKIT" "$OUR_LIBDIR/libnbd.so.0.0.0"; do
  [[ -e $f ]] || { echo "demo: missing $f (the build failed?)" >&2; exit 1; }
done
mkdir -p build/demo
flags=$(staged_pkg_config --cflags --libs libnbd)
echo "+ $CC -o build/demo/demo demo/demo.c $flags"
# shellcheck disable=SC2086
"$CC" -Wall -Wextra -O2 -o build/demo/demo demo/demo.c $flags

echo "+ $OUR_NBDKIT -U - memory 1G --run './build/demo/demo \"\$unixsocket\"'"
echo
TEST_TIMEOUT=60 to "$OUR_NBDKIT" -U - memory 1G \
  --run "LD_LIBRARY_PATH=$OUR_LIBDIR EXPECT_LIBNBD=$(our_so) ./build/demo/demo \"\$unixsocket\""
