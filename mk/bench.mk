# Benchmarks: every figure a ratio against an anchor measured in the same run, all rows in
# target/bench/report.json ({id, value, baseline, ratio, unit, note}); docs/PERFORMANCE.md says
# what each one means.
#
#   make bench [ONLY=prefix]   the criterion benchmarks (benches/core.rs, index.rs), the SQLite
#                              shim against stock SQLite (bench_sqlite), the C API's hot paths
#                              against LMDB, a robust mutex, a futex and SQLite's busy handler
#                              (bench_core), then the instruction counts (make callgrind)
#   make callgrind             instructions (and system calls) per operation of each hot path,
#                              under valgrind: target/bench/callgrind.json and the cg.* rows
#   make perf-doc              renders target/bench/report.json into docs/PERFORMANCE.md
#   make bench-build           compiles the C benchmark programs only (part of `make test`)
#
# The C programs link the release library $(BLIB) (no test points: what users run) and LMDB,
# which bench-deps installs when its header is missing.

BENCH_CFLAGS := -std=c11 -O2 -g -Wall -Wextra -Werror -Iinclude -Ibenches/c
BENCH_LINK   := -L$(BLIB) -ltshm -Wl,-rpath,$(abspath $(BLIB)) -llmdb -lpthread -lm
LMDB_HEADER  ?= /usr/include/lmdb.h
APT_QUIET    := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq liblmdb-dev >/dev/null

.PHONY: bench bench-deps bench-build callgrind perf-doc

bench-deps:
	@[ -e $(LMDB_HEADER) ] || { echo "installing liblmdb-dev"; \
	    $(APT_QUIET) 2>/dev/null || { apt-get update -qq && $(APT_QUIET); }; }
	@python3 -c "import apsw" 2>/dev/null || { echo "installing apsw (pip)"; \
	    python3 -m pip install --quiet apsw 2>/dev/null || echo "apsw not installed: no _apsw_ rows"; }

$(BBIN)/bench_core: benches/c/bench_core.c benches/c/bench_util.h include/tshm.h $(RELEASE_SO) | bench-deps
	@mkdir -p $(BBIN)
	$(CC) $(BENCH_CFLAGS) -o $@ $< $(BENCH_LINK)

$(BBIN)/cg_paths: benches/c/cg_paths.c benches/c/bench_util.h include/tshm.h $(RELEASE_SO) | bench-deps
	@mkdir -p $(BBIN)
	$(CC) $(BENCH_CFLAGS) -o $@ $< $(BENCH_LINK)

bench-build: $(BBIN)/bench_core $(BBIN)/cg_paths

TEST_EXTRA += bench-build

bench: $(BLIB)/libtshm_sqlite.so $(BBIN)/bench_sqlite $(BBIN)/bench_core $(BBIN)/cg_paths
	@mkdir -p target/bench; \
	printf '{"date": "%s", "rev": "%s", "dirty": %s, "cpus": %s, "kernel": "%s", "load": "%s"}\n' \
	    "$$(date -u '+%Y-%m-%d %H:%M UTC')" "$$(git log -1 --format='%h %s' 2>/dev/null | tr -d '"\\')" \
	    "$$(git diff --quiet HEAD 2>/dev/null && echo false || echo true)" "$$(nproc)" "$$(uname -r)" \
	    "$$(cut -d' ' -f1-3 /proc/loadavg)" > target/bench/meta.json
	ONLY=$(ONLY) $(CARGO) bench --quiet --bench core --bench index --bench sqlite --bench capi
	@if command -v valgrind >/dev/null; then ONLY=$(ONLY) python3 scripts/callgrind.py; \
	else echo "valgrind not installed: no instruction counts"; fi
	@echo "report: target/bench/report.json (make perf-doc renders it into docs/PERFORMANCE.md)"

callgrind: $(BBIN)/cg_paths
	python3 scripts/callgrind.py

perf-doc:
	python3 scripts/perf_doc.py --report target/bench/report.json --doc docs/PERFORMANCE.md
