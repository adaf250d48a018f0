#!/usr/bin/env python3
"""Writes docs/RELIABILITY.md from the summaries the reliability runs leave in build/reliability/.

    scripts/reliability_doc.py [--in build/reliability] [--out docs/RELIABILITY.md]

Inputs (each optional; a missing one is reported as "not run"):
  torture.json        `make torture ROUNDS=...`     (examples/torture/)
  fuzz-<target>.json  `make fuzz FUZZ_SECONDS=...`  (fuzz/campaign.sh)
  loom.json           `make loom`                   (tests/loom_*.rs)
The scenario tables name the tests that run in every `make test`; their figures are the counts
those tests assert, not measurements.
"""

import argparse
import glob
import json
import os
import re
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def table(rows, head):
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def count_points(root):
    """The libtshm test point names (src/testpoint.rs NAMES) and the shim's stop points."""
    src = open(os.path.join(root, "src/testpoint.rs")).read()
    block = re.search(r"pub const NAMES: &\[&str\] = &\[(.*?)\];", src, re.S)
    names = re.findall(r'"([a-z_]+)"', block.group(1)) if block else []
    shim = open(os.path.join(root, "examples/sqlite-vfs/tshm_vfs.c")).read()
    shim_names = sorted(set(re.findall(r'stop_point\([^,]*, "([a-z_]+)"\)', shim)))
    return names, shim_names


def torture_section(t):
    if t is None:
        return "Not run yet: `make torture ROUNDS=2000` writes `build/reliability/torture.json`.\n"
    kills = t.get("kills_by_point", {})
    scen = t.get("rounds_by_scenario", {})
    skills = t.get("kills_by_scenario", {})
    lines = [
        f"Last run: **{t['rounds']} rounds in {t['seconds']:.0f} s** (seed {t['seed']}), "
        f"**{t['failures']} failures**"
        + (f" (rounds {', '.join(map(str, t['failed_rounds']))})" if t.get("failed_rounds") else "")
        + ".",
        "",
        f"- processes started: {t.get('processes', '?')}; SIGKILLs: {t.get('kills', '?')}; "
        f"rounds with `durable=1`: {t.get('durable_rounds', '?')}",
        f"- transactions acknowledged: {t.get('transactions_acked', '?')}, in flight at a kill "
        f"(either outcome allowed): {t.get('transactions_in_flight', '?')}, rolled back (must "
        f"never appear): {t.get('transactions_rolled_back', '?')}",
        "",
        "Rounds and kills by scenario:",
        "",
        table(
            [(s, scen.get(s, 0), skills.get(s, 0)) for s in sorted(set(scen) | set(skills))],
            ["scenario", "rounds", "kills"],
        ),
        "",
        "Kills by crash point (`random` = a SIGKILL from the supervisor at a random moment; "
        "`armed, not reached` = the restarted process was armed there but ended its work first):",
        "",
        table(
            [
                (p, kills.get(p, 0), t.get("armed_not_reached", {}).get(p, 0))
                for p in sorted(set(kills) | set(t.get("armed_not_reached", {})))
            ],
            ["point", "kills", "armed, not reached"],
        ),
        "",
    ]
    if t.get("mean_phase_ms"):
        ph = ", ".join(f"{k} {v:.0f} ms" for k, v in t["mean_phase_ms"].items())
        lines += [f"Mean time per round phase: {ph}.", ""]
    return "\n".join(lines)


def fuzz_section(files):
    if not files:
        return "Not run yet: `make fuzz FUZZ_SECONDS=1800` writes `build/reliability/fuzz-<target>.json`.\n"
    rows = []
    for f in files:
        rows.append(
            (
                f"`{f['target']}`",
                f.get("started_utc", "?"),
                f"{f['seconds'] / 60:.0f} min",
                f.get("execs", "?"),
                f.get("coverage_edges", "?"),
                f.get("features", "?"),
                f.get("corpus_units", "?"),
                f.get("findings", "?"),
            )
        )
    notes = "".join(
        f"\n- `{f['target']}` findings: {f['finding_notes']}" for f in files if f.get("finding_notes")
    )
    return (
        table(rows, ["target", "started", "ran", "inputs run", "edges", "features", "corpus", "findings"])
        + ("\n" + notes if notes else "")
        + "\n\nEach campaign: " + files[0].get("tool", "cargo-fuzz") + ", at most "
        + str(files[0].get("timeout_per_input_s", 10)) + " s per input.\n"
    )


