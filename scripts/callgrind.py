#!/usr/bin/env python3
"""Instruction (and system call) counts of libtshm's hot paths and their anchors.

Runs build/bin/cg_paths (benches/c/cg_paths.c, linked against the release library) once per
path under `valgrind --tool=callgrind` at N1 and at N2 operations; the instructions per
operation are (count at N2 - count at N1) / (N2 - N1), so setup and teardown cancel out. With
strace present, the system calls per operation are found the same way. Unlike the timed rows,
these figures do not move with the machine's load: they change only when the code does (the
kernel's own work behind a system call is not in the instruction count; the syscall column
shows where there is some).

Writes target/bench/callgrind.json and merges `cg.*` rows into target/bench/report.json.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

PATHS = ["reader_cas", "reader_bytelock", "snapshot_get", "writer_pair", "writer_pair_bytelock",
         "ckpt_pair", "ckpt_pair_bytelock", "publish", "commit", "lmdb_read", "lmdb_renew",
         "lmdb_write", "mutex_pair"]

# (row id, ours, anchor, what)
ROWS = [
    ("cg.reader_txn_vs_lmdb", "reader_cas", "lmdb_read",
     "instructions per tshm_reader_begin+end (CAS) / per LMDB mdb_txn_begin(RDONLY)+abort"),
    ("cg.reader_txn_vs_lmdb_renew", "reader_cas", "lmdb_renew",
     "instructions per tshm_reader_begin+end (CAS) / per LMDB mdb_txn_renew+reset"),
    ("cg.reader_bytelock_vs_lmdb", "reader_bytelock", "lmdb_read",
     "instructions per tshm_reader_begin+end (byte-lock) / per LMDB mdb_txn_begin(RDONLY)+abort"),
    ("cg.writer_pair_vs_mutex", "writer_pair", "mutex_pair",
     "instructions per tshm_writer_acquire(h, 0)+release (default roles) / per robust pshared mutex lock+unlock"),
    ("cg.writer_pair_bytelock_vs_mutex", "writer_pair_bytelock", "mutex_pair",
     "instructions per tshm_writer_acquire(h, 0)+release (TSHM_ROLES_BYTELOCK) / per robust pshared mutex pair"),
    ("cg.ckpt_pair_vs_mutex", "ckpt_pair", "mutex_pair",
     "instructions per tshm_checkpointer_acquire(h, 0)+release (default roles) / per robust pshared mutex pair"),
    ("cg.writer_pair_vs_lmdb", "writer_pair", "lmdb_write",
     "instructions per tshm_writer_acquire(h, 0)+release / per LMDB write mdb_txn_begin+abort"),
    ("cg.snapshot_get_vs_lmdb_renew", "snapshot_get", "lmdb_renew",
     "instructions per tshm_snapshot_get / per LMDB mdb_txn_renew+reset"),
    ("cg.commit_vs_lmdb_write", "commit", "lmdb_write",
     "instructions per writer acquire + snapshot_get + publish + release / per LMDB write txn begin+abort"),
]


def callgrind_total(binary, tmp, path, n):
    out = os.path.join(tmp, f"cg.{path}.{n}")
    r = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                        binary, os.path.join(tmp, "db"), path, str(n)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        lines = r.stderr.strip().splitlines()
        return None, [line for line in lines if line.startswith("cg_paths:")] or lines[-1:] or [""]
    with open(out) as f:
        for line in f:
            m = re.match(r"^(?:summary|totals):\s+(\d+)", line)
            if m:
                return int(m.group(1)), None
    return None, ["no totals in the callgrind output"]


def strace_calls(binary, tmp, path, n):
    out = os.path.join(tmp, f"st.{path}.{n}")
    r = subprocess.run(["strace", "-f", "-c", "-o", out, binary, os.path.join(tmp, "db"), path, str(n)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if r.returncode != 0:
        return None
    with open(out) as f:
        for line in f:
            t = line.split()
            if t and t[-1] == "total":
                return int(t[3])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/bin/cg_paths")
    ap.add_argument("--out", default="target/bench")
    ap.add_argument("--n1", type=int, default=2000)
    ap.add_argument("--n2", type=int, default=12000)
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        print("callgrind: valgrind is not installed", file=sys.stderr)
        return 1
    use_strace = shutil.which("strace") is not None
    res = {}
    with tempfile.TemporaryDirectory(prefix="tshm-cg-") as tmp:
        for p in PATHS:
            a, err = callgrind_total(args.bin, tmp, p, args.n1)
            b, err2 = (callgrind_total(args.bin, tmp, p, args.n2) if a is not None else (None, err))
            if a is None or b is None:
                print(f"  {p:22} skipped: {(err or err2 or [''])[0]}", file=sys.stderr)
                continue
            ins = (b - a) / (args.n2 - args.n1)
            sc = None
            if use_strace:
                s1, s2 = strace_calls(args.bin, tmp, p, 500), strace_calls(args.bin, tmp, p, 2500)
                if s1 is not None and s2 is not None:
                    sc = (s2 - s1) / 2000
            res[p] = {"instr_per_op": round(ins, 1), "syscalls_per_op": None if sc is None else round(sc, 2)}
            print(f"  {p:22} {ins:9.1f} instructions/op" + ("" if sc is None else f"  {sc:5.2f} syscalls/op"),
                  file=sys.stderr)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "callgrind.json"), "w") as f:
        json.dump({"tool": "valgrind --tool=callgrind", "n1": args.n1, "n2": args.n2,
                   "strace": use_strace, "paths": res}, f, indent=2)
        f.write("\n")
    report = os.path.join(args.out, "report.json")
    try:
        with open(report) as f:
            rows = json.load(f)
    except (OSError, ValueError):
        rows = []
    only = os.environ.get("ONLY", "")
    for rid, ours, base, what in ROWS:
        if ours not in res or base not in res or not rid.startswith(only):
            continue
        v, bl = res[ours]["instr_per_op"], res[base]["instr_per_op"]
        sv, sb = res[ours]["syscalls_per_op"], res[base]["syscalls_per_op"]
        note = what + f"; callgrind, ({args.n2} - {args.n1}) operations; stable across runs"
        if sv is not None:
            note += f"; system calls per operation {sv:g} / {sb:g}"
        rows = [r for r in rows if r.get("id") != rid]
        rows.append({"id": rid, "value": v, "baseline": bl, "ratio": round(v / bl, 4), "unit": "instr",
                     "note": note})
        print(f"  {rid:34} {v:9.1f} instr  baseline {bl:9.1f}  ratio {v / bl:7.3f}", file=sys.stderr)
    with open(report, "w") as f:
        json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
