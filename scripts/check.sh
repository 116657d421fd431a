#!/bin/bash
# The body of `make check`.  Prints one PASS/FAIL/SKIP line per test and, at
# the end, "N passed, N failed, N skipped"; exits non-zero if anything failed.
#
#  1. test dependencies (scripts/install-test-deps.sh)
#  2. cargo test --workspace --release
#  3. staged install (make stage: PREFIX=/usr DESTDIR=build/stage) and checks
#     of what was installed (layout, manual pages, pkg-config, exported
#     symbols)
#  4. tests-c: compile checks, then every test run with our libnbd and with
#     Debian's, each against our nbdkit and Debian's (our libnbd proves it
#     was loaded through EXPECT_LIBNBD; see tests-c/testlib.h)
#  4b. tests/consumers/run.sh: autoconf, CMake, meson projects on the stage;
#      tests/completion/run.sh: the installed bash completion for nbdkit;
#      tests/plugin-headers/run.sh: our nbdkit-plugin.h/-filter.h against
#      nbdkit 1.32.5's layout, and plugins built with them in Debian's nbdkit;
#      tests/conventions/run.sh: --version and --help formats
#  5. tests/interop/*.sh
#  6. tests/soak/run.sh for CHECK_SOAK_SECONDS (60) per pairing of our
#     libnbd/nbdkit with Debian's, plain and TLS, on the release build
#  7. make fuzz-smoke: every fuzz target for FUZZ_SMOKE_SECONDS (5)
#     (CHECK_FUZZ=0 skips it)
set -uo pipefail
REPO=${REPO:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$REPO" || exit 1
# shellcheck source=scripts/testlib.sh
source scripts/testlib.sh
MAKE=${MAKE:-make}
CARGO=${CARGO:-cargo}
LOGS=$REPO/build/check
rm -rf "$LOGS"; mkdir -p "$LOGS"
REAL_BIN=$REPO/build/tests-c-real
export TEST_TIMEOUT

section() { echo; echo "=== $*"; }

# ------------------------------------------------------------------ 1. deps
section "test dependencies"
if scripts/install-test-deps.sh >"$LOGS/deps.log" 2>&1; then
  pass "test dependencies present"
else
  fail "test dependencies" "see $LOGS/deps.log"; show_tail "$LOGS/deps.log" 10
fi

# ------------------------------------------------------------------ 2. cargo
section "cargo test --workspace --release"
if ! command -v "$CARGO" >/dev/null; then
  fail "cargo test --workspace --release" "cargo not found in PATH"
# The header drift test must not skip for want of cbindgen here:
# install-test-deps.sh installed the pinned version. The shared-library
# test links the staticlib, which `cargo test` does not rebuild: build
# first, and require it.
elif timeout -k 10 3000 "$CARGO" build --workspace --release >"$LOGS/cargo-build.log" 2>&1 &&
     NBD_CAPI_REQUIRE_CBINDGEN=1 NBD_CAPI_REQUIRE_STATICLIB=1 \
       timeout -k 10 3000 "$CARGO" test --workspace --release \
       >"$LOGS/cargo-test.log" 2>&1; then
  grep -E '^test result:' "$LOGS/cargo-test.log" | awk '
    { p += $4; f += $6 } END { printf "    cargo: %d passed, %d failed (%d test binaries)\n", p, f, NR }'
  pass "cargo test --workspace --release"
else
  fail "cargo test --workspace --release" "see $LOGS/cargo-build.log and $LOGS/cargo-test.log"
  show_tail "$LOGS/cargo-test.log" 40
fi

# ------------------------------------------------------------------ 3. stage
section "build and staged install"
staged=false
if "$MAKE" --no-print-directory stage >"$LOGS/stage.log" 2>&1; then
  pass "make stage (release build, libnbd.so.0 link, install DESTDIR=build/stage PREFIX=/usr)"
  staged=true
else
  fail "make stage" "see $LOGS/stage.log"; show_tail "$LOGS/stage.log" 40
fi

if $staged; then
  # Layout.
  missing=()
  for f in usr/lib/libnbd.so.0.0.0 usr/lib/libnbd.so.0 usr/lib/libnbd.so \
           usr/lib/libnbd.a usr/include/libnbd.h usr/lib/pkgconfig/libnbd.pc \
           usr/sbin/nbdkit usr/include/nbdkit-plugin.h usr/include/nbdkit-filter.h \
           usr/lib/pkgconfig/nbdkit.pc usr/share/bash-completion/completions/nbdkit; do
    [[ -e $STAGE/$f ]] || missing+=("$f")
  done
  [[ $(readlink "$STAGE/usr/lib/libnbd.so.0") == libnbd.so.0.0.0 ]] ||
    missing+=("libnbd.so.0 -> libnbd.so.0.0.0")
  [[ $(readlink "$STAGE/usr/lib/libnbd.so") == libnbd.so.0 ]] ||
    missing+=("libnbd.so -> libnbd.so.0")
  if [[ ${#missing[@]} -eq 0 ]]; then pass "staged install layout"
  else fail "staged install layout" "missing: ${missing[*]}"; fi

  # Manual pages: all there and rendered by man without a warning.
  if scripts/check-man.sh "$STAGE/usr/share/man" >"$LOGS/man.log" 2>&1; then
    pass "manual pages: $(tail -1 "$LOGS/man.log"), no man --warnings output"
  else
    fail "manual pages" "see $LOGS/man.log"; show_tail "$LOGS/man.log" 20
  fi
  # libnbd(3)'s example program compiles against the staged header.
  example=$LOGS/libnbd-3-example.c
  sed -n '/^=head1 EXAMPLE/,/^=head1 /{/^ /s/^ //p;/^$/p}' man/libnbd.3.pod >"$example"
  if grep -q 'main (int argc' "$example" &&
     ${CC:-cc} -std=c11 -Wall -Werror -fsyntax-only -I"$STAGE/usr/include" "$example" \
       >"$LOGS/libnbd-3-example.log" 2>&1; then
    pass "the example program of libnbd(3) compiles against the staged libnbd.h"
  else
    fail "the example program of libnbd(3)" "see $example and $LOGS/libnbd-3-example.log"
  fi

  # pkg-config.
  pcver=$(staged_pkg_config --modversion libnbd 2>&1)
  pcout=$(staged_pkg_config --cflags --libs libnbd 2>&1)
  pcstatic=$(staged_pkg_config --static --libs libnbd 2>&1)
  if [[ $pcout == *"-I$STAGE/usr/include"*"-L$STAGE/usr/lib -lnbd"* &&
        $pcstatic == *-lpthread* && -n $pcver ]]; then
    pass "pkg-config libnbd on the stage (sysroot): version $pcver, $pcout"
  else
    fail "pkg-config libnbd on the stage" "got: $pcver / $pcout / static: $pcstatic"
  fi

  # The staged library is our Rust build: the tests below prove which file
  # was loaded by its path, so make sure that path holds ours (Rust's
  # standard library carries the string RUST_BACKTRACE; the C libnbd
  # cannot).
  so=$STAGE/usr/lib/libnbd.so.0.0.0
  if grep -qa RUST_BACKTRACE "$so"; then
    pass "the staged libnbd.so.0 is our Rust build"
  else
    fail "the staged libnbd.so.0 is our Rust build" "$so lacks Rust's runtime"
  fi

  # The shared library: right SONAME, and it exports nbd_* symbols only,
  # each bound to a LIBNBD_1.x version node.
  soname=$(objdump -p "$so" | awk '$1 == "SONAME" { print $2 }')
  # Defined dynamic symbols, less the version nodes themselves (*ABS*).
  defined=$(objdump -T "$so" | awk 'index($0, "*UND*") == 0 && NF >= 6 &&
              $1 ~ /^[0-9a-f]+$/ && !($NF == $(NF-1)) { print $(NF-1) " " $NF }')
  bad=$(echo "$defined" | awk 'NF && ($2 !~ /^nbd_/ || $1 !~ /^LIBNBD_1\.[0-9]+$/)')
  nexp=$(echo "$defined" | awk '$2 ~ /^nbd_/' | wc -l)
  if [[ $soname == libnbd.so.0 && -z $bad && $nexp -gt 0 ]]; then
    pass "libnbd.so.0: SONAME libnbd.so.0, $nexp nbd_* symbols, all versioned LIBNBD_1.x, nothing else exported"
  else
    fail "libnbd.so.0 exports" "SONAME=$soname, $nexp nbd_* symbols; unexpected: $(echo "$bad" | head -5 | tr '\n' ';')"
  fi
  # Informational: coverage of libnbd 1.14's and 1.24's symbol lists,
  # when we have them.
  have=$(objdump -T "$so" | awk '$4 != "*UND*" && $NF ~ /^nbd_/ { print $NF "\t" $(NF-1) }' | sort)
  for v in 1.14 1.24; do
    ref=$REPO/../shared/reference/libnbd-$v-symbols.tsv
    [[ -f $ref ]] || continue
    want=$(grep -v '^#' "$ref" | sort)
    echo "    ABI coverage (information, not a test): $(comm -12 <(echo "$want") <(echo "$have") | grep -c .) of $(echo "$want" | grep -c .) libnbd $v symbols at their version node"
  done
fi

# run_script_test SCRIPT [LIMIT]: run a test script that prints PASS/FAIL/SKIP
# lines, count them, and fail if it died without saying why (or ran over
# LIMIT seconds, default 1200).
run_script_test() {
  local s=$1 limit=${2:-1200} log rc
  log=$LOGS/$(basename "$(dirname "$s")")-$(basename "$s" .sh).log
  echo "--- $s"
  TEST_TIMEOUT=$TEST_TIMEOUT timeout -k 10 "$limit" bash "$s" >"$log" 2>&1
  rc=$?
  cat "$log"
  n_pass=$((n_pass + $(grep -c '^PASS: ' "$log")))
  n_fail=$((n_fail + $(grep -c '^FAIL: ' "$log")))
  n_skip=$((n_skip + $(grep -c '^SKIP: ' "$log")))
  if [[ $rc -ne 0 ]] && ! grep -q '^FAIL: ' "$log"; then
    fail "$s" "exit $rc without a FAIL line (timed out or crashed?); log $log"
  fi
}

# Consumer projects (autoconf/automake, CMake, meson, LIBNBD_HAVE_*) built
# against the staged install only, and run.
section "consumer projects on the staged install"
if $staged; then
  run_script_test tests/consumers/run.sh
  run_script_test tests/completion/run.sh
  run_script_test tests/plugin-headers/run.sh
  run_script_test tests/conventions/run.sh
else
  skip "tests/consumers/run.sh" "no staged install: the build failed"
  skip "tests/completion/run.sh" "no staged install: the build failed"
  skip "tests/plugin-headers/run.sh" "no staged install: the build failed"
  skip "tests/conventions/run.sh" "no staged install: the build failed"
fi

# ------------------------------------------------------------------ 4. tests-c
section "tests-c: compile"
# Never run a binary left over from an earlier build.
rm -rf "$TESTC_BIN" "$REAL_BIN"
mkdir -p "$TESTC_BIN" "$REAL_BIN"
tests=()
for src in tests-c/*.c; do tests+=("$(basename "$src" .c)"); done

declare -A built_ours built_real
for t in "${tests[@]}"; do
  if $staged; then
    if build_c_ours "tests-c/$t.c" "$TESTC_BIN/$t" >"$LOGS/cc-ours-$t.log" 2>&1; then
      pass "compile tests-c/$t.c on our libnbd (${TEST_CFLAGS[*]}, pkg-config)"
      built_ours[$t]=1
    else
      fail "compile tests-c/$t.c on our libnbd" "see $LOGS/cc-ours-$t.log"
      show_tail "$LOGS/cc-ours-$t.log" 20
    fi
  else
    skip "compile tests-c/$t.c on our libnbd" "no staged install: the build failed"
  fi
  if build_c_real "tests-c/$t.c" "$REAL_BIN/$t" >"$LOGS/cc-real-$t.log" 2>&1; then
    built_real[$t]=1
  else
    fail "compile tests-c/$t.c on Debian's libnbd (reference)" "see $LOGS/cc-real-$t.log"
    show_tail "$LOGS/cc-real-$t.log" 20
  fi
done

cxx=${CXX:-c++}
if $staged; then
  # shellcheck disable=SC2046
  if "$cxx" -Wall -Wextra -Werror -o "$TESTC_BIN/header-cxx" tests-c/header-cxx.cc \
       $(staged_pkg_config --cflags --libs libnbd) >"$LOGS/cxx.log" 2>&1; then
    pass "our libnbd.h compiles as C++ ($cxx -Wall -Wextra -Werror)"
  else
    fail "our libnbd.h as C++" "see $LOGS/cxx.log"; show_tail "$LOGS/cxx.log" 20
  fi
  # Static linking with libnbd.a and pkg-config --static: the program then
  # carries the library itself, so it must find nbd_create in its own file.
  if [[ ${built_ours[rw-pattern]:-} ]]; then
    libs=$(staged_pkg_config --static --libs libnbd)
    libs=${libs/-lnbd/$OUR_LIBDIR/libnbd.a}
    # shellcheck disable=SC2086
    if "$CC" "${TEST_CFLAGS[@]}" -o "$TESTC_BIN/rw-pattern-static" tests-c/rw-pattern.c \
         $(staged_pkg_config --cflags libnbd) $libs >"$LOGS/static.log" 2>&1; then
      out=$(to "$DEBIAN_NBDKIT" -U - memory 64M --run \
        "env EXPECT_LIBNBD=$TESTC_BIN/rw-pattern-static $TESTC_BIN/rw-pattern-static \"\$unixsocket\"" 2>&1)
      rc=$?
      if [[ $rc -eq 0 && $out == *"TEST-OK rw-pattern"* ]]; then
        pass "static link with libnbd.a + pkg-config --static, rw-pattern on Debian's nbdkit"
      else
        fail "static rw-pattern" "exit $rc"; echo "$out" | tail -n 20 | indent
      fi
    else
      fail "static link with libnbd.a" "see $LOGS/static.log"; show_tail "$LOGS/static.log" 20
    fi
  fi
fi
if "$cxx" -Wall -Wextra -Werror -o "$REAL_BIN/header-cxx" tests-c/header-cxx.cc \
     $(real_pkg_config --cflags --libs libnbd) >"$LOGS/cxx-real.log" 2>&1; then :; else
  fail "tests-c/header-cxx.cc on Debian's libnbd.h (reference)" "see $LOGS/cxx-real.log"
fi

# nbdkit_args TEST SERVER: the server arguments from the "nbdkit-args:"
# line of the source, or for Debian's nbdkit its "nbdkit-args-debian:" line
# if it has one (filters ours lacks).
nbdkit_args() {
  local t=$1 server=$2 a
  a=$(sed -n 's|.*nbdkit-args: *\(.*\)$|\1|p' "tests-c/$t.c" | head -n 1)
  if [[ $server == debian ]] && grep -q 'nbdkit-args-debian:' "tests-c/$t.c"; then
    a=$(sed -n 's|.*nbdkit-args-debian: *\(.*\)$|\1|p' "tests-c/$t.c" | head -n 1)
  fi
  a=${a%%\*/}
  echo "${a:-memory 64M}"
}

# run_c_test LIB SERVER TEST: LIB is ours|real, SERVER is ours|debian.
run_c_test() {
  local lib=$1 server=$2 t=$3 nbdkit bin envp args out rc label log want
  case $server in ours) nbdkit=$OUR_NBDKIT ;; debian) nbdkit=$DEBIAN_NBDKIT ;; esac
  case $lib in
    ours) bin=$TESTC_BIN/$t; envp=$(ours_env); want=$(our_so) ;;
    real) bin=$REAL_BIN/$t; envp=$(real_env); want=$(real_so) ;;
  esac
  label="tests-c/$t [libnbd: $lib, nbdkit: $server]"
  log=$LOGS/run-$t-$lib-$server.log
  args=$(nbdkit_args "$t" "$server")
  # shellcheck disable=SC2086
  to "$nbdkit" -U - $args --run "$envp $bin \"\$unixsocket\" $nbdkit" >"$log" 2>&1
  rc=$?
  if [[ $rc -eq 0 ]] && has_line "$log" "TEST-OK $t" &&
     grep -q "libnbd loaded from $want\$" "$log"; then
    pass "$label"
  elif [[ $rc -eq 77 ]]; then
    skip "$label" "$(grep -m1 -o 'SKIP: .*' "$log" | sed 's/^SKIP: //')"
  else
    case $rc in
      124|137) why="timed out after ${TEST_TIMEOUT}s" ;;
      0) why="exit 0 but no TEST-OK marker or wrong libnbd loaded" ;;
      *) why="exit $rc" ;;
    esac
    fail "$label" "$why; log $log"
    show_tail "$log" 25
  fi
}

