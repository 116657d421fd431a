#!/bin/bash
# Our nbdkit-plugin-dev headers (include/nbdkit-*.h, as staged by `make
# stage` with nbdkit.pc) against nbdkit 1.32.5's binary interface:
#   1. layout.c prints every struct size, field offset and constant of
#      the interface; built with our headers and with Debian's
#      (nbdkit-plugin-dev), the outputs must be equal (plugin API 1 and 2,
#      filter);
#   2. tiny-plugin.c and tiny-filter.c, built with our headers the way
#      plugin authors build (pkg-config nbdkit), load into Debian's nbdkit
#      and serve: the plugin's size and bytes, the filter's halved size.
set -uo pipefail
source "$(dirname "$0")/../../scripts/testlib.sh"
make_tmpdir
unset LD_LIBRARY_PATH
here=$REPO/tests/plugin-headers
ours=$STAGE/usr/include

require_file "$ours/nbdkit-plugin.h" "staged nbdkit-plugin.h (make stage)" || script_exit
pc_ours() {
  PKG_CONFIG_SYSROOT_DIR=$STAGE PKG_CONFIG_LIBDIR=$OUR_LIBDIR/pkgconfig PKG_CONFIG_PATH= \
    pkg-config "$@"
}

# ------------------------------------------------------------ 1. layout
if [[ -f /usr/include/nbdkit-plugin.h ]]; then
  for variant in "-DNBDKIT_API_VERSION=1" "-DNBDKIT_API_VERSION=2" "-DLAYOUT_FILTER"; do
    ok=true
    for side in ours debian; do
      inc=()
      [[ $side == ours ]] && inc=(-I"$ours")
      # -MD lists the headers used: ours must come from the stage.
      if ! "$CC" -Wall -Werror "${inc[@]}" "$variant" -MD -MF "$TMP/dep-$side" \
             -o "$TMP/layout-$side" "$here/layout.c" >"$TMP/cc-$side.log" 2>&1 ||
         ! "$TMP/layout-$side" >"$TMP/layout-$side.txt"; then
        fail "layout.c $variant with the $side headers" "$(head -c 400 "$TMP/cc-$side.log")"
        ok=false
      fi
    done
    $ok || continue
    if grep -Eq "(^| )/usr/include/nbdkit-" "$TMP/dep-ours"; then
      fail "layout.c $variant: our build used Debian's headers"
    elif diff -u "$TMP/layout-debian.txt" "$TMP/layout-ours.txt" >"$TMP/diff" ; then
      pass "layout $variant: $(grep -c . "$TMP/layout-ours.txt") sizes, offsets and constants equal to nbdkit 1.32.5's"
    else
      fail "layout $variant differs from nbdkit 1.32.5's" "diff:"; indent "$TMP/diff" | head -20
    fi
  done
else
  skip "layout against nbdkit 1.32.5's headers" "nbdkit-plugin-dev not installed"
fi

# ------------------------------------------------------------ 2. load
cflags=$(pc_ours --cflags nbdkit) || { fail "pkg-config nbdkit on the stage"; script_exit; }
[[ $cflags == *"-I$STAGE/usr/include"* ]] && pass "pkg-config --cflags nbdkit on the stage: $cflags" ||
  fail "pkg-config --cflags nbdkit" "got '$cflags'"
for what in plugin filter; do
  # shellcheck disable=SC2086
  if "$CC" -std=c99 -Wall -Wextra -Werror -fPIC -shared $cflags -MD -MF "$TMP/dep-$what" \
       -o "$TMP/tiny-$what.so" "$here/tiny-$what.c" >"$TMP/cc-$what.log" 2>&1 &&
     ! grep -Eq "(^| )/usr/include/nbdkit-" "$TMP/dep-$what"; then
    pass "tiny-$what.c builds with our headers only"
  else
    fail "tiny-$what.c with our headers" "$(head -c 400 "$TMP/cc-$what.log")"
  fi
done

if [[ ! -x $DEBIAN_NBDKIT ]] || ! command -v nbdinfo >/dev/null; then
  skip "loading into Debian's nbdkit" "nbdkit or nbdinfo not installed"; script_exit
fi
if [[ -f $TMP/tiny-plugin.so ]]; then
  # The plugin's bytes are their offset & 0xff: compare the export with that.
  python3 -c 'import sys; sys.stdout.buffer.write(bytes(i & 0xff for i in range(65536)))' >"$TMP/want"
  # shellcheck disable=SC2016
  out=$(to "$DEBIAN_NBDKIT" -U - "$TMP/tiny-plugin.so" 64K --run \
    'nbdinfo --size "$uri" && nbdcopy "$uri" '"$TMP/got" 2>&1)
  if [[ $out == 65536 ]] && cmp -s "$TMP/want" "$TMP/got"; then
    pass "Debian's nbdkit loads tiny-plugin.so (API 2, magic size=64K): size and every byte as written"
  else
    fail "Debian's nbdkit with tiny-plugin.so" "output: $out"
  fi
fi
if [[ -f $TMP/tiny-filter.so ]]; then
  # shellcheck disable=SC2016
  out=$(to "$DEBIAN_NBDKIT" -U - --filter="$TMP/tiny-filter.so" memory 1M --run \
    'nbdinfo --size "$uri"' 2>&1)
  if [[ $out == 524288 ]]; then
    pass "Debian's nbdkit loads tiny-filter.so (struct and version accepted): memory 1M shown as 512K"
  else
    fail "Debian's nbdkit with tiny-filter.so" "output: $out"
  fi
fi
script_exit
