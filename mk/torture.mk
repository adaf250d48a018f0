# Crash torture: rounds of the kvlog and SQLite-shim bank workloads with processes SIGKILLed at
# random moments and at named crash points, every round verified (examples/torture/).
#
#   make torture ROUNDS=2000 [SEED=n] [ONLY=round] [TORTURE_POINTS="kind:name ..."]
#   make torture-short        the short run `make test` includes
#
# A failing round's files go to build/torture/failed-<round>/; the summary to
# build/reliability/torture.json (torture-short.json for the short run).

# Crash points: tshm:<name> (TSHM_TEST_CRASH_AT), kvlog:<name> (kvlog's stop points),
# kvfail:publish (KVLOG_FAIL_AT), shim:<name> (the SQLite shim's stop points).
TORTURE_POINTS ?= $(addprefix tshm:,open_holding_init open_initialized instance_claim instance_reclaim \
                  writer_claim ckpt_claim writer_release ckpt_release trim_mark truncate_mark \
                  append_entry pool_zeroed publish_copy publish_seq reader_claim reader_reclaim \
                  reader_pin reader_end engine_grant engine_release region_create close_init \
                  close_upgrade close_last_hook close_last_done node_drop) \
                  $(addprefix kvlog:,mid-write in-read mid-checkpoint commit-unpublished mid-restart) \
                  kvfail:publish $(addprefix shim:,locked dms_won dms checked region)
TORTURE_SHORT_ROUNDS ?= 120
TORTURE_SRC := examples/torture/torture.c examples/torture/workers.c examples/kvlog/kvlog.c
TORTURE_RUN = KVLOG_BIN=$(KVLOG_TEST_BIN) TSHM_BIN=$(BBIN)/tshm TSHM_SQLITE_EXT=$(abspath $(SHIM_TEST_SO)) \
    $(BBIN)/torture --seed $(or $(SEED),0) --points "$(TORTURE_POINTS)" --dir $(B)/torture

.PHONY: torture torture-short
TEST_EXTRA += torture-short

$(BBIN)/torture: $(TORTURE_SRC) examples/torture/torture.h examples/kvlog/kvlog.h include/tshm.h $(TEST_SO)
	@mkdir -p $(BBIN)
	$(CC) $(CFLAGS_EX) -Iexamples/torture -o $@ $(TORTURE_SRC) -lsqlite3 \
	    -L$(TLIB) -ltshm -Wl,-rpath,$(abspath $(TLIB))

torture: $(BBIN)/torture $(KVLOG_TEST_BIN) $(SHIM_TEST_SO) cli
	$(TORTURE_RUN) --rounds $(or $(ROUNDS),200) $(if $(ONLY),--only $(ONLY)) --json $(B)/reliability/torture.json

# first the checker itself: every round's record falsified once, every falsification caught
torture-short: $(BBIN)/torture $(KVLOG_TEST_BIN) $(SHIM_TEST_SO) cli
	$(TORTURE_RUN) --rounds 6 --selftest --json $(B)/torture/selftest.json
	$(TORTURE_RUN) --rounds $(TORTURE_SHORT_ROUNDS) --json $(B)/reliability/torture-short.json
