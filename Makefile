# Build, install and test the Rust NBD stack:
#   libnbd.so.0 (drop-in for libnbd, linked here from the nbd-capi staticlib)
#   nbdkit      (nbdkit-compatible server, from nbd-server-bin)
#   xnbd-server, xnbd-bgctl (xnbd's target, copy-on-write and proxy modes)
#
#   make                 release build of everything + libnbd.so.0
#   make man             manual pages (POD -> roff with pod2man) in target/man
#   make install         PREFIX=/usr/local DESTDIR= LIBDIR=$(PREFIX)/lib ...
#   make uninstall
#   make check           deps, cargo test, staged install, C tests, interop
#   make deb             Debian packages in build/deb (debian/; README)
#   make demo            connect a C program on our libnbd to our nbdkit
#   make bench           ours vs Debian's nbdkit / libnbd (not part of check)
#   make bench-file-reads  file plugin reads: sendfile vs copying vs Debian's
#   make soak            load and soak, ours crossed with Debian's, plain and TLS,
#                        SOAK_SECONDS (600) per pairing (check runs 60 s each)
#   make fuzz            every fuzz target for FUZZ_SECONDS (60) each (cargo-fuzz)
#   make fuzz-smoke      every fuzz target for FUZZ_SMOKE_SECONDS (5) each
#   make clean
#
# PROFILE=debug (default release) builds the Rust code without optimisation.
#
# Standard variables are honoured: DESTDIR, PREFIX (alias prefix),
# EXEC_PREFIX, LIBDIR, INCLUDEDIR, SBINDIR, PKGCONFIGDIR, MANDIR, BASHCOMPDIR, INSTALL,
# INSTALL_PROGRAM, INSTALL_DATA, CC, CFLAGS, LDFLAGS, CARGO, CARGOFLAGS,
# CARGO_TARGET_DIR.

SHELL := /bin/bash

# ---------------------------------------------------------------- install dirs
prefix       ?= /usr/local
PREFIX       ?= $(prefix)
EXEC_PREFIX  ?= $(PREFIX)
LIBDIR       ?= $(EXEC_PREFIX)/lib
INCLUDEDIR   ?= $(PREFIX)/include
SBINDIR      ?= $(EXEC_PREFIX)/sbin
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
MANDIR       ?= $(PREFIX)/share/man
BASHCOMPDIR  ?= $(PREFIX)/share/bash-completion/completions
DESTDIR      ?=

INSTALL         ?= install
INSTALL_PROGRAM ?= $(INSTALL) -m 755
INSTALL_DATA    ?= $(INSTALL) -m 644
LDCONFIG        ?= ldconfig

# ---------------------------------------------------------------- tools
CC       ?= cc
CARGO    ?= cargo
CARGOFLAGS ?=
CARGO_TARGET_DIR ?= $(CURDIR)/target
export CARGO_TARGET_DIR
POD2MAN  ?= pod2man

# The libnbd API level we implement: the Version in libnbd.pc, read from
# the one place that sets it (nbd_get_version's string in nbd-capi).
LIBNBD_VERSION ?= $(shell sed -n 's/^pub(crate) const LIBNBD_VERSION: &CStr = cstr(b"\(.*\)\\0");/\1/p' nbd-capi/src/calls/info.rs)
# Native libraries the Rust staticlib needs (Libs.private, static linking);
# GnuTLS for TLS (nbd-capi/src/tls.rs).
LIBS_PRIVATE ?= -lgnutls -lgcc_s -lutil -lrt -lpthread -lm -ldl
SO_LIBS ?= -lgnutls -lpthread -ldl -lm -lgcc_s -lc

# ---------------------------------------------------------------- artefacts
# PROFILE=debug builds without optimisation (quicker to compile, for
# testing the install and packaging steps); release is the default.
PROFILE    ?= release
CARGO_PROFILE_FLAG := $(if $(filter release,$(PROFILE)),--release,)
RUST_OUT   := $(CARGO_TARGET_DIR)/$(PROFILE)
STATICLIB  := $(RUST_OUT)/libnbd.a
NBDKIT_BIN := $(RUST_OUT)/nbdkit
SYMS       := nbd-capi/libnbd.syms
HEADER     := include/libnbd.h
PC_IN      := pkgconfig/libnbd.pc.in