section "tests-c: run"
for t in "${tests[@]}"; do
  for server in ours debian; do
    nbdkit=$OUR_NBDKIT; [[ $server == debian ]] && nbdkit=$DEBIAN_NBDKIT
    for lib in ours real; do
      label="tests-c/$t [libnbd: $lib, nbdkit: $server]"
      if [[ $lib == ours && -z ${built_ours[$t]:-} ]]; then
        skip "$label" "not built on our libnbd (see above)"; continue
      fi
      if [[ $lib == real && -z ${built_real[$t]:-} ]]; then
        skip "$label" "not built on Debian's libnbd (see above)"; continue
      fi
      if [[ $server == ours ]] && ! $staged; then
        skip "$label" "our nbdkit not (re)built: make stage failed"; continue
      fi
      if [[ ! -x $nbdkit ]]; then
        skip "$label" "$nbdkit not installed"; continue
      fi
      run_c_test "$lib" "$server" "$t"
    done
  done
done

# Memory errors and definite leaks in our library (valgrind): a write/read
# test, the error paths, and the AIO/callback/option tests.
section "tests-c: valgrind on our libnbd"
for t in rw-pattern errors aio-in-flight aio-callbacks structured-read block-status opt-mode state-errors; do
  label="valgrind tests-c/$t [libnbd: ours, nbdkit: debian]"
  if [[ -z ${built_ours[$t]:-} ]]; then skip "$label" "not built on our libnbd"; continue; fi
  if ! command -v valgrind >/dev/null; then skip "$label" "valgrind not installed"; continue; fi
  log=$LOGS/valgrind-$t.log
  # shellcheck disable=SC2046
  TEST_TIMEOUT=$((TEST_TIMEOUT * 3)) to "$DEBIAN_NBDKIT" -U - $(nbdkit_args "$t" debian) --run \
    "$(ours_env) valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite $TESTC_BIN/$t \"\$unixsocket\" $DEBIAN_NBDKIT" \
    >"$log" 2>&1
  rc=$?
  if [[ $rc -eq 0 ]] && has_line "$log" "TEST-OK $t"; then pass "$label"
  else fail "$label" "exit $rc; log $log"; show_tail "$log" 30; fi
