# libtshm — build, test, install.
#
#   make            build libtshm.so / libtshm.a / tshm.pc / the tshm CLI / kvlog into build/
#   make demo       the multi-process example engine at work (DEMO_SECONDS=20), verified
#   make test       every test: lint, Rust tests, C harnesses (both lock backends), the example
#                   engine's tests and a short demo, header and ABI checks
#   make install    DESTDIR= PREFIX=/usr/local (LIBDIR, INCLUDEDIR, BINDIR, MANDIR, ... below):
#                   headers, libraries, pkg-config file, the CLI with man page and completions,
#                   the SQLite extension; `make uninstall` removes them; `make install-check`
#                   proves the tree (mk/package.mk)
#   make lib        the release library (build/lib) and the test library (build/test-lib)
#
# Two builds of the library: the release one (build/lib, installed, used by `make demo`) has no
# test points; the test one (cargo feature test-hooks, build/test-lib) has them, and every test
# program links it. `make check-no-hooks` proves the difference.
#   make header     regenerate include/tshm.h (cbindgen, pinned)

PREFIX       ?= /usr/local
EXEC_PREFIX  ?= $(PREFIX)
LIBDIR       ?= $(EXEC_PREFIX)/lib
INCLUDEDIR   ?= $(PREFIX)/include
BINDIR       ?= $(EXEC_PREFIX)/bin
DATADIR      ?= $(PREFIX)/share
MANDIR       ?= $(DATADIR)/man
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
# The SQLite extension (a module programs load, not link): a distribution may want it apart.
SHIMDIR      ?= $(LIBDIR)
BASHCOMPDIR  ?= $(DATADIR)/bash-completion/completions
ZSHCOMPDIR   ?= $(DATADIR)/zsh/vendor-completions
FISHCOMPDIR  ?= $(DATADIR)/fish/vendor_completions.d
DESTDIR      ?=
CARGO        ?= cargo
CBINDGEN_VERSION := 0.29.4
CBINDGEN     ?= $(shell command -v cbindgen 2>/dev/null || echo $(HOME)/.cargo/bin/cbindgen)
CC           ?= cc
# A packager's flags: honoured by everything that is installed or shipped (the library's link,
# the shim, the example engine). The project's own warnings come first, so these can override
# them; -Werror is only in the test programs' builds.
CFLAGS       ?= -O2 -g
CXXFLAGS     ?= -O2 -g
CPPFLAGS     ?=
LDFLAGS      ?=
CFLAGS_TEST  := -std=c11 -O1 -g -Wall -Wextra -Werror -Iinclude -Ic-tests

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
MAJOR   := $(word 1,$(subst ., ,$(VERSION)))
MINOR   := $(word 2,$(subst ., ,$(VERSION)))
SONAME  := libtshm.so.$(MAJOR).$(MINOR)

B        := build
# Installs a built file by rename, so a program running the old one keeps it (never SIGBUS).
put = cp -f $(1) $(2).new && mv -f $(2).new $(2)
BLIB     := $(B)/lib
BBIN     := $(B)/bin
# cargo's output directory: target/, or CARGO_TARGET_DIR or build.target-dir where set.
CARGO_TARGET := $(or $(shell $(CARGO) metadata --format-version 1 --no-deps 2>/dev/null | \
                  grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4),target)
