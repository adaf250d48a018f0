# Hostile environments with a real engine: the kvlog scenarios of test_hostile (the C harness
# itself runs in c-test; these need the kvlog binary).
.PHONY: hostile-kvlog
hostile-kvlog: $(BBIN)/test_hostile $(KVLOG_TEST_BIN)
	@set -e; for backend in ofd posix; do \
	    echo "== test_hostile kvlog ($$backend locks)"; \
	    TSHM_LOCK_BACKEND=$$backend KVLOG_BIN=$(abspath $(KVLOG_TEST_BIN)) $(BBIN)/test_hostile kvlog; \
	done

TEST_EXTRA += hostile-kvlog
