#!/bin/bash
# What `make` and `make demo` need besides the Rust toolchain: a C compiler
# (to link libnbd.so.0 and the demo), make, pkg-config, and GnuTLS's
# development files (libnbd.so.0 and nbdkit link the system GnuTLS for TLS),
# perl for pod2man (make man turns the POD manual pages into roff), and
# liblzma's (the xz filter decodes xz blocks through it).
set -euo pipefail
exec "$(dirname "$0")/apt-ensure.sh" gcc make pkg-config libc6-dev libgnutls28-dev perl liblzma-dev