RELEASE  := $(CARGO_TARGET)/release
# The test build: the library with its test points (feature test-hooks), in a target directory
# of its own so that the two builds never rebuild each other.
HOOKS_TARGET := target/hooks
HOOKS        := $(HOOKS_TARGET)/release
HOOKS_CARGO  := --release --features test-hooks --target-dir $(HOOKS_TARGET)
# The library the test programs link (and load through rpath): the test build.
TLIB     := $(B)/test-lib
# Test programs built against $(TLIB): the example engine, the inspector with test points.
TBIN     := $(B)/test-bin
# The example engine and the SQLite shim as test programs run them (built against $(TLIB)).
KVLOG_TEST_BIN := $(TBIN)/kvlog
SHIM_TEST_SO   := $(TLIB)/libtshm_sqlite.so
TSHM_TEST_CLI  := $(TBIN)/tshm
# Native libraries a static link of libtshm.a needs (rustc --print native-static-libs, with
# libgcc's static unwinder for the shared one: a fully static link has no libgcc_s).
STATIC_LIBS := -lgcc_eh -lutil -lrt -lpthread -lm -ldl -lc
# The shared library is linked from libtshm.a by the C compiler with tshm.map, which gives every
# tshm_* function its symbol version and keeps everything else local (cargo's own cdylib link
# cannot take a versioned script).
SO_LIBS := -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
link_so = $(CC) -shared -o $(2).new -Wl,--whole-archive $(1) -Wl,--no-whole-archive \
    -Wl,--version-script=tshm.map -Wl,-soname,$(SONAME) -Wl,--gc-sections -Wl,-z,relro -Wl,-z,now \
    $(LDFLAGS) $(SO_LIBS) && mv -f $(2).new $(2)

C_TESTS := $(patsubst c-tests/%.c,$(BBIN)/%,$(wildcard c-tests/test_*.c))
KVLOG_SRC := examples/kvlog/kvlog.c examples/kvlog/bank.c
KVLOG_HDR := examples/kvlog/kvlog.h examples/kvlog/bank.h
# The example engine as shipped (a packager's flags) and as the tests build it (-Werror).
CFLAGS_KV := -std=c11 -Wall -Wextra $(CPPFLAGS) $(CFLAGS) -Iinclude -Iexamples/kvlog
CFLAGS_EX := -std=c11 -O2 -g -Wall -Wextra -Werror -Iinclude -Iexamples/kvlog
DEMO_SECONDS ?= 20

.PHONY: all lib release-lib test-lib test-cli check-no-hooks cli kvlog sqlite-vfs sqlite-test demo header check-header check-symbols check-header-compile test rust-test \
        c-test kvlog-test lint doc-check systest bench tools install uninstall clean FORCE

all: release-lib cli kvlog sqlite-vfs $(BLIB)/tshm.pc

# Both libraries: what test programs (and fragments in mk/) depend on.
lib: release-lib test-lib

# cargo runs when a Rust source is newer than the copy of its output; the copy is replaced only
# when the output changed, and the shared library is relinked and the programs built on it are
# rebuilt only then. So `make install` after `make` writes nothing into the build tree or
# cargo's (a `sudo make install` leaves nothing root-owned there).
RUST_SRC   := $(shell find src -name '*.rs') Cargo.toml Cargo.lock build.rs
RELEASE_SO := $(BLIB)/libtshm.so
TEST_SO    := $(TLIB)/libtshm.so
copy_if_changed = cmp -s $(1) $(2) || { $(call put,$(1),$(2)); }

release-lib: $(RELEASE_SO)
test-lib: $(TEST_SO)

$(BLIB)/libtshm.a: $(RUST_SRC)
	$(CARGO) build --release --lib
	@mkdir -p $(BLIB)
	@$(call copy_if_changed,$(RELEASE)/libtshm.a,$@)

$(TLIB)/libtshm.a: $(RUST_SRC)
	$(CARGO) build $(HOOKS_CARGO) --lib
	@mkdir -p $(TLIB)
	@$(call copy_if_changed,$(HOOKS)/libtshm.a,$@)

$(BLIB)/libtshm.so.$(VERSION) $(TLIB)/libtshm.so.$(VERSION): %/libtshm.so.$(VERSION): %/libtshm.a tshm.map
	$(call link_so,$<,$@)

$(BLIB)/$(SONAME) $(TLIB)/$(SONAME): %/$(SONAME): %/libtshm.so.$(VERSION)
	ln -sf libtshm.so.$(VERSION) $@

