#!/bin/bash
# fetch-libnbd-1.24.sh [DEST]: the reference libnbd 1.24.4 (issue 11),
# unpacked, never installed.
#
# Debian unstable's libnbd0, libnbd-dev and libnbd-bin 1.24.4 are
# downloaded and extracted with `dpkg-deb -x` under DEST (default
# /opt/libnbd-1.24): DEST/usr/include/libnbd.h is the header the drift
# test compares ours with, DEST/usr/bin/nbdinfo is a libnbd 1.24 program
# that runs on our library, and the man pages under DEST/usr/share/man
# document the 1.24 calls. Its own libnbd.so.0 needs glibc 2.38 and does
# not run on Debian 12; nothing uses it.
#
# The unstable suite is seen only by this script: apt runs with its own
# sources, lists and cache in a temporary folder, so the system's apt
# never learns of unstable and nothing from it can be installed. When apt
# cannot get the packages, the exact files are fetched from the pool.
# Idempotent: does nothing when DEST already holds 1.24.4.
set -euo pipefail

VERSION=1.24.4-1
PACKAGES=(libnbd0 libnbd-dev libnbd-bin)
DEST=${1:-${LIBNBD_1_24_DIR:-/opt/libnbd-1.24}}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
stamp=$DEST/.libnbd-version

if [[ -f $stamp && $(cat "$stamp") == "$VERSION" && -f $DEST/usr/include/libnbd.h ]]; then
  echo "fetch-libnbd-1.24: libnbd $VERSION already in $DEST"
  exit 0
fi

if ! mkdir -p "$DEST" 2>/dev/null || ! [[ -w $DEST ]]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo -n mkdir -p "$DEST"
    sudo -n chown "$(id -u):$(id -g)" "$DEST"
  else
    echo "fetch-libnbd-1.24: cannot write $DEST (run as root, or pass a DEST)" >&2
    exit 1
  fi
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/parts" "$tmp/lists/partial" "$tmp/cache/archives/partial" "$tmp/debs"
cat >"$tmp/parts/unstable.sources" <<SOURCES
Types: deb
URIs: $MIRROR
Suites: unstable
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
apt_opts=(
  -o "Dir::Etc::SourceList=/dev/null"
  -o "Dir::Etc::SourceParts=$tmp/parts"
  -o "Dir::State::Lists=$tmp/lists"
  -o "Dir::Cache=$tmp/cache"
  -o "APT::Architectures=amd64"
  -o "Acquire::Languages=none"
  -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
  -o "APT::Sandbox::User=$(id -un)"
)

fetched=false
if apt-get "${apt_opts[@]}" update -q >"$tmp/apt-update.log" 2>&1; then
  want=()
  for p in "${PACKAGES[@]}"; do want+=("$p=$VERSION"); done
  if (cd "$tmp/debs" && apt-get "${apt_opts[@]}" download -q "${want[@]}") \
       >"$tmp/apt-download.log" 2>&1; then
    fetched=true
  else
    echo "fetch-libnbd-1.24: apt-get download failed:" >&2
    tail -n 5 "$tmp/apt-download.log" >&2
  fi
else
  echo "fetch-libnbd-1.24: apt-get update (unstable) failed:" >&2
  tail -n 5 "$tmp/apt-update.log" >&2
fi

if ! $fetched; then
  echo "fetch-libnbd-1.24: trying the pool directly"
  for p in "${PACKAGES[@]}"; do
    f=${p}_${VERSION}_amd64.deb
    curl -fsSL -o "$tmp/debs/$f" "$MIRROR/pool/main/libn/libnbd/$f"
  done
fi

for deb in "$tmp"/debs/*.deb; do
  echo "fetch-libnbd-1.24: extracting $(basename "$deb")"
  dpkg-deb -x "$deb" "$DEST"
done
for p in "${PACKAGES[@]}"; do
  ls "$tmp"/debs/"${p}"_*.deb >/dev/null 2>&1 || {
    echo "fetch-libnbd-1.24: $p was not fetched" >&2; exit 1; }
done
echo "$VERSION" >"$stamp"
echo "fetch-libnbd-1.24: libnbd $VERSION in $DEST"
