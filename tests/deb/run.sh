#!/bin/bash
# The Debian packages (debian/, `make deb`): built, named, versioned and
# split as Debian's, lintian-clean (no error), and working: unpacked with
# dpkg-deb -x into a private directory (never installed over the
# system's), Debian's nbdinfo runs on the unpacked libnbd0 against the
# unpacked nbdkit.
#
# Builds the packages first (`make deb`, PROFILE as given, default
# release) unless DEB_PREBUILT=1 says build/deb already holds them.
set -uo pipefail
source "$(dirname "$0")/../../scripts/testlib.sh"
make_tmpdir
unset LD_LIBRARY_PATH
MAKE=${MAKE:-make}
debs=$REPO/build/deb
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)

if [[ ${DEB_PREBUILT:-0} != 1 ]]; then
  start=$SECONDS
  if "$MAKE" -C "$REPO" --no-print-directory deb ${PROFILE:+PROFILE=$PROFILE} >"$TMP/build.log" 2>&1; then
    pass "make deb (dpkg-buildpackage -b -us -uc) in $((SECONDS - start)) s"
  else
    fail "make deb" "log:"; show_tail "$TMP/build.log" 30; script_exit
  fi
fi

# ------------------------------------------------------------ names, versions
declare -A want_version=(
  [libnbd0]=1.24.4-0nbdrs1 [libnbd-dev]=1.24.4-0nbdrs1
  [nbdkit]=1.32.5+nbdrs1-1 [nbdkit-plugin-dev]=1.32.5+nbdrs1-1
  [xnbd-server]=0.4.0-0nbdrs1
)
declare -A deb_of
for p in "${!want_version[@]}"; do
  f=$(ls "$debs/${p}_"*.deb 2>/dev/null | head -1)
  if [[ -z $f ]]; then fail "package $p built" "no $debs/${p}_*.deb"; continue; fi
  deb_of[$p]=$f
  v=$(dpkg-deb -f "$f" Version)
  if [[ $v != "${want_version[$p]}" ]]; then
    fail "package $p version" "got $v, want ${want_version[$p]}"; continue
  fi
  # It must replace Debian's package of the same name (Debian 12's, when
  # the archive knows one).
  theirs=$(apt-cache show "$p" 2>/dev/null | sed -n 's/^Version: //p' | grep -v nbdrs | sort -V | tail -1)
  if [[ -z $theirs ]]; then
    pass "package $p $v (no package of that name in the configured archive)"
  elif dpkg --compare-versions "$v" gt "$theirs"; then
    pass "package $p $v, newer than the archive's $theirs"
  else
    fail "package $p $v does not replace the archive's $theirs"
  fi
done

