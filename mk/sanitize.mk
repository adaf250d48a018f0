# Sanitizers and valgrind over the C side of the project: the C harnesses, the example engine's
# tests and the SQLite shim's tests.
#
#   make asan       AddressSanitizer + UBSan: the test programs, kvlog and the shim compiled with
#                   gcc -fsanitize=address,undefined, against a libtshm instrumented by rustc
#                   (-Zsanitizer=address, nightly, its own target dir); halt on the first error,
#                   in forked and exec'd children too
#   make valgrind   memcheck over the ordinary test library $(TLIB): no error, no leak that is
#                   definite or possible, after every handle is closed
#
# Neither touches the shipped library: the instrumented one lives in target/asan and
# $(B)/asan only, and valgrind runs the normal build unchanged.

# ---------------------------------------------------------------------------------------------
# AddressSanitizer

ASAN_TRIPLE  := x86_64-unknown-linux-gnu
ASAN_TARGET  := target/asan
ASAN_RUSTLIB := $(ASAN_TARGET)/$(ASAN_TRIPLE)/debug/libtshm.so
ASAN_LIB     := $(B)/asan/lib
ASAN_BIN     := $(B)/asan/bin
ASAN_CARGO   ?= $(CARGO) +nightly

# One ASan runtime for both languages, gcc's libasan. rustc links its own ASan runtime only
# into executables, never into a cdylib: the instrumented libtshm.so just refers to the
# runtime's entry points (__asan_init, __asan_report_*, __asan_version_mismatch_check_v8, ...)
# and takes them from whichever runtime the process has. A gcc -fsanitize=address program
# links libasan.so first in its library list, so the library's references bind to it: one
# shadow memory, one allocator, one report format, and nothing to preload. gcc 12's libasan
# speaks the same instrumentation ABI (v8) as rustc's LLVM, which `asan-abi` checks before any
# test runs: every __asan_* symbol the Rust library needs must be one libasan defines (a newer
# LLVM asking for one that gcc's runtime lacks would otherwise fail only at load time).
# (The other ways cost more: building the C side against rustc's static runtime means
# linking librustc-nightly_rt.asan.a by hand with gcc's instrumentation, two runtimes'
# flags to keep in step; an LD_PRELOAD of libasan would have to reach every exec'd child.)
SAN_CFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
ASAN_LINK  := -L$(ASAN_LIB) -ltshm -Wl,-rpath,$(abspath $(ASAN_LIB))

# Every report ends the process by SIGABRT (abort_on_error): a forked child that hits one dies
# of a signal no test expects of it (they exit with a code, or are SIGKILLed on purpose), so
# its parent's status check fails, and an exec'd kvlog or sqlite child likewise. UBSan stops at
# the first finding (-fno-sanitize-recover=all plus halt_on_error) and prints its stack.
# detect_leaks stays on for every harness. LeakSanitizer checks at exit() only: the harnesses'
# forked children end in _exit() (most of them still holding copies of their parent's open
# handles, by design) or are SIGKILLed, so they are never leak-checked and cannot add noise;
# what is checked is each parent after it closed everything, and each exec'd kvlog, shim-loading
# sqlite3 shell or inspector that exits normally, all of which must leave nothing unreachable.
ASAN_ENV_BASE := UBSAN_OPTIONS=halt_on_error=1:abort_on_error=1:print_stacktrace=1
ASAN_OPTS     := abort_on_error=1:halt_on_error=1:detect_stack_use_after_return=1:strict_string_checks=1:check_initialization_order=1
ASAN_ENV      := $(ASAN_ENV_BASE) ASAN_OPTIONS=$(ASAN_OPTS):detect_leaks=1

# The SQLite test also runs the stock sqlite3 shell, which `.load`s the instrumented shim: a
# program not built with ASan can take an instrumented library only with the runtime preloaded
# (ASan refuses to start otherwise), so that run has libasan in LD_PRELOAD, inherited by every
# child (harmless in the test program itself, which links that same runtime first). The shells,
# sh and the inspector run under ASan with leak checking then, and exit clean.

# The inspector the harnesses exec (TSHM_BIN), as c-test hands it to them: the build with test
# points where the Makefile has one, else the CLI. It is not instrumented (a Rust executable
# built with -Zsanitizer links rustc's own runtime, which cannot share a process with the
# libasan preloaded below).
SAN_TSHM_BIN := $(or $(TSHM_TEST_CLI),$(BBIN)/tshm)
SAN_CLI      := $(if $(TSHM_TEST_CLI),test-cli,cli)

