#!/bin/bash
# What `make check` needs: the peers (Debian's nbdkit, libnbd tools and
# library, qemu, nbd-server), compilers and pkg-config.
set -euo pipefail
exec "$(dirname "$0")/apt-ensure.sh" \
  nbdkit libnbd-bin python3-libnbd nbd-server libnbd-dev qemu-utils \
  pkg-config valgrind gcc g++ make