$(RELEASE_SO) $(TEST_SO): %/libtshm.so: %/$(SONAME)
	ln -sf $(SONAME) $@

# The inspector with test points (the crash-point test kills it where it observes).
test-cli: $(TSHM_TEST_CLI)
$(TSHM_TEST_CLI): $(RUST_SRC)
	$(CARGO) build $(HOOKS_CARGO) --bins
	@mkdir -p $(TBIN)
	@$(call copy_if_changed,$(HOOKS)/tshm,$@)

cli: $(BBIN)/tshm
$(BBIN)/tshm: $(RUST_SRC)
	$(CARGO) build --release --bins
	@mkdir -p $(BBIN)
	@$(call copy_if_changed,$(RELEASE)/tshm,$@)

# The example engine: a C program linked against the shared library, as an engine would be.
kvlog: $(BBIN)/kvlog

$(BBIN)/kvlog: $(KVLOG_SRC) examples/kvlog/main.c examples/kvlog/demo.c $(KVLOG_HDR) include/tshm.h $(RELEASE_SO)
	@mkdir -p $(BBIN)
	$(CC) $(CFLAGS_KV) -o $@ $(KVLOG_SRC) examples/kvlog/main.c examples/kvlog/demo.c \
	    $(LDFLAGS) -L$(BLIB) -ltshm -Wl,-rpath,$(abspath $(BLIB))

# The same engine against the test library, as the tests run it.
$(KVLOG_TEST_BIN): $(KVLOG_SRC) examples/kvlog/main.c examples/kvlog/demo.c $(KVLOG_HDR) include/tshm.h $(TEST_SO)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_EX) -o $@ $(KVLOG_SRC) examples/kvlog/main.c examples/kvlog/demo.c \
	    -L$(TLIB) -ltshm -Wl,-rpath,$(abspath $(TLIB))

$(BBIN)/test_kvlog: examples/kvlog/test_kvlog.c $(KVLOG_SRC) $(KVLOG_HDR) c-tests/harness.h include/tshm.h $(TEST_SO)
	@mkdir -p $(BBIN)
	$(CC) $(CFLAGS_EX) -Ic-tests -o $@ examples/kvlog/test_kvlog.c $(KVLOG_SRC) \
	    -L$(TLIB) -ltshm -Wl,-rpath,$(abspath $(TLIB))

# The SQLite VFS shim: a loadable extension built against the system's sqlite3ext.h, linked
# against libtshm.so and never against a SQLite of its own. The tests' build has the shim's
# test points (-DTSHM_TEST_HOOKS) and links the test library; the installed one has neither.
# build/lib's copy finds libtshm.so in build/lib (RUNPATH) for use from the tree; the installed
# one, build/dist, has no RUNPATH and finds it where the system's loader looks.
sqlite-vfs: $(BLIB)/libtshm_sqlite.so $(B)/dist/libtshm_sqlite.so

SHIM_CFLAGS := -std=c11 -Wall -Wextra $(CPPFLAGS) $(CFLAGS) -fPIC -shared -Iinclude

$(BLIB)/libtshm_sqlite.so: examples/sqlite-vfs/tshm_vfs.c include/tshm.h $(RELEASE_SO)
	$(CC) $(SHIM_CFLAGS) -o $@ $< $(LDFLAGS) -L$(BLIB) -ltshm -Wl,-rpath,$(abspath $(BLIB))

$(B)/dist/libtshm_sqlite.so: examples/sqlite-vfs/tshm_vfs.c include/tshm.h $(RELEASE_SO)
	@mkdir -p $(dir $@)
	$(CC) $(SHIM_CFLAGS) -o $@ $< $(LDFLAGS) -L$(BLIB) -ltshm

$(SHIM_TEST_SO): examples/sqlite-vfs/tshm_vfs.c include/tshm.h $(TEST_SO)
	$(CC) -std=c11 -O2 -g -Wall -Wextra -Werror -fPIC -shared -DTSHM_TEST_HOOKS -Iinclude -o $@ $< \
	    -L$(TLIB) -ltshm -Wl,-rpath,$(abspath $(TLIB))