done

# Our library against a misbehaving server of ours (tests/hostile): each
# misbehaviour must give -1 with errno and message, a dead handle, and no
# byte outside the caller's buffer; run plain and under valgrind.
section "hostile server against our libnbd"
if $staged; then
  hbin=$TESTC_BIN/hostile-client
  if build_c_ours tests/hostile/hostile-client.c "$hbin" >"$LOGS/cc-hostile.log" 2>&1; then
    for vg in "" "valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite"; do
      label="tests/hostile [libnbd: ours${vg:+, valgrind}]"
      if [[ -n $vg ]] && ! command -v valgrind >/dev/null; then
        skip "$label" "valgrind not installed"; continue
      fi
      log=$LOGS/hostile${vg:+-valgrind}.log
      # shellcheck disable=SC2086
      TEST_TIMEOUT=$((TEST_TIMEOUT * 3)) to $(ours_env) $vg "$hbin" tests/hostile/hostile_server.py >"$log" 2>&1
      rc=$?
      if [[ $rc -eq 0 ]] && grep -q "all misbehaviours handled" "$log" &&
         grep -q "libnbd loaded from $(our_so)\$" "$log"; then
        pass "$label"
      else
        fail "$label" "exit $rc; log $log"; show_tail "$log" 30
      fi
    done
  else
    fail "compile tests/hostile/hostile-client.c on our libnbd" "see $LOGS/cc-hostile.log"
    show_tail "$LOGS/cc-hostile.log" 20
  fi