ASAN_C_TESTS := $(patsubst c-tests/%.c,$(ASAN_BIN)/%,$(wildcard c-tests/test_*.c))

.PHONY: asan asan-lib asan-abi asan-shipped-clean valgrind

# Cargo decides whether anything needs rebuilding; the copy happens only when the library
# changed, so the programs below are relinked only then.
# opt-level 1 (debug assertions and overflow checks kept): unoptimized instrumented code made
# the index test fifteen times slower than this.
asan-lib:
	@$(ASAN_CARGO) --version >/dev/null 2>&1 || \
	    { echo "asan: needs the nightly toolchain ($(ASAN_CARGO)), for -Zsanitizer"; exit 1; }
	CARGO_PROFILE_DEV_OPT_LEVEL=1 RUSTFLAGS="-Zsanitizer=address" $(ASAN_CARGO) build --quiet --lib --features test-hooks \
	    --target $(ASAN_TRIPLE) --target-dir $(ASAN_TARGET)
	@mkdir -p $(ASAN_LIB)
	@cmp -s $(ASAN_RUSTLIB) $(ASAN_LIB)/libtshm.so.$(VERSION) || \
	    { $(call put,$(ASAN_RUSTLIB),$(ASAN_LIB)/libtshm.so.$(VERSION)); }
	@ln -sf libtshm.so.$(VERSION) $(ASAN_LIB)/$(SONAME)
	@ln -sf $(SONAME) $(ASAN_LIB)/libtshm.so

$(ASAN_LIB)/libtshm.so.$(VERSION): asan-lib

asan-abi: $(ASAN_LIB)/libtshm.so.$(VERSION)
	@need=$$(nm -D --undefined-only $< | awk '/__asan_/ {print $$2}' | sort -u); \
	have=$$(nm -D --defined-only $$(readlink -f $$($(CC) -print-file-name=libasan.so)) | \
	        awk '{print $$3}'); \
	missing=$$(for s in $$need; do echo "$$have" | grep -qx "$$s" || echo "$$s"; done); \
	if [ -n "$$missing" ]; then echo "$(CC)'s libasan lacks what the Rust library needs: $$missing"; exit 1; fi; \
	echo "asan: the Rust library needs $$(echo "$$need" | wc -l) runtime symbols, all in $(CC)'s libasan"

$(ASAN_BIN)/%: c-tests/%.c c-tests/harness.h include/tshm.h $(ASAN_LIB)/libtshm.so.$(VERSION)
	@mkdir -p $(ASAN_BIN)
	$(CC) $(CFLAGS_TEST) $(SAN_CFLAGS) -o $@ $< $(ASAN_LINK)

$(ASAN_BIN)/clean_client: c-tests/sanitize/clean_client.c c-tests/harness.h include/tshm.h $(ASAN_LIB)/libtshm.so.$(VERSION)
	@mkdir -p $(ASAN_BIN)
	$(CC) $(CFLAGS_TEST) $(SAN_CFLAGS) -o $@ $< $(ASAN_LINK)

$(ASAN_BIN)/asan_canary: c-tests/sanitize/asan_canary.c c-tests/harness.h include/tshm.h $(ASAN_LIB)/libtshm.so.$(VERSION)
	@mkdir -p $(ASAN_BIN)
	$(CC) $(CFLAGS_TEST) $(SAN_CFLAGS) -o $@ $< $(ASAN_LINK)

$(ASAN_BIN)/kvlog: $(KVLOG_SRC) examples/kvlog/main.c examples/kvlog/demo.c $(KVLOG_HDR) include/tshm.h $(ASAN_LIB)/libtshm.so.$(VERSION)
	@mkdir -p $(ASAN_BIN)
	$(CC) $(CFLAGS_EX) $(SAN_CFLAGS) -o $@ $(KVLOG_SRC) examples/kvlog/main.c examples/kvlog/demo.c $(ASAN_LINK)

$(ASAN_BIN)/test_kvlog: examples/kvlog/test_kvlog.c $(KVLOG_SRC) $(KVLOG_HDR) c-tests/harness.h include/tshm.h $(ASAN_LIB)/libtshm.so.$(VERSION)
	@mkdir -p $(ASAN_BIN)
	$(CC) $(CFLAGS_EX) $(SAN_CFLAGS) -Ic-tests -o $@ examples/kvlog/test_kvlog.c $(KVLOG_SRC) $(ASAN_LINK)

