#!/bin/bash
# What `make check` needs: the peers (Debian's nbdkit, libnbd tools and
# library, qemu, nbd-server; systemd for systemd-socket-activate and
# systemd-analyze in the socket activation tests), pod2man (perl) and man
# (man-db) for the manual page tests, compilers and pkg-config from
# Debian, the build systems of the consumer projects (autoconf, automake,
# CMake, meson, ninja: tests/consumers), the Debian packaging tools
# (dpkg-dev, debhelper, fakeroot, lintian: tests/deb), bash-completion
# (tests/completion), strace (tests/sendfile.rs counts system calls),
# nbdkit's language plugins (nbd-server-bin/tests/language_plugins.rs),
# and the pinned
# cbindgen from crates.io (the header drift test regenerates
# include/libnbd.h with it; it is not packaged in Debian 12), and the
# pinned cargo-fuzz (make fuzz-smoke, a step of make check).
set -euo pipefail
"$(dirname "$0")/apt-ensure.sh" \
  nbdkit libnbd-bin python3-libnbd nbd-server libnbd-dev qemu-utils \
  pkg-config valgrind gcc g++ make systemd fdisk tar libcurl4 \
  gnutls-bin libgnutls28-dev xorriso dosfstools mtools e2fsprogs libext2fs2 \
  openssh-server openssh-client libssh-4 perl man-db groff-base \
  liblzma-dev xz-utils cryptsetup-bin nbdkit-plugin-dev \
  nbdkit-plugin-python nbdkit-plugin-perl nbdkit-plugin-lua nbdkit-plugin-ruby \
  nbdkit-plugin-tcl \
  autoconf automake cmake meson ninja-build \
  dpkg-dev debhelper fakeroot lintian bash-completion strace

# The reference libnbd 1.24.4 (header, nbdinfo, man pages), unpacked
# under /opt/libnbd-1.24 from Debian unstable without installing anything.
"$(dirname "$0")/fetch-libnbd-1.24.sh"

CBINDGEN_VERSION=0.27.0
cbindgen=${CBINDGEN:-$HOME/.cargo/bin/cbindgen}
if [[ -x $cbindgen ]] && [[ $("$cbindgen" --version) == "cbindgen $CBINDGEN_VERSION" ]]; then
  echo "cbindgen $CBINDGEN_VERSION present"
else
  echo "installing cbindgen $CBINDGEN_VERSION (cargo install)"
  cargo install --quiet --locked cbindgen --version "$CBINDGEN_VERSION"
fi

CARGO_FUZZ_VERSION=0.13.2
cargo_fuzz=${CARGO_FUZZ:-$HOME/.cargo/bin/cargo-fuzz}
if [[ -x $cargo_fuzz ]] && [[ $("$cargo_fuzz" --version) == "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
  echo "cargo-fuzz $CARGO_FUZZ_VERSION present"
else
  echo "installing cargo-fuzz $CARGO_FUZZ_VERSION (cargo install)"
  cargo install --quiet --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