B          := build
SO_REAL    := $(B)/lib/libnbd.so.0.0.0
SO_NAME    := $(B)/lib/libnbd.so.0
SO_DEV     := $(B)/lib/libnbd.so
STATIC_OUT := $(B)/lib/libnbd.a
PC_OUT     := $(B)/libnbd.pc
# nbdkit-plugin-dev: our headers for C plugins and filters, and nbdkit.pc.
NBDKIT_HEADERS := include/nbdkit-common.h include/nbdkit-plugin.h \
                  include/nbdkit-filter.h include/nbdkit-version.h
NBDKIT_PC_IN   := pkgconfig/nbdkit.pc.in
NBDKIT_PC_OUT  := $(B)/nbdkit.pc

# Manual pages. Their sources are POD: hand-written ones in man/NAME.S.pod,
# generated ones (nbd_NAME.3.pod, from nbd-capi's API table) written by
# nbd-capi-gen. All are gathered in MAN_OUT and turned into MAN_OUT/NAME.S;
# install puts every MAN_OUT/*.S into MANDIR/manS.
MAN_OUT     := $(CARGO_TARGET_DIR)/man
# The footer of each page: the program's or library's name and the version
# whose interface it follows.
NBDKIT_VERSION ?= $(shell sed -n 's/^const NBDKIT_VERSION: &str = "\(.*\)";/\1/p' nbd-server-bin/src/main.rs)
XNBD_VERSION   ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

# Staged install used by check, demo and bench (PREFIX=/usr inside it).
STAGE        := $(CURDIR)/$(B)/stage
STAGE_LIBDIR := $(STAGE)/usr/lib

.PHONY: all cargo-build lib man completion deb install install-man uninstall uninstall-man stage check demo bench bench-file-reads clean \
        deps-build deps-test fuzz fuzz-smoke soak FORCE

all: lib man completion

# nbdkit's bash completion: the template with the built-in plugins' and
# filters' names and parameters, read from their generated manual pages.
COMPLETION := $(B)/bash-completion/nbdkit
completion: man
	@mkdir -p $(B)/bash-completion
	scripts/gen-nbdkit-completion.sh $(MAN_OUT) nbd-server-bin/completion/nbdkit.bash > $(COMPLETION).tmp
	mv -f $(COMPLETION).tmp $(COMPLETION)

cargo-build:
	@command -v $(CARGO) >/dev/null || { \
	  echo "error: $(CARGO) not found (install the Rust toolchain, or add ~/.cargo/bin to PATH)" >&2; exit 1; }
	$(CARGO) build $(CARGO_PROFILE_FLAG) --workspace $(CARGOFLAGS)
	@test -f $(STATICLIB) || { echo "error: cargo did not produce $(STATICLIB)" >&2; exit 1; }
	@for b in $(NBDKIT_BIN) $(RUST_OUT)/xnbd-server $(RUST_OUT)/xnbd-bgctl; do \
	  test -f $$b || { echo "error: cargo did not produce $$b" >&2; exit 1; }; done

$(SYMS):
	@echo "error: $(SYMS) is missing (the linker version script is generated and checked in with nbd-capi)" >&2; exit 1
$(HEADER):
	@echo "error: $(HEADER) is missing (generated by cbindgen and checked in with nbd-capi)" >&2; exit 1

# Always relinked after cargo-build: cargo decides whether anything changed
# and relinking takes about a second.
lib: cargo-build $(SYMS)
	@mkdir -p $(B)/lib
	$(CC) -shared -o $(SO_REAL) -Wl,-soname,libnbd.so.0 \
	  -Wl,--version-script=$(SYMS) \
	  -Wl,--whole-archive $(STATICLIB) -Wl,--no-whole-archive \
	  $(SO_LIBS) -Wl,--gc-sections -Wl,-z,relro,-z,now -Wl,--no-undefined \
	  $(LDFLAGS)
	ln -sf libnbd.so.0.0.0 $(SO_NAME)
	ln -sf libnbd.so.0 $(SO_DEV)
	cp -f $(STATICLIB) $(STATIC_OUT)

