#!/usr/bin/env python3
"""Renders target/bench/report.json (written by `make bench`) into docs/PERFORMANCE.md,
between the markers `<!-- perf-table:begin -->` and `<!-- perf-table:end -->`: one table of
every row (value, anchor, ratio, the target read from the row's note and whether it is met),
then the instruction counts of target/bench/callgrind.json when present."""

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys

BEGIN, END = "<!-- perf-table:begin -->", "<!-- perf-table:end -->"
# the order of the sections in the table
ORDER = ["reader.", "writer.pair", "ckpt.", "writer.handoff", "writer.wait", "writer.throughput",
         "writer.fairness", "writer.dead", "scale.", "core.", "index.", "sqlite.", "cg."]


def rank(rid):
    for i, p in enumerate(ORDER):
        if rid.startswith(p):
            # scale rows in reader-count order
            m = re.search(r"_(\d+)$", rid) if p == "scale." else None
            return (i, int(m.group(1)) if m else 0, rid)
    return (len(ORDER), 0, rid)


def num(x):
    if x is None:
        return ""
    a = abs(x)
    if a >= 1e6:
        return f"{x / 1e6:.2f} M"
    if a >= 1e4:
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:.0f}"
    return f"{x:.3g}" if a < 10 else f"{x:.1f}"


def target(note):
    """(op, bound, on_value): a note's "target <= x" bounds the ratio, "target: value <= x" the
    value itself."""
    m = re.search(r"target(:? value)?\s*(<=|>=)\s*([0-9.]+)", note or "")
    return (m.group(2), float(m.group(3)), m.group(1) is not None) if m else None


def render(rows, cg, meta):
    out = [f"Latest run: {meta}.", "",
           "The target applies to the ratio unless it says value.", "",
           "| id | value | unit | baseline | ratio | target | met |",
           "|---|---:|---|---:|---:|---|---|"]
    for r in sorted(rows, key=lambda r: rank(r["id"])):
        t = target(r.get("note", ""))
        met = ""
        if t is not None:
            x = r["value"] if t[2] else r["ratio"]
            ok = x <= t[1] if t[0] == "<=" else x >= t[1]
            met = "yes" if ok else "**no**"
        tt = "" if t is None else ("value " if t[2] else "") + t[0] + " " + format(t[1], "g")
        out.append(f"| `{r['id']}` | {num(r['value'])} | {r['unit']} | {num(r['baseline'])} | "
                   f"{r['ratio']:.3f} | {tt} | {met} |")
    out += ["", "<details><summary>Each row's note (method, both sides' spread, p99s, counts)</summary>", ""]
    for r in sorted(rows, key=lambda r: rank(r["id"])):
        out.append(f"* `{r['id']}`: {r.get('note', '')}")
    out += ["", "</details>"]
    if cg:
        out += ["", f"Instructions per operation (valgrind --tool=callgrind, "
                    f"(count at {cg['n2']} - count at {cg['n1']}) / {cg['n2'] - cg['n1']}; user-space "
                    "instructions only) and system calls per operation (strace -c, the same difference):", "",
                "| path | instructions/op | syscalls/op |", "|---|---:|---:|"]
        for p, v in cg["paths"].items():
            s = v.get("syscalls_per_op")
            out.append(f"| `{p}` | {v['instr_per_op']:.0f} | {'' if s is None else format(s, 'g')} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--report", default="target/bench/report.json")
    ap.add_argument("--callgrind", default=None)
    ap.add_argument("--doc", default="docs/PERFORMANCE.md")
    a = ap.parse_args()
    with open(a.report) as f:
        rows = json.load(f)
    cgp = a.callgrind or os.path.join(os.path.dirname(a.report), "callgrind.json")
    cg = None
    if os.path.exists(cgp):
        with open(cgp) as f:
            cg = json.load(f)
    # written by `make bench` when it starts: the revision measured and the machine's load then
    mp = os.path.join(os.path.dirname(a.report), "meta.json")
    if os.path.exists(mp):
        with open(mp) as f:
            m = json.load(f)
        meta = (f"{m.get('date', '?')}, {m.get('cpus', '?')} CPUs, Linux {m.get('kernel', '?')}, load average "
                f"{m.get('load', '?')} at the start, at `{m.get('rev', '?')[:72]}`"
                f"{' (with uncommitted changes)' if m.get('dirty') else ''}")
    else:
        when = datetime.datetime.fromtimestamp(os.path.getmtime(a.report), datetime.timezone.utc)
        try:
            rev = subprocess.run(["git", "log", "-1", "--format=%h %s"], capture_output=True, text=True,
                                 check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            rev = "unknown revision"
        meta = (f"{when:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, Linux {platform.release()}, "
                f"at `{rev[:72]}`")
    with open(a.doc) as f:
        doc = f.read()
    if BEGIN not in doc or END not in doc:
        print(f"perf-doc: {a.doc} lacks the markers {BEGIN} / {END}", file=sys.stderr)
        return 1
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(a.doc, "w") as f:
        f.write(head + BEGIN + "\n" + render(rows, cg, meta) + "\n" + END + tail)
    print(f"perf-doc: {len(rows)} rows into {a.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