$(BBIN)/test_sqlite: examples/sqlite-vfs/test_sqlite.c c-tests/harness.h include/tshm.h $(TEST_SO)
	@mkdir -p $(BBIN)
	$(CC) -std=c11 -O1 -g -Wall -Wextra -Werror -Iinclude -Ic-tests -o $@ $< -lsqlite3 \
	    -L$(TLIB) -ltshm -Wl,-rpath,$(abspath $(TLIB))

$(BBIN)/bench_sqlite: examples/sqlite-vfs/bench_sqlite.c
	@mkdir -p $(BBIN)
	$(CC) -std=c11 -O2 -g -Wall -Wextra -Werror -o $@ $< -lsqlite3

# The distribution's Python: its sqlite3 module is the system libsqlite3 and can load extensions
# (pyenv's builds, first on PATH here, usually cannot).
SYSTEM_PYTHON ?= $(firstword $(wildcard /usr/bin/python3) python3)

sqlite-test: $(SHIM_TEST_SO) $(BBIN)/test_sqlite cli
	@set -e; for backend in ofd posix; do \
	    echo "== test_sqlite ($$backend locks)"; \
	    TSHM_LOCK_BACKEND=$$backend TSHM_SQLITE_EXT=$(abspath $(SHIM_TEST_SO)) \
	        TSHM_BIN=$(BBIN)/tshm $(BBIN)/test_sqlite; \
	    echo "== test_python apsw, sqlite3 ($$backend locks)"; \
	    TSHM_LOCK_BACKEND=$$backend python3 examples/sqlite-vfs/test_python.py apsw $(abspath $(SHIM_TEST_SO)); \
	    TSHM_LOCK_BACKEND=$$backend $(SYSTEM_PYTHON) examples/sqlite-vfs/test_python.py sqlite3 \
	        $(abspath $(SHIM_TEST_SO)); \
	done

# The main job: writers, readers and a checkpointer on one database, kills, verification.
demo: release-lib cli kvlog
	TSHM_BIN=$(BBIN)/tshm $(BBIN)/kvlog demo $(DEMO_SECONDS) $(B)/demo

kvlog-test: $(BBIN)/test_kvlog $(KVLOG_TEST_BIN) cli
	@set -e; for backend in ofd posix; do \
	    echo "== test_kvlog ($$backend locks)"; \
	    TSHM_LOCK_BACKEND=$$backend KVLOG_BIN=$(KVLOG_TEST_BIN) $(BBIN)/test_kvlog; \
	done

# The pkg-config file names the directories of this make's PREFIX/LIBDIR/INCLUDEDIR: it is
# remade whenever they differ from the last build's (the stamp holds them).
PC_VARS := $(PREFIX)|$(EXEC_PREFIX)|$(LIBDIR)|$(INCLUDEDIR)|$(VERSION)|$(STATIC_LIBS)
$(B)/pc-vars: FORCE
	@mkdir -p $(B)
	@echo '$(PC_VARS)' | cmp -s - $@ || echo '$(PC_VARS)' > $@
FORCE:

# Directories under the prefix are written relative to it (libdir=${exec_prefix}/lib), so
# `pkg-config --define-prefix` can relocate the tree; others stay as given.
pc_rel = $(if $(filter $(2)/%,$(1)),$${$(3)}$(patsubst $(2)/%,/%,$(1)),$(1))
PC_EXEC_PREFIX = $(if $(filter $(PREFIX),$(EXEC_PREFIX)),$${prefix},$(call pc_rel,$(EXEC_PREFIX),$(PREFIX),prefix))
PC_LIBDIR      = $(call pc_rel,$(LIBDIR),$(EXEC_PREFIX),exec_prefix)
PC_INCLUDEDIR  = $(call pc_rel,$(INCLUDEDIR),$(PREFIX),prefix)

