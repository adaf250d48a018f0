# Memory-model checks of the core protocols under C11 (tests/loom_*.rs, see
# tests/loom_support/mod.rs): plain `cargo test` runs them with loom's preemption bound 2;
# `make loom` explores with LOOM_PREEMPTIONS (3) and gathers each model's summary into
# build/reliability/loom.json. The test profile already optimizes loom itself (Cargo.toml), so
# a release build would only add its compile time.
LOOM_PREEMPTIONS ?= 3
LOOM_TESTS := $(patsubst tests/%.rs,%,$(wildcard tests/loom_*.rs))
LOOM_OUT := $(B)/loom

.PHONY: loom
TEST_EXTRA += loom

loom:
	@rm -rf $(LOOM_OUT) && mkdir -p $(LOOM_OUT) $(B)/reliability
	@start=$$(date +%s); \
	LOOM_MAX_PREEMPTIONS=$(LOOM_PREEMPTIONS) TSHM_LOOM_REPORT=$(abspath $(LOOM_OUT)) \
	    $(CARGO) test --quiet --features test-hooks $(addprefix --test ,$(LOOM_TESTS)) || exit 1; \
	end=$$(date +%s); \
	{ printf '{"tool": "loom", "preemption_bound": %s, "seconds": %s, "models": [' \
	      $(LOOM_PREEMPTIONS) $$((end - start)); \
	  sep=; for f in $(LOOM_OUT)/*.json; do printf '%s' "$$sep"; tr -d '\n' < $$f; sep=', '; done; \
	  printf ']}\n'; } > $(B)/reliability/loom.json; \
	n=$$(ls $(LOOM_OUT)/*.json | wc -l); \
	echo "loom: $$n model runs, preemption bound $(LOOM_PREEMPTIONS), $$((end - start)) s: $(B)/reliability/loom.json"