# ------------------------------------------------------------ contents
# has PACKAGE PATH...: each PATH (a glob, relative) is in the package.
has() {
  local p=$1 list missing=(); shift
  [[ -n ${deb_of[$p]:-} ]] || return
  list=$(dpkg-deb -c "${deb_of[$p]}" | awk '{print $6}' | sed 's|^\./||')
  for path in "$@"; do
    # shellcheck disable=SC2053
    grep -q "^${path//\*/.*}\$" <<<"$list" || missing+=("$path")
  done
  if [[ ${#missing[@]} -eq 0 ]]; then pass "package $p holds $*"
  else fail "package $p contents" "missing ${missing[*]}"; fi
}
has libnbd0 "usr/lib/$multiarch/libnbd.so.0" "usr/lib/$multiarch/libnbd.so.0.0.0"
has libnbd-dev usr/include/libnbd.h "usr/lib/$multiarch/libnbd.so" "usr/lib/$multiarch/libnbd.a" \
  "usr/lib/$multiarch/pkgconfig/libnbd.pc" usr/share/man/man3/nbd_pread.3.gz usr/share/man/man3/libnbd.3.gz
has nbdkit usr/bin/nbdkit usr/share/man/man1/nbdkit.1.gz usr/share/man/man1/nbdkit-memory-plugin.1.gz \
  usr/share/man/man1/nbdkit-cow-filter.1.gz lib/systemd/system/nbdkit.service lib/systemd/system/nbdkit.socket \
  usr/share/bash-completion/completions/nbdkit
has nbdkit-plugin-dev usr/include/nbdkit-plugin.h usr/include/nbdkit-filter.h usr/include/nbdkit-common.h \
  usr/include/nbdkit-version.h "usr/lib/$multiarch/pkgconfig/nbdkit.pc" \
  usr/share/man/man3/nbdkit-plugin.3.gz usr/share/man/man3/nbdkit-filter.3.gz
has xnbd-server usr/sbin/xnbd-server usr/sbin/xnbd-bgctl usr/share/man/man8/xnbd-server.8.gz

# The symbols file carries each call's introducing version; programs get
# a dependency on the version of the newest call they use.
if [[ -n ${deb_of[libnbd0]:-} ]]; then
  mkdir -p "$TMP/ctrl"; dpkg-deb -e "${deb_of[libnbd0]}" "$TMP/ctrl"
  if grep -qx ' nbd_create@LIBNBD_1.0 1.0' "$TMP/ctrl/symbols" &&
     grep -qx ' nbd_is_uri@LIBNBD_1.22 1.22' "$TMP/ctrl/symbols" &&
     grep -qx ' nbd_get_handle_size@LIBNBD_1.24 1.24' "$TMP/ctrl/symbols" &&
     [[ $(grep -c '@LIBNBD_' "$TMP/ctrl/symbols") -eq 175 ]]; then
    pass "libnbd0's symbols file: 165 calls and 10 version nodes, each at the version that introduced it"
  else
    fail "libnbd0's symbols file" "$(head -5 "$TMP/ctrl/symbols" 2>/dev/null | tr '\n' '|')"
  fi
fi

# ------------------------------------------------------------ lintian
if command -v lintian >/dev/null; then
  lintian --tag-display-limit 0 "${deb_of[@]}" >"$TMP/lintian.log" 2>&1
  errors=$(grep -c '^E: ' "$TMP/lintian.log")
  if [[ $errors -eq 0 ]]; then
    pass "lintian: no error on the ${#deb_of[@]} packages ($(grep -c '^W: ' "$TMP/lintian.log") warnings)"
  else
    fail "lintian: $errors errors" "log:"; grep '^E: ' "$TMP/lintian.log" | head -20 | indent
  fi
else
  skip "lintian" "not installed (scripts/install-test-deps.sh)"
fi

# ------------------------------------------------------------ unpacked, run
root=$TMP/root
for f in "${deb_of[@]}"; do dpkg-deb -x "$f" "$root"; done
libdir=$root/usr/lib/$multiarch
if [[ ! -x $root/usr/bin/nbdkit || ! -e $libdir/libnbd.so.0 ]]; then
  fail "unpacked packages" "no usr/bin/nbdkit or libnbd.so.0 under $root"; script_exit
fi
if ! command -v nbdinfo >/dev/null; then
  skip "Debian's nbdinfo on the unpacked packages" "libnbd-bin not installed"; script_exit
fi
# LD_DEBUG=libs names the file the loader initialised: it must be the
# unpacked libnbd.so.0.
# shellcheck disable=SC2016
out=$(to "$root/usr/bin/nbdkit" -U - memory 1M --run \
  "env LD_LIBRARY_PATH=$libdir LD_DEBUG=libs LD_DEBUG_OUTPUT=$TMP/ld nbdinfo --size \"\$uri\" && env LD_LIBRARY_PATH=$libdir nbdinfo --version" 2>&1)
rc=$?
loaded=$(cat "$TMP"/ld.* 2>/dev/null | sed -n 's/.*calling init: \(.*libnbd\.so\.0\)$/\1/p' | head -1)
if [[ $rc -eq 0 && $out == 1048576* && $loaded == "$libdir/libnbd.so.0" && $out == *"libnbd 1.24.4"* ]]; then
  pass "Debian's nbdinfo on the unpacked libnbd0 ($loaded) against the unpacked nbdkit: size 1048576, libnbd 1.24.4"
else
  fail "Debian's nbdinfo on the unpacked packages" "exit $rc, loaded '$loaded', output: $(echo "$out" | head -5 | tr '\n' '|')"
fi
v=$("$root/usr/bin/nbdkit" --version 2>&1 | head -1)
[[ $v == "nbdkit 1.32.5"* ]] && pass "unpacked nbdkit --version: $v" || fail "unpacked nbdkit --version" "$v"
if "$root/usr/sbin/xnbd-server" --help 2>&1 | grep -q -- '--target' &&
   "$root/usr/sbin/xnbd-bgctl" --help 2>&1 | grep -q -- '--cache-all'; then
  pass "unpacked xnbd-server and xnbd-bgctl run (--help)"
else
  fail "unpacked xnbd-server / xnbd-bgctl --help"
fi
pcv=$(PKG_CONFIG_SYSROOT_DIR=$root PKG_CONFIG_LIBDIR=$libdir/pkgconfig PKG_CONFIG_PATH= pkg-config --modversion libnbd nbdkit 2>&1 | tr '\n' ' ')
[[ $pcv == "1.24.4 1.32.5 " ]] && pass "unpacked libnbd.pc and nbdkit.pc: $pcv" || fail "unpacked .pc files" "$pcv"
script_exit