# The shim as its tests build it: with its stop points (-DTSHM_TEST_HOOKS).
$(ASAN_LIB)/libtshm_sqlite.so: examples/sqlite-vfs/tshm_vfs.c include/tshm.h $(ASAN_LIB)/libtshm.so.$(VERSION)
	$(CC) -std=c11 -O1 -g -Wall -Wextra -Werror $(SAN_CFLAGS) -fPIC -shared -DTSHM_TEST_HOOKS -Iinclude \
	    -o $@ $< $(ASAN_LINK)

$(ASAN_BIN)/test_sqlite: examples/sqlite-vfs/test_sqlite.c c-tests/harness.h include/tshm.h $(ASAN_LIB)/libtshm.so.$(VERSION)
	@mkdir -p $(ASAN_BIN)
	$(CC) -std=c11 -O1 -g -Wall -Wextra -Werror $(SAN_CFLAGS) -Iinclude -Ic-tests -o $@ $< -lsqlite3 $(ASAN_LINK)

ASAN_PROGRAMS := $(ASAN_C_TESTS) $(ASAN_BIN)/clean_client $(ASAN_BIN)/asan_canary $(ASAN_BIN)/kvlog $(ASAN_BIN)/test_kvlog \
                 $(ASAN_LIB)/libtshm_sqlite.so $(ASAN_BIN)/test_sqlite

# Every harness runs on both lock backends but the SQLite test, on OFD only: it waits on other
# processes most of its time (30 s here), and the shim reaches the backends only through the
# library paths the C harnesses already cover on both.
# The canary must be stopped by a report from inside libtshm (see c-tests/sanitize/asan_canary.c).
asan: asan-abi $(ASAN_PROGRAMS) $(SAN_CLI)
	@echo "== asan canary (a use-after-free the library must catch)"; \
	if $(ASAN_ENV) $(ASAN_BIN)/asan_canary > $(B)/asan/canary.log 2>&1; then \
	    cat $(B)/asan/canary.log; echo "asan: libtshm is not instrumented"; exit 1; fi; \
	grep -q 'heap-use-after-free' $(B)/asan/canary.log && grep -q 'src/ffi/handle.rs' $(B)/asan/canary.log || \
	    { cat $(B)/asan/canary.log; echo "asan: the canary died without the expected report"; exit 1; }
	@set -e; for backend in ofd posix; do \
	    for t in $(ASAN_C_TESTS) $(ASAN_BIN)/clean_client; do \
	        echo "== asan $$(basename $$t) ($$backend locks)"; \
	        TSHM_LOCK_BACKEND=$$backend TSHM_BIN=$(SAN_TSHM_BIN) KVLOG_BIN=$(abspath $(ASAN_BIN))/kvlog \
	            $(ASAN_ENV) $$t; \
	    done; \
	    echo "== asan test_kvlog ($$backend locks)"; \
	    TSHM_LOCK_BACKEND=$$backend $(ASAN_ENV) KVLOG_BIN=$(ASAN_BIN)/kvlog $(ASAN_BIN)/test_kvlog; \
	done
	@echo "== asan test_sqlite (ofd locks)"; \
	    TSHM_LOCK_BACKEND=ofd LD_PRELOAD=$$(readlink -f $$($(CC) -print-file-name=libasan.so)) \
	        $(ASAN_ENV) TSHM_SQLITE_EXT=$(abspath $(ASAN_LIB))/libtshm_sqlite.so TSHM_BIN=$(SAN_TSHM_BIN) \
	        $(ASAN_BIN)/test_sqlite
	@$(MAKE) --no-print-directory asan-shipped-clean
	@echo "asan: all sanitized runs passed"

# The shipped library carries no sanitizer: no __asan_/__ubsan_/__lsan_ symbol, no sanitizer
# runtime among its needed libraries, in the shared and the static library alike.
asan-shipped-clean: lib
	@for f in $(BLIB)/libtshm.so $(BLIB)/libtshm.a; do \
	    if nm $$( [ "$${f##*.}" = so ] && echo -D) $$f 2>/dev/null | grep -E '__(asan|ubsan|lsan)_' | head -3 | grep .; then \
	        echo "$$f: sanitizer symbols in the shipped library"; exit 1; fi; \
	done
	@if readelf -d $(BLIB)/libtshm.so | grep NEEDED | grep -E 'asan|ubsan|lsan'; then \
	    echo "$(BLIB)/libtshm.so: needs a sanitizer runtime"; exit 1; fi
	@echo "asan: the shipped $(BLIB)/libtshm.so and libtshm.a carry no sanitizer"