else
  skip "tests/hostile" "no staged install: the build failed"
fi

# ------------------------------------------------------------------ 5. interop
section "interop"
for s in tests/interop/*.sh; do
  [[ -e $s ]] || continue
  if ! $staged; then
    skip "$s" "no build of ours to test: make stage failed"; continue
  fi
  run_script_test "$s"
done

# ------------------------------------------------------------------ 6. soak
# The load and soak test (tests/soak/run.sh; `make soak` runs it longer) on
# the release build staged above: three pairings, each half plain and half
# TLS, after the self-check that a corrupted model fails.
CHECK_SOAK_SECONDS=${CHECK_SOAK_SECONDS:-60}
section "load and soak (tests/soak, ${CHECK_SOAK_SECONDS}s per pairing)"
if $staged; then
  # Three pairings, and the watchdogs' margins.
  SOAK_SECONDS=$CHECK_SOAK_SECONDS run_script_test tests/soak/run.sh $((3 * CHECK_SOAK_SECONDS + 900))
else
  skip "tests/soak/run.sh" "no build of ours to test: make stage failed"
fi

# ------------------------------------------------------------------ 7. fuzz
# Every fuzz target for a few seconds (fuzz/run.sh, coverage-guided on the
# stable toolchain): one PASS line per target that ran clean, a FAIL line
# for the one that stopped the run (fuzz/run.sh stops at the first).
section "fuzz smoke (make fuzz-smoke)"
if [[ ${CHECK_FUZZ:-1} == 0 ]]; then
  skip "make fuzz-smoke" "CHECK_FUZZ=0"
elif ! "$CARGO" fuzz --version >/dev/null 2>&1; then
  fail "make fuzz-smoke" "cargo-fuzz is not installed (scripts/install-test-deps.sh installs it)"
else
  log=$LOGS/fuzz-smoke.log
  timeout -k 10 3000 "$MAKE" --no-print-directory -C "$REPO" fuzz-smoke >"$log" 2>&1
  rc=$?
  ran=$(awk '/^fuzz: .* for [0-9]+s$/ { t = $2 } /Done [0-9]+ runs/ && t != "" {
           for (i = 1; i <= NF; i++) if ($i == "Done") print t, $(i + 1), $(i + 4); t = "" }' "$log")
  while read -r t runs secs; do
    [[ -n $t ]] && pass "fuzz smoke: $t ($runs inputs in ${secs}s, no finding)"
  done <<<"$ran"
  if [[ $rc -ne 0 ]]; then
    failed=$(sed -n 's/^fuzz: \(.*\) FAILED.*/\1/p' "$log")
    fail "make fuzz-smoke${failed:+: $failed}" "exit $rc; log $log"
    show_tail "$log" 30
  elif [[ -z $ran ]]; then
    fail "make fuzz-smoke" "no target reported a run; log $log"
  fi
fi

echo
echo "$n_pass passed, $n_fail failed, $n_skip skipped"
[[ $n_fail -eq 0 ]]
