#!/bin/bash
# Build the consumer projects of tests/consumers against the staged install
# ($STAGE, from `make stage`) the way their users would, and run each against
# the staged nbdkit:
#
#   autotools/    PKG_CHECK_MODULES([LIBNBD], [libnbd >= 1.24])
#   cmake/        pkg_check_modules(LIBNBD REQUIRED IMPORTED_TARGET libnbd>=1.24)
#   meson/        dependency('libnbd', version: '>= 1.24')
#   have-macros/  a plain Makefile; picks calls with LIBNBD_HAVE_* macros
#
# pkg-config sees only the stage (PKG_CONFIG_LIBDIR, with the sysroot
# mapping its prefix=/usr under $STAGE). That the system's libnbd-dev
# (Debian 12: 1.14) was not used is shown four ways: each project's compile
# line names the staged include directory; the three pkg-config projects
# refuse to build with Debian's libnbd.pc (they require >= 1.24) and with
# its header (main.c has an #error for headers without 1.24's calls); each
# program prints the file it loaded libnbd from, which must be the staged
# libnbd.so.0.0.0; and have-macros built with Debian's header picks the
# fallbacks where the staged header makes it pick the newer calls.
set -uo pipefail
source "$(dirname "$0")/../../scripts/testlib.sh"
make_tmpdir
unset LD_LIBRARY_PATH PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR PKG_CONFIG_LIBDIR

STAGED_NBDKIT=$STAGE/usr/sbin/nbdkit
require_file "$OUR_LIBDIR/pkgconfig/libnbd.pc" "staged libnbd.pc (make stage)" || script_exit
require_file "$STAGED_NBDKIT" "staged nbdkit (make stage)" || script_exit
want_so=$(our_so)

# The environment in which pkg-config finds the staged libnbd.pc only.
staged_pc_env=(env PKG_CONFIG_SYSROOT_DIR="$STAGE"
               PKG_CONFIG_LIBDIR="$OUR_LIBDIR/pkgconfig" PKG_CONFIG_PATH=)
# ... and Debian's only (for the builds that must fail, or fall back).
debian_pc_env=(env PKG_CONFIG_SYSROOT_DIR= PKG_CONFIG_LIBDIR="$REAL_PCDIR"
               PKG_CONFIG_PATH=)
have_debian_dev=false
[[ -f $REAL_PCDIR/libnbd.pc ]] && have_debian_dev=true

# Each project is built from a copy, since autoreconf writes into its
# source directory.
cp -r "$REPO/tests/consumers" "$TMP/src"

# run_consumer NAME BINARY LIBDIR WANT_SO: run BINARY under the staged
# nbdkit (memory 1M) with LIBDIR as the only extra library directory; it
# must report WANT_SO as the loaded libnbd and the export's size. The
# output is left in $TMP/NAME.out.
run_consumer() {
  local name=$1 bin=$2 libdir=$3 want=$4 out=$TMP/$1.out loaded
  # shellcheck disable=SC2016
  to "$STAGED_NBDKIT" -U - memory 1M --run \
    "env LD_LIBRARY_PATH=$libdir $bin \"nbd+unix:///?socket=\$unixsocket\"" >"$out" 2>&1
  local rc=$?
  loaded=$(sed -n 's/.*libnbd loaded from: //p' "$out")
  loaded=$(realpath "$loaded" 2>/dev/null)
  if [[ $rc -eq 0 && $loaded == "$want" ]] && has_line "$out" 'export size: 1048576'; then
    pass "$name runs: libnbd loaded from $loaded ($(sed -n 's/^libnbd version: //p' "$out")), export size read through it"
    return 0
  fi
  fail "$name runs with $want" "exit $rc, loaded from '${loaded:-?}'"
  indent "$out"
  return 1
}

# names_stage_include NAME LOG: the compile command in LOG names the
# staged include directory (as -I or, for CMake's imported targets,
# -isystem).
names_stage_include() {
  if grep -Eq -- "(-I|-isystem ?)$STAGE/usr/include" "$2"; then
    pass "$1 compiles with the staged include directory ($STAGE/usr/include)"
  else
    fail "$1 compiles with the staged include directory" "not in $2"
    show_tail "$2" 15
  fi
}

# refused_debian_pc NAME LOG: a configure step given Debian's libnbd.pc
# failed; it must be for its version (the log names it), not by accident.
refused_debian_pc() {
  local v
  v=$(real_pkg_config --modversion libnbd)
  if grep -qF "$v" "$2"; then
    pass "$1: configuring with Debian's libnbd.pc ($v) fails for its version: the staged one was used above"
  else
    fail "$1: configuring with Debian's libnbd.pc failed, but not for its version $v" "log:"
    show_tail "$2" 10
  fi
}

# ------------------------------------------------------------ autotools
if command -v autoreconf >/dev/null && command -v automake >/dev/null; then
  src=$TMP/src/autotools
  log=$TMP/autotools.log
  if (cd "$src" && autoreconf -fi && mkdir build && cd build &&
      "${staged_pc_env[@]}" ../configure && make V=1) >"$log" 2>&1; then
    pass "autotools: PKG_CHECK_MODULES([LIBNBD], [libnbd >= 1.24]) and make on the stage"
    names_stage_include autotools "$log"
    run_consumer autotools "$src/build/consumer" "$OUR_LIBDIR" "$want_so"
  else
    fail "autotools: configure and make on the stage" "log:"; show_tail "$log" 25
  fi
  if $have_debian_dev; then
    mkdir -p "$src/build-debian"
    if (cd "$src/build-debian" && "${debian_pc_env[@]}" ../configure) >"$TMP/autotools-debian.log" 2>&1; then
      fail "autotools: configure with Debian's libnbd.pc must fail (libnbd >= 1.24)"
    else
      refused_debian_pc autotools "$TMP/autotools-debian.log"
    fi
  fi