TEST_EXTRA += asan

# ---------------------------------------------------------------------------------------------
# valgrind (memcheck) over the ordinary test library $(TLIB)

# Errors and leaks both fail the run; leaks "still reachable" do not: those are the bounded
# quarantine of closed handle shells (src/ffi/handle.rs), kept on purpose so that a call on a
# closed handle is a reported misuse. Nothing is suppressed.
VALGRIND      ?= valgrind
VG            := $(VALGRIND) -q --error-exitcode=1
VG_LEAKS      := $(VG) --leak-check=full --errors-for-leak-kinds=definite,possible
# The harnesses that fork children that _exit() on purpose still holding the copies of their
# parent's open handles (that is what they test: a child inheriting a handle): a leak check in
# such a child reports the parent's live state, 100 to 600 bytes per child, as lost. These run
# with every memory error an error in parent and children alike (a child's error makes it exit
# 1, which its parent's status check sees), and leaks reported per process into $(VG_LOGS)
# without counting as errors; the recipe then fails on any leak in the parent's own log (the
# parent is the process whose pid valgrind was started as, and it has closed everything).
VG_PARENT     := $(VG) --leak-check=full --show-leak-kinds=definite,possible --errors-for-leak-kinds=none
VG_LOGS       := $(B)/valgrind/logs

VG_BIN := $(B)/valgrind

$(VG_BIN)/clean_client: c-tests/sanitize/clean_client.c c-tests/harness.h include/tshm.h lib
	@mkdir -p $(VG_BIN)
	$(CC) $(CFLAGS_TEST) -o $@ $< -L$(TLIB) -ltshm -Wl,-rpath,$(abspath $(TLIB))

# Chosen to stay near two minutes (measured here on a loaded machine): the API test whole, the minimal client, the example
# engine's tests (with kvlog itself traced in every exec'd process, leak-checked too: each one
# closes what it opened or is SIGKILLed, which leak-checks nothing), and two multi-process
# harnesses. test_index and test_lifecycle (30 s each here) run under ASan only.
valgrind: $(VG_BIN)/clean_client $(BBIN)/test_api $(BBIN)/test_engine $(BBIN)/test_multiprocess \
          $(BBIN)/test_kvlog $(KVLOG_TEST_BIN) $(SAN_CLI)
	@command -v $(VALGRIND) >/dev/null || { echo "valgrind: not installed"; exit 1; }
	@set -e; for t in $(VG_BIN)/clean_client $(BBIN)/test_api; do \
	    echo "== valgrind $$(basename $$t)"; TSHM_BIN=$(SAN_TSHM_BIN) $(VG_LEAKS) $$t; \
	done
	@set -e; for t in $(BBIN)/test_engine $(BBIN)/test_multiprocess; do \
	    n=$$(basename $$t); d=$(VG_LOGS)/$$n; rm -rf $$d; mkdir -p $$d; \
	    echo "== valgrind $$n (leaks checked in the parent; children inherit open handles)"; \
	    rc=0; TSHM_BIN=$(SAN_TSHM_BIN) $(VG_PARENT) --log-file=$$d/%p.log $$t & pid=$$!; wait $$pid || rc=$$?; \
	    if [ $$rc -ne 0 ] || grep -q 'lost in loss record' $$d/$$pid.log; then \
	        for f in $$d/*.log; do [ -s $$f ] && { echo "-- $$f"; head -n 60 $$f; }; done; \
	        echo "valgrind: $$n failed (exit $$rc; parent log $$d/$$pid.log)"; exit 1; \
	    fi; \
	done
	@echo "== valgrind test_kvlog (and every kvlog it starts)"; \
	    KVLOG_BIN=$(KVLOG_TEST_BIN) TSHM_BIN=$(SAN_TSHM_BIN) $(VG_LEAKS) --trace-children=yes $(BBIN)/test_kvlog
	@echo "valgrind: all runs clean"

TEST_EXTRA += valgrind
