#!/bin/bash
# apt-ensure.sh PKG...: make sure the Debian packages are installed.
#
# Idempotent: does nothing when every package is already installed; runs
# `apt-get update` only when something is missing, then installs just the
# missing packages.  As root it installs; not as root it tries sudo -n; when
# neither works it says what is missing and fails.  With everything present
# it succeeds as any user.
set -euo pipefail

missing=()
for p in "$@"; do
  st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ $st == "install ok installed" ]] || missing+=("$p")
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "apt-ensure: all present: $*"
  exit 0
fi

echo "apt-ensure: missing: ${missing[*]}"
if [[ $(id -u) -eq 0 ]]; then
  sudo=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  sudo=(sudo -n)
else
  echo "apt-ensure: not root (and no password-less sudo): cannot install ${missing[*]}" >&2
  echo "apt-ensure: run as root: apt-get install ${missing[*]}" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Packages whose postinst would start a daemon (nbd-server) must not fail
# the install in a container without an init system.
"${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update -q
"${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
echo "apt-ensure: installed: ${missing[*]}"
