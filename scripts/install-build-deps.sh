#!/bin/bash
# What `make` and `make demo` need besides the Rust toolchain: a C compiler
# (to link libnbd.so.0 and the demo), make and pkg-config.
set -euo pipefail
exec "$(dirname "$0")/apt-ensure.sh" gcc make pkg-config libc6-dev
