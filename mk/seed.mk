# The seed's strategies (byte-lock readers and roles) under the same tests: the multi-process,
# lifecycle, engine, index and hostile C tests, kvlog and the SQLite shim, with every default
# strategy turned into the seed's (`TSHM_TEST_STRATEGIES=seed`, read by test builds only). The
# API and crash-point tests check the defaults themselves and run once, above.
SEED_C_TESTS := test_multiprocess test_lifecycle test_engine test_index test_hostile

seed-test: test-lib test-cli $(C_TESTS) $(SHIM_TEST_SO) $(BBIN)/test_sqlite $(BBIN)/test_kvlog $(KVLOG_TEST_BIN)
	@set -e; for t in $(SEED_C_TESTS); do \
	    echo "== $$t (seed strategies)"; \
	    TSHM_TEST_STRATEGIES=seed TSHM_BIN=$(TSHM_TEST_CLI) $(BBIN)/$$t; \
	done
	@echo "== test_kvlog (seed strategies)"
	@TSHM_TEST_STRATEGIES=seed KVLOG_BIN=$(KVLOG_TEST_BIN) $(BBIN)/test_kvlog
	@echo "== test_sqlite (seed strategies)"
	@TSHM_TEST_STRATEGIES=seed TSHM_SQLITE_EXT=$(abspath $(SHIM_TEST_SO)) TSHM_BIN=$(BBIN)/tshm \
	    $(BBIN)/test_sqlite
	@echo "== test_python apsw, sqlite3 (seed strategies)"
	@TSHM_TEST_STRATEGIES=seed python3 examples/sqlite-vfs/test_python.py apsw $(abspath $(SHIM_TEST_SO))
	@TSHM_TEST_STRATEGIES=seed $(SYSTEM_PYTHON) examples/sqlite-vfs/test_python.py sqlite3 $(abspath $(SHIM_TEST_SO))

TEST_EXTRA += seed-test