else
  skip "autotools consumer" "autoconf/automake not installed (scripts/install-test-deps.sh)"
fi

# ------------------------------------------------------------ CMake
if command -v cmake >/dev/null; then
  src=$TMP/src/cmake
  log=$TMP/cmake.log
  if "${staged_pc_env[@]}" cmake -S "$src" -B "$src/build" \
       -DCMAKE_EXPORT_COMPILE_COMMANDS=ON >"$log" 2>&1 &&
     cmake --build "$src/build" --verbose >>"$log" 2>&1; then
    pass "cmake: pkg_check_modules(... IMPORTED_TARGET libnbd>=1.24) and build on the stage"
    names_stage_include cmake "$src/build/compile_commands.json"
    # CMake links the imported target by full path and records its
    # directory as the build tree's RUNPATH: the program finds the staged
    # library with no LD_LIBRARY_PATH at all.
    runpath=$(readelf -d "$src/build/consumer" | sed -n 's/.*R\(UN\)\?PATH.*\[\(.*\)\]/\2/p')
    if [[ :$runpath: == *":$OUR_LIBDIR:"* ]]; then
      pass "cmake: the program's RUNPATH is the staged library directory ($runpath)"
    else
      fail "cmake: RUNPATH" "got '$runpath', want $OUR_LIBDIR"
    fi
    run_consumer cmake "$src/build/consumer" "" "$want_so"
  else
    fail "cmake: configure and build on the stage" "log:"; show_tail "$log" 25
  fi
  if $have_debian_dev; then
    if "${debian_pc_env[@]}" cmake -S "$src" -B "$src/build-debian" >"$TMP/cmake-debian.log" 2>&1; then
      fail "cmake: configuring with Debian's libnbd.pc must fail (libnbd>=1.24)"
    else
      refused_debian_pc cmake "$TMP/cmake-debian.log"
    fi
  fi
else
  skip "cmake consumer" "cmake not installed (scripts/install-test-deps.sh)"
fi

# ------------------------------------------------------------ meson
if command -v meson >/dev/null && command -v ninja >/dev/null; then
  src=$TMP/src/meson
  log=$TMP/meson.log
  if "${staged_pc_env[@]}" meson setup "$src/build" "$src" >"$log" 2>&1 &&
     ninja -C "$src/build" -v >>"$log" 2>&1; then
    pass "meson: dependency('libnbd', version: '>= 1.24') and ninja on the stage"
    names_stage_include meson "$log"
    run_consumer meson "$src/build/consumer" "$OUR_LIBDIR" "$want_so"
  else
    fail "meson: setup and build on the stage" "log:"; show_tail "$log" 25
  fi
  if $have_debian_dev; then
    if "${debian_pc_env[@]}" meson setup "$src/build-debian" "$src" >"$TMP/meson-debian.log" 2>&1; then
      fail "meson: setup with Debian's libnbd.pc must fail (>= 1.24)"
    else
      refused_debian_pc meson "$TMP/meson-debian.log"
    fi
  fi
else
  skip "meson consumer" "meson/ninja not installed (scripts/install-test-deps.sh)"
fi

# ------------------------------------------------------------ LIBNBD_HAVE_*
src=$TMP/src/have-macros
log=$TMP/have-macros.log
picks_new="nbd_get_handle_size nbd_is_uri nbd_stats_bytes_sent"
picks_old="sizeof-fallback prefix-test no-stats"
# picked NAME: the calls the run chose, in a fixed order.
picked() { sed -n 's/^picked: \([a-z_-]*\).*/\1/p' "$TMP/$1.out" | tr '\n' ' ' | sed 's/ $//'; }
if "${staged_pc_env[@]}" make -C "$src" CC="$CC" >"$log" 2>&1; then
  pass "have-macros: built with pkg-config on the stage"
  names_stage_include have-macros "$log"
  if run_consumer have-macros "$src/consumer" "$OUR_LIBDIR" "$want_so"; then
    got=$(picked have-macros)
    if [[ $got == "$picks_new" ]]; then
      pass "have-macros: the staged header's LIBNBD_HAVE_* macros pick $got"
    else
      fail "have-macros: picks with the staged header" "got '$got', want '$picks_new'"
    fi
  fi
else
  fail "have-macros: build on the stage" "log:"; show_tail "$log" 25
fi
# The same source with Debian 12's header and library: the macros of 1.14
# make it pick the fallbacks, so the choice really is made by the header.
if $have_debian_dev; then
  cp -r "$TMP/src/have-macros" "$TMP/src/have-macros-debian"
  rm -f "$TMP/src/have-macros-debian/consumer"
  if "${debian_pc_env[@]}" make -C "$TMP/src/have-macros-debian" CC="$CC" >"$TMP/have-macros-debian.log" 2>&1 &&
     run_consumer have-macros-debian "$TMP/src/have-macros-debian/consumer" "$REAL_LIBDIR" "$(real_so)"; then
    got=$(picked have-macros-debian)
    if [[ $got == "$picks_old" ]]; then
      pass "have-macros: with Debian's libnbd $(real_pkg_config --modversion libnbd) header the macros pick $got instead"
    else
      fail "have-macros: picks with Debian's header" "got '$got', want '$picks_old'"
    fi
  else
    fail "have-macros: build and run with Debian's libnbd" "see $TMP/have-macros-debian.log"
    show_tail "$TMP/have-macros-debian.log" 15
  fi
else
  skip "have-macros with Debian's header" "libnbd-dev not installed"
fi

script_exit