$(BLIB)/tshm.pc: tshm.pc.in Cargo.toml $(B)/pc-vars
	@mkdir -p $(BLIB)
	sed -e 's|@PREFIX@|$(PREFIX)|; s|@EXEC_PREFIX@|$(PC_EXEC_PREFIX)|; s|@LIBDIR@|$(PC_LIBDIR)|; s|@INCLUDEDIR@|$(PC_INCLUDEDIR)|; s|@VERSION@|$(VERSION)|; s|@STATIC_LIBS@|$(STATIC_LIBS)|' $< > $@

# cbindgen is pinned: point releases change the output.
tools:
	@if ! "$(CBINDGEN)" --version 2>/dev/null | grep -q "$(CBINDGEN_VERSION)"; then \
	    echo "installing cbindgen $(CBINDGEN_VERSION)"; \
	    $(CARGO) install --locked --quiet cbindgen --version $(CBINDGEN_VERSION); \
	fi

header: tools
	$(CBINDGEN) --quiet --config cbindgen.toml --crate tshm --output include/tshm.h

check-header: tools
	@tmp=$$(mktemp -d); \
	$(CBINDGEN) --quiet --config cbindgen.toml --crate tshm --output $$tmp/tshm.h && \
	if diff -u include/tshm.h $$tmp/tshm.h; then echo "include/tshm.h is fresh"; rm -rf $$tmp; \
	else echo "include/tshm.h is stale: run 'make header'"; rm -rf $$tmp; exit 1; fi

check-symbols: release-lib
	@bad=$$(nm -D --defined-only $(BLIB)/libtshm.so | awk '$$2 != "A" {print $$3}' | grep -v '^tshm_' || true); \
	if [ -n "$$bad" ]; then echo "non-tshm_ symbols exported: $$bad"; exit 1; fi
	@readelf -d $(BLIB)/libtshm.so | grep -q "SONAME.*\[$(SONAME)\]" || { echo "missing SONAME $(SONAME)"; exit 1; }
	@bad=$$(objdump -T $(BLIB)/libtshm.so | awk '$$NF ~ /^tshm_/ && $$(NF-1) != "TSHM_0.1" {print $$NF}'); \
	if [ -n "$$bad" ]; then echo "tshm_* symbols outside version TSHM_0.1: $$bad"; exit 1; fi
	@echo "exports only tshm_* symbols, each in version TSHM_0.1; SONAME $(SONAME)"

check-header-compile:
	@for std in c99 c11 c17 c2x; do \
	    $(CC) -std=$$std -pedantic -Wall -Wextra -Werror -Wstrict-prototypes -Wmissing-prototypes \
	        -Wc++-compat -Wundef -Iinclude -fsyntax-only c-tests/header_twice.c || exit 1; \
	done
	@for std in c++11 c++17; do \
	    $(CXX) -x c++ -std=$$std -pedantic -Wall -Wextra -Werror -Iinclude -fsyntax-only c-tests/header_twice.c || exit 1; \
	done
	@echo "tshm.h compiles as C99/C11/C17/C2x and C++11/C++17, included twice"
	@python3 scripts/header_prefix.py --self-test include/tshm.h
	@python3 scripts/header_prefix.py include/tshm.h

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --quiet -- -D warnings
	$(CARGO) clippy --workspace --all-targets --features test-hooks --quiet -- -D warnings

# The crate's documentation builds without a warning (broken or private links, bad HTML).
doc-check:
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --quiet
	@echo "cargo doc --no-deps: no warnings"

# ABI check: constants, struct layouts and symbols of include/tshm.h against the Rust side.
systest:
	$(CARGO) run -p systest --quiet

rust-test:
	$(CARGO) test --quiet --features test-hooks

$(BBIN)/%: c-tests/%.c c-tests/harness.h include/tshm.h $(TEST_SO)
	@mkdir -p $(BBIN)
	$(CC) $(CFLAGS_TEST) -o $@ $< -L$(TLIB) -ltshm -Wl,-rpath,$(abspath $(TLIB))

