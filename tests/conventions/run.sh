#!/bin/bash
# The staged programs' --version and --help follow the originals' formats:
#   nbdkit --version      "nbdkit VERSION" as Debian's nbdkit prints it, or
#                         "nbdkit VERSION (EXTRA)", nbdkit's form for builds
#                         that carry an extra version string (ours: the
#                         nbd-rs version); VERSION equal to Debian's
#   xnbd-server --help    "Usage:" then the five forms of xnbd-server(8)'s
#                         synopsis (--target, --cow-target, --proxy, --help,
#                         --version), exit 0
#   xnbd-server --version one line naming xnbd-server and a version, exit 0
set -uo pipefail
source "$(dirname "$0")/../../scripts/testlib.sh"
sbin=$STAGE/usr/sbin
require_file "$sbin/nbdkit" "staged nbdkit (make stage)" || script_exit

ours=$("$sbin/nbdkit" --version); rc=$?
if [[ $rc -eq 0 && $ours =~ ^nbdkit\ ([0-9]+\.[0-9]+\.[0-9]+)(\ \(.+\))?$ ]]; then
  v=${BASH_REMATCH[1]}
  if [[ -x $DEBIAN_NBDKIT ]]; then
    theirs=$("$DEBIAN_NBDKIT" --version | head -1)
    if [[ $theirs == "nbdkit $v"* ]]; then
      pass "nbdkit --version: '$ours', Debian's: '$theirs'"
    else
      fail "nbdkit --version" "ours '$ours', Debian's '$theirs'"
    fi
  else
    pass "nbdkit --version: '$ours' (Debian's nbdkit not installed to compare)"
  fi
else
  fail "nbdkit --version format" "exit $rc: '$ours'"
fi

help=$("$sbin/xnbd-server" --help 2>&1); rc=$?
missing=()
for form in "xnbd-server --target \[options\] DISK_IMAGE" \
            "xnbd-server --cow-target \[options\] BASE_DISK_IMAGE" \
            "xnbd-server --proxy \[options\]" \
            "xnbd-server --help" "xnbd-server --version"; do
  grep -q "^  $form" <<<"$help" || missing+=("$form")
done
if [[ $rc -eq 0 && $(head -1 <<<"$help") == "Usage:" && ${#missing[@]} -eq 0 ]]; then
  pass "xnbd-server --help: Usage: and the synopsis of xnbd-server(8)"
else
  fail "xnbd-server --help" "exit $rc, missing: ${missing[*]}"
fi
ver=$("$sbin/xnbd-server" --version 2>&1); rc=$?
if [[ $rc -eq 0 && $(wc -l <<<"$ver") -eq 1 && $ver =~ ^xnbd-server\ .*[0-9]+\.[0-9]+\.[0-9]+ ]]; then
  pass "xnbd-server --version: '$ver'"
else
  fail "xnbd-server --version" "exit $rc: '$ver'"
fi
script_exit
