# Fuzzing with cargo-fuzz (libFuzzer, nightly toolchain; the shipped library stays on stable).
# The targets live in fuzz/ (a workspace of its own); fuzz/campaign.sh runs one.
#
#   make fuzz-smoke                   every target for FUZZ_SMOKE_SECONDS over the committed
#                                     corpus; fails on any finding (part of `make test`)
#   make fuzz FUZZ_SECONDS=1800       a campaign of every target at once, niced, one worker
#                                     each; summaries in build/reliability/fuzz-<target>.json
#   make fuzz-build                   build the targets only

FUZZ_TARGETS       := sidecar api index
FUZZ_SMOKE_SECONDS ?= 15
FUZZ_SECONDS       ?= 1800

.PHONY: fuzz fuzz-smoke fuzz-build

fuzz-build:
	cd fuzz && $(CARGO) +nightly fuzz build

fuzz-smoke: fuzz-build
	@set -e; for t in $(FUZZ_TARGETS); do fuzz/campaign.sh $$t $(FUZZ_SMOKE_SECONDS) smoke; done

fuzz: fuzz-build
	@pids=""; for t in $(FUZZ_TARGETS); do fuzz/campaign.sh $$t $(FUZZ_SECONDS) & pids="$$pids $$!"; done; \
	fail=0; for p in $$pids; do wait $$p || fail=1; done; exit $$fail

TEST_EXTRA += fuzz-smoke