# The API test also links the static library, proving STATIC_LIBS is the complete list.
$(BBIN)/test_api_static: c-tests/test_api.c c-tests/harness.h include/tshm.h $(TLIB)/libtshm.a
	$(CC) $(CFLAGS_TEST) -o $@ $< $(TLIB)/libtshm.a $(STATIC_LIBS)

# Every C test runs on both lock backends (the crash-point test with the inspector that has
# test points, TSHM_BIN). Then a test runs twice where each run gets the same PIDs, as runs do in
# a fresh container: files an earlier run left must not change the outcome.
c-test: test-lib test-cli $(C_TESTS) $(BBIN)/test_api_static
	@set -e; for t in $(C_TESTS) $(BBIN)/test_api_static; do \
	    for backend in ofd posix; do \
	        echo "== $$(basename $$t) ($$backend locks)"; \
	        TSHM_LOCK_BACKEND=$$backend TSHM_BIN=$(TSHM_TEST_CLI) $$t; \
	    done; \
	done; \
	if unshare -p -f true 2>/dev/null; then \
	    echo "== test_hostile perm, twice in fresh PID namespaces (each run has the last one's PIDs)"; \
	    unshare -p -f $(BBIN)/test_hostile perm && unshare -p -f $(BBIN)/test_hostile perm; \
	else echo "SKIP the rerun with repeated PIDs: unshare -p needs root"; fi

# The release library and shim hold no test point (no name, no arming variable); the test
# builds hold every one (so this check can fail). Names come from src/testpoint.rs (NAMES) and
# the shim's own list (its `stop_point(.., "...")` calls). Strings are searched in stripped
# copies without the exported tshm_* names (function names are not points); the symbol table
# is searched for testpoint functions.
HOOK_NAMES = $$(sed -n '/^pub const NAMES/,/^];/p' src/testpoint.rs | grep -o '"[a-z_]*"' | tr -d '"') \
             TSHM_TEST_CRASH_AT TSHM_TEST_PAUSE_AT TSHM_TEST_FAIL_AT TSHM_TEST_FS_MAGIC TSHM_TEST_WAIT_SLICE_MS \
             TSHM_TEST_STRATEGIES
SHIM_HOOK_NAMES = $$(grep -o 'stop_point([^,]*, "[a-z_]*")' examples/sqlite-vfs/tshm_vfs.c | grep -o '"[a-z_]*"' | tr -d '"') \
                  TSHM_SQLITE_TEST_STOP
# strings of a stripped copy of $(1), split at non-identifier bytes (Rust's string data is not
# NUL-separated), exported names dropped; a C object's strings are whole (NUL-terminated)
hook_tokens = strip -o $$tmp/s $(1) && strings -n 3 $$tmp/s | tr -c 'A-Za-z0-9_\n' '\n' | grep -v '^tshm_'
c_strings = strip -o $$tmp/s $(1) && strings -n 3 $$tmp/s
check-no-hooks: release-lib sqlite-vfs test-lib test-cli $(SHIM_TEST_SO)
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	$(call hook_tokens,$(BLIB)/libtshm.so.$(VERSION)) > $$tmp/rel; \
	{ $(call hook_tokens,$(TLIB)/libtshm.so.$(VERSION)); $(call hook_tokens,$(TSHM_TEST_CLI)); } > $$tmp/test; \
	$(call c_strings,$(BLIB)/libtshm_sqlite.so) > $$tmp/shim_rel; \
	$(call c_strings,$(SHIM_TEST_SO)) > $$tmp/shim_test; \
	n=0; for p in $(HOOK_NAMES); do n=$$((n+1)); \
	    if grep -qF "$$p" $$tmp/rel; then echo "release libtshm.so holds test point $$p"; exit 1; fi; \
	    grep -qF "$$p" $$tmp/test || { echo "test build lacks test point $$p"; exit 1; }; \
	done; \
	m=0; for p in $(SHIM_HOOK_NAMES); do m=$$((m+1)); \
	    if grep -qxF "$$p" $$tmp/shim_rel; then echo "release shim holds test point $$p"; exit 1; fi; \
	    grep -qxF "$$p" $$tmp/shim_test || { echo "test shim lacks test point $$p"; exit 1; }; \
	done; \
	if nm $(BLIB)/libtshm.so.$(VERSION) | grep -q testpoint; then echo "release libtshm.so has testpoint code"; exit 1; fi; \
	nm $(TLIB)/libtshm.so.$(VERSION) | grep -q testpoint || { echo "test libtshm.so has no testpoint code"; exit 1; }; \
	echo "release library and shim hold none of $$n + $$m test point names (nor testpoint code); the test builds hold all"