def loom_section(lm):
    if lm is None:
        return "Not run yet: `make loom` writes `build/reliability/loom.json`.\n"
    models = lm.get("models", [])
    rows = []
    for m in models:
        fail = m.get("failure")
        if m.get("weakened"):
            result = "fails as it must: " + (fail.splitlines()[0][:90] if fail else "**did not fail**")
        else:
            result = "holds" if not fail else "**FAILED**: " + fail.splitlines()[0][:90]
        rows.append((m["model"], "weakened" if m.get("weakened") else "as in src/", m.get("executions", "?"), result))
    head = (
        f"Last run: preemption bound {lm.get('preemption_bound')}, {len(models)} model runs in "
        f"{lm.get('seconds')} s.\n\n"
    )
    return head + table(rows, ["model", "orderings", "executions", "result"]) + "\n"


STATIC = """
## Crash points

Every step where a SIGKILL leaves a distinct state has a named test point, compiled only into
the test build (`cargo` feature `test-hooks`, `build/test-lib`); the installed library and shim
have none (`make check-no-hooks`: no point name, arming variable or test-point code in the
release `libtshm.so` and `libtshm_sqlite.so`, all of them in the test builds).

- libtshm: {npoints} points: {points}.
- the SQLite shim: {nshim} points: {shim}.
- `c-tests/test_crashpoints.c` (every `make test`, both lock backends): for each point and each
  setup it is reached in (alone, attached, pending trim, full instance table, full reader table,
  engine lock held, sparse sidecar) a child arms the point, must die there of SIGKILL, and the
  survivor then checks the snapshot, every role and engine lock, the index against the
  snapshot, pins, `tshm check` and `check --idle`, and a clean last close (55 kills at 30
  points, on each lock backend).
  `tests/testpoints.rs` checks that the list is complete and that the crash test covers it.
- `examples/sqlite-vfs/test_sqlite.c`: a connection killed at each shim point, first and
  joining; row count, a new write, `integrity_check`, stock SQLite reads the same.

## Sanitizers and valgrind (every `make test`)

- `make asan`: the C harnesses, the kvlog tests and the shim tests built with
  `-fsanitize=address,undefined`, against a libtshm built with `-Zsanitizer=address` on nightly
  (`mk/sanitize.mk` says how the two runtimes meet).
- `make valgrind`: a plain build under `valgrind --error-exitcode=1 --leak-check=full
  --errors-for-leak-kinds=definite,possible`; a program that closed every handle leaves no
  allocation behind.

## Hostile environments (every `make test`, `c-tests/test_hostile.c`, both lock backends)

| scenario | what the test asserts |
|---|---|
| disk full (a small tmpfs in a private mount namespace) while the index and regions grow | `TSHM_FULL` "No space left on device"; counts consistent, every committed frame found, another process joins and reads all; after space is freed the writer goes on |
| a sparse sidecar on a full disk | a writable open gives the holes storage first (`fallocate`), or `TSHM_FULL`; never SIGBUS |
| `RLIMIT_FSIZE` when the sidecar is created | `TSHM_FULL` "file-size limit", the process not killed by SIGXFSZ; the next open after the limit is raised initializes |
| `RLIMIT_NOFILE` reached at open | `TSHM_CANTOPEN`, `tshm_errno()` = `EMFILE`; no descriptor left behind; the open works after the limit is raised |
| unwritable directory, read-only filesystem, sidecar chmod 0400 under a live writer, database at mode 0000 | `TSHM_CANTOPEN` with `EACCES` / `EROFS` where nothing can be created; the attached writer carries on; a read-only handle where only reading is allowed |
| sidecar renamed over, unlinked, or replaced by a copy while processes are attached; the database under a second name | `TSHM_BUSY` "was replaced while in use" (an attach byte on the database file); never two writers; once the old users are gone a fresh session starts and every commit is read back (also with the kvlog engine) |

## Regenerating this page

`make reliability-doc` rewrites it from `build/reliability/*.json`: run `make torture
ROUNDS=2000`, `make fuzz FUZZ_SECONDS=1800` and `make loom` first.
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--in", dest="inp", default="build/reliability")
    ap.add_argument("--out", default="docs/RELIABILITY.md")
    a = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    torture = load(os.path.join(a.inp, "torture.json"))
    fuzz = [x for x in (load(p) for p in sorted(glob.glob(os.path.join(a.inp, "fuzz-*.json")))) if x]
    lm = load(os.path.join(a.inp, "loom.json"))
    names, shim = count_points(root)
    doc = [
        "# Reliability",
        "",
        "What libtshm is tested against beyond its unit and protocol tests, how, and what the",
        "latest long runs showed. Generated by `make reliability-doc` (scripts/reliability_doc.py)",
        "from `build/reliability/`; do not edit by hand.",
        "",
        "## Crash torture (`make torture`)",
        "",
        "A supervisor (examples/torture/) runs a kvlog bank workload and a SQLite-through-the-shim",
        "bank workload (writers, readers, a checkpointer; `durable=1` in part of the rounds) as real",
        "processes and, every round, SIGKILLs one at a random moment or restarts it armed with a",
        "crash point. Scenarios: a single kill; every process killed at once, then reopened; first",
        "opens racing kills; a kill during index growth (a large transaction); a kill during the",
        "last closer's final checkpoint; a writer killed between its commit frame and its publish,",
        "then everyone. Each round checks: no acknowledged commit lost and none rolled back or",
        "never attempted present; the bank total held in every snapshot a reader read; `PRAGMA",
        "integrity_check` and `kvlog check`; no process waited past its bound; `tshm check --idle`",
        "(no slot leaked). `make test` runs a short torture (and first a self-test that falsifies",
        "each round's record and requires the verifier to reject it).",
        "",
        torture_section(torture),
        "## Fuzzing (`make fuzz`, `make fuzz-smoke` in every `make test`)",
        "",
        "cargo fuzz (libFuzzer) targets in fuzz/: `sidecar` (a real session's sidecar mutated with",
        "structure-aware and raw patches, opened alone and joined, and mutated under an attached",
        "handle, then every operation and the inspector), `api` (random C-API call sequences over",
        "several handles, misuse included, against a model of each call's documented result),",
        "`index` (index operations against an in-memory model). A crash, a hang, a panic or",
        "`TSHM_INTERNAL` is a finding. Every input that once failed is in the committed corpus.",
        "Found so far: `tshm check --idle` overflowed on a snapshot with `nbackfills` above",
        "`max_frame` (fixed; `regress-idle-nbackfills-above-max-frame` and a unit test in",
        "src/inspect.rs).",
        "",
        fuzz_section(fuzz),
        "## Memory-model checks (`make loom`, in every `make test`)",
        "",
        "The core protocols modelled step by step with loom under the C11 model (tests/loom_*.rs):",
        "the snapshot latch and publish token, the reader pin against `min_reader_frame`, the",
        "engine lock's announce-then-look, index append/truncate/find with the generation, instance",
        "claim and stale reclaim, and the roles (queue, handoff, a waiter that stops, a dead",
        "holder's takeover; the queue and dead-holder models at preemption bound 2, see",
        "tests/loom_roles.rs). Each model has twins with its critical fence or ordering weakened,",
        "which must fail, and checks that the source lines it mirrors are unchanged. The twin",
        "without the roles' fences deadlocks, which loom reports by aborting: it runs in a child",
        "process and leaves no summary row.",
        "",
        loom_section(lm),
        STATIC.format(
            npoints=len(names),
            points=", ".join(f"`{n}`" for n in names),
            nshim=len(shim),
            shim=", ".join(f"`{n}`" for n in shim),
        ).strip(),
        "",
    ]
    with open(a.out, "w") as f:
        f.write("\n".join(doc))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    sys.exit(main())