$(PC_OUT): $(PC_IN) FORCE
	@mkdir -p $(B)
	sed -e 's|@prefix@|$(PREFIX)|g' \
	    -e 's|@exec_prefix@|$(EXEC_PREFIX)|g' \
	    -e 's|@libdir@|$(LIBDIR)|g' \
	    -e 's|@includedir@|$(INCLUDEDIR)|g' \
	    -e 's|@version@|$(LIBNBD_VERSION)|g' \
	    -e 's|@libs_private@|$(LIBS_PRIVATE)|g' \
	    $(PC_IN) > $@.tmp && mv -f $@.tmp $@

$(NBDKIT_PC_OUT): $(NBDKIT_PC_IN) FORCE
	@mkdir -p $(B)
	sed -e 's|@prefix@|$(PREFIX)|g' \
	    -e 's|@exec_prefix@|$(EXEC_PREFIX)|g' \
	    -e 's|@libdir@|$(LIBDIR)|g' \
	    -e 's|@includedir@|$(INCLUDEDIR)|g' \
	    -e 's|@nbdkit_version@|$(NBDKIT_VERSION)|g' \
	    $(NBDKIT_PC_IN) > $@.tmp && mv -f $@.tmp $@

# The pages are rewritten only when their POD changed, so that pod2man runs
# only for those. The page's section is its file name's last extension.
man:
	@command -v $(POD2MAN) >/dev/null || { \
	  echo "error: $(POD2MAN) not found (it comes with perl: make deps-build)" >&2; exit 1; }
	@mkdir -p $(MAN_OUT)
	$(CARGO) run -q -p nbd-capi-gen -- --man $(MAN_OUT)
	$(MANGEN) $(MAN_OUT)
	@for p in man/*.pod; do \
	  cmp -s $$p $(MAN_OUT)/$${p##*/} || cp $$p $(MAN_OUT)/; done
	@set -e; for pod in $(MAN_OUT)/*.pod; do \
	  page=$${pod%.pod}; file=$${page##*/}; name=$${file%.*}; section=$${file##*.}; \
	  if [ "$$page" -nt "$$pod" ]; then continue; fi; \
	  case $$name in \
	    nbdkit*) center=NBDKIT release="nbdkit $(NBDKIT_VERSION)";; \
	    xnbd*) center=XNBD release="xnbd-server (nbd-rs $(XNBD_VERSION))";; \
	    *) center=LIBNBD release="libnbd $(LIBNBD_VERSION)";; \
	  esac; \
	  $(POD2MAN) --errors=die --section=$$section --center=$$center \
	    --release="$$release" --name=$$name $$pod $$page.tmp; \
	  mv -f $$page.tmp $$page; \
	done
	@echo "manual pages: $$(ls $(MAN_OUT) | grep -c '\.[1-9]$$') in $(MAN_OUT)"

# The generator of the built-in plugins' and filters' pages
# (nbd-server-bin/src/manpage.rs), built with the rest of the workspace.
MANGEN      ?= $(CARGO) run $(CARGO_PROFILE_FLAG) -q -p nbd-server-bin --bin nbdkit-mangen $(CARGOFLAGS) --