# Benchmarks (`make bench`): mk/bench.mk.

# Each file in mk/ adds its own targets, and the ones `make test` runs to TEST_EXTRA.
TEST_EXTRA :=
include $(sort $(wildcard mk/*.mk))

test: tools lint doc-check rust-test c-test kvlog-test sqlite-test systest check-header check-symbols \
      check-header-compile check-no-hooks $(TEST_EXTRA)
	$(MAKE) --no-print-directory demo DEMO_SECONDS=5
	@echo "make test: all checks passed"

# What a distribution ships. `make install DESTDIR=$$pkg PREFIX=/usr` (LIBDIR, INCLUDEDIR, BINDIR,
# MANDIR, PKGCONFIGDIR and the completion directories can be set one by one).
INSTALLED = $(INCLUDEDIR)/tshm.h $(INCLUDEDIR)/tshm.hpp $(LIBDIR)/libtshm.a \
            $(LIBDIR)/libtshm.so.$(VERSION) $(LIBDIR)/$(SONAME) $(LIBDIR)/libtshm.so \
            $(PKGCONFIGDIR)/tshm.pc $(BINDIR)/tshm $(SHIMDIR)/libtshm_sqlite.so \
            $(MANDIR)/man1/tshm.1 $(MANDIR)/man3/libtshm.3 \
            $(BASHCOMPDIR)/tshm $(ZSHCOMPDIR)/_tshm $(FISHCOMPDIR)/tshm.fish

install: all
	install -Dm644 include/tshm.h $(DESTDIR)$(INCLUDEDIR)/tshm.h
	install -Dm644 include/tshm.hpp $(DESTDIR)$(INCLUDEDIR)/tshm.hpp
	install -Dm644 $(BLIB)/libtshm.a $(DESTDIR)$(LIBDIR)/libtshm.a
	install -Dm755 $(BLIB)/libtshm.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libtshm.so.$(VERSION)
	ln -sf libtshm.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libtshm.so
	install -Dm644 $(BLIB)/tshm.pc $(DESTDIR)$(PKGCONFIGDIR)/tshm.pc
	install -Dm755 $(BBIN)/tshm $(DESTDIR)$(BINDIR)/tshm
	install -Dm755 $(B)/dist/libtshm_sqlite.so $(DESTDIR)$(SHIMDIR)/libtshm_sqlite.so
	install -Dm644 docs/man/tshm.1 $(DESTDIR)$(MANDIR)/man1/tshm.1
	install -Dm644 docs/man/libtshm.3 $(DESTDIR)$(MANDIR)/man3/libtshm.3
	@mkdir -p $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR)
	$(BBIN)/tshm completions bash > $(DESTDIR)$(BASHCOMPDIR)/tshm
	$(BBIN)/tshm completions zsh > $(DESTDIR)$(ZSHCOMPDIR)/_tshm
	$(BBIN)/tshm completions fish > $(DESTDIR)$(FISHCOMPDIR)/tshm.fish

uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))

clean:
	$(CARGO) clean
	rm -rf $(B)
