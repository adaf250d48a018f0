#!/usr/bin/env python3
"""Fails when libtshm(3)'s table of result codes disagrees with tshm.h.

    man_codes.py HEADER ERROR_RS MANPAGE
        exit 0 when the table in MANPAGE's RETURN VALUE section has one row per result code
        (the codes tshm_errstr names in ERROR_RS), each with the number HEADER defines for it,
        and calls exactly the codes HEADER marks "Reserved" reserved; otherwise lists the
        differences, exit 1
"""

import re
import sys


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: man_codes.py HEADER ERROR_RS MANPAGE")
    header, error_rs, manpage = (open(p).read() for p in sys.argv[1:])
    body = error_rs[error_rs.index("pub fn errstr") :]
    codes = re.findall(r"^\s*(TSHM_\w+) =>", body[: body.index("_ =>")], flags=re.M)
    defined = {}
    reserved = set()
    for comment, name, value in re.findall(
        r"/\*\*((?:(?!\*/).)*)\*/\s*#define (TSHM_\w+) (\d+)\b", header, flags=re.S
    ):
        defined[name] = int(value)
        if re.search(r"\bReserved\b", comment):
            reserved.add(name)
    table = manpage[manpage.index(".SH RETURN VALUE") :]
    table = table[table.index(".TS") : table.index(".TE")]
    rows = {}
    for line in table.splitlines():
        cells = line.split("\t")
        if len(cells) == 3 and cells[0].startswith("TSHM_"):
            rows[cells[0]] = (int(cells[1]), cells[2])
    bad = []
    for code in codes:
        if code not in rows:
            bad.append(f"{code} missing from the table")
            continue
        number, text = rows[code]
        if defined.get(code) != number:
            bad.append(f"{code} is {defined.get(code)} in the header, {number} in the table")
        if (code in reserved) != ("reserved" in text.lower()):
            word = "reserved" if code in reserved else "returned"
            bad.append(f"{code} is {word} in the header, the table says '{text}'")
    bad += [f"{code} in the table is not a result code" for code in rows if code not in codes]
    if not codes or bad:
        print(f"{sys.argv[3]}: " + ("; ".join(bad) or "no result codes found"))
        sys.exit(1)
    print(f"{sys.argv[3]}: {len(codes)} result codes, numbers and reserved ones as in {sys.argv[1]}")


if __name__ == "__main__":
    main()
