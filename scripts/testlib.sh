# Shared shell helpers for scripts/check.sh, tests/interop/*.sh, bench/run.sh
# and scripts/demo.sh.  Source it; it sets defaults for the locations of our
# build (the Makefile passes the same variables explicitly):
#   REPO           repository root
#   OUR_NBDKIT     our nbdkit binary        ($CARGO_TARGET_DIR/release/nbdkit)
#   STAGE          staged install root      (build/stage, PREFIX=/usr inside)
#   OUR_LIBDIR     staged library dir       ($STAGE/usr/lib)
#   TESTC_BIN      tests-c built against our staged libnbd (build/tests-c)
#   DEBIAN_NBDKIT  Debian's nbdkit          (/usr/bin/nbdkit)
#   TEST_TIMEOUT   seconds allowed for one server/client run (120)

: "${REPO:=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
: "${CARGO_TARGET_DIR:=$REPO/target}"
: "${OUR_NBDKIT:=$CARGO_TARGET_DIR/release/nbdkit}"
: "${STAGE:=$REPO/build/stage}"
: "${OUR_LIBDIR:=$STAGE/usr/lib}"
: "${TESTC_BIN:=$REPO/build/tests-c}"
: "${DEBIAN_NBDKIT:=/usr/bin/nbdkit}"
: "${TEST_TIMEOUT:=120}"
: "${CC:=cc}"
# Debian's own libnbd, for the "real libnbd" side of comparisons.
REAL_LIBDIR=/usr/lib/x86_64-linux-gnu
REAL_PCDIR=$REAL_LIBDIR/pkgconfig
# Flags every C test is built with (the compile check).
TEST_CFLAGS=(-std=c99 -Wall -Wextra -Werror -g -O2 -pthread)

n_pass=0 n_fail=0 n_skip=0
pass() { echo "PASS: $1"; n_pass=$((n_pass + 1)); }
fail() { echo "FAIL: $1${2:+ ($2)}"; n_fail=$((n_fail + 1)); }
skip() { echo "SKIP: $1 (${2:?a skip must say why})"; n_skip=$((n_skip + 1)); }
# For scripts whose lines are counted by check.sh: a comment-style total.
script_summary() { echo "# $(basename "$0"): $n_pass passed, $n_fail failed, $n_skip skipped"; }
script_exit() { script_summary; [[ $n_fail -eq 0 ]]; exit $?; }

# Run with a time limit; KILL 5 s after TERM if it does not stop.
to() { timeout -k 5 "$TEST_TIMEOUT" "$@"; }

# Private temporary directory, removed (and our background processes
# killed, by pid) on exit.
BG_PIDS=()
TMP=
_testlib_cleanup() {
  local p
  for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${BG_PIDS[@]}"; do wait "$p" 2>/dev/null; done
  [[ -n $TMP && -d $TMP ]] && rm -rf "$TMP"
}
make_tmpdir() {
  TMP=$(mktemp -d "${TMPDIR:-/tmp}/nbdtest.XXXXXX")
  trap _testlib_cleanup EXIT
  trap 'exit 130' INT TERM
}

# Indent a file/stdin for quoting logs under a FAIL line.
indent() { sed -e 's/^/    | /' "$@"; }
# has_line FILE TEXT: a line of FILE is TEXT, or ends with it. A test
# program and the nbdkit that runs it (--run) write to the same log, and
# nbdkit may write a message in pieces, so a line of the program's can
# follow a piece of one of nbdkit's on the same line.
has_line() { awk -v t="$2" 'length($0) >= length(t) && substr($0, length($0) - length(t) + 1) == t { f = 1 } END { exit !f }' "$1"; }
show_tail() { tail -n "${2:-30}" "$1" | indent; }

# pkg-config on the staged install, through pkg-config's sysroot handling:
# the .pc says prefix=/usr, and PKG_CONFIG_SYSROOT_DIR maps it under $STAGE.
# PKG_CONFIG_LIBDIR (not _PATH) so Debian's libnbd.pc can never be found.
staged_pkg_config() {
  PKG_CONFIG_SYSROOT_DIR=$STAGE PKG_CONFIG_LIBDIR=$OUR_LIBDIR/pkgconfig \
    PKG_CONFIG_PATH= pkg-config "$@"
}
# pkg-config for Debian's libnbd only (ignores any libnbd installed under
# /usr/local).
real_pkg_config() {
  PKG_CONFIG_SYSROOT_DIR= PKG_CONFIG_LIBDIR=$REAL_PCDIR PKG_CONFIG_PATH= \
    pkg-config "$@"
}

our_so() { realpath "$OUR_LIBDIR/libnbd.so.0.0.0" 2>/dev/null; }
real_so() { realpath "$REAL_LIBDIR/libnbd.so.0"; }

# Build a C source against our staged libnbd the way users do:
#   cc prog.c $(pkg-config --cflags --libs libnbd)
# and insist that the flags point into the stage.  Prints the compile line.
build_c_ours() {
  local src=$1 out=$2 flags
  flags=$(staged_pkg_config --cflags --libs libnbd) || return 1
  case $flags in
    *"-I$STAGE/"*"-L$STAGE/"*) ;;
    *) echo "pkg-config flags do not point into the stage: $flags"; return 1 ;;
  esac
  echo "$CC ${TEST_CFLAGS[*]} -I$REPO/tests-c -o $out $src $flags"
  # shellcheck disable=SC2086
  "$CC" "${TEST_CFLAGS[@]}" -I"$REPO/tests-c" -o "$out" "$src" $flags
}
build_c_real() {
  local src=$1 out=$2 flags
  flags=$(real_pkg_config --cflags --libs libnbd) || return 1
  echo "$CC ${TEST_CFLAGS[*]} -I$REPO/tests-c -o $out $src $flags"
  # shellcheck disable=SC2086
  "$CC" "${TEST_CFLAGS[@]}" -I"$REPO/tests-c" -o "$out" "$src" $flags
}

# Environment prefix to run a program on our staged libnbd (proved by the
# program itself through EXPECT_LIBNBD) or on Debian's.
ours_env() { echo "env LD_LIBRARY_PATH=$OUR_LIBDIR EXPECT_LIBNBD=$(our_so)"; }
real_env() { echo "env -u EXPECT_LIBNBD LD_LIBRARY_PATH=$REAL_LIBDIR"; }

# require_file PATH WHAT: fail clearly (and return 1) when a build artefact
# is missing, instead of letting a later step hang or mislead.
require_file() {
  if [[ ! -e $1 ]]; then
    fail "$2" "missing $1 (not built? run make / make stage)"
    return 1
  fi
}

# Wait up to $2 seconds (default 20) for a Unix socket to appear.
wait_for_socket() {
  local s=$1 n=$(( ${2:-20} * 10 ))
  while (( n-- > 0 )); do
    [[ -S $s ]] && return 0
    sleep 0.1
  done
  return 1
}

# Wait for something to listen on a TCP port (without connecting to it:
# some servers serve exactly one connection).
wait_for_port() {
  local hex n=$(( ${2:-20} * 10 ))
  hex=$(printf ':%04X' "$1")
  while (( n-- > 0 )); do
    awk -v p="$hex" '$4 == "0A" && substr($2, length($2) - 4) == p { f = 1 } END { exit !f }' \
      /proc/net/tcp /proc/net/tcp6 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# A free TCP port on 127.0.0.1 (racy but good enough for tests).
free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
