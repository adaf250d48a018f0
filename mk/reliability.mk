# docs/RELIABILITY.md from the summaries of the latest long runs in build/reliability/
# (make torture ROUNDS=2000, make fuzz FUZZ_SECONDS=1800, make loom).
.PHONY: reliability-doc
reliability-doc:
	python3 scripts/reliability_doc.py --in $(B)/reliability --out docs/RELIABILITY.md