# Removes the pages named by man/ and MAN_OUT (not by pattern: Debian's
# own nbdkit pages may live in the same MANDIR).
uninstall-man:
	@for pod in man/*.pod $(MAN_OUT)/*.pod; do \
	  page=$$(basename $$pod .pod); \
	  rm -f $(DESTDIR)$(MANDIR)/man$${page##*.}/$$page; \
	done

# `make && sudo make install` must not need cargo as root: install builds
# only when the artefacts are missing (stage always builds first).
INSTALL_BUILD := $(if $(and $(wildcard $(SO_REAL)),$(wildcard $(NBDKIT_BIN)),$(wildcard $(COMPLETION))),,all)

# Every page of MAN_OUT goes to MANDIR/manS, S being its section.
install-man: $(if $(wildcard $(MAN_OUT)/libnbd.3),,man)
	@for page in $(MAN_OUT)/*.[1-9]; do \
	  section=$${page##*.}; \
	  $(INSTALL) -d $(DESTDIR)$(MANDIR)/man$$section || exit 1; \
	  $(INSTALL_DATA) $$page $(DESTDIR)$(MANDIR)/man$$section/ || exit 1; \
	done; echo "installed the manual pages of $(MAN_OUT) under $(DESTDIR)$(MANDIR)"

install: $(INSTALL_BUILD) install-man $(HEADER) $(PC_OUT) $(NBDKIT_PC_OUT)
	$(INSTALL) -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) \
	  $(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(SBINDIR)
	$(INSTALL_PROGRAM) $(SO_REAL) $(DESTDIR)$(LIBDIR)/libnbd.so.0.0.0
	ln -sf libnbd.so.0.0.0 $(DESTDIR)$(LIBDIR)/libnbd.so.0
	ln -sf libnbd.so.0 $(DESTDIR)$(LIBDIR)/libnbd.so
	$(INSTALL_DATA) $(STATIC_OUT) $(DESTDIR)$(LIBDIR)/libnbd.a
	$(INSTALL_DATA) $(HEADER) $(DESTDIR)$(INCLUDEDIR)/libnbd.h
	$(INSTALL_DATA) $(PC_OUT) $(DESTDIR)$(PKGCONFIGDIR)/libnbd.pc
	$(INSTALL_DATA) $(NBDKIT_HEADERS) $(DESTDIR)$(INCLUDEDIR)/
	$(INSTALL_DATA) $(NBDKIT_PC_OUT) $(DESTDIR)$(PKGCONFIGDIR)/nbdkit.pc
	$(INSTALL_PROGRAM) $(NBDKIT_BIN) $(DESTDIR)$(SBINDIR)/nbdkit
	$(INSTALL_PROGRAM) $(RUST_OUT)/xnbd-server $(DESTDIR)$(SBINDIR)/xnbd-server
	$(INSTALL_PROGRAM) $(RUST_OUT)/xnbd-bgctl $(DESTDIR)$(SBINDIR)/xnbd-bgctl
	$(INSTALL) -d $(DESTDIR)$(BASHCOMPDIR)
	$(INSTALL_DATA) $(COMPLETION) $(DESTDIR)$(BASHCOMPDIR)/nbdkit
	@# A real (non-DESTDIR) install as root refreshes the loader cache so
	@# that the new libnbd.so.0 is found; packagers use DESTDIR.
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ]; then \
	  echo "$(LDCONFIG)"; $(LDCONFIG) || true; fi

uninstall: uninstall-man
	rm -f $(DESTDIR)$(LIBDIR)/libnbd.so.0.0.0 $(DESTDIR)$(LIBDIR)/libnbd.so.0 \
	  $(DESTDIR)$(LIBDIR)/libnbd.so $(DESTDIR)$(LIBDIR)/libnbd.a \
	  $(DESTDIR)$(INCLUDEDIR)/libnbd.h $(DESTDIR)$(PKGCONFIGDIR)/libnbd.pc \
	  $(addprefix $(DESTDIR)$(INCLUDEDIR)/,$(notdir $(NBDKIT_HEADERS))) \
	  $(DESTDIR)$(PKGCONFIGDIR)/nbdkit.pc \
	  $(DESTDIR)$(SBINDIR)/nbdkit $(DESTDIR)$(SBINDIR)/xnbd-server \
	  $(DESTDIR)$(SBINDIR)/xnbd-bgctl $(DESTDIR)$(BASHCOMPDIR)/nbdkit
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ]; then \
	  echo "$(LDCONFIG)"; $(LDCONFIG) || true; fi

# A fresh staged install with PREFIX=/usr under build/stage.
stage:
	$(MAKE) --no-print-directory all
	rm -rf $(STAGE)
	$(MAKE) --no-print-directory install DESTDIR=$(STAGE) PREFIX=/usr \
	  EXEC_PREFIX=/usr LIBDIR=/usr/lib INCLUDEDIR=/usr/include \
	  SBINDIR=/usr/sbin PKGCONFIGDIR=/usr/lib/pkgconfig

# Environment shared by check, demo and bench scripts.
TEST_ENV = REPO=$(CURDIR) MAKE="$(MAKE)" CC="$(CC)" CARGO="$(CARGO)" \
  OUR_NBDKIT=$(NBDKIT_BIN) STAGE=$(STAGE) OUR_LIBDIR=$(STAGE_LIBDIR) \
  TESTC_BIN=$(CURDIR)/$(B)/tests-c DEBIAN_NBDKIT=/usr/bin/nbdkit

# Debian packages (debian/, README "Debian packages"): built by
# dpkg-buildpackage from a copy of the tree in build/deb/src, so that its
# outputs (the .debs, .buildinfo, .changes) land in build/deb and not
# beside the repository. Their own cargo target directory keeps the
# copy's build apart from this tree's.
DEB_DIR              := $(CURDIR)/$(B)/deb
DEB_CARGO_TARGET_DIR ?= $(DEB_DIR)/target
deb:
	@command -v dpkg-buildpackage >/dev/null && command -v dh >/dev/null || { \
	  echo "error: dpkg-buildpackage and debhelper are needed (apt-get install dpkg-dev debhelper fakeroot)" >&2; exit 1; }
	rm -rf $(DEB_DIR)/src
	rm -f $(DEB_DIR)/*.deb $(DEB_DIR)/*.ddeb $(DEB_DIR)/*.buildinfo $(DEB_DIR)/*.changes
	mkdir -p $(DEB_DIR)/src
	tar --exclude=./target --exclude=./build --exclude=./.git -cf - . | tar -xf - -C $(DEB_DIR)/src
	cd $(DEB_DIR)/src && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL \
	  CARGO_TARGET_DIR=$(DEB_CARGO_TARGET_DIR) NBDRS_PROFILE=$(PROFILE) \
	  dpkg-buildpackage -b -us -uc
	@ls -1 $(DEB_DIR)/*.deb

deps-build:
	scripts/install-build-deps.sh

deps-test:
	scripts/install-test-deps.sh

check:
	$(TEST_ENV) scripts/check.sh

demo: deps-build
	$(MAKE) --no-print-directory stage
	$(TEST_ENV) scripts/demo.sh

bench:
	$(MAKE) --no-print-directory stage
	$(TEST_ENV) bench/run.sh

bench-file-reads: cargo-build
	$(TEST_ENV) bench/file-reads.sh

# Load and soak (tests/soak/run.sh): our libnbd.so.0 from build/lib and
# our nbdkit from this PROFILE's build, crossed with Debian's.
SOAK_SECONDS ?= 600
soak: lib
	$(TEST_ENV) OUR_LIBDIR=$(CURDIR)/$(B)/lib SOAK_SECONDS=$(SOAK_SECONDS) SOAK_PROGRESS=1 \
	  tests/soak/run.sh

# Fuzzing (fuzz/, a cargo workspace of its own; needs `cargo install
# cargo-fuzz`). See fuzz/run.sh for FUZZ_SANITIZER, FUZZ_TOOLCHAIN, ...
FUZZ_SECONDS       ?= 60
FUZZ_SMOKE_SECONDS ?= 5
FUZZ_TARGETS       ?=

fuzz:
	fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

fuzz-smoke:
	fuzz/run.sh $(FUZZ_SMOKE_SECONDS) $(FUZZ_TARGETS)

clean:
	rm -rf $(B)
	-$(CARGO) clean

FORCE:
